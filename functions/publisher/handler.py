"""The outbox publisher: DynamoDB stream batches -> contract events on the EventBridge bus.

Wiring only: `coupons.outbox` decides what is published, what is parked in the
undelivered-events queue and which records go back to the stream; Powertools turns the
latter into `batchItemFailures`.
"""

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons import outbox
from coupons.adapters import aws
from coupons.adapters.event_bus import EventBus, change_of
from coupons.adapters.undelivered import UndeliveredQueue
from coupons.http import logger
from coupons.settings import get_settings

processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
# Kept free of the retry budget: one last PutEvents call (with the SDK's own retries) and the parking.
RESERVED_SECONDS = 20.0


class NotPublished(Exception):
    """This record's event (or an earlier one in its batch) could be neither published nor parked."""


@lru_cache(maxsize=1)
def bus() -> EventBus:
    settings = get_settings()
    policy = outbox.RetryPolicy(budget_seconds=settings.publish_retry_seconds)
    return EventBus(aws.client("events"), settings.event_bus_name, policy=policy)


@lru_cache(maxsize=1)
def parking() -> UndeliveredQueue:
    return UndeliveredQueue(aws.client("sqs"), get_settings().undelivered_events_queue_url)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    tables = {"coupons": settings.coupons_table, "guards": settings.guards_table, "jobs": settings.jobs_table}
    changes = [change_of(record, tables) for record in event.get("Records", [])]
    limit = context.get_remaining_time_in_millis() / 1000 - RESERVED_SECONDS
    outcome = outbox.publish_batch(changes, bus(), parking(), budget_seconds=max(0.0, limit))
    if outcome.parked:
        logger.warning("events parked in the undelivered-events queue (replay them with replay_events)",
                       extra={"parked": outcome.parked, "reasons": outcome.reasons,
                              "published": outcome.published})
    failed = frozenset(outcome.failed_sequence_numbers)
    if failed:
        logger.error("events neither published nor parked; the stream will retry",
                     extra={"failed_records": len(failed)})

    def record_handler(record: DynamoDBRecord) -> None:
        if record.dynamodb and record.dynamodb.sequence_number in failed:
            raise NotPublished(record.dynamodb.sequence_number)

    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
