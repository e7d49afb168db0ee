"""Daily finance report (EventBridge schedule, 01:00 UTC): the previous UTC day to the reports bucket.

A scheduled event reports on the day before its `time`; `{"detail": {"date": "YYYY-MM-DD"}}`
(or `{"date": ...}`) re-runs a given day. Wiring only: `coupons.reports` decides.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons import reports
from coupons.adapters.report_store import default_sink, default_source
from coupons.clock import utcnow
from coupons.http import logger


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    day = reports.scheduled_day(event, utcnow())
    result = reports.daily_report(default_source(), default_sink(), day)
    logger.info("daily report written", extra={"date": result["date"], "rows": result["rows"]})
    return result
