"""Generation worker: SQS messages (a job's plan, or one batch of codes) -> coupons + an export.
Wiring only: coupons.generation decides; Powertools reports batchItemFailures."""

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from coupons.bulk_wiring import generation_service
from coupons.http import logger

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    generation_service().handle(json.loads(record.body),
                                receive_count=int(record.attributes.approximate_receive_count or 1))


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
