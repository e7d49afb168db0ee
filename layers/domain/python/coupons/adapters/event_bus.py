"""EventBridge PutEvents for the outbox, and DynamoDB stream records as `Change`s.

PutEvents takes at most 10 entries per call and may refuse the whole call (throttling) or some
entries (`FailedEntryCount`). The refused ones are retried alone, with exponential back-off and
jitter, until the batch's time budget (`coupons.outbox.RetryPolicy`) runs out; whatever is still
refused is returned by index with its last error code, for the caller to park. Entries refused for
good (a malformed detail, no permission) are returned at once. After a batch gave up, the bus is
"degraded" for a while (`BusHealth`): the next batches try briefly and the rest of a batch is not
attempted once a call gave up, so a throttled EventBridge costs seconds, not the Lambda's timeout.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..events import Change, ContractEvent
from ..outbox import BusHealth, RetryPolicy, transient_entry_error
from .dynamo import error_code, from_item, is_transient

MAX_ENTRIES = 10  # PutEvents' limit per call
MAX_ENTRY_BYTES = 256 * 1024


class EventBus:
    def __init__(self, events_client: Any, bus_name: str, *, policy: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        self._client = events_client
        self._bus = bus_name
        self.policy = policy or RetryPolicy()
        self.health = BusHealth(self.policy, clock)
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter

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

    def put(self, events: Sequence[ContractEvent], *, budget_seconds: float | None = None) -> dict[int, str]:
        """Publish in calls of 10; the indexes still refused when the budget ran out, with the last error."""
        deadline = self._clock() + self.health.budget(budget_seconds)
        refused: dict[int, str] = {}
        gave_up: str | None = None
        for start in range(0, len(events), MAX_ENTRIES):
            indexes = range(start, min(start + MAX_ENTRIES, len(events)))
            if gave_up is not None:  # the bus refused until the deadline: park the rest without a call
                refused.update(dict.fromkeys(indexes, gave_up))
                continue
            failed, bus_trouble = self._put_batch({i: self.entry(events[i]) for i in indexes}, deadline)
            refused.update(failed)
            if bus_trouble:
                gave_up = bus_trouble
        if gave_up is not None:
            self.health.gave_up()
        elif events:
            self.health.recovered()
        return refused

    def _put_batch(self, entries: dict[int, dict[str, Any]], deadline: float) -> tuple[dict[int, str], str | None]:
        """One call's entries: (refused index -> error code, the transient error it gave up on, if any)."""
        pending = dict(entries)
        refused: dict[int, str] = {}
        attempt = 0
        while True:
            order = list(pending)
            last: dict[int, str] = {}
            try:
                response = self._client.put_events(Entries=[pending[i] for i in order])
            except (ClientError, BotoCoreError) as error:
                code = error_code(error) or type(error).__name__
                if not (is_transient(error) or transient_entry_error(code)):
                    # A request EventBridge will never take (bad request, no permission): no retrying.
                    refused.update(dict.fromkeys(order, code))
                    return refused, code
                last = dict.fromkeys(order, code)
            else:
                results = response.get("Entries", [])
                for i, result in zip(order, results, strict=False):
                    if result.get("ErrorCode") or not result.get("EventId"):
                        last[i] = str(result.get("ErrorCode") or "NoEventId")
                last.update(dict.fromkeys(order[len(results):], "ShortAnswer"))  # missing answers: failed
            for i, code in list(last.items()):
                if not transient_entry_error(code) and code not in ("NoEventId", "ShortAnswer"):
                    refused[i] = code  # refused for good (e.g. MalformedDetail): park it now
                    del last[i]
            pending = {i: pending[i] for i in last}
            if not pending:
                return refused, None
            wait = self.policy.delay(attempt, self._jitter())
            attempt += 1
            if self._clock() + wait > deadline:
                refused.update(last)
                return refused, sorted(set(last.values()))[0]
            self._sleep(wait)


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
