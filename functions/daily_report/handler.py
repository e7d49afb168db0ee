"""Daily finance report (EventBridge schedule, 01:00 UTC): the previous UTC day to the reports bucket.

It also keeps the day's aggregate (once the day is settled) for `GET /reports/summary`.

A scheduled event reports on the day before its `time`; `{"detail": {"date": "YYYY-MM-DD"}}`
(or `{"date": ...}`) re-runs a given day. Wiring only: `coupons.report_files` decides.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons import report_files
from coupons.adapters.report_store import default_aggregates, default_sink, default_source
from coupons.clock import utcnow
from coupons.http import logger


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = utcnow()
    day = report_files.scheduled_day(event, now)
    result = report_files.daily_report(default_source(), default_sink(), day, store=default_aggregates(), now=now)
    logger.info("daily report written", extra={"date": result["date"], "rows": result["rows"],
                                               "suspicious": result["suspicious"],
                                               "aggregate_stored": result["aggregate_stored"]})
    return result
