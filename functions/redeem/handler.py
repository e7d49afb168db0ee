"""Checkout: redeem, read and roll back redemptions; a coupon's redemptions. Wiring only."""

from coupons.http import build_app, entry
from coupons.routes import redemptions

app = build_app(redemptions.router)
lambda_handler = entry(app)
