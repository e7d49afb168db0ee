"""The undelivered-events queue (SQS): where the publisher parks what EventBridge refused, and
where the replay reads it back from.

One message per event, its body `coupons.outbox.Parked` as JSON (the full entry and its
`event_id`), with `event_id` and `detail_type` also as message attributes for people looking at
the queue. Sent with SendMessageBatch (10 per call, refused entries retried a few times).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..outbox import Parked

MAX_BATCH = 10  # SendMessageBatch / DeleteMessageBatch limit
SEND_ATTEMPTS = 3


class UndeliveredQueue:
    def __init__(self, sqs_client: Any, queue_url: str, *, wait_seconds: int = 1,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._sqs = sqs_client
        self.url = queue_url
        self._wait = wait_seconds  # long polling: an empty answer means the queue is empty
        self._sleep = sleep

    # --- the publisher's side ---------------------------------------------------------------------

    def park(self, items: Sequence[Parked]) -> set[int]:
        if not self.url:
            return set(range(len(items)))  # no queue configured: the records go back to the stream
        failed: set[int] = set()
        for start in range(0, len(items), MAX_BATCH):
            failed |= self._send({i: items[i] for i in range(start, min(start + MAX_BATCH, len(items)))})
        return failed

    def _send(self, items: dict[int, Parked]) -> set[int]:
        pending = dict(items)
        for attempt in range(SEND_ATTEMPTS):
            if attempt:
                self._sleep(0.1 * 2 ** attempt)
            try:
                answer = self._sqs.send_message_batch(QueueUrl=self.url, Entries=[{
                    "Id": str(i),
                    "MessageBody": item.body(),
                    "MessageAttributes": {
                        "event_id": {"DataType": "String", "StringValue": item.event_id},
                        "detail_type": {"DataType": "String", "StringValue": item.detail_type},
                    },
                } for i, item in pending.items()])
            except (ClientError, BotoCoreError):
                continue
            pending = {int(f["Id"]): pending[int(f["Id"])] for f in answer.get("Failed", [])
                       if int(f["Id"]) in pending}
            if not pending:
                return set()
        return set(pending)

    # --- the replay's side ------------------------------------------------------------------------

    def receive(self, max_messages: int) -> list[tuple[str, str]]:
        answer = self._sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=min(MAX_BATCH, max_messages),
                                           WaitTimeSeconds=self._wait)
        return [(m["ReceiptHandle"], m["Body"]) for m in answer.get("Messages", [])]

    def delete(self, handles: Sequence[str]) -> set[str]:
        failed: set[str] = set()
        for start in range(0, len(handles), MAX_BATCH):
            chunk = list(handles[start:start + MAX_BATCH])
            try:
                answer = self._sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(k), "ReceiptHandle": h} for k, h in enumerate(chunk)])
            except (ClientError, BotoCoreError):
                failed.update(chunk)  # they come back after the visibility timeout: replayed twice at worst
                continue
            failed.update(chunk[int(f["Id"])] for f in answer.get("Failed", []))
        return failed

    def release(self, handles: Sequence[str]) -> None:
        for start in range(0, len(handles), MAX_BATCH):
            chunk = list(handles[start:start + MAX_BATCH])
            with contextlib.suppress(ClientError, BotoCoreError):  # else back after the visibility timeout
                self._sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(k), "ReceiptHandle": h, "VisibilityTimeout": 0} for k, h in enumerate(chunk)])
