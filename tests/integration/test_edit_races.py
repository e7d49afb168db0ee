"""Admin edits racing what else writes a coupon item: splits, rebalances, hints, the sweep, redemptions (moto).

Issue 11, hole 4: an edit used to Put the whole item, guarded only by `updated_at` and
`redeemed_count`, neither of which a hot coupon's split changes, so an edit that read the
coupon before a split wrote it back without its shard marker: every later redemption got
503 for good, or (the edit lowering max_uses below the hot threshold) the coupon's own
counter started again from its pre-split value and admitted more than the cap.

Each race is forced: the admin (or a redemption about to write its exhausted hint) reads,
then `PauseBeforeWrite` runs the other writers inside its first write call, then it writes.
Random interleavings of all of them: test_edit_race_property.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from coupons import wiring
from coupons.adapters import aws
from coupons.adapters.expiry_store import DynamoExpiryStore
from coupons.checkout import redemption_id
from coupons.clock import utcnow
from coupons.models import CouponUpdate
from coupons.settings import get_settings
from edit_race_helpers import (
    SHARDS,
    SHOP,
    PauseBeforeWrite,
    checkout,
    create,
    edit_racing,
    fresh,
    live_redemptions,
    moto_environment,
    raw_coupon,
    redeem,
    shard_totals,
)

# --- the scenarios, forced --------------------------------------------------------

@pytest.fixture(scope="module")
def aws_env() -> Iterator[Any]:
    with moto_environment() as provisioned:
        yield provisioned



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
        checkout().rollback(redemption_id(coupon["id"], "o-0", "user:o-0"), SHOP)
    late = checkout(PauseBeforeWrite(aws.client("dynamodb"), give_one_back))
    assert redeem(code, "o-late", via=late) == "COUPON_EXHAUSTED"  # right for what it read

    # Then the stale hint did not land: the use given back is taken by the next customer
    stored = raw_coupon(coupon["id"])
    assert stored is not None and "exhausted_at" not in stored["shards"]["M"]
    assert [redeem(code, "o-next"), redeem(code, "o-after")] == [True, "COUPON_EXHAUSTED"]


def test_a_rollback_of_a_use_taken_before_the_split_clears_the_exhausted_hint(aws_env: Any) -> None:
    """Found by the interleaving property: a use redeemed before its coupon split goes back to shard 0,
    but the exhausted hint stayed, so the use given back was refused for the hint's 30 s."""
    from coupons.adapters.checkout_store import CheckoutStore
    from coupons.adapters.coupon_store import CouponStore

    # Given a coupon of one use, taken before it was split into shards
    code = fresh("PRESPLIT")
    coupon = create(code=code, max_uses=1)
    assert redeem(code, "o-first") is True
    table = get_settings().coupons_table
    client = aws.client("dynamodb")
    CheckoutStore(client, table, get_settings().guards_table).init_shards(
        CouponStore(client, table).get_by_id(coupon["id"]), SHARDS)
    # and a checkout that found every shard empty (it leaves the exhausted hint)
    assert redeem(code, "o-second") == "COUPON_EXHAUSTED"
    stored = raw_coupon(coupon["id"])
    assert stored is not None and "exhausted_at" in stored["shards"]["M"]
    # When the shop rolls the first redemption back
    checkout().rollback(redemption_id(coupon["id"], "o-first", "user:o-first"), SHOP)
    # Then the hint is gone and the use given back is taken by the next customer, once
    stored = raw_coupon(coupon["id"])
    assert stored is not None and "exhausted_at" not in stored["shards"]["M"]
    assert [redeem(code, "o-next"), redeem(code, "o-after")] == [True, "COUPON_EXHAUSTED"]
