"""Generation worker: SQS messages (a job's plan, one batch of codes, a part of its export to assemble,
the watchdog's give-up) -> coupons + an export. Wiring only: coupons.generation decides;
coupons.bulk_retry resends a throttled message with a long back-off and gives anything else the short
one; Powertools reports batchItemFailures."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons.bulk_retry import process_record
from coupons.bulk_wiring import generation_service, queue_sender
from coupons.http import logger
from coupons.settings import get_settings

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    process_record(record.body, lambda message, receive_count: generation_service().handle(
        message, receive_count=receive_count), queue=queue_sender(),
        queue_url=get_settings().generation_queue_url, receipt_handle=record.receipt_handle,
        receive_count=int(record.attributes.approximate_receive_count or 1))


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
