"""Bulk API: start a generation job, follow any job. Wiring only; the domain layer decides."""

from coupons.http import build_app, entry
from coupons.routes import jobs

app = build_app(jobs.router)
lambda_handler = entry(app)
