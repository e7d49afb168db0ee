"""Replay: the undelivered-events queue -> the EventBridge bus (issue 17).

Invoked by hand (an alarm says the queue has messages):
`aws lambda invoke --function-name <ReplayEventsFunctionName> --cli-read-timeout 0 out.json`,
locally `coupons-local run replay-events`. Drains until the queue is empty, the bus refuses, or
its time is up; a message is deleted only once its event is on the bus. The event
`{"max_seconds": n}` shortens the run.
"""

import time
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons import outbox
from coupons.adapters import aws
from coupons.adapters.event_bus import EventBus
from coupons.adapters.undelivered import UndeliveredQueue
from coupons.http import logger
from coupons.settings import get_settings

RESERVED_SECONDS = 30.0  # one batch's PutEvents retries and its deletes, after the last receive


@lru_cache(maxsize=1)
def bus() -> EventBus:
    settings = get_settings()
    return EventBus(aws.client("events"), settings.event_bus_name,
                    policy=outbox.RetryPolicy(budget_seconds=min(settings.publish_retry_seconds, 10.0)))


@lru_cache(maxsize=1)
def queue() -> UndeliveredQueue:
    return UndeliveredQueue(aws.client("sqs"), get_settings().undelivered_events_queue_url)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    seconds = context.get_remaining_time_in_millis() / 1000 - RESERVED_SECONDS
    requested = (event or {}).get("max_seconds")
    if isinstance(requested, int | float) and requested > 0:
        seconds = min(seconds, float(requested))
    stop_at = time.monotonic() + max(0.0, seconds)
    outcome = outbox.replay(queue(), bus(), out_of_time=lambda: time.monotonic() >= stop_at)
    answer = outcome.as_dict()
    (logger.warning if outcome.failed or outcome.malformed else logger.info)("replay of undelivered events",
                                                                             extra=answer)
    return answer
