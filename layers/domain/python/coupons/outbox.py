"""Publishing a stream batch so that no committed change's event is lost, and replaying what was not.

Pure logic behind three ports (the bus, the undelivered-events queue, a clock):

1. `publish_batch` maps each change of a stream batch to its event (`coupons.events`) and hands
   them to the bus, which retries refused entries with back-off for a bounded time
   (`RetryPolicy`; `BusHealth` makes a bus that kept refusing lately give up quickly, so a
   throttled EventBridge does not hold the stream back).
2. Whatever the bus still refused is *parked*: its full entry (source, detail type, the exact
   detail JSON, time) and its `event_id` go to the undelivered-events queue. The stream moves on.
3. Only the records whose event could neither be published nor parked are reported failed, from
   the first of them to the end of the batch (the stream retries a shard from its lowest failed
   sequence number, so nothing after it is skipped; a retry re-sends events with the same `event_id`).
4. `replay` drains the queue into the bus, deleting a message only once its event went through.

Delivery is therefore at least once: a consumer drops repeats by `event_id`, and every `event_id`
always comes with the same body. EventBridge does not promise order, and a parked event arrives
after later ones: consumers order by the detail's timestamps, not by arrival.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .events import Change, ContractEvent, to_event

# --- retry policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How long one batch keeps retrying refused entries, and how the waits grow."""

    budget_seconds: float = 10.0  # per batch, while the bus has been healthy
    degraded_budget_seconds: float = 1.0  # per batch, while it kept refusing lately
    cooldown_seconds: float = 30.0  # how long "lately" lasts after a batch gave up
    first_delay_seconds: float = 0.05
    max_delay_seconds: float = 2.0

    def delay(self, attempt: int, jitter: float) -> float:
        """The wait before retry `attempt + 1`: exponential, capped, between half and all of the step."""
        step = min(self.max_delay_seconds, self.first_delay_seconds * 2 ** min(attempt, 30))
        return step * (0.5 + max(0.0, min(1.0, jitter)) / 2)


class BusHealth:
    """Per container: after a batch gave up on the bus, the next ones try briefly, then park."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.degraded_until = 0.0

    def degraded(self) -> bool:
        return self.clock() < self.degraded_until

    def budget(self, limit: float | None = None) -> float:
        budget = self.policy.degraded_budget_seconds if self.degraded() else self.policy.budget_seconds
        return max(0.0, budget if limit is None else min(budget, limit))

    def gave_up(self) -> None:
        self.degraded_until = self.clock() + self.policy.cooldown_seconds

    def recovered(self) -> None:
        self.degraded_until = 0.0


def transient_entry_error(code: str) -> bool:
    """Entry error codes worth retrying (throttling, internal failures); the others never go through."""
    return any(word in code for word in ("Throttl", "Internal", "Unavailable", "Timeout", "LimitExceeded"))


# --- parked events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parked:
    """An event the bus did not take: everything PutEvents needs, its event_id, and where it came from."""

    event_id: str
    source: str
    detail_type: str
    detail: str  # the exact Detail JSON that was refused
    time: str | None  # ISO-8601 UTC, the entry's Time
    reason: str  # the last error code
    table: str | None = None
    sequence_number: str = ""
    parked_at: str = ""

    @classmethod
    def of(cls, event: ContractEvent, change: Change | None, reason: str, now: datetime) -> Parked:
        return cls(
            event_id=str(event.detail.get("event_id", "")),
            source=event.source,
            detail_type=event.detail_type,
            detail=event.detail_json(),
            time=event.at.astimezone(UTC).isoformat() if event.at else None,
            reason=reason or "Unknown",
            table=change.table if change else None,
            sequence_number=change.sequence_number if change else "",
            parked_at=now.astimezone(UTC).isoformat(),
        )

    def body(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_body(cls, text: str) -> Parked:
        """A queue message back as a `Parked`; ValueError when it is not one."""
        try:
            data = json.loads(text)
            detail = json.loads(data["detail"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a parked event: {error}") from error
        if not isinstance(data, dict) or not isinstance(detail, dict) or \
                not all(isinstance(data.get(k), str) and data.get(k) for k in ("event_id", "source", "detail_type")):
            raise ValueError("not a parked event: event_id, source, detail_type and a JSON object detail needed")
        if detail.get("event_id") != data["event_id"]:
            raise ValueError("not a parked event: the detail's event_id differs")
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})

    def event(self) -> ContractEvent:
        at = datetime.fromisoformat(self.time) if self.time else None
        return ContractEvent(self.detail_type, json.loads(self.detail), at=at, source=self.source)


# --- ports ----------------------------------------------------------------------------------------


class Bus(Protocol):
    def put(self, events: Sequence[ContractEvent], *, budget_seconds: float | None = None) -> dict[int, str]:
        """Publish (retrying within the budget); the indexes still refused, with the last error code."""
        ...


class ParkingLot(Protocol):
    def park(self, items: Sequence[Parked]) -> set[int]:
        """Send to the undelivered-events queue; the indexes that could not be sent."""
        ...


class ParkedSource(Protocol):
    def receive(self, max_messages: int) -> list[tuple[str, str]]:
        """Up to max_messages (receipt handle, body) pairs; [] when the queue is empty."""
        ...

    def delete(self, handles: Sequence[str]) -> set[str]:
        """Delete; the handles that could not be deleted."""
        ...

    def release(self, handles: Sequence[str]) -> None:
        """Make these messages visible again now (they were not replayed)."""
        ...


# --- publishing a stream batch --------------------------------------------------------------------


@dataclass
class BatchOutcome:
    published: int = 0
    parked: int = 0
    skipped: int = 0  # changes that publish nothing
    reasons: dict[str, int] = field(default_factory=dict)  # why events were parked, by error code
    failed_sequence_numbers: list[str] = field(default_factory=list)  # back to the stream


def publish_batch(changes: Sequence[Change], bus: Bus, parking: ParkingLot, *,
                  budget_seconds: float | None = None,
                  now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> BatchOutcome:
    """Publish the batch's events (in stream order, 10 per call); park what the bus refused.

    Returns which records must go back to the stream: only when an event could neither be
    published nor parked, and then that record and every later one.
    """
    outcome = BatchOutcome()
    positions: list[int] = []
    pending: list[ContractEvent] = []
    for position, change in enumerate(changes):
        event = to_event(change)
        if event is None:
            outcome.skipped += 1
            continue
        positions.append(position)
        pending.append(event)
    if not pending:
        return outcome
    refused = bus.put(pending, budget_seconds=budget_seconds)
    outcome.published = len(pending) - len(refused)
    if not refused:
        return outcome
    order = sorted(refused)
    moment = now()
    items = [Parked.of(pending[i], changes[positions[i]], refused[i], moment) for i in order]
    not_parked = parking.park(items)
    for k, i in enumerate(order):
        if k not in not_parked:
            outcome.parked += 1
            outcome.reasons[refused[i]] = outcome.reasons.get(refused[i], 0) + 1
    if not_parked:
        first = min(positions[order[k]] for k in not_parked)
        outcome.failed_sequence_numbers = [c.sequence_number for c in changes[first:]]
    return outcome


# --- replay ---------------------------------------------------------------------------------------


@dataclass
class ReplayOutcome:
    replayed: int = 0  # published and deleted
    duplicates: int = 0  # a second message for an event_id this run already published: deleted
    malformed: int = 0  # not a parked event: left alone (the queue's redrive moves it to the DLQ)
    failed: int = 0  # the bus refused them: left in the queue, visible again
    complete: bool = False  # the queue looked empty at the end
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {k: v for k, v in asdict(self).items() if k != "last_error"}
        if self.failed:
            answer["error"] = {"code": "BUS_UNAVAILABLE",
                               "message": f"EventBridge refused {self.failed} event(s) ({self.last_error}); "
                                          "they stay in the queue: run the replay again later"}
        return answer


def replay(source: ParkedSource, bus: Bus, *, out_of_time: Callable[[], bool],
           batch_size: int = 10) -> ReplayOutcome:
    """Drain the undelivered-events queue into the bus until it is empty, the bus refuses, or time is up.

    A message is deleted only after its event was published; a refused one is made visible again
    and the run stops there (the bus is unwell: no point taking every message off the queue).
    """
    outcome = ReplayOutcome()
    published_ids: set[str] = set()
    while not out_of_time():
        messages = source.receive(batch_size)
        if not messages:
            outcome.complete = True
            break
        parsed: list[tuple[str, Parked]] = []
        repeats: list[tuple[str, str]] = []  # (handle, event_id) of a second message for an event
        for handle, body in messages:
            try:
                item = Parked.from_body(body)
            except ValueError:
                outcome.malformed += 1
                continue
            if item.event_id in published_ids or any(p.event_id == item.event_id for _, p in parsed):
                repeats.append((handle, item.event_id))
            else:
                parsed.append((handle, item))
        refused = bus.put([item.event() for _, item in parsed]) if parsed else {}
        published_ids.update(item.event_id for k, (_, item) in enumerate(parsed) if k not in refused)
        done = [handle for k, (handle, _) in enumerate(parsed) if k not in refused]
        extra = [handle for handle, event_id in repeats if event_id in published_ids]
        undeleted = source.delete(done + extra)
        outcome.replayed += len([h for h in done if h not in undeleted])
        outcome.duplicates += len([h for h in extra if h not in undeleted])
        if refused:
            outcome.failed += len(refused)
            outcome.last_error = sorted(set(refused.values()))[0]
            source.release([parsed[k][0] for k in refused] + [h for h, _ in repeats if h not in extra])
            break
    return outcome

