"""Job watchdog (EventBridge schedule, every 10 minutes): bulk jobs with no progress are given up, never
left running. Wiring only: `coupons.bulk_watchdog` decides."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons.bulk_wiring import job_watchdog
from coupons.http import logger


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = job_watchdog().run()
    if report["given_up"] or report["failed"]:
        logger.warning("job watchdog", extra=report)  # job ids only
    return report
