"""Admin console and checkout demo: static pages with a strict CSP. Wiring only."""

from coupons.http import build_app, entry
from coupons.routes import console

app = build_app(console.router)
lambda_handler = entry(app)
