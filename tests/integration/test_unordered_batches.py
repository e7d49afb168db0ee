"""Every BatchGetItem caller against DynamoDB's real manners (issue 11, "what let these through").

moto answered BatchGetItem in request order and always whole. DynamoDB does neither: the items of
a table come back in any order, and under throttling (or past 16 MB) part of the keys come back as
`UnprocessedKeys`. The emulator now does both (`coupons_local.moto_patches.BatchGetUnkindness`);
these tests turn partial answers on for every call and check each caller still reads everything.
The callers: `CouponStore.get_by_indexes` (admin lookup by code, one key per live key version),
`CheckoutStore.read` (validate/redeem: coupon, usage, guard counters) and
`CheckoutStore.read_shards` (a hot coupon's shards).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
from coupons import wiring
from coupons.adapters import aws
from coupons.adapters.checkout_store import CheckoutStore
from coupons.adapters.coupon_store import CouponStore
from coupons.models import CouponCreate
from coupons_local import moto_patches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_serial = itertools.count(1)
OTHER_VERSION_HASHES = [f"{n:064x}" for n in range(1, 4)]  # indexes under other key versions: nothing there


@pytest.fixture
def partial_answers(aws_env: Any) -> Iterator[Any]:
    """Every BatchGetItem of two keys or more answers only part of them (seeded: reproducible)."""
    moto_patches.configure(seed=11, unprocessed=1.0)
    yield aws_env
    moto_patches.configure()


def aws_env_table(key: str = "coupons") -> str:
    return os.environ["COUPONS_TABLE" if key == "coupons" else "GUARDS_TABLE"]


def created_coupon() -> dict[str, Any]:
    coupon = wiring.admin_service().create(CouponCreate(code=f"PART-{next(_serial)}", discount_value=10),
                                           "admin-1")
    pointer = CouponStore(aws.client("dynamodb"), aws_env_table()).get_pointer(coupon["id"])
    assert pointer is not None
    return {**coupon, "code_hash": pointer["code_hash"]}


def test_the_emulator_answers_in_part_when_told_to(partial_answers: Any) -> None:
    coupon = created_coupon()
    raw = aws.client("dynamodb").batch_get_item(RequestItems={aws_env_table(): {"Keys": [
        {"pk": {"S": f"CODE#{h}"}, "sk": {"S": "COUPON"}} for h in [*OTHER_VERSION_HASHES, coupon["code_hash"]]]}})
    assert raw["UnprocessedKeys"][aws_env_table()]["Keys"]  # without a retry, something is missing
    assert moto_patches.unkindness.partial >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(others=st.integers(min_value=1, max_value=3), position=st.integers(min_value=0, max_value=3),
       seed=st.integers(min_value=0, max_value=2**32))
def test_find_by_code_finds_the_coupon_whatever_part_is_unprocessed(partial_answers: Any, others: int,
                                                                  position: int, seed: int) -> None:
    """Hole: get_by_indexes read `Responses` and ignored `UnprocessedKeys`, so after a key rotation
    (one key per live version) an admin lookup could answer "no such code" for a live coupon."""
    moto_patches.configure(seed=seed, unprocessed=1.0)
    coupon = created_coupon()
    hashes = OTHER_VERSION_HASHES[:others]
    hashes.insert(min(position, others), coupon["code_hash"])
    found = CouponStore(aws.client("dynamodb"), aws_env_table()).get_by_indexes(hashes)
    assert found is not None and found["coupon_id"] == coupon["id"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32), others=st.integers(min_value=0, max_value=3))
def test_the_checkout_read_gets_the_whole_snapshot_whatever_part_is_unprocessed(
        partial_answers: Any, seed: int, others: int) -> None:
    moto_patches.configure(seed=seed, unprocessed=1.0)
    coupon = created_coupon()
    store = CheckoutStore(aws.client("dynamodb"), aws_env_table(), aws_env_table("guards"))
    snapshot = store.read([*OTHER_VERSION_HASHES[:others], coupon["code_hash"]], "user-1", ip="198.51.100.7",
                          bucket=1000, ip_users=True)
    assert snapshot.coupon is not None and snapshot.coupon["coupon_id"] == coupon["id"]
    assert moto_patches.unkindness.partial >= 1
