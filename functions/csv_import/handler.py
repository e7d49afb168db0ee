"""CSV import worker: SQS messages (S3 event notifications for incoming/, or ranges of a planned
import) -> coupons. Wiring only: coupons.bulk_import decides; Powertools reports batchItemFailures,
so one failed message is retried (from its checkpoint) without the others, after a short back-off."""

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons.bulk_wiring import import_service, queue_sender
from coupons.http import logger
from coupons.settings import get_settings

processor = BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    def record_handler(record: SQSRecord) -> None:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        try:
            import_service().handle(json.loads(record.body), remaining_ms=context.get_remaining_time_in_millis,
                                    receive_count=receive_count)
        except Exception:
            queue_sender().retry_later(get_settings().imports_queue_url, record.receipt_handle, receive_count)
            raise

    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
