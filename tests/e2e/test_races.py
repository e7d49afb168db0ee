"""Racing checkouts over HTTP: caps, per-user limits, replays and rollbacks hold under concurrency.

Each race fires its requests at once from a thread pool against `coupons-local serve`
(moto behind one lock, handlers running concurrently like Lambda containers). A
client that gets 503 TRY_AGAIN retries, as the contract tells it to. After each race
the conservation invariant is checked against the table itself: the coupon's counter
equals the live redemption records (and, for a sharded coupon, Σ remaining + Σ
redeemed over its shards equals the cap).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from checkout_helpers import assert_conserved, customer, dynamodb, redeem, redemption_records
from conftest import HttpResult, LocalStack, start_stack, unique
from coupons_local import tokens

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("races")]

SHARDS = 8
WORKERS = 40


@pytest.fixture(scope="module")
def hot_stack() -> Iterator[LocalStack]:
    """A stack where every capped coupon is a hot (sharded) one."""
    running = start_stack({"HOT_COUPON_THRESHOLD": "1", "HOT_COUPON_SHARDS": str(SHARDS)}, seed=False)
    yield running
    running.stop()


@pytest.fixture(params=["plain", "sharded"])
def target(request: pytest.FixtureRequest, stack: LocalStack) -> tuple[LocalStack, bool]:
    sharded = request.param == "sharded"
    return (request.getfixturevalue("hot_stack") if sharded else stack), sharded


def at_once(calls: list[Callable[[], HttpResult]]) -> list[HttpResult]:
    """Run every call concurrently; a 503 is retried after its Retry-After, like a well-behaved client."""

    def with_retry(call: Callable[[], HttpResult]) -> HttpResult:
        for _ in range(20):
            result = call()
            if result.status != 503:
                return result
            time.sleep(0.05)
        return result

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(with_retry, calls))


def outcomes(results: list[HttpResult]) -> Counter[tuple[int, str | None]]:
    return Counter((r.status, r.error_code) for r in results)


def shard_totals(stack: LocalStack, coupon_id: str) -> tuple[int, int]:
    client, table = dynamodb(stack)
    keys = [{"pk": {"S": f"SHARD#{coupon_id}#{n:02d}"}, "sk": {"S": "SHARD"}} for n in range(SHARDS)]
    items: list[dict[str, Any]] = []
    pending: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
    while pending:  # the emulator, like DynamoDB, may leave keys unprocessed (COUPONS_LOCAL_BATCH_UNPROCESSED)
        page = client.batch_get_item(RequestItems=pending)
        items += page["Responses"].get(table, [])
        pending = page.get("UnprocessedKeys") or {}
    assert len(items) == SHARDS
    return sum(int(i["remaining"]["N"]) for i in items), sum(int(i["redeemed"]["N"]) for i in items)


def check_invariant(stack: LocalStack, sharded: bool, coupon: dict[str, Any], live: int) -> None:
    assert_conserved(stack, coupon["id"], live)
    if sharded:
        remaining, redeemed = shard_totals(stack, coupon["id"])
        assert redeemed == live and remaining + redeemed == coupon["max_uses"]


def test_200_users_on_a_cap_of_20(target: tuple[LocalStack, bool]) -> None:
    stack, sharded = target
    # Given a coupon with 20 uses and 200 customers
    code = unique("RACE-CAP-")
    coupon = stack.create_coupon(code=code, discount_value=10, max_uses=20, uses_per_user=1)
    tokens = [customer() for _ in range(200)]
    # When they all redeem at once
    results = at_once([lambda t=t: redeem(stack, t, code) for t in tokens])
    # Then exactly 20 got it and everyone else heard it is used up
    assert outcomes(results) == Counter({(201, None): 20, (422, "COUPON_EXHAUSTED"): 180})
    assert len({r.body["user_id"] for r in results if r.status == 201}) == 20
    check_invariant(stack, sharded, coupon, 20)


def test_40_redemptions_by_one_user_with_one_use_each(target: tuple[LocalStack, bool]) -> None:
    stack, sharded = target
    code = unique("RACE-USER-")
    coupon = stack.create_coupon(code=code, discount_value=10, max_uses=1000, uses_per_user=1)
    token = customer()
    results = at_once([lambda i=i: redeem(stack, token, code, f"order-{i}") for i in range(40)])
    assert outcomes(results) == Counter({(201, None): 1, (422, "USER_LIMIT_REACHED"): 39})
    check_invariant(stack, sharded, coupon, 1)


def test_20_replays_then_20_rollbacks_count_once_and_give_back_once(target: tuple[LocalStack, bool]) -> None:
    stack, sharded = target
    code = unique("RACE-ORDER-")
    coupon = stack.create_coupon(code=code, discount_value=10, max_uses=1, uses_per_user=1)
    token = customer()
    # 20 parallel replays of one order: one redemption, one 201, counted once
    results = at_once([lambda: redeem(stack, token, code, "the-order") for _ in range(20)])
    assert outcomes(results) == Counter({(201, None): 1, (200, None): 19})
    assert len({r.body["redemption_id"] for r in results}) == 1
    assert len(redemption_records(stack, coupon["id"])) == 1
    check_invariant(stack, sharded, coupon, 1)
    # 20 parallel rollbacks of it: every one answers rolled_back, the uses come back once
    rid = results[0].body["redemption_id"]
    shop = tokens.issue_access("shop-backend")  # issue 12: the shop rolls back, not the shopper
    rollbacks = at_once([lambda: stack.request("POST", f"/redemptions/{rid}/rollback", token=shop)
                         for _ in range(20)])
    assert outcomes(rollbacks) == Counter({(200, None): 20})
    assert {r.body["status"] for r in rollbacks} == {"rolled_back"}
    assert len({r.body["rolled_back_at"] for r in rollbacks}) == 1
    check_invariant(stack, sharded, coupon, 0)
    # And exactly one use came back, for the coupon (max_uses 1) and for this user (uses_per_user 1)
    again = at_once([lambda i=i: redeem(stack, token, code, f"next-{i}") for i in range(10)])
    assert Counter(r.status for r in again) == Counter({201: 1, 422: 9})
    check_invariant(stack, sharded, coupon, 1)
