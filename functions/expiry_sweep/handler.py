"""Hourly expiry sweep (EventBridge schedule). Wiring only: `coupons.expiry` decides."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons import expiry
from coupons.adapters import aws
from coupons.adapters.expiry_store import DynamoExpiryStore
from coupons.clock import utcnow
from coupons.http import logger
from coupons.settings import get_settings

SAFETY_MS = 15_000  # stop paging this long before the timeout; the next run carries on


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    store = DynamoExpiryStore(aws.client("dynamodb"), get_settings().coupons_table)
    result = expiry.sweep(store, utcnow(),
                          out_of_time=lambda: context.get_remaining_time_in_millis() < SAFETY_MS)
    logger.info("expiry sweep", extra=result.as_dict())
    return result.as_dict()
