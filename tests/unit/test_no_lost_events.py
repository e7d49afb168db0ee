"""Issue 17, pure: no committed change's event is lost whatever EventBridge and SQS do, and the
local stream poller reorders records across items but never within one (hypothesis)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from coupons.adapters.event_bus import EventBus
from coupons.events import Change, ContractEvent, to_event
from coupons.outbox import Parked, RetryPolicy, publish_batch, replay
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = "2026-05-01T10:00:00.000000Z"


def redemption_change(i: int) -> Change:
    new = {"pk": f"REDEMPTION#r-{i}", "sk": "REDEMPTION", "entity": "redemption", "redemption_id": f"r-{i}",
           "coupon_id": f"c-{i % 3}", "order_id": f"o-{i}", "user_id": "u-1", "channel": "web",
           "discount_amount": 100 + i, "currency": "USD", "status": "redeemed", "redeemed_at": T0}
    return Change(event_id=f"ev-{i}", event_name="INSERT", sequence_number=f"{1000 + i}", table="coupons",
                  new=new, at=datetime(2026, 5, 1, 10, tzinfo=UTC))


def counter_change(i: int) -> Change:
    return Change(event_id=f"ev-{i}", event_name="MODIFY", sequence_number=f"{1000 + i}", table="coupons",
                  old={"pk": "CODE#x", "sk": "COUPON", "redeemed_count": 1},
                  new={"pk": "CODE#x", "sk": "COUPON", "redeemed_count": 2})


class ScriptedEvents:
    """PutEvents whose every answer is drawn: a throttled call, or a refusal per entry."""

    def __init__(self, rng: random.Random, throttle: float, refuse: float) -> None:
        self.rng, self.throttle, self.refuse = rng, throttle, refuse
        self.accepted: list[str] = []  # event_ids the bus took, in order

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        assert len(Entries) <= 10
        if self.rng.random() < self.throttle:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "PutEvents")
        results = []
        for entry in Entries:
            if self.rng.random() < self.refuse:
                results.append({"ErrorCode": "InternalFailure"})
            else:
                self.accepted.append(json.loads(entry["Detail"])["event_id"])
                results.append({"EventId": "e"})
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Parking:
    def __init__(self, rng: random.Random, refuse: float) -> None:
        self.rng, self.refuse = rng, refuse
        self.parked: list[Parked] = []

    def park(self, items: Sequence[Parked]) -> set[int]:
        failed = {i for i in range(len(items)) if self.rng.random() < self.refuse}
        self.parked += [item for i, item in enumerate(items) if i not in failed]
        return failed


@settings(max_examples=150, deadline=None)
@given(kinds=st.lists(st.booleans(), min_size=1, max_size=60), seed=st.integers(0, 2**32 - 1),
       throttle=st.sampled_from([0.0, 0.3, 0.9, 1.0]), refuse=st.sampled_from([0.0, 0.2, 0.7, 1.0]),
       park_refuse=st.sampled_from([0.0, 0.0, 0.5, 1.0]), budget=st.sampled_from([0.0, 0.5, 10.0]))
def test_every_event_of_a_batch_is_published_parked_or_sent_back_to_the_stream(
        kinds: list[bool], seed: int, throttle: float, refuse: float, park_refuse: float, budget: float) -> None:
    rng = random.Random(seed)
    changes = [redemption_change(i) if publishes else counter_change(i) for i, publishes in enumerate(kinds)]
    client, clock, parking = ScriptedEvents(rng, throttle, refuse), Clock(), Parking(rng, park_refuse)
    bus = EventBus(client, "coupons", policy=RetryPolicy(budget_seconds=budget), clock=clock, sleep=clock.sleep,
                   jitter=rng.random)

    outcome = publish_batch(changes, bus, parking)

    events = {c.event_id: to_event(c) for c in changes}
    wanted = [c for c in changes if events[c.event_id] is not None]
    accepted, parked = set(client.accepted), {p.event_id for p in parking.parked}
    sent_back = set(outcome.failed_sequence_numbers)
    for change in wanted:
        # Nothing is lost: each event is on the bus, in the queue, or its record goes back to the stream
        assert change.event_id in accepted or change.event_id in parked or change.sequence_number in sent_back
    # What goes back is a suffix of the batch that starts at an event neither published nor parked
    if sent_back:
        first = changes.index(next(c for c in changes if c.sequence_number in sent_back))
        assert outcome.failed_sequence_numbers == [c.sequence_number for c in changes[first:]]
        assert changes[first].event_id not in accepted | parked
    # A parked event is one the bus did not take, with its exact entry
    assert not parked & accepted
    for item in parking.parked:
        event = events[item.event_id]
        assert event is not None
        assert (item.source, item.detail_type, item.detail) == ("coupons", event.detail_type, event.detail_json())
        assert item.event().detail_json() == event.detail_json() and item.event().at == event.at
    assert (outcome.published, outcome.parked, outcome.skipped) == (len(accepted), len(parked),
                                                                     len(changes) - len(wanted))
    # The retries stay within the budget (plus one last wait at most)
    assert clock.now <= budget + RetryPolicy().max_delay_seconds


class FakeQueue:
    """SQS semantics that matter here: receive hides a message until deleted, released or timed out."""

    def __init__(self, bodies: list[str]) -> None:
        self.messages = dict(enumerate(bodies))
        self.in_flight: set[int] = set()
        self.deleted: list[str] = []
        self.published: set[str] = set()  # set by the test's bus: what was on the bus at each delete

    def receive(self, max_messages: int) -> list[tuple[str, str]]:
        visible = [k for k in self.messages if k not in self.in_flight][:max_messages]
        self.in_flight.update(visible)
        return [(str(k), self.messages[k]) for k in visible]

    def delete(self, handles: Sequence[str]) -> set[str]:
        for handle in handles:
            body = self.messages.pop(int(handle))
            self.in_flight.discard(int(handle))
            event_id = json.loads(body)["event_id"]
            assert event_id in self.published, "a message is deleted only once its event is on the bus"
            self.deleted.append(event_id)
        return set()

    def release(self, handles: Sequence[str]) -> None:
        self.in_flight.difference_update(int(h) for h in handles)

    def visibility_timeout(self) -> None:
        self.in_flight.clear()


class RefusingBus:
    def __init__(self, rng: random.Random, refuse: float, queue: FakeQueue) -> None:
        self.rng, self.refuse, self.queue = rng, refuse, queue
        self.bodies: dict[str, set[str]] = {}

    def put(self, events: Sequence[ContractEvent], *, budget_seconds: float | None = None) -> dict[int, str]:
        refused = {}
        for i, event in enumerate(events):
            if self.rng.random() < self.refuse:
                refused[i] = "ThrottlingException"
            else:
                self.queue.published.add(event.detail["event_id"])
                self.bodies.setdefault(event.detail["event_id"], set()).add(
                    json.dumps([event.source, event.detail_type, event.detail_json()]))
        return refused


@settings(max_examples=120, deadline=None)
@given(n=st.integers(0, 45), repeats=st.integers(0, 5), malformed=st.integers(0, 3),
       seed=st.integers(0, 2**32 - 1), refuse=st.sampled_from([0.0, 0.3, 0.8]))
def test_replay_publishes_every_parked_event_and_deletes_nothing_before_it_is_on_the_bus(
        n: int, repeats: int, malformed: int, seed: int, refuse: float) -> None:
    rng = random.Random(seed)
    moment = datetime(2026, 5, 1, 12, tzinfo=UTC)
    items = [Parked.of(e, c, "ThrottlingException", moment)
             for c in (redemption_change(i) for i in range(n)) if (e := to_event(c)) is not None]
    bodies = [p.body() for p in items] + [items[i % n].body() for i in range(repeats if n else 0)]
    bodies += ["{not json"] * malformed
    rng.shuffle(bodies)
    queue = FakeQueue(bodies)
    bus = RefusingBus(rng, refuse, queue)
    runs = 0
    while True:
        outcome = replay(queue, bus, out_of_time=lambda: False)
        runs += 1
        queue.visibility_timeout()
        if outcome.complete or runs > 400:
            break
        bus.refuse = max(0.0, bus.refuse - 0.1)  # the bus recovers, slowly
    assert outcome.complete
    # Every parked event reached the bus, always with the body it was parked with
    assert set(bus.bodies) == {p.event_id for p in items}
    for item in items:
        assert bus.bodies[item.event_id] == {json.dumps([item.source, item.detail_type, item.detail])}
    # Only the malformed messages stay (the queue's redrive takes them to its DLQ)
    assert sorted(queue.messages.values()) == ["{not json"] * malformed


def test_a_parked_event_round_trips_through_its_message_body() -> None:
    change = redemption_change(7)
    event = to_event(change)
    assert event is not None
    item = Parked.of(event, change, "ThrottlingException", datetime(2026, 5, 1, 12, tzinfo=UTC))
    again = Parked.from_body(item.body())
    assert again == item
    assert again.event().detail_json() == event.detail_json() and again.event().at == event.at
    for bad in ("[]", "{}", json.dumps({**json.loads(item.body()), "detail": "[1]"}),
                json.dumps({**json.loads(item.body()), "event_id": "other"})):
        try:
            Parked.from_body(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


# --- the local stack's stream poller: lanes --------------------------------------------------------


class FakeStreams:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def describe_stream(self, StreamArn: str) -> dict[str, Any]:
        return {"StreamDescription": {"Shards": [{"ShardId": "shard-1"}]}}

    def get_shard_iterator(self, **_: Any) -> dict[str, Any]:
        return {"ShardIterator": "0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        start = int(ShardIterator)
        page = self.records[start:start + Limit]
        return {"Records": page, "NextShardIterator": str(start + len(page))}


class FakeFunctions:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def invoke(self, function: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.batches.append([rec["eventID"] for rec in event["Records"]])
        return {"batchItemFailures": []}


class FakeStack:
    def __init__(self) -> None:
        import threading

        self.functions = FakeFunctions()
        self.stopping = threading.Event()


def raw_record(i: int, pk: str) -> dict[str, Any]:
    return {"eventID": f"e{i}", "eventName": "INSERT", "awsRegion": "us-east-1",
            "dynamodb": {"SequenceNumber": f"{100 + i}", "Keys": {"pk": {"S": pk}, "sk": {"S": "X"}}}}


def deliveries(pks: list[str], lanes: int, seed: int) -> tuple[list[str], list[list[str]]]:
    from coupons_infra import resources as r
    from coupons_local.workers_events import StreamPoller

    records = [raw_record(i, pk) for i, pk in enumerate(pks)]
    stack = FakeStack()
    poller = StreamPoller(stack, r.function("publisher"), "arn:stream", "dlq", lanes=lanes,  # type: ignore[arg-type]
                          rng=random.Random(seed), streams=FakeStreams(records), sqs=object())
    for _ in range(10 * len(records) + 10):
        if not poller.poll_once() and poller.iterators.get("shard-1") == str(len(records)):
            break
    order = [event_id for batch in stack.functions.batches for event_id in batch]
    return order, stack.functions.batches


@settings(max_examples=80, deadline=None)
@given(pks=st.lists(st.sampled_from([f"CODE#{k}" for k in "abcdefgh"]), min_size=1, max_size=250),
       lanes=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_the_local_stream_keeps_each_items_order_and_delivers_every_record_once(
        pks: list[str], lanes: int, seed: int) -> None:
    order, batches = deliveries(pks, lanes, seed)
    assert sorted(order) == sorted(f"e{i}" for i in range(len(pks)))  # each record exactly once
    for pk in set(pks):
        mine = [f"e{i}" for i, p in enumerate(pks) if p == pk]
        assert [e for e in order if e in set(mine)] == mine  # one item's records in commit order
    assert all(len(batch) <= 100 for batch in batches)
    if lanes == 1:
        assert order == [f"e{i}" for i in range(len(pks))]  # one lane: commit order, as before


def test_the_local_stream_delivers_across_items_in_another_order_than_commit_order() -> None:
    pks = [f"CODE#{i % 16}" for i in range(400)]
    orders = {tuple(deliveries(pks, 4, seed)[0]) for seed in range(5)}
    commit = tuple(f"e{i}" for i in range(400))
    assert commit not in orders and len(orders) > 1


# --- the local stack's PutEvents faults ---------------------------------------------------------------


def test_the_fault_switch_reads_a_throttle_window_a_refusal_rate_and_a_seed() -> None:
    import pytest
    from coupons_local.faults import PutEventsFaults

    faults = PutEventsFaults.parse("throttle:15s, fail=0.05,seed=7")
    assert (faults.throttle_seconds, faults.fail_rate, faults.seed) == (15.0, 0.05, 7)
    for bad in ("throttle", "fail=1.5", "slow=3", "throttle=-1"):
        with pytest.raises(ValueError):
            PutEventsFaults.parse(bad)
    # The window opens on the first PutEvents call and lasts the given time
    now = [100.0]
    faults = PutEventsFaults(throttle_seconds=15, clock=lambda: now[0])
    assert faults.throttling()
    now[0] = 114.9
    assert faults.throttling()
    now[0] = 115.0
    assert not faults.throttling()
