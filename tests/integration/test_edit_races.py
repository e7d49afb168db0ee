"""Admin edits racing what else writes a coupon item: splits, rebalances, hints, the sweep, redemptions (moto).

Issue 11, hole 4: an edit used to Put the whole item, guarded only by `updated_at` and
`redeemed_count`, neither of which a hot coupon's split changes, so an edit that read the
coupon before a split wrote it back without its shard marker: every later redemption got
503 for good, or (the edit lowering max_uses below the hot threshold) the coupon's own
counter started again from its pre-split value and admitted more than the cap.

Each race is forced: the admin (or the split, the rebalance, the hint) reads, then the
other writers run, then it writes. `PauseBeforeWrite` runs the interloper inside the first
write call; `Interleaving` runs whole operations in threads stopped before their first write
(one thread runs at a time, so moto sees the calls strictly in the chosen order).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from coupons import wiring
from coupons.adapters import aws
from coupons.adapters.checkout_store import Cancelled, CheckoutStore, cap_value, shard_key
from coupons.adapters.coupon_store import CouponStore
from coupons.adapters.expiry_store import DynamoExpiryStore
from coupons.admin import AdminService
from coupons.checkout import CheckoutService, redemption_id
from coupons.clock import utcnow
from coupons.errors import RuleViolation
from coupons.http import Identity
from coupons.models import CouponCreate, CouponUpdate, RedeemRequest
from coupons.settings import get_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

THRESHOLD = 5
SHARDS = 3
ORDER = {"currency": "USD", "items": [{"product_id": "p1", "category": "shoes", "unit_price": 5000, "quantity": 1}]}
WRITES = frozenset({"transact_write_items", "update_item", "put_item", "delete_item"})


@pytest.fixture(scope="module")
def aws_env() -> Iterator[Any]:
    """One moto environment for the module (provisioning per test costs seconds); each test has its own codes."""
    from coupons_local import moto_patches
    from coupons_local.provision import function_environment, provision
    from moto import mock_aws

    moto_patches.apply()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with mock_aws():
            provisioned = provision()
            for key, value in function_environment(provisioned, {}).items():
                patch.setenv(key, value)
            wiring.reset()
            yield provisioned
            wiring.reset()
    os.environ.pop("AWS_ENDPOINT_URL", None)


_serial = iter(range(10**9))


def fresh(prefix: str) -> str:
    return f"{prefix}{next(_serial):06d}"


def caller(user: str) -> Identity:
    return Identity(user_id=user, email=None, groups=frozenset(), ip="10.0.0.9", user_agent="pytest/1.0")


def create(**fields: Any) -> dict[str, Any]:
    fields.setdefault("discount_value", 10)
    fields.setdefault("uses_per_user", None)
    return wiring.admin_service().create(CouponCreate.model_validate(fields), "admin-1")


def checkout(client: Any = None, *, threshold: int = THRESHOLD, shards: int = SHARDS) -> CheckoutService:
    s = get_settings().model_copy(update={"hot_coupon_threshold": threshold, "hot_coupon_shards": shards})
    return CheckoutService(CheckoutStore(client or aws.client("dynamodb"), s.coupons_table, s.guards_table),
                           wiring.cipher, s, sleep=lambda _: None)


def admin(client: Any) -> AdminService:
    return AdminService(CouponStore(client, get_settings().coupons_table), wiring.cipher, get_settings())


def redeem(code: str, order: str, user: str | None = None, *, via: CheckoutService | None = None) -> bool | str:
    """True when a use was taken; otherwise the rule's code."""
    request = RedeemRequest.model_validate({"code": code, "channel": "web", "order": ORDER, "order_id": order})
    try:
        return (via or checkout()).redeem(request, caller(user or order)).created
    except RuleViolation as violation:
        return violation.code


def raw_coupon(coupon_id: str) -> dict[str, Any] | None:
    pointer = wiring.coupon_store().get_pointer(coupon_id)
    assert pointer is not None
    return boto3.client("dynamodb").get_item(
        TableName=get_settings().coupons_table, ConsistentRead=True,
        Key={"pk": {"S": f"CODE#{pointer['code_hash']}"}, "sk": {"S": "COUPON"}}).get("Item")


def live_redemptions(coupon_id: str) -> int:
    pages = boto3.client("dynamodb").get_paginator("query").paginate(
        TableName=get_settings().coupons_table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :p",
        ExpressionAttributeValues={":p": {"S": f"CREDEEM#{coupon_id}"}})
    return sum(1 for page in pages for i in page["Items"] if i["status"]["S"] == "redeemed")


def shard_totals(coupon_id: str, n: int = SHARDS) -> tuple[int, int]:
    """(Σ remaining, Σ redeemed) over the shard items."""
    remaining = redeemed = 0
    for index in range(n):
        found = boto3.client("dynamodb").get_item(TableName=get_settings().coupons_table, ConsistentRead=True,
                                                  Key=shard_key(coupon_id, index)).get("Item")
        assert found is not None
        remaining += int(found["remaining"]["N"])
        redeemed += int(found["redeemed"]["N"])
    return remaining, redeemed


class PauseBeforeWrite:
    """The real client, except that `before` runs once, just before the first write call goes out."""

    def __init__(self, real: Any, before: Callable[[], Any]) -> None:
        self._real = real
        self._before: Callable[[], Any] | None = before
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if name not in WRITES:
            return method

        def call(**kwargs: Any) -> Any:
            self.writes += 1
            before, self._before = self._before, None
            if before is not None:
                before()
            return method(**kwargs)
        return call


def edit_racing(coupon_id: str, patch: CouponUpdate, interloper: Callable[[], Any]) -> tuple[dict[str, Any], int]:
    """The admin reads the coupon, `interloper` runs, the admin writes: (the answer, write calls made)."""
    client = PauseBeforeWrite(aws.client("dynamodb"), interloper)
    view = admin(client).update(coupon_id, patch, "admin-1")
    return view, client.writes


# --- the scenarios, forced --------------------------------------------------------


@pytest.mark.parametrize("recode", [False, True], ids=["in-place", "re-code"])
def test_an_edit_that_read_before_a_split_keeps_the_shard_marker(aws_env: Any, recode: bool) -> None:
    # Given a coupon at the hot threshold, not split yet
    code = fresh("SPLITA")
    coupon = create(code=code, max_uses=5)
    new_code = fresh("SPLITB") if recode else code

    # When the admin reads it, a redemption splits it into shards, and the admin writes a change
    def split() -> None:
        assert redeem(code, "o-0") is True
    view, _ = edit_racing(coupon["id"], CouponUpdate(discount_value=20, **({"code": new_code} if recode else {})),
                          split)

    # Then the marker survived, the edit is in, and the coupon goes on to exactly its cap (no 503 for good)
    stored = raw_coupon(coupon["id"])
    assert stored is not None and "shards" in stored and stored["discount_value"]["N"] == "20"
    assert view["discount_value"] == 20 and view["redeemed_count"] == 1
    results = [redeem(new_code, f"o-{i}") for i in range(1, 7)]
    assert results == [True] * 4 + ["COUPON_EXHAUSTED"] * 2
    assert live_redemptions(coupon["id"]) == 5 == wiring.admin_service().get(coupon["id"])["redeemed_count"]
    assert shard_totals(coupon["id"]) == (0, 5)


@pytest.mark.parametrize("recode", [False, True], ids=["in-place", "re-code"])
def test_an_edit_lowering_max_uses_below_the_threshold_during_a_split_never_exceeds_the_new_cap(
        aws_env: Any, recode: bool) -> None:
    # Given a coupon with max_uses 5 at the hot threshold 5
    code = fresh("LOWERA")
    coupon = create(code=code, max_uses=5)
    new_code = fresh("LOWERB") if recode else code

    # When the admin reads it, two redemptions split it and take two uses on the shards,
    # and the admin then lowers max_uses to 3 (below the threshold)
    def split_and_take_two() -> None:
        assert [redeem(code, "o-a"), redeem(code, "o-b")] == [True, True]
    patch = {"max_uses": 3, **({"code": new_code} if recode else {})}
    view, _ = edit_racing(coupon["id"], CouponUpdate.model_validate(patch), split_and_take_two)
    assert view["max_uses"] == 3 and view["redeemed_count"] == 2 and view["remaining_uses"] == 1

    # Then only one more use is admitted: 3 in all, not the 5 of the issue
    results = [redeem(new_code, f"o-{i}") for i in range(5)]
    assert results == [True] + ["COUPON_EXHAUSTED"] * 4
    assert live_redemptions(coupon["id"]) == 3 == wiring.admin_service().get(coupon["id"])["redeemed_count"]
    stored = raw_coupon(coupon["id"])
    assert stored is not None and "shards" in stored
    assert shard_totals(coupon["id"]) == (0, 3)


def test_a_recode_that_read_before_a_redemption_carries_the_counter_over(aws_env: Any) -> None:
    code, new_code = fresh("CARRYA"), fresh("CARRYB")
    coupon = create(code=code, max_uses=2)
    view, writes = edit_racing(coupon["id"], CouponUpdate(code=new_code), lambda: redeem(code, "o-1"))
    assert writes == 2  # the whole item is copied: a counter that moved makes it re-read and try again
    assert view["redeemed_count"] == 1
    assert [redeem(new_code, "o-2"), redeem(new_code, "o-3")] == [True, "COUPON_EXHAUSTED"]
    assert live_redemptions(coupon["id"]) == 2 == wiring.admin_service().get(coupon["id"])["redeemed_count"]


def test_an_in_place_edit_no_longer_conflicts_with_a_redemption(aws_env: Any) -> None:
    code = fresh("COUNTA")
    coupon = create(code=code, max_uses=3)
    view, writes = edit_racing(coupon["id"], CouponUpdate(discount_value=15), lambda: redeem(code, "o-1"))
    assert writes == 1  # only the changed attributes are written: the counter is not one of them
    assert view["discount_value"] == 15
    assert wiring.admin_service().get(coupon["id"])["redeemed_count"] == 1 == live_redemptions(coupon["id"])
    stored = raw_coupon(coupon["id"])
    assert stored is not None and stored["redeemed_count"]["N"] == "1"


def test_an_edit_that_read_before_the_sweep_expired_the_coupon_is_re_decided(aws_env: Any) -> None:
    # Given a coupon that ran out a minute ago (the sweep has not run yet)
    now = utcnow()
    coupon = create(code=fresh("SWEPT"), starts_at=now - timedelta(days=1), expires_at=now - timedelta(minutes=1))
    sweep = DynamoExpiryStore(aws.client("dynamodb"), get_settings().coupons_table)

    def expire() -> None:
        stored = raw_coupon(coupon["id"])
        assert stored is not None
        assert sweep.expire({"pk": stored["pk"]["S"], "sk": "COUPON"}, utcnow())

    # When the admin extends it while the sweep marks it expired in between
    later = now + timedelta(days=3)
    view, writes = edit_racing(coupon["id"], CouponUpdate(expires_at=later), expire)

    # Then the edit saw the sweep's write (a retry) and brought the coupon back
    assert writes == 2
    assert view["status"] == "active"
    stored = raw_coupon(coupon["id"])
    assert stored is not None and stored["status"]["S"] == "active" and "gsi3pk" in stored


def test_an_edit_that_read_before_a_rebalance_is_re_decided(aws_env: Any) -> None:
    # Given a split coupon that ran out, whose cap was then raised (the shards not rebalanced yet)
    code = fresh("HINTED")
    coupon = create(code=code, max_uses=5)
    assert [redeem(code, f"o-{i}") for i in range(6)] == [True] * 5 + ["COUPON_EXHAUSTED"]
    wiring.admin_service().update(coupon["id"], CouponUpdate(max_uses=7), "admin-1")

    # When an admin reads it, a redemption rebalances the shards and takes a use, and the admin pauses it
    view, writes = edit_racing(coupon["id"], CouponUpdate(status="disabled"), lambda: redeem(code, "o-6"))
    assert writes == 2 and view["status"] == "disabled" and view["redeemed_count"] == 6
    stored = raw_coupon(coupon["id"])
    assert stored is not None and int(stored["shards"]["M"]["cap"]["N"]) == 7

    # Then, resumed, it takes exactly one more use
    wiring.admin_service().update(coupon["id"], CouponUpdate(status="active"), "admin-1")
    assert [redeem(code, "o-7"), redeem(code, "o-8")] == [True, "COUPON_EXHAUSTED"]
    assert live_redemptions(coupon["id"]) == 7 == wiring.admin_service().get(coupon["id"])["redeemed_count"]


def test_an_exhausted_hint_read_before_a_rollback_is_not_written(aws_env: Any) -> None:
    # Given a split coupon whose five uses are all taken
    code = fresh("STALEHINT")
    coupon = create(code=code, max_uses=5)
    assert [redeem(code, f"o-{i}") for i in range(5)] == [True] * 5

    # When a redemption finds every shard empty and, before it writes its hint, a rollback gives a use back
    def give_one_back() -> None:
        checkout().rollback(redemption_id(coupon["id"], "o-0"), caller("o-0"))
    late = checkout(PauseBeforeWrite(aws.client("dynamodb"), give_one_back))
    assert redeem(code, "o-late", via=late) == "COUPON_EXHAUSTED"  # right for what it read

    # Then the stale hint did not land: the use given back is taken by the next customer
    stored = raw_coupon(coupon["id"])
    assert stored is not None and "exhausted_at" not in stored["shards"]["M"]
    assert [redeem(code, "o-next"), redeem(code, "o-after")] == [True, "COUPON_EXHAUSTED"]


# --- any interleaving: a property -----------------------------------------------------------


class Paused:
    """One operation in a thread of its own that stops just before its first write until `finish`.

    Only one thread runs at a time (the test waits for each to stop), so the store sees the
    calls in exactly the order the test chose; the operation's later writes (its retries) run
    straight on, as they would once it got past its first.
    """

    def __init__(self, name: str, work: Callable[[Any], Any]) -> None:
        self.name = name
        self._work = work
        self._stopped = threading.Event()
        self._go = threading.Event()
        self._gate_passed = False
        self.error: BaseException | None = None
        self.done = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __getattr__(self, name: str) -> Any:  # the client the operation uses
        method = getattr(aws.client("dynamodb"), name)
        if name not in WRITES:
            return method

        def call(**kwargs: Any) -> Any:
            if not self._gate_passed:
                self._gate_passed = True
                self._stopped.set()
                assert self._go.wait(60), "never resumed"
            return method(**kwargs)
        return call

    def _run(self) -> None:
        try:
            self._work(self)
        except BaseException as error:  # handed to the test thread in `finish`
            self.error = error
        finally:
            self.done = True
            self._stopped.set()

    def start(self) -> None:
        self._thread.start()
        assert self._stopped.wait(60), f"{self.name} hung"

    def finish(self) -> None:
        self._go.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), f"{self.name} hung"
        if self.error is not None:
            raise self.error


PROPERTY_THRESHOLD = 4
KINDS = ["redeem", "redeem", "redeem", "rollback", "edit", "edit", "split", "rebalance", "hint"]
EDITS = ["cap", "pause", "resume", "recode", "recode+cap"]
CAPS = st.one_of(st.none(), st.integers(1, 8))


class Race:
    """One coupon and everything that writes it; checks the invariants after every step."""

    def __init__(self, max_uses: int | None) -> None:
        self.code = fresh("PROP")
        self.coupon_id = create(code=self.code, max_uses=max_uses)["id"]
        self.checkout = checkout(threshold=PROPERTY_THRESHOLD)
        self.table = get_settings().coupons_table
        self.orders = 0
        self.live: list[str] = []  # orders redeemed and not rolled back
        self.ever_split = False

    # operations run in a thread, stopped before their first write

    def edit(self, kind: str, cap: int | None) -> Paused:
        patch: dict[str, Any] = {"cap": {"max_uses": cap}, "pause": {"status": "disabled"},
                                 "resume": {"status": "active"}, "recode": {},
                                 "recode+cap": {"max_uses": cap}}[kind]
        new_code = fresh("PROP") if kind.startswith("recode") else None
        if new_code:
            patch["code"] = new_code

        def work(client: Any) -> None:
            admin(client).update(self.coupon_id, CouponUpdate.model_validate(patch), "admin-1")
            if new_code:
                self.code = new_code  # the last re-code to land is the code
        return Paused(f"edit {patch}", work)

    def store_op(self, kind: str) -> Paused:
        def work(client: Any) -> None:
            coupon = CouponStore(client, self.table).get_by_id(self.coupon_id)
            store = CheckoutStore(client, self.table, get_settings().guards_table)
            shards = coupon.get("shards")
            try:
                if kind == "split" and not shards and coupon.get("max_uses") is not None:
                    store.init_shards(coupon, SHARDS)
                elif kind == "rebalance" and shards:
                    store.rebalance_shards(coupon, store.read_shards(self.coupon_id, SHARDS), coupon.get("max_uses"))
                elif kind == "hint" and shards and int(shards["cap"]) == cap_value(coupon.get("max_uses")) != -1 \
                        and all(int(s["remaining"]) == 0 for s in store.read_shards(self.coupon_id, SHARDS)):
                    store.mark_exhausted(coupon, utcnow())  # what a checkout that found every shard empty does
            except Cancelled:
                pass  # lost its race: that is allowed, writing over the winner is not
        return Paused(kind, work)

    # operations run whole

    def redeem(self) -> None:
        self.orders += 1
        order = f"o-{self.orders}"
        outcome = redeem(self.code, order, via=self.checkout)  # TryAgain (a 503) fails the property
        assert outcome in (True, "COUPON_EXHAUSTED", "COUPON_DISABLED"), outcome
        if outcome is True:
            self.live.append(order)
            stored = self.item()
            cap = stored.get("max_uses")
            assert cap is None or live_redemptions(self.coupon_id) <= int(cap["N"]), "over the cap in force"

    def rollback(self, index: int) -> None:
        if self.live:
            order = self.live.pop(index % len(self.live))
            self.checkout.rollback(redemption_id(self.coupon_id, order), caller(order))

    # invariants

    def item(self) -> dict[str, Any]:
        stored = raw_coupon(self.coupon_id)
        assert stored is not None
        return stored

    def check(self) -> None:
        split = "shards" in self.item()
        assert split or not self.ever_split, "the shard marker was lost"
        self.ever_split = split

    def drain(self) -> None:
        """Resume the coupon and redeem it to the end: it must work, and stop exactly at its cap."""
        wiring.admin_service().update(self.coupon_id, CouponUpdate(status="active"), "admin-1")
        cap = wiring.admin_service().get(self.coupon_id)["max_uses"]
        before = len(self.live)
        assert live_redemptions(self.coupon_id) == before
        wanted = 3 if cap is None else max(0, cap - before)
        for _ in range(wanted):
            self.redeem()
        assert len(self.live) == before + wanted, "a use within the cap was refused"
        if cap is not None:
            self.orders += 1
            assert redeem(self.code, f"o-{self.orders}", via=self.checkout) == "COUPON_EXHAUSTED"
            assert live_redemptions(self.coupon_id) == max(cap, before)
        view = wiring.admin_service().get(self.coupon_id)
        assert view["redeemed_count"] == len(self.live) == live_redemptions(self.coupon_id)
        self.check()


@settings(max_examples=int(os.environ.get("EDIT_RACE_EXAMPLES", "30")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_no_interleaving_of_edits_splits_rebalances_hints_and_redemptions_loses_the_marker_or_a_cap(
        aws_env: Any, data: st.DataObject) -> None:
    race = Race(data.draw(CAPS, label="max_uses"))
    paused: list[Paused] = []
    for _ in range(data.draw(st.integers(3, 14), label="steps")):
        if paused and data.draw(st.booleans(), label="resume one"):
            paused.pop(data.draw(st.integers(0, len(paused) - 1), label="which")).finish()
        else:
            kind = data.draw(st.sampled_from(KINDS), label="operation")
            if kind == "redeem":
                race.redeem()
            elif kind == "rollback":
                race.rollback(data.draw(st.integers(0, 20), label="whose"))
            else:
                step = race.edit(data.draw(st.sampled_from(EDITS), label="edit"), data.draw(CAPS, label="cap")) \
                    if kind == "edit" else race.store_op(kind)
                step.start()
                if not step.done:
                    paused.append(step)
                elif step.error is not None:
                    raise step.error
        race.check()
    for step in paused:
        step.finish()
        race.check()
    race.drain()
