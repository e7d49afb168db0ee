"""Finance API: GET /reports/summary. Wiring only; the domain layer decides."""

from coupons.http import build_app, entry
from coupons.routes import reports

app = build_app(reports.router)
lambda_handler = entry(app)
