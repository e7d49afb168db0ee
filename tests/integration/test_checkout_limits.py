"""Per-customer usage across a change of code, replays of rolled-back orders, and lockouts under
concurrency: the real CheckoutService and CheckoutStore against moto in-process.

Where AWS is less kind than moto (stale reads, requests in flight at once), the interleaving is
forced: `Gate` lets every request make its read before any of them writes, which is what an
eventually consistent read under a burst allows.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from coupons import wiring
from coupons.adapters import aws
from coupons.adapters.checkout_store import CheckoutStore
from coupons.checkout import CheckoutService, redemption_id
from coupons.errors import CouponNotFound, DomainError, RateLimited, RuleViolation
from coupons.models import CouponUpdate
from coupons.settings import get_settings
from test_checkout_store import (  # the module's moto environment and helpers
    ORDER,
    aws_env,
    caller,
    count_of,
    counting,
    create,
    item,
    live_redemptions,
    redeem_request,
    service,
    validate_request,
)

__all__ = ["aws_env"]  # a fixture, used by name


def usage_of(coupon_id: str, user: str) -> int | None:
    found = item(f"USAGE#{coupon_id}", f"USER#{user}")
    return None if found is None else int(found["uses"]["N"])


# --- hole 1: a new code keeps every customer's count ----------------------------------------


def test_a_new_code_keeps_every_customers_count(aws_env: Any) -> None:
    # Given a one-per-customer coupon that alice has used
    coupon = create(code="LEAKED-1", uses_per_user=1)
    checkout = service()
    first = checkout.redeem(redeem_request("leaked-1", "o-1"), caller("alice"))
    assert first.created
    # When the admin gives it a new code (the old one leaked)
    wiring.admin_service().update(coupon["id"], CouponUpdate(code="FRESH-1"), "admin-1")
    # Then alice has still used it: validate and redeem under the new code say so
    for attempt in (lambda: checkout.validate(validate_request("fresh-1"), caller("alice")),
                    lambda: checkout.redeem(redeem_request("fresh-1", "o-2"), caller("alice"))):
        with pytest.raises(RuleViolation) as raised:
            attempt()
        assert raised.value.code == "USER_LIMIT_REACHED"
    # Also for a container that never saw the old code (nothing cached)
    with pytest.raises(RuleViolation) as raised:
        service().redeem(redeem_request("fresh-1", "o-3"), caller("alice"))
    assert raised.value.code == "USER_LIMIT_REACHED"
    # While bob, who never used it, may
    assert checkout.redeem(redeem_request("fresh-1", "o-4"), caller("bob")).created
    assert count_of(coupon["id"]) == 2 == live_redemptions(coupon["id"])
    # And the use is kept by coupon, not by code
    assert usage_of(coupon["id"], "alice") == 1


def test_a_rollback_after_a_new_code_gives_the_customer_the_use_back(aws_env: Any) -> None:
    coupon = create(code="RECODE-RB-1", uses_per_user=1)
    checkout = service()
    done = checkout.redeem(redeem_request("recode-rb-1", "o-1"), caller("carla"))
    wiring.admin_service().update(coupon["id"], CouponUpdate(code="RECODE-RB-2"), "admin-1")
    checkout.rollback(done.view["redemption_id"], caller("boss", admin=True))
    assert usage_of(coupon["id"], "carla") == 0
    assert checkout.redeem(redeem_request("recode-rb-2", "o-2"), caller("carla")).created
    with pytest.raises(RuleViolation) as raised:
        checkout.redeem(redeem_request("recode-rb-2", "o-3"), caller("carla"))
    assert raised.value.code == "USER_LIMIT_REACHED"
    assert count_of(coupon["id"]) == 1 == live_redemptions(coupon["id"])


def test_validate_stays_one_call_when_warm_and_a_cold_container_adds_one_usage_read(aws_env: Any) -> None:
    create(code="WARM-USAGE-1", uses_per_user=2)
    cold = service()
    with counting("dynamodb", "kms") as count_calls:
        cold.validate(validate_request("warm-usage-1"), caller("dora"))  # learns which coupon the code is
        assert count_calls.calls["dynamodb:BatchGetItem"] == 1 and count_calls.calls["dynamodb:GetItem"] == 1
        count_calls.calls.clear()
        cold.validate(validate_request("warm-usage-1"), caller("dora"))
        assert dict(count_calls.calls) == {"dynamodb:BatchGetItem": 1}


# --- hole 10c: replaying a rolled-back order ------------------------------------------------


def test_replaying_a_rolled_back_order_is_409_already_rolled_back(aws_env: Any) -> None:
    create(code="RB-REPLAY-1", uses_per_user=None)
    checkout = service()
    done = checkout.redeem(redeem_request("rb-replay-1", "order-rb"), caller("eve"))
    checkout.rollback(done.view["redemption_id"], caller("boss", admin=True))
    # The same order again: not a 200 "rolled_back" that a client could take for success
    with pytest.raises(DomainError) as raised:
        checkout.redeem(redeem_request("rb-replay-1", "order-rb"), caller("eve"))
    assert (raised.value.status, raised.value.code) == (409, "ALREADY_ROLLED_BACK")
    # A different order under that order_id is still an idempotency conflict
    other = {**ORDER, "items": [{**ORDER["items"][0], "quantity": 7}]}
    with pytest.raises(DomainError) as raised:
        checkout.redeem(redeem_request("rb-replay-1", "order-rb", other), caller("eve"))
    assert raised.value.code == "IDEMPOTENCY_CONFLICT"


def test_replaying_a_rolled_back_order_whose_limit_is_used_is_still_409(aws_env: Any) -> None:
    # The rule check says USER_LIMIT_REACHED (another order used the use given back); a replay answers first
    coupon = create(code="RB-REPLAY-2", uses_per_user=1)
    checkout = service()
    done = checkout.redeem(redeem_request("rb-replay-2", "order-a"), caller("fay"))
    checkout.rollback(done.view["redemption_id"], caller("boss", admin=True))
    assert checkout.redeem(redeem_request("rb-replay-2", "order-b"), caller("fay")).created
    with pytest.raises(DomainError) as raised:
        checkout.redeem(redeem_request("rb-replay-2", "order-a"), caller("fay"))
    assert raised.value.code == "ALREADY_ROLLED_BACK"
    assert count_of(coupon["id"]) == 1
    assert redemption_id(coupon["id"], "order-a", "user:fay") == done.view["redemption_id"]


# --- hole 2: lockouts under concurrency -----------------------------------------------------


class Gate:
    """The real client for many threads: one call at a time (moto is not concurrency-safe), and every
    thread's first read held back until `parties` threads have read, so all reads precede any write."""

    def __init__(self, real: Any, parties: int) -> None:
        self._real = real
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(parties, timeout=60)
        self._read = threading.local()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)

        def call(**kwargs: Any) -> Any:
            with self._lock:
                result = method(**kwargs)
            if name == "batch_get_item" and not getattr(self._read, "done", False):
                self._read.done = True
                self._barrier.wait()
            return result
        return call


def burst(calls: list[Callable[[], Any]]) -> list[int]:
    """Every call at once (one thread each); the HTTP status each was answered."""

    def outcome(call: Callable[[], Any]) -> int:
        try:
            call()
        except DomainError as error:
            return error.status
        return 200

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(outcome, calls))


def guard_service(client: Any, *, at: datetime | None = None, **limits: Any) -> CheckoutService:
    s = get_settings().model_copy(update={"failed_attempt_window_seconds": 3600, **limits})
    store = CheckoutStore(client, s.coupons_table, s.guards_table)
    return CheckoutService(store, wiring.cipher, s, sleep=lambda _: None,
                           **({"clock": lambda: at} if at is not None else {}))


def test_40_guesses_by_one_user_all_read_before_any_is_counted_get_at_most_10_404s(aws_env: Any) -> None:
    wiring.cipher()  # warm the keyring outside the race
    checkout = guard_service(Gate(aws.client("dynamodb"), 40), failed_attempts_per_user=10,
                             failed_attempts_per_ip=1000)
    # When one user sends 40 wrong guesses at once, every read seeing no failure yet
    answers = burst([lambda i=i: checkout.validate(validate_request(f"NOPE-U-{i}"), caller(
        "burst-user", ip="10.7.0.1")) for i in range(40)])
    # Then no more than the limit were answered 404; the rest 429
    assert Counter(answers) == Counter({404: 10, 429: 30})
    # And the user is locked now, valid code or not
    create(code="AFTER-BURST-1")
    with pytest.raises(RateLimited):
        guard_service(aws.client("dynamodb"), failed_attempts_per_user=10).validate(
            validate_request("after-burst-1"), caller("burst-user", ip="10.7.0.2"))


def test_40_guesses_from_one_ip_all_read_before_any_is_counted_get_at_most_10_404s(aws_env: Any) -> None:
    wiring.cipher()
    checkout = guard_service(Gate(aws.client("dynamodb"), 40), failed_attempts_per_user=10,
                             failed_attempts_per_ip=10)
    # When 40 users behind one IP send one wrong guess each, at once
    answers = burst([lambda i=i: checkout.redeem(redeem_request(f"NOPE-I-{i}", f"o-{i}"), caller(
        f"ip-user-{i}", ip="10.8.0.1")) for i in range(40)])
    # Then the IP's limit held
    assert Counter(answers) == Counter({404: 10, 429: 30})
    # And a user refused because of the IP was not counted as having failed; a user answered 404 was
    strict = guard_service(aws.client("dynamodb"), failed_attempts_per_user=1)
    for i, answer in enumerate(answers):
        expected = RateLimited if answer == 404 else CouponNotFound
        with pytest.raises(expected):
            strict.validate(validate_request("NOPE-AGAIN"), caller(f"ip-user-{i}", ip=f"10.9.0.{i}"))


def test_a_burst_just_after_a_bucket_edge_gets_no_404_past_the_limit_reached_just_before_it(aws_env: Any) -> None:
    wiring.cipher()
    edge = 1_800_000_000  # a bucket boundary (window 3600)
    # Given a user who failed 10 times (the limit) a second before the bucket ends
    late = guard_service(aws.client("dynamodb"), at=datetime.fromtimestamp(edge - 1, UTC),
                         failed_attempts_per_user=10, failed_attempts_per_ip=1000)
    for i in range(10):
        with pytest.raises(CouponNotFound):
            late.validate(validate_request(f"NOPE-E-{i}"), caller("edge-user", ip="10.6.0.1"))
    # When 40 more guesses arrive at once a second after the edge
    early = guard_service(Gate(aws.client("dynamodb"), 40), at=datetime.fromtimestamp(edge + 1, UTC),
                          failed_attempts_per_user=10, failed_attempts_per_ip=1000)
    answers = burst([lambda i=i: early.validate(validate_request(f"NOPE-F-{i}"), caller(
        "edge-user", ip="10.6.0.1")) for i in range(40)])
    # Then none is answered 404: 10 in two seconds is the limit, wherever the bucket edge falls
    assert Counter(answers) == Counter({429: 40})
