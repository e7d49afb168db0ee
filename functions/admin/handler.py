"""Admin API: coupon CRUD and listing. Wiring only; the domain layer decides."""

from coupons.http import build_app, entry
from coupons.routes import admin

app = build_app(admin.router)
lambda_handler = entry(app)
