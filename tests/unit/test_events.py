"""The outbox mapping (stream change -> contract event) and in-order batch publishing, pure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError
from coupons import events
from coupons.adapters.event_bus import EventBus, change_of, table_of
from coupons.events import Change, ContractEvent, to_event
from coupons.outbox import Parked, RetryPolicy, publish_batch
from hypothesis import given, settings
from hypothesis import strategies as st

CODE_HASH = "9f" * 32
CIPHERTEXT = "c2VjcmV0LWNvZGUtY2lwaGVydGV4dA=="
T0, T1 = "2026-05-01T10:00:00.000000Z", "2026-05-01T11:00:00.000000Z"


def coupon(**over: Any) -> dict[str, Any]:
    item = {
        "pk": f"CODE#{CODE_HASH}", "sk": "COUPON", "entity": "coupon", "coupon_id": "c-1",
        "code_hash": CODE_HASH, "code_ct": CIPHERTEXT, "key_version": 1, "status": "active",
        "discount_type": "PERCENT", "discount_value": Decimal("12.5"), "currency": None,
        "max_uses": 10, "uses_per_user": 1, "channels": ["web", "pos"], "campaign_id": "spring",
        "starts_at": T0, "expires_at": "2026-06-01T00:00:00.000000Z", "metadata": "{}",
        "redeemed_count": 0, "created_at": T0, "updated_at": T0, "created_by": "admin-1",
        "updated_by": "admin-1", "gsi1pk": "STATUS#active", "gsi1sk": f"{T0}#c-1",
        "gsi3pk": "EXPIRY#2", "gsi3sk": "2026-06-01T00:00:00.000000Z#c-1",
    }
    item.update(over)
    return item


def pointer(**over: Any) -> dict[str, Any]:
    return {"pk": "COUPON#c-1", "sk": "COUPON", "entity": "pointer", "coupon_id": "c-1", "code_hash": CODE_HASH,
            **over}


def redemption(**over: Any) -> dict[str, Any]:
    item = {
        "pk": "REDEMPTION#r-1", "sk": "REDEMPTION", "entity": "redemption", "redemption_id": "r-1",
        "coupon_id": "c-1", "order_id": "o-1", "user_id": "u-1", "ip": "203.0.113.9", "user_agent": "ua",
        "channel": "web", "discount_amount": 1250, "currency": "USD", "campaign_id": "spring",
        "status": "redeemed", "redeemed_at": T1, "code_hash": CODE_HASH,
        "gsi3pk": "DAY#2026-05-01#3", "gsi3sk": f"{T1}#r-1",
    }
    item.update(over)
    return item


def change(name: str, old: dict[str, Any] | None, new: dict[str, Any] | None, *, table: str | None = "coupons",
           seq: str = "1") -> Change:
    return Change(event_id=f"ev-{seq}", event_name=name, sequence_number=seq, table=table, old=old, new=new)


def only(event: ContractEvent | None) -> ContractEvent:
    assert event is not None
    assert CODE_HASH not in event.detail_json() and CIPHERTEXT not in event.detail_json()
    return event


# --- coupons --------------------------------------------------------------------------------------


def test_given_a_new_coupon_item_when_inserted_then_coupon_created_with_actor_and_ids() -> None:
    event = only(to_event(change("INSERT", None, coupon())))
    assert event.detail_type == "CouponCreated"
    assert event.detail["coupon_id"] == "c-1" and event.detail["campaign_id"] == "spring"
    assert event.detail["actor"] == "admin-1"
    assert event.detail["discount_value"] == 12.5
    assert event.detail["event_id"] == "ev-1"
    assert "ip" not in event.detail and "metadata" not in event.detail


def test_a_coupon_moved_to_a_new_code_is_an_update_not_a_creation() -> None:
    moved = coupon(updated_at=T1, updated_by="admin-2")
    event = only(to_event(change("INSERT", None, moved)))
    assert event.detail_type == "CouponUpdated"
    assert event.detail["changed"] == ["code"] and event.detail["actor"] == "admin-2"
    # ... and the old item's removal publishes nothing
    assert to_event(change("REMOVE", coupon(), None)) is None


def test_an_edit_names_the_changed_fields_and_the_editor() -> None:
    new = coupon(discount_value=20, max_uses=50, updated_at=T1, updated_by="admin-2")
    event = only(to_event(change("MODIFY", coupon(), new)))
    assert event.detail_type == "CouponUpdated"
    assert event.detail["changed"] == ["discount_value", "max_uses"]
    assert event.detail["actor"] == "admin-2" and event.detail["updated_at"] == T1


def test_pausing_reports_the_previous_status() -> None:
    new = coupon(status="disabled", gsi1pk="STATUS#disabled", updated_at=T1)
    event = only(to_event(change("MODIFY", coupon(), new)))
    assert event.detail["changed"] == ["status"]
    assert (event.detail["status"], event.detail["previous_status"]) == ("disabled", "active")


def test_a_key_rotation_re_encryption_is_a_code_change_without_the_code() -> None:
    new = coupon(code_ct="bmV3LWNpcGhlcnRleHQ=", key_version=2, updated_at=T1)
    event = only(to_event(change("MODIFY", coupon(), new)))
    assert event.detail["changed"] == ["code"]
    assert "bmV3LWNpcGhlcnRleHQ=" not in event.detail_json()


@pytest.mark.parametrize("counters", [{"redeemed_count": 1}, {"redeemed_count": 0, "rolled_back_count": 3}])
def test_counter_only_changes_publish_nothing(counters: dict[str, Any]) -> None:
    old = coupon(redeemed_count=2)
    assert to_event(change("MODIFY", old, coupon(**counters))) is None


def test_the_sweep_marking_a_coupon_expired_publishes_coupon_expired() -> None:
    new = coupon(status="expired", gsi1pk="STATUS#expired", gsi3pk=None, gsi3sk=None, expired_at=T1,
                 updated_at=T1, updated_by="system:expiry-sweep")
    event = only(to_event(change("MODIFY", coupon(), new)))
    assert event.detail_type == "CouponExpired"
    assert event.detail["coupon_id"] == "c-1" and event.detail["expired_at"] == T1
    assert event.detail["actor"] == "system:expiry-sweep"


def test_an_expired_coupon_edited_again_is_an_update() -> None:
    old = coupon(status="expired")
    event = only(to_event(change("MODIFY", old, coupon(status="expired", max_uses=99, updated_at=T1))))
    assert event.detail_type == "CouponUpdated"


def test_deletion_is_published_from_the_pointer_with_who_deleted_it() -> None:
    assert to_event(change("REMOVE", coupon(), None)) is None
    assert to_event(change("INSERT", None, pointer())) is None
    deleted = pointer(deleted_at=T1, deleted_by="admin-3", campaign_id="spring")
    event = only(to_event(change("MODIFY", pointer(), deleted)))
    assert event.detail_type == "CouponDeleted"
    assert event.detail == {"coupon_id": "c-1", "campaign_id": "spring", "actor": "admin-3",
                            "deleted_at": T1, "event_id": "ev-1"}
    # a re-code moves the pointer's hash: no event
    assert to_event(change("MODIFY", pointer(), pointer(code_hash="ab" * 32))) is None


# --- redemptions ----------------------------------------------------------------------------------


def test_a_redemption_publishes_coupon_redeemed_with_amount_channel_and_user() -> None:
    event = only(to_event(change("INSERT", None, redemption())))
    assert event.detail_type == "CouponRedeemed"
    assert {k: event.detail[k] for k in ("redemption_id", "coupon_id", "order_id", "user_id", "channel",
                                         "discount_amount", "currency", "campaign_id", "actor")} == {
        "redemption_id": "r-1", "coupon_id": "c-1", "order_id": "o-1", "user_id": "u-1", "channel": "web",
        "discount_amount": 1250, "currency": "USD", "campaign_id": "spring", "actor": "u-1"}
    assert "ip" not in event.detail and "user_agent" not in event.detail


def test_a_redemption_a_server_made_names_the_server_as_its_actor() -> None:
    # Issue 12: a shop backend redeemed for customer u-1 (or for a guest: no user)
    for user in ("u-1", None):
        event = only(to_event(change("INSERT", None, redemption(user_id=user, caller="server",
                                                                client_id="shop-backend"))))
        assert (event.detail["actor"], event.detail["user_id"]) == ("client:shop-backend", user)


def test_a_rollback_publishes_once_on_the_transition_only() -> None:
    rolled = redemption(status="rolled_back", rolled_back_at=T1, rolled_back_by="admin-1")
    event = only(to_event(change("MODIFY", redemption(), rolled)))
    assert event.detail_type == "RedemptionRolledBack"
    assert event.detail["actor"] == "admin-1" and event.detail["discount_amount"] == 1250
    assert to_event(change("MODIFY", rolled, {**rolled, "note": "x"})) is None


def test_other_checkout_items_publish_nothing() -> None:
    for item in ({"pk": f"CODE#{CODE_HASH}", "sk": "USER#u-1", "count": 1},
                 {"pk": "ORDER#c-1#o-1", "sk": "ORDER", "redemption_id": "r-1"},
                 {"pk": "KEYRING", "sk": "V#000001", "entity": "keyring"}):
        assert to_event(change("INSERT", None, item)) is None


# --- jobs and fraud -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "detail_type"), [("import", "BulkImportCompleted"),
                                                   ("generation", "BulkGenerationCompleted")])
def test_a_job_reaching_a_final_status_publishes_its_completion(kind: str, detail_type: str) -> None:
    running = {"pk": "JOB#j-1", "sk": "JOB", "job_id": "j-1", "kind": kind, "status": "running",
               "total": 3, "processed": 2, "failed": 0, "created_by": "admin-1"}
    done = {**running, "status": "succeeded", "processed": 3, "result": {"created": 3, "codes": ["SECRET"]}}
    event = only(to_event(change("MODIFY", running, done, table="jobs")))
    assert event.detail_type == detail_type
    assert event.detail["job_id"] == "j-1" and event.detail["actor"] == "admin-1"
    assert event.detail["result"] == {"created": 3}  # a nested code list is dropped
    assert "SECRET" not in event.detail_json()
    assert to_event(change("MODIFY", done, {**done, "ttl": 5}, table="jobs")) is None
    assert to_event(change("MODIFY", running, {**running, "processed": 3}, table="jobs")) is None


def test_a_fraud_flag_publishes_fraud_suspected_and_counters_do_not() -> None:
    flag = {"pk": "FRAUD#2026-05-01", "sk": "IP#203.0.113.9#1", "reason": "distinct_users_per_ip",
            "ip": "203.0.113.9", "distinct_users": 21, "at": T1, "ttl": 123}
    event = only(to_event(change("INSERT", None, flag, table="guards")))
    assert event.detail_type == "FraudSuspected"
    assert event.detail["reason"] == "distinct_users_per_ip" and "ttl" not in event.detail
    counter = {"pk": "FAILED#2026-05-01", "sk": "TOTAL", "count": 4}
    assert to_event(change("MODIFY", counter, {**counter, "count": 5}, table="guards")) is None


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["code", "code_hash", "code_ct", "codes", "plaintext", "note", "reason"]),
                       st.text(min_size=1, max_size=20), min_size=1))
def test_no_detail_ever_carries_a_code_bearing_key(extra: dict[str, str]) -> None:
    images = [
        ("INSERT", None, coupon(**extra), "coupons"),
        ("INSERT", None, redemption(**extra), "coupons"),
        ("INSERT", None, {"pk": "FRAUD#d", "sk": "x", **extra, "nested": [{"code": "X1"}]}, "guards"),
    ]
    for name, old, new, table in images:
        event = to_event(change(name, old, new, table=table))
        assert event is not None
        assert not keys_of(event.detail) & events.FORBIDDEN_KEYS


def keys_of(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()


# --- publishing a batch (issue 17: refused events are parked, not failed back to the stream) ------


class FakeBus:
    def __init__(self, refuse_ids: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.calls: list[list[str]] = []
        self.refuse = set(refuse_ids)

    def put(self, batch: Sequence[ContractEvent], *, budget_seconds: float | None = None) -> dict[int, str]:
        self.calls.append([e.detail["event_id"] for e in batch])
        return {i: "ThrottlingException" for i, e in enumerate(batch) if e.detail["event_id"] in self.refuse}


class FakeParking:
    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.parked: list[Parked] = []

    def park(self, items: Sequence[Parked]) -> set[int]:
        if not self.accept:
            return set(range(len(items)))
        self.parked.extend(items)
        return set()


def stream(n: int) -> list[Change]:
    """n changes; every third one publishes nothing (a counter update)."""
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append(change("MODIFY", coupon(redeemed_count=0), coupon(redeemed_count=1), seq=str(i)))
        else:
            out.append(change("INSERT", None, redemption(redemption_id=f"r-{i}"), seq=str(i)))
    return out


def test_events_go_out_in_stream_order() -> None:
    bus = FakeBus()
    outcome = publish_batch(stream(30), bus, FakeParking())
    assert [x for c in bus.calls for x in c] == [f"ev-{i}" for i in range(30) if i % 3 != 2]
    assert (outcome.published, outcome.skipped, outcome.parked, outcome.failed_sequence_numbers) == (20, 10, 0, [])


def test_a_refused_event_is_parked_with_its_full_entry_and_no_record_goes_back_to_the_stream() -> None:
    # Before issue 17, the refused event failed its record and every later one, and publishing stopped.
    bus, parking = FakeBus({"ev-4", "ev-13"}), FakeParking()
    outcome = publish_batch(stream(30), bus, parking)
    assert (outcome.published, outcome.parked, outcome.failed_sequence_numbers) == (18, 2, [])
    assert outcome.reasons == {"ThrottlingException": 2}
    assert [p.event_id for p in parking.parked] == ["ev-4", "ev-13"]
    parked = parking.parked[0]
    assert (parked.source, parked.detail_type, parked.sequence_number, parked.table) == (
        "coupons", "CouponRedeemed", "4", "coupons")
    assert parked.detail == to_event(stream(30)[4]).detail_json()  # type: ignore[union-attr]


def test_an_event_neither_published_nor_parked_fails_its_record_and_every_later_one() -> None:
    outcome = publish_batch(stream(30), FakeBus({"ev-4", "ev-13"}), FakeParking(accept=False))
    assert outcome.failed_sequence_numbers == [str(i) for i in range(4, 30)]
    assert outcome.parked == 0


def test_nothing_to_publish_makes_no_call() -> None:
    bus = FakeBus()
    changes = [change("MODIFY", coupon(), coupon(redeemed_count=1), seq="1")]
    assert publish_batch(changes, bus, FakeParking()).failed_sequence_numbers == []
    assert bus.calls == []


# --- the EventBridge adapter ----------------------------------------------------------------------


class FakeEvents:
    """PutEvents that refuses the entries it is told to, a given number of times."""

    def __init__(self, refuse: dict[str, int], raise_times: int = 0, code: str = "ThrottlingException") -> None:
        self.refuse = dict(refuse)  # detail type -> how many more times to refuse it
        self.raise_times = raise_times
        self.code = code
        self.calls: list[list[dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        assert len(Entries) <= 10
        self.calls.append(Entries)
        if self.raise_times:
            self.raise_times -= 1
            raise ClientError({"Error": {"Code": self.code, "Message": "slow down"}}, "PutEvents")
        results = []
        for entry in Entries:
            if self.refuse.get(entry["DetailType"], 0) > 0:
                self.refuse[entry["DetailType"]] -= 1
                results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"})
            else:
                results.append({"EventId": "id"})
        return {"FailedEntryCount": sum(1 for r in results if "ErrorCode" in r), "Entries": results}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def fake_bus(client: FakeEvents, clock: FakeClock, **policy: Any) -> EventBus:
    return EventBus(client, "coupons", policy=RetryPolicy(**policy), clock=clock, sleep=clock.sleep,
                    jitter=lambda: 1.0)


def typed(detail_type: str) -> ContractEvent:
    return ContractEvent(detail_type, {"coupon_id": "c"}, at=datetime(2026, 5, 1, tzinfo=UTC))


def test_put_retries_only_the_refused_entries_and_reports_what_never_went_through() -> None:
    client, clock = FakeEvents({"B": 1, "C": 10_000}), FakeClock()
    bus = fake_bus(client, clock, budget_seconds=10.0)
    batch = [typed("A")] * 11 + [typed("B"), typed("C")]
    failed = bus.put(batch)
    assert failed == {12: "InternalFailure"}
    assert [len(c) for c in client.calls[:4]] == [10, 3, 2, 1]  # 10, then 3 (B and C refused), B+C, C...
    assert all(len(c) == 1 for c in client.calls[3:])  # ...then C alone, until the budget ran out
    assert 9.0 <= clock.now <= 10.0
    first = client.calls[0][0]
    assert first["Source"] == "coupons" and first["EventBusName"] == "coupons"
    assert json.loads(first["Detail"]) == {"coupon_id": "c"}


def test_put_retries_a_throttled_call() -> None:
    client, clock = FakeEvents({}, raise_times=2), FakeClock()
    assert fake_bus(client, clock).put([typed("A")]) == {}
    assert len(client.calls) == 3


def test_a_throttle_longer_than_the_old_150_ms_of_retries_is_ridden_out_within_the_budget() -> None:
    # Issue 17: the publisher gave up after 3 attempts in about 150 ms.
    client, clock = FakeEvents({}, raise_times=8), FakeClock()
    assert fake_bus(client, clock, budget_seconds=10.0).put([typed("A")] * 25) == {}
    assert len(client.calls) == 8 + 3 and clock.now > 5


def test_after_a_batch_gave_up_the_next_one_tries_briefly_and_the_rest_is_not_attempted() -> None:
    client, clock = FakeEvents({}, raise_times=10_000), FakeClock()
    bus = fake_bus(client, clock, budget_seconds=10.0, degraded_budget_seconds=1.0, cooldown_seconds=30.0)
    first = bus.put([typed("A")] * 30)
    assert first == dict.fromkeys(range(30), "ThrottlingException")
    assert 9.0 <= clock.now <= 10.0 and bus.health.degraded()
    calls, started = len(client.calls), clock.now
    # the next batch: one short try of its first 10, the other 20 are parked without a call
    assert bus.put([typed("A")] * 30) == dict.fromkeys(range(30), "ThrottlingException")
    assert clock.now - started <= 1.0 and all(len(c) == 10 for c in client.calls[calls:])
    # once the bus answers again, the bus is healthy again
    client.raise_times = 0
    assert bus.put([typed("A")] * 30) == {}
    assert not bus.health.degraded()


def test_a_request_eventbridge_will_never_take_is_not_retried() -> None:
    client, clock = FakeEvents({}, raise_times=1, code="AccessDeniedException"), FakeClock()
    assert fake_bus(client, clock).put([typed("A")] * 3) == dict.fromkeys(range(3), "AccessDeniedException")
    assert len(client.calls) == 1


def test_a_stream_record_in_lambda_shape_becomes_a_change() -> None:
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/coupons-guards/stream/2026-05-01T00:00:00.000"
    record = {"eventID": "e1", "eventName": "INSERT", "eventSourceARN": arn,
              "dynamodb": {"SequenceNumber": "42", "ApproximateCreationDateTime": 1777600000,
                           "NewImage": {"pk": {"S": "FRAUD#2026-05-01"}, "n": {"N": "3"}}}}
    tables = {"coupons": "coupons", "guards": "coupons-guards", "jobs": "coupons-jobs"}
    got = change_of(record, tables)
    assert (got.table, got.sequence_number, got.new, got.old) == ("guards", "42",
                                                                   {"pk": "FRAUD#2026-05-01", "n": 3}, None)
    assert got.at == datetime.fromtimestamp(1777600000, UTC)
    assert table_of("arn:aws:dynamodb:r:a:table/other/stream/x", tables) is None


# --- the local stack's schedules and stream records -----------------------------------------------


def test_the_local_schedules_fire_on_the_same_cron_as_eventbridge() -> None:
    from coupons_infra import resources as r
    from coupons_local.workers_events import next_fire, schedule_overrides

    at = datetime(2026, 5, 1, 10, 59, 30, tzinfo=UTC)
    assert next_fire(r.EXPIRY_SWEEP_SCHEDULE.cron, at) == datetime(2026, 5, 1, 11, 0, tzinfo=UTC)
    assert next_fire(r.EXPIRY_SWEEP_SCHEDULE.cron, datetime(2026, 5, 1, 11, 0, tzinfo=UTC)) == \
        datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert next_fire(r.DAILY_REPORT_SCHEDULE.cron, at) == datetime(2026, 5, 2, 1, 0, tzinfo=UTC)
    assert next_fire("*/15 9-10 * * ? *", at) == datetime(2026, 5, 2, 9, 0, tzinfo=UTC)
    assert schedule_overrides("30") == {"*": 30.0}
    assert schedule_overrides("expiry-sweep=2, daily-report=60") == {"expiry-sweep": 2.0, "daily-report": 60.0}


def test_a_moto_stream_record_is_handed_on_in_lambda_s_shape() -> None:
    from coupons_local.workers_events import lambda_record

    raw = {"eventID": "e", "eventName": "MODIFY", "eventVersion": "1.0", "awsRegion": "us-east-1",
           "dynamodb": {"SequenceNumber": "7", "ApproximateCreationDateTime": datetime(2026, 5, 1, tzinfo=UTC),
                        "Keys": {"pk": {"S": "x"}}}}
    shaped = lambda_record(raw, "arn:aws:dynamodb:us-east-1:1:table/coupons/stream/x")
    assert shaped["eventSource"] == "aws:dynamodb" and shaped["eventSourceARN"].endswith("/stream/x")
    assert shaped["dynamodb"]["ApproximateCreationDateTime"] == int(datetime(2026, 5, 1, tzinfo=UTC).timestamp())


# --- issue 17, 8b: a re-code names every field its PUT changed ----------------------------------------


def test_a_recode_insert_names_every_field_the_edit_changed_and_the_previous_status() -> None:
    moved = coupon(updated_at=T1, updated_by="admin-2", status="disabled", discount_value=20,
                   edit_changed=["code", "discount_value", "status"], edit_previous_status="active")
    event = only(to_event(change("INSERT", None, moved)))
    assert event.detail_type == "CouponUpdated"
    assert event.detail["changed"] == ["code", "discount_value", "status"]
    assert event.detail["previous_status"] == "active"
    assert "edit_changed" not in event.detail_json()


def test_the_recode_note_is_bookkeeping_in_a_later_edit() -> None:
    old = coupon(edit_changed=["code", "max_uses"])
    new = coupon(max_uses=3, updated_at=T1)
    new.pop("edit_changed", None)
    assert only(to_event(change("MODIFY", old, new))).detail["changed"] == ["max_uses"]
