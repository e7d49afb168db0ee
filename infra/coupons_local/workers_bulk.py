"""The local stack's bulk wiring: S3 notifications -> SQS, and SQS -> the queue-consuming functions.

On AWS, the imports bucket notifies the imports queue for objects created under
`incoming/`, and Lambda's SQS event source mappings (ReportBatchItemFailures on)
invoke `csv_import` and `generate_codes`. Here:

- every bucket with `notify_prefix_to_queue` gets the same notification
  configuration in moto, which then sends real S3 event notifications (and, as on
  AWS, an `s3:TestEvent` when the configuration is set) to the queue;
- every function with `queue=` gets `POLLERS` threads that receive up to
  `queue_batch_size` messages, invoke its `lambda_handler` with the SQS event shape
  Lambda uses, delete the messages that succeeded and leave the ones named in
  `batchItemFailures` (all of them, if the handler raises) to come back after the
  queue's visibility timeout, and to its dead-letter queue after maxReceiveCount.

Polls are short (WaitTimeSeconds=0) with a back-off when idle: the emulator
serialises every call under one lock, and a 20-second long poll would hold it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import boto3
from coupons_infra import resources as r

from . import calllog, moto_speedups
from .emulator import REGION

if TYPE_CHECKING:
    from .stack import LocalStack

log = logging.getLogger("coupons_local.bulk")
POLLERS = 2  # concurrent "Lambda instances" per queue: ranges and batches run in parallel
IDLE_MIN_SECONDS = 0.05
IDLE_MAX_SECONDS = 2.0  # a function run wakes the poller sooner (LocalStack.nap); S3 uploads wait this long at most


def queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def configure_notifications(stack: LocalStack) -> None:
    assert stack.provisioned
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    for bucket in r.BUCKETS:
        if not bucket.notify_prefix_to_queue:
            continue
        prefix, queue_key = bucket.notify_prefix_to_queue
        s3.put_bucket_notification_configuration(
            Bucket=stack.provisioned.buckets[bucket.key],
            NotificationConfiguration={"QueueConfigurations": [{
                "Id": f"{bucket.key}-to-{queue_key}",
                "QueueArn": queue_arn(sqs, stack.provisioned.queues[queue_key]),
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
            }]},
        )


def sqs_event(messages: list[dict[str, Any]], arn: str) -> dict[str, Any]:
    """ReceiveMessage results in the event shape Lambda's SQS event source delivers."""
    return {"Records": [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": dict(m.get("Attributes") or {}),
        "messageAttributes": {k: {"stringValue": v.get("StringValue"), "binaryValue": v.get("BinaryValue"),
                                  "stringListValues": [], "binaryListValues": [], "dataType": v["DataType"]}
                              for k, v in (m.get("MessageAttributes") or {}).items()},
        "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": REGION,
    } for m in messages]}


class QueuePoller:
    """Drives one queue-consuming function, as an SQS event source mapping would."""

    def __init__(self, stack: LocalStack, function: r.Function, url: str) -> None:
        self.stack = stack
        self.function = function
        self.url = url
        self.sqs: Any = boto3.client("sqs")
        with calllog.acting_as(function.name):  # the event source mapping acts with the function's role
            self.arn = queue_arn(self.sqs, url)
        self.invocations = 0

    def run(self) -> None:
        self.stack.poll_until_stopped(self.poll_once, what=f"queue {self.function.name}",
                                      busy_pause=IDLE_MIN_SECONDS, idle_max=IDLE_MAX_SECONDS, growth=2)

    def poll_once(self) -> bool:
        with calllog.acting_as(self.function.name):  # the event source mapping acts with the function's role
            return self._poll_once()

    def _poll_once(self) -> bool:
        messages = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=min(10, self.function.queue_batch_size), WaitTimeSeconds=0,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return False
        self.invocations += 1
        try:
            result = self.stack.functions.invoke(self.function, sqs_event(messages, self.arn))
            failed = {f.get("itemIdentifier") for f in (result or {}).get("batchItemFailures", [])}
        except Exception:
            log.exception("%s raised: the whole batch comes back after the visibility timeout", self.function.name)
            return True
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        return True


def start(stack: LocalStack) -> None:
    assert stack.provisioned
    moto_speedups.apply()  # a bulk job publishes thousands of events: see moto_speedups
    configure_notifications(stack)
    for function in r.FUNCTIONS:
        if not function.queue:
            continue
        url = stack.provisioned.queues[function.queue]
        for number in range(POLLERS):
            poller = QueuePoller(stack, function, url)
            threading.Thread(target=poller.run, name=f"sqs-{function.name}-{number}", daemon=True).start()
