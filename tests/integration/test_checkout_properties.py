"""Property tests: the checkout's limits hold under every interleaving hypothesis can find.

The real CheckoutService, CheckoutStore and AdminService against moto in-process; each
request is an actor whose AWS calls run in the order hypothesis chooses (interleave.py). The
invariants:

- caps: the coupon's counter equals its live redemptions and never exceeds max_uses;
- per customer: a customer's live redemptions never exceed uses_per_user and equal the
  usage item's count, across a change of the coupon's code and a rollback in the race;
- lockouts: per user and per IP, no bucket holds more than the limit of failures answered
  404; every 404 is counted and every 429 is not; the sliding window's estimate with the
  failures admitted never passes the limit; and a 429 within one bucket has a reason (the
  user or the IP is at its limit).
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import boto3
from coupons import wiring
from coupons.adapters import aws
from coupons.adapters.checkout_store import CheckoutStore, CouponIds
from coupons.adapters.coupon_store import CouponStore
from coupons.admin import AdminService
from coupons.checkout import CheckoutService, Redeemed
from coupons.errors import (
    AlreadyRolledBack,
    CouponNotFound,
    IdempotencyConflict,
    RateLimited,
    RuleViolation,
)
from coupons.guards import Counts, Policy
from coupons.models import CouponUpdate
from coupons.settings import get_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interleave import Interleaver
from test_checkout_store import (
    aws_env,
    caller,
    count_of,
    create,
    item,
    live_redemptions,
    redeem_request,
    service,
)
from test_checkout_store import validate_request as guess_request

__all__ = ["aws_env"]  # a fixture, used by name

_runs = itertools.count()
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])


def user_redemptions(coupon_id: str) -> Counter[str]:
    """Live redemptions per user (gsi1, by coupon)."""
    pages = boto3.client("dynamodb").get_paginator("query").paginate(
        TableName=get_settings().coupons_table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :p",
        ExpressionAttributeValues={":p": {"S": f"CREDEEM#{coupon_id}"}})
    return Counter(i["user_id"]["S"] for page in pages for i in page["Items"] if i["status"]["S"] == "redeemed")


REDEEM_OUTCOMES = (Redeemed, RuleViolation, CouponNotFound, IdempotencyConflict, AlreadyRolledBack)


@PROPERTY
@given(data=st.data(), max_uses=st.integers(1, 3), per_user=st.integers(1, 2),
       requests=st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 3), st.integers(0, 1)),
                         min_size=2, max_size=5),
       recode=st.booleans(), rollback=st.booleans())
def test_caps_and_per_customer_limits_hold_under_any_interleaving(
        aws_env: Any, data: st.DataObject, max_uses: int, per_user: int,
        requests: list[tuple[int, bool, int, int]], recode: bool, rollback: bool) -> None:
    run = next(_runs)
    old_code, new_code = f"PROP{run}OLD", f"PROP{run}NEW"
    users = [f"p{run}-u{n}" for n in range(3)]
    ip = f"10.{run // 250}.{run % 250}.1"
    coupon = create(code=old_code, max_uses=max_uses, uses_per_user=per_user)
    interleaver = Interleaver(aws.client("dynamodb"))
    s = get_settings()
    # Two containers, each with its own map of codes to coupon ids; the first has seen the old code
    stores = [CheckoutStore(interleaver.client, s.coupons_table, s.guards_table, coupon_ids=CouponIds())
              for _ in range(2)]
    checkouts = [CheckoutService(store, wiring.cipher, s, sleep=lambda _: None) for store in stores]
    checkouts[0].validate(guess_request(old_code), caller(f"p{run}-warm", ip=ip))  # it knows the old code
    # Given the first customer has used the coupon once already (before its code may change)
    before = service().redeem(redeem_request(old_code, f"{run}-before"), caller(users[0], ip=ip))
    # When redemptions (old or new code, replays among them), a new code and a rollback race
    actors: dict[str, Any] = {}
    for n, (user, new, order, container) in enumerate(requests):
        code = new_code if new else old_code
        actors[f"redeem-{n}"] = (lambda c=checkouts[container], code=code, order=order, user=user:
                                 c.redeem(redeem_request(code, f"{run}-o{order}"), caller(users[user], ip=ip)))
    if recode:
        admin = AdminService(CouponStore(interleaver.client, s.coupons_table), wiring.cipher, s)
        actors["recode"] = lambda: admin.update(coupon["id"], CouponUpdate(code=new_code), "admin-1")
    if rollback:
        actors["rollback"] = lambda: checkouts[1].rollback(before.view["redemption_id"],
                                                           caller("boss", admin=True, ip=ip))
    results = interleaver.run(actors, lambda waiting: data.draw(st.sampled_from(waiting)))
    # Then every answer is one of the contract's, and nothing crashed
    for name, outcome in results.items():
        if name.startswith("redeem"):
            assert isinstance(outcome, REDEEM_OUTCOMES), (name, outcome, interleaver.trace)
        else:
            assert isinstance(outcome, dict), (name, outcome, interleaver.trace)
    # And the cap held and the counter is exact
    live = user_redemptions(coupon["id"])
    assert count_of(coupon["id"]) == sum(live.values()) == live_redemptions(coupon["id"]) <= max_uses, \
        interleaver.trace
    # And no customer passed the per-customer limit, whatever code they used; the usage items are exact
    for user in users:
        assert live[user] <= per_user, (user, live, interleaver.trace)
        stored = item(f"USAGE#{coupon['id']}", f"USER#{user}")
        assert (int(stored["uses"]["N"]) if stored else 0) == live[user], (user, live, interleaver.trace)


WINDOW = 10
EDGE = 1_900_000_000  # a bucket boundary for a window of 10 seconds


@PROPERTY
@given(data=st.data(), per_user=st.integers(1, 4), per_ip=st.integers(1, 6),
       guesses=st.lists(st.tuples(st.integers(0, 2), st.integers(-95, 95)), min_size=2, max_size=9))
def test_no_more_404s_than_the_limits_under_any_interleaving(
        aws_env: Any, data: st.DataObject, per_user: int, per_ip: int, guesses: list[tuple[int, int]]) -> None:
    run = next(_runs)
    users = [f"g{run}-u{n}" for n in range(3)]
    ip = f"10.200.{run // 250}.{run % 250}"
    wiring.cipher()  # the keyring is warm: the actors make DynamoDB calls only
    interleaver = Interleaver(aws.client("dynamodb"))
    s = get_settings().model_copy(update={"failed_attempts_per_user": per_user, "failed_attempts_per_ip": per_ip,
                                          "failed_attempt_window_seconds": WINDOW})
    store = CheckoutStore(interleaver.client, s.coupons_table, s.guards_table)
    policy = Policy(per_user, per_ip, WINDOW)
    actors = {}
    for n, (user, tenths) in enumerate(guesses):
        at = datetime.fromtimestamp(EDGE + tenths / 10, UTC)
        checkout = CheckoutService(store, wiring.cipher, s, clock=lambda at=at: at, sleep=lambda _: None)
        actors[f"guess-{n}"] = (lambda c=checkout, n=n, user=user:
                                c.validate(guess_request(f"NOPE{run}X{n}"), caller(users[user], ip=ip)))
    results = interleaver.run(actors, lambda waiting: data.draw(st.sampled_from(waiting)))
    answers = {name: type(outcome) for name, outcome in results.items()}
    assert set(answers.values()) <= {CouponNotFound, RateLimited}, (results, interleaver.trace)

    def admitted(names: list[str]) -> list[int]:
        """The guesses answered 404 among those: their times, in tenths of a second from the edge."""
        return [guesses[int(name.split("-")[1])][1] for name in names if answers[name] is CouponNotFound]

    subjects = [("ip", ip, per_ip, list(answers))] + [
        ("user", users[u], per_user, [f"guess-{n}" for n, (g, _) in enumerate(guesses) if g == u])
        for u in range(3)]
    final: dict[str, tuple[int, int]] = {}
    for scope, subject, limit, names in subjects:
        times = admitted(names)
        stored = boto3.client("dynamodb").get_item(
            TableName=s.guards_table, Key={"pk": {"S": f"FAIL#{scope}#{subject}"}, "sk": {"S": "WINDOW"}},
            ConsistentRead=True).get("Item")
        # (bucket -1: before the edge, bucket 0: after it)
        in_bucket = {-1: 0, 0: 0}
        if stored:
            bucket = int(stored["bucket"]["N"]) - EDGE // WINDOW
            in_bucket[bucket] = int(stored["current"]["N"])
            if bucket == 0:
                in_bucket[-1] = int(stored["previous"]["N"])
        context = (scope, per_user, per_ip, guesses, results, interleaver.trace)
        # No bucket holds more than the limit; every 404 is counted, and nothing else
        assert in_bucket[-1] <= limit and in_bucket[0] <= limit, context
        assert in_bucket[-1] + in_bucket[0] == len(times), context
        # Each failure after the edge fitted when admitted: estimate + 1 <= limit (the bucket before weighing
        # 1 - fraction); checked for the last one admitted, at the latest moment any of them had
        if in_bucket[0]:
            latest = max([t for t in times if t >= 0], default=0) / 10
            estimate = policy.estimate(Counts(in_bucket[0], in_bucket[-1]), EDGE + latest)
            assert estimate <= limit + 1e-9, context
        final[subject] = (in_bucket[-1], in_bucket[0])
    # A 429 among guesses that all fell in one bucket had a reason: its user or the IP was full
    if len({t >= 0 for _, t in guesses}) == 1:
        ip_full = sum(final[ip]) >= per_ip
        for n, (user, _) in enumerate(guesses):
            if answers[f"guess-{n}"] is RateLimited:
                assert ip_full or sum(final[users[user]]) >= per_user, (guesses, results, interleaver.trace)
