"""The outbox publisher: DynamoDB stream batches -> contract events on the EventBridge bus.

Wiring only: `coupons.events` decides what each change publishes and which
records must be retried; Powertools turns that into `batchItemFailures`.
"""

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons import events
from coupons.adapters import aws
from coupons.adapters.event_bus import EventBus, change_of
from coupons.http import logger
from coupons.settings import get_settings

processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


class NotPublished(Exception):
    """This record's event (or an earlier one in its shard) could not be published yet."""


@lru_cache(maxsize=1)
def bus() -> EventBus:
    return EventBus(aws.client("events"), get_settings().event_bus_name)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    tables = {"coupons": settings.coupons_table, "guards": settings.guards_table, "jobs": settings.jobs_table}
    changes = [change_of(record, tables) for record in event.get("Records", [])]
    outcome = events.publish_in_order(changes, bus())
    failed = frozenset(outcome.failed_sequence_numbers)
    if failed:
        logger.warning("events not published; the stream will retry", extra={"failed_records": len(failed)})

    def record_handler(record: DynamoDBRecord) -> None:
        if record.dynamodb and record.dynamodb.sequence_number in failed:
            raise NotPublished(record.dynamodb.sequence_number)

    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
