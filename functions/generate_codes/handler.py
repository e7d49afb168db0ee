"""Generation worker: SQS messages (a job's plan, or one batch of codes) -> coupons + an export.
Wiring only: coupons.generation decides; Powertools reports batchItemFailures, and a failed message
comes back after a short back-off."""

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons.bulk_wiring import generation_service, queue_sender
from coupons.http import logger
from coupons.settings import get_settings

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    receive_count = int(record.attributes.approximate_receive_count or 1)
    try:
        generation_service().handle(json.loads(record.body), receive_count=receive_count)
    except Exception:
        queue_sender().retry_later(get_settings().generation_queue_url, record.receipt_handle, receive_count)
        raise


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
