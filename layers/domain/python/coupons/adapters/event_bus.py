"""EventBridge PutEvents for the outbox, and DynamoDB stream records as `Change`s.

PutEvents takes at most 10 entries per call and may accept some and refuse
others (`FailedEntryCount`); the refused ones are retried a few times with
backoff, and whatever still fails is reported back by index so the stream
batch can be retried from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..events import Change, ContractEvent
from .dynamo import from_item, is_transient

MAX_ENTRIES = 10  # PutEvents' limit per call
MAX_ENTRY_BYTES = 256 * 1024


class EventBus:
    def __init__(self, events_client: Any, bus_name: str, *, attempts: int = 3,
                 backoff_seconds: float = 0.05, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = events_client
        self._bus = bus_name
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep

    def entry(self, event: ContractEvent) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Source": event.source,
            "DetailType": event.detail_type,
            "Detail": event.detail_json(),
            "EventBusName": self._bus,
        }
        if event.at is not None:
            entry["Time"] = event.at
        return entry

    def put(self, events: Sequence[ContractEvent]) -> set[int]:
        """Publish in calls of 10; the indexes of the events that still failed after the retries."""
        failed: set[int] = set()
        for start in range(0, len(events), MAX_ENTRIES):
            indexes = list(range(start, min(start + MAX_ENTRIES, len(events))))
            failed |= self._put_batch({i: self.entry(events[i]) for i in indexes})
        return failed

    def _put_batch(self, entries: dict[int, dict[str, Any]]) -> set[int]:
        pending = dict(entries)
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._backoff * 2 ** (attempt - 1))
            order = list(pending)
            try:
                response = self._client.put_events(Entries=[pending[i] for i in order])
            except (ClientError, BotoCoreError) as error:
                if isinstance(error, ClientError) and not is_transient(error) and \
                        error.response.get("Error", {}).get("Code") not in ("InternalException",):
                    return set(pending)  # a request EventBridge will never take: no point retrying
                continue
            results = response.get("Entries", [])
            if not response.get("FailedEntryCount") and len(results) == len(order):
                return set()
            pending = {i: pending[i] for i, result in zip(order, results, strict=False)
                       if result.get("ErrorCode") or not result.get("EventId")}
            if len(results) < len(order):  # a short answer: treat the missing ones as failed
                pending.update({i: entries[i] for i in order[len(results):]})
            if not pending:
                return set()
        return set(pending)


# --- stream records -----------------------------------------------------------------------------


def table_of(event_source_arn: str, names: Mapping[str, str]) -> str | None:
    """The logical table ("coupons", "guards", "jobs") of a stream ARN, by its physical name."""
    # arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>
    _, _, rest = event_source_arn.partition(":table/")
    physical = rest.split("/stream/", 1)[0]
    for logical, name in names.items():
        if name == physical:
            return logical
    return None


def _when(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return None


def change_of(record: Mapping[str, Any], table_names: Mapping[str, str]) -> Change:
    """One Lambda DynamoDB stream record (DynamoDB JSON images) as a `Change`."""
    stream = record.get("dynamodb") or {}
    return Change(
        event_id=str(record.get("eventID", "")),
        event_name=str(record.get("eventName", "")),
        sequence_number=str(stream.get("SequenceNumber", "")),
        table=table_of(str(record.get("eventSourceARN", "")), table_names),
        old=from_item(stream.get("OldImage")),
        new=from_item(stream.get("NewImage")),
        at=_when(stream.get("ApproximateCreationDateTime")),
    )
