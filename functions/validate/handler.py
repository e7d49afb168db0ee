"""Checkout: `POST /coupons/validate`. Wiring only; the domain layer decides."""

from coupons.http import build_app, entry
from coupons.routes import checkout

app = build_app(checkout.router)
lambda_handler = entry(app)
