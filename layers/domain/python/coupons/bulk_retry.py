"""How the bulk workers (csv_import, generate_codes) retry a message that failed.

Two kinds of failure:

- **Transient** (throttling, a busy store, an unreachable service): the work is fine, AWS is
  not keeping up. The message is sent again as a new message, delayed 30 s, 1, 2, 4, 8 min,
  then 15 min (SQS's longest delay) each time, with jitter, and the delivery that failed is
  deleted. A new message starts again at receive count 1, so sustained throttling never runs
  into the queue's maxReceiveCount (5 receives, ~2.5 minutes of the short back-off below,
  after which the job used to be failed: issue 17). Up to `MAX_TRANSIENT_RETRIES` (~5 hours);
  a job that makes no progress for `JOB_STALL_SECONDS` meanwhile is given up by the watchdog.
- **Anything else**: the message comes back after 10, 20, 40... s (`QueueSender.retry_later`);
  on its last receive the service gives the job up (keeping its partial output) and the
  message goes to the dead-letter queue.

A timed-out run raises nothing at all: the watchdog (coupons/bulk_watchdog.py) covers it.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .adapters.bulk_objects import MAX_DELAY_SECONDS, QueueSender
from .errors import TryAgain

log = logging.getLogger(__name__)

TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestThrottled", "RequestThrottledException", "SlowDown",
    "ServiceUnavailable", "InternalServerError", "InternalError", "TransactionInProgressException",
    "KMSInternalException", "LimitExceededException",
})
FIRST_DELAY_SECONDS = 30
MAX_TRANSIENT_RETRIES = 24  # 30 s + 1 + 2 + 4 + 8 min + 19 x 15 min: about five hours
RETRIES_FIELD = "transient_retries"


def is_transient(error: BaseException) -> bool:
    """AWS throttling or a passing failure of a service, rather than something wrong with the work."""
    if isinstance(error, TryAgain | BotoCoreError):
        return True
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "")) in TRANSIENT_CODES
    cause = error.__cause__
    return cause is not None and cause is not error and is_transient(cause)


def transient_delay(retry: int, rand: Callable[[], float] = random.random) -> int:
    """The delay before the `retry`-th resend (0-based): doubling from 30 s to 15 min, the second half
    random (equal jitter, so throttled workers do not come back in step)."""
    base = min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * 2 ** min(retry, 10))
    return int(base / 2 + rand() * base / 2)


def process_record(body: str, handle: Callable[[dict[str, Any], int], None], *, queue: QueueSender,
                   queue_url: str, receipt_handle: str, receive_count: int,
                   rand: Callable[[], float] = random.random) -> None:
    """Run one SQS message through a bulk service; raise to have it retried (batchItemFailures)."""
    message = json.loads(body)
    try:
        handle(message, receive_count)
    except Exception as error:
        retries = int(message.get(RETRIES_FIELD, 0)) if isinstance(message, dict) else MAX_TRANSIENT_RETRIES
        if is_transient(error) and retries < MAX_TRANSIENT_RETRIES:
            delay = transient_delay(retries, rand)
            try:
                queue.send(queue_url, [{**message, RETRIES_FIELD: retries + 1}], delay_seconds=delay)
            except Exception:  # the queue is struggling too: the short back-off instead
                log.warning("could not resend a throttled %s message", message.get("type", "s3"))
            else:
                # Never the message itself in a log: an S3 key or an error may quote a file.
                log.warning("%s: %s message for job %s throttled, again in %d s (retry %d)",
                            type(error).__name__, message.get("type", "s3"), message.get("job_id", "-"),
                            delay, retries + 1)
                return
        queue.retry_later(queue_url, receipt_handle, receive_count)
        raise
