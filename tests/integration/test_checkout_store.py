"""The checkout service and store against moto: call counts, lost races, hot-coupon shards, injected faults."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from coupons import wiring
from coupons.adapters import aws
from coupons.adapters.checkout_store import CheckoutStore, shard_key
from coupons.checkout import CheckoutService, redemption_id
from coupons.clock import utcnow
from coupons.errors import (
    CouponNotFound,
    Forbidden,
    IdempotencyConflict,
    RedemptionNotFound,
    RuleViolation,
    TryAgain,
)
from coupons.http import Identity
from coupons.models import CouponCreate, CouponUpdate, RedeemRequest, ValidateRequest
from coupons.settings import get_settings


@pytest.fixture(scope="module")
def aws_env() -> Iterator[Any]:
    """One moto environment for the module (provisioning per test costs seconds); tests use their own codes."""
    from coupons_local import moto_patches
    from coupons_local.provision import function_environment, provision
    from moto import mock_aws

    moto_patches.apply()  # as in the local stack: transactions copy what they touch, not whole tables
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


@contextmanager
def counting(*services: str) -> Iterator[Any]:
    from conftest import CallCounter

    counter = CallCounter()
    for service_name in services:
        aws.client(service_name).meta.events.register("before-call.*.*", counter)
    try:
        yield counter
    finally:
        for service_name in services:
            aws.client(service_name).meta.events.unregister("before-call.*.*", counter)


ORDER = {"currency": "USD", "items": [{"product_id": "p1", "category": "shoes", "unit_price": 5000, "quantity": 2}]}


def caller(user: str = "u1", *, ip: str = "10.0.0.1", admin: bool = False, email: str | None = None) -> Identity:
    groups = frozenset({"coupon-admins"}) if admin else frozenset()
    return Identity(user_id=user, email=email, groups=groups, ip=ip, user_agent="pytest/1.0")


# Issue 12: rolling back is the shop's call (a server or an admin); a customer gets 403.
SHOP = Identity(user_id="client:shop-backend", email=None, groups=frozenset(), ip="10.0.0.2",
                user_agent="pytest/1.0", client_id="shop-backend", scopes=frozenset({"coupons/checkout"}))


def create(**fields: Any) -> dict[str, Any]:
    fields.setdefault("discount_value", 10)
    return wiring.admin_service().create(CouponCreate.model_validate(fields), "admin-1")


def service(client: Any = None, **settings: Any) -> CheckoutService:
    s = get_settings().model_copy(update=settings)
    store = CheckoutStore(client or aws.client("dynamodb"), s.coupons_table, s.guards_table)
    return CheckoutService(store, wiring.cipher, s, sleep=lambda _: None)


def redeem_request(code: str, order_id: str = "o-1", order: dict[str, Any] | None = None,
                   channel: str = "web") -> RedeemRequest:
    return RedeemRequest.model_validate({"code": code, "channel": channel, "order": order or ORDER,
                                         "order_id": order_id})


def validate_request(code: str) -> ValidateRequest:
    return ValidateRequest.model_validate({"code": code, "channel": "web", "order": ORDER})


def item(pk: str, sk: str) -> dict[str, Any] | None:
    raw = boto3.client("dynamodb").get_item(TableName=get_settings().coupons_table,
                                            Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True)
    return raw.get("Item")


def count_of(coupon_id: str) -> int:
    return int(wiring.admin_service().get(coupon_id)["redeemed_count"])


def live_redemptions(coupon_id: str) -> int:
    """The conservation invariant's other side: redemption records still redeemed (gsi1, by coupon)."""
    pages = boto3.client("dynamodb").get_paginator("query").paginate(
        TableName=get_settings().coupons_table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :p",
        ExpressionAttributeValues={":p": {"S": f"CREDEEM#{coupon_id}"}})
    return sum(1 for page in pages for i in page["Items"] if i["status"]["S"] == "redeemed")


# --- what each operation costs ------------------------------------------------------------


def test_validate_is_one_dynamodb_call_and_no_kms_call_when_warm(aws_env: Any) -> None:
    create(code="COST-1")
    checkout = service()
    checkout.validate(validate_request("cost-1"), caller())  # warm the keyring
    with counting("dynamodb", "kms") as count_calls:
        # When a valid code is checked
        assert checkout.validate(validate_request("cost-1"), caller())["discount_amount"] == 1000
        # Then it took one BatchGetItem (coupon, usage, counters) and nothing else
        assert dict(count_calls.calls) == {"dynamodb:BatchGetItem": 1}
        # And a failed guess costs three single-item writes: the user's and the IP's counters (each a
        # conditional increment, made before the answer) and the day's total
        count_calls.calls.clear()
        with pytest.raises(CouponNotFound):
            checkout.validate(validate_request("no-such-code"), caller("guesser"))
        assert dict(count_calls.calls) == {"dynamodb:BatchGetItem": 1, "dynamodb:UpdateItem": 3}


def test_redeem_is_one_read_and_one_transaction_and_rollback_two_calls(aws_env: Any) -> None:
    coupon = create(code="COST-2", max_uses=5, uses_per_user=None)
    checkout = service()
    checkout.validate(validate_request("cost-2"), caller("warm"))
    checkout.redeem(redeem_request("cost-2", "o-warm"), caller("warm"))  # this IP has met "warm"
    with counting("dynamodb", "kms") as count_calls:
        done = checkout.redeem(redeem_request("cost-2", "o-2"), caller("warm"))
        assert done.created and dict(count_calls.calls) == {"dynamodb:BatchGetItem": 1,
                                                            "dynamodb:TransactWriteItems": 1}
        count_calls.calls.clear()
        checkout.rollback(done.view["redemption_id"], SHOP)
        assert dict(count_calls.calls) == {"dynamodb:GetItem": 1, "dynamodb:TransactWriteItems": 1}
    assert count_of(coupon["id"]) == 1 == live_redemptions(coupon["id"])


# --- rules that depend on the store -------------------------------------------------------


def test_replay_conflict_and_the_redemption_record(aws_env: Any) -> None:
    coupon = create(code="REPLAY-1", uses_per_user=1)
    checkout = service()
    first = checkout.redeem(redeem_request("replay-1", "order-9"), caller("alice"))
    # The same order again (even with the limit used up): the same redemption, not counted again
    again = checkout.redeem(redeem_request("REPLAY1", "order-9"), caller("alice"))
    assert first.created and not again.created and again.view["redemption_id"] == first.view["redemption_id"]
    assert count_of(coupon["id"]) == 1
    # A different order under the same order_id: 409
    other = {**ORDER, "items": [{**ORDER["items"][0], "quantity": 3}]}
    with pytest.raises(IdempotencyConflict):
        checkout.redeem(redeem_request("replay-1", "order-9", other), caller("alice"))
    # Another customer's identical order id is another order (contract v2: an order id belongs to its caller)
    assert checkout.redeem(redeem_request("replay-1", "order-9"), caller("mallory")).created
    # And the record keeps who, where, how; never the code
    stored = item(f"REDEMPTION#{first.view['redemption_id']}", "REDEMPTION")
    assert stored is not None
    assert stored["user_id"]["S"] == "alice" and stored["ip"]["S"] == "10.0.0.1"
    assert stored["user_agent"]["S"] == "pytest/1.0" and stored["channel"]["S"] == "web"
    assert first.view["redemption_id"] == redemption_id(coupon["id"], "order-9", "user:alice")
    assert "REPLAY" not in json.dumps(stored).upper()


def test_a_usage_item_left_by_a_deleted_coupon_with_the_same_code_counts_zero(aws_env: Any) -> None:
    old = create(code="REUSED-1", uses_per_user=1)
    checkout = service()
    checkout.redeem(redeem_request("reused-1", "o-1"), caller("bob"))
    wiring.admin_service().delete(old["id"], "admin-1")
    new = create(code="REUSED-1", uses_per_user=1)
    # bob's usage item (same code hash) belongs to the old coupon: stale, so bob may use the new one
    assert checkout.validate(validate_request("reused-1"), caller("bob"))["coupon_id"] == new["id"]
    checkout.redeem(redeem_request("reused-1", "o-2"), caller("bob"))
    with pytest.raises(RuleViolation) as raised:
        checkout.redeem(redeem_request("reused-1", "o-3"), caller("bob"))
    assert raised.value.code == "USER_LIMIT_REACHED"
    # Rolling back the old coupon's redemption gives nothing back to the new coupon's usage
    rid = redemption_id(old["id"], "o-1", "user:bob")
    checkout.rollback(rid, SHOP)
    with pytest.raises(RuleViolation):
        checkout.redeem(redeem_request("reused-1", "o-4"), caller("bob"))
    assert count_of(new["id"]) == 1


def test_rollback_after_a_recode_gives_the_use_back_to_the_moved_coupon(aws_env: Any) -> None:
    coupon = create(code="MOVE-1", max_uses=1)
    checkout = service()
    done = checkout.redeem(redeem_request("move-1"), caller("carol"))
    wiring.admin_service().update(coupon["id"], CouponUpdate(code="MOVED-2"), "admin-1")
    assert count_of(coupon["id"]) == 1
    checkout.rollback(done.view["redemption_id"], SHOP)
    assert count_of(coupon["id"]) == 0 == live_redemptions(coupon["id"])
    checkout.redeem(redeem_request("moved-2", "o-5"), caller("dave"))


def test_an_admin_edit_between_read_and_write_is_decided_from_the_new_coupon(aws_env: Any) -> None:
    coupon = create(code="RACE-EDIT", max_uses=10)
    real = aws.client("dynamodb")

    class DisableFirst:
        """Pauses the coupon just before the redemption's transaction (a lost race)."""

        def __getattr__(self, name: str) -> Any:
            if name == "transact_write_items":
                def transact(**kwargs: Any) -> Any:
                    wiring.admin_service().update(coupon["id"], CouponUpdate(status="disabled"), "admin-1")
                    return real.transact_write_items(**kwargs)
                return transact
            return getattr(real, name)

    with pytest.raises(RuleViolation) as raised:
        service(DisableFirst()).redeem(redeem_request("race-edit"), caller())
    assert raised.value.code == "COUPON_DISABLED"
    assert count_of(coupon["id"]) == 0 == live_redemptions(coupon["id"])


def test_redemptions_are_visible_only_to_their_user_and_admins(aws_env: Any) -> None:
    create(code="MINE-1")
    checkout = service()
    rid = checkout.redeem(redeem_request("mine-1"), caller("erin")).view["redemption_id"]
    assert checkout.get_redemption(rid, caller("erin"))["user_id"] == "erin"
    assert checkout.get_redemption(rid, caller("boss", admin=True))["user_id"] == "erin"
    for attempt in (checkout.get_redemption, checkout.rollback):
        with pytest.raises(RedemptionNotFound):
            attempt(rid, caller("frank"))
        with pytest.raises(RedemptionNotFound):
            attempt("not-a-redemption", caller("erin"))
    with pytest.raises(Forbidden):  # issue 12: their own, but the shop rolls back
        checkout.rollback(rid, caller("erin"))
    assert checkout.get_redemption(rid, caller("erin"))["status"] == "redeemed"
    assert checkout.get_redemption(rid, SHOP)["user_id"] == "erin"  # a server reads any


# --- hot coupons --------------------------------------------------------------------------


def shard_state(coupon_id: str, n: int) -> list[tuple[int, int]]:
    found = []
    for index in range(n):
        raw = item(shard_key(coupon_id, index)["pk"]["S"], "SHARD")
        assert raw is not None
        found.append((int(raw["remaining"]["N"]), int(raw["redeemed"]["N"])))
    return found


def test_a_hot_coupon_splits_its_cap_and_never_says_exhausted_while_a_shard_has_room(aws_env: Any) -> None:
    # Given a coupon above the hot threshold, already redeemed once before it was split
    coupon = create(code="HOT-1", max_uses=7, uses_per_user=None)
    service().redeem(redeem_request("hot-1", "before-split"), caller("u0"))
    checkout = service(hot_coupon_threshold=5, hot_coupon_shards=3)
    # When it is redeemed until it runs out
    results = []
    for i in range(9):
        try:
            results.append(checkout.redeem(redeem_request("hot-1", f"o-{i}"), caller(f"u{i}")).created)
        except RuleViolation as error:
            results.append(error.code)
    # Then exactly the cap was admitted, the rest saw COUPON_EXHAUSTED only once every shard was empty
    assert results == [True] * 6 + ["COUPON_EXHAUSTED"] * 3
    shards = shard_state(coupon["id"], 3)
    assert sum(r for r, _ in shards) == 0 and sum(d for _, d in shards) == 7  # Σ remaining + redeemed = cap
    assert count_of(coupon["id"]) == 7 == live_redemptions(coupon["id"])  # the admin view sums the shards
    # And validate knows without trying (the hint), until a rollback gives a use back
    with pytest.raises(RuleViolation):
        checkout.validate(validate_request("hot-1"), caller("late"))
    checkout.rollback(redemption_id(coupon["id"], "o-3", "user:u3"), SHOP)
    assert checkout.validate(validate_request("hot-1"), caller("late"))["valid"]
    # A use taken before the split goes back to shard 0
    checkout.rollback(redemption_id(coupon["id"], "before-split", "user:u0"), SHOP)
    shards = shard_state(coupon["id"], 3)
    assert sum(r for r, _ in shards) == 2 and sum(d for _, d in shards) == 5
    assert count_of(coupon["id"]) == 5 == live_redemptions(coupon["id"])


def test_a_hot_coupons_cap_change_is_rebalanced_across_the_shards(aws_env: Any) -> None:
    coupon = create(code="HOT-2", max_uses=4, uses_per_user=None)
    checkout = service(hot_coupon_threshold=2, hot_coupon_shards=4)
    for i in range(4):
        checkout.redeem(redeem_request("hot-2", f"o-{i}"), caller(f"u{i}"))
    with pytest.raises(RuleViolation):
        checkout.redeem(redeem_request("hot-2", "o-x"), caller("ux"))
    wiring.admin_service().update(coupon["id"], CouponUpdate(max_uses=6), "admin-1")
    assert wiring.admin_service().get(coupon["id"])["remaining_uses"] == 2
    for i in (4, 5):
        assert checkout.redeem(redeem_request("hot-2", f"o-{i}"), caller(f"u{i}")).created
    with pytest.raises(RuleViolation):
        checkout.redeem(redeem_request("hot-2", "o-y"), caller("uy"))
    shards = shard_state(coupon["id"], 4)
    assert sum(r for r, _ in shards) == 0 and sum(d for _, d in shards) == 6
    assert count_of(coupon["id"]) == 6 == live_redemptions(coupon["id"])


# --- injected faults: 503 TRY_AGAIN, nothing half-written, a retry succeeds ---------------


def _cancelled(code: str) -> ClientError:
    return ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                        "CancellationReasons": [{"Code": code}, {"Code": "None"}, {"Code": "None"}]},
                       "TransactWriteItems")


def _throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                       operation)


def _timeout() -> ReadTimeoutError:
    return ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")


class Faulty:
    """The real client, except that the next calls of some operations raise what they are given.

    `after=True` faults happen once the real call has gone through (the answer was lost).
    """

    def __init__(self, real: Any) -> None:
        self._real = real
        self.faults: dict[str, list[tuple[Callable[[], BaseException], bool]]] = {}

    def fail(self, operation: str, fault: Callable[[], BaseException], times: int = 1, *, after: bool = False) -> None:
        self.faults.setdefault(operation, []).extend([(fault, after)] * times)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        queue = self.faults.get(name)
        if not queue:
            return method

        def call(**kwargs: Any) -> Any:
            fault, after = queue.pop(0)
            if after:
                method(**kwargs)
            raise fault()
        return call


def state_of(coupon_id: str) -> tuple[int, int, int]:
    """(the coupon's count, live redemption records, all redemption records)."""
    records = boto3.client("dynamodb").query(
        TableName=get_settings().coupons_table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :p",
        ExpressionAttributeValues={":p": {"S": f"CREDEEM#{coupon_id}"}})["Count"]
    return count_of(coupon_id), live_redemptions(coupon_id), records


FAULTS = [
    ("throttled transaction", "transact_write_items", lambda: _throttled("TransactWriteItems")),
    ("transaction conflict", "transact_write_items", lambda: _cancelled("TransactionConflict")),
    ("transaction timeout", "transact_write_items", _timeout),
    ("throttled read", "batch_get_item", lambda: _throttled("BatchGetItem")),
    ("read timeout", "batch_get_item",
     lambda: ConnectTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")),
]


@pytest.mark.parametrize(("case", "operation", "fault"), FAULTS, ids=[f[0] for f in FAULTS])
def test_store_faults_answer_try_again_change_nothing_and_a_retry_succeeds(
        aws_env: Any, case: str, operation: str, fault: Callable[[], BaseException]) -> None:
    coupon = create(code=f"FAULT-{abs(hash(case)) % 10**6}", max_uses=3)
    code = coupon["code"]
    client = Faulty(aws.client("dynamodb"))
    checkout = service(client)
    # Given the store fails more often than the bounded retry tries
    client.fail(operation, fault, times=10)
    # When a redemption is attempted
    with pytest.raises(TryAgain) as raised:
        checkout.redeem(redeem_request(code), caller("gina"))
    # Then 503 TRY_AGAIN with Retry-After, and nothing was written
    assert raised.value.status == 503 and raised.value.retry_after == 1
    assert state_of(coupon["id"]) == (0, 0, 0)
    assert item(f"USAGE#{coupon['id']}", "USER#gina") is None
    # And once the store recovers, the retry succeeds and counts once
    client.faults.clear()
    assert checkout.redeem(redeem_request(code), caller("gina")).created
    assert state_of(coupon["id"]) == (1, 1, 1)
    assert (item(f"USAGE#{coupon['id']}", "USER#gina") or {}).get("uses") == {"N": "1"}


def test_a_transient_fault_or_two_is_absorbed_by_the_bounded_retry(aws_env: Any) -> None:
    coupon = create(code="FAULT-SOME", max_uses=3)
    client = Faulty(aws.client("dynamodb"))
    client.fail("transact_write_items", lambda: _cancelled("TransactionConflict"), times=2)
    client.fail("batch_get_item", lambda: _throttled("BatchGetItem"))
    assert service(client).redeem(redeem_request("fault-some"), caller("hana")).created
    assert state_of(coupon["id"]) == (1, 1, 1)


def test_a_commit_whose_answer_was_lost_is_not_counted_twice(aws_env: Any) -> None:
    coupon = create(code="FAULT-LOST", max_uses=3)
    client = Faulty(aws.client("dynamodb"))
    client.fail("transact_write_items", _timeout, after=True)  # committed, then the answer timed out
    done = service(client).redeem(redeem_request("fault-lost"), caller("ivan"))
    assert done.created  # our own write, found on the retry: still a 201
    assert state_of(coupon["id"]) == (1, 1, 1)


def test_rollback_faults_answer_try_again_and_a_retry_gives_back_once(aws_env: Any) -> None:
    coupon = create(code="FAULT-RB", max_uses=3)
    client = Faulty(aws.client("dynamodb"))
    checkout = service(client)
    rid = checkout.redeem(redeem_request("fault-rb"), caller("jo")).view["redemption_id"]
    client.fail("transact_write_items", lambda: _cancelled("TransactionConflict"), times=10)
    with pytest.raises(TryAgain):
        checkout.rollback(rid, SHOP)
    assert checkout.get_redemption(rid, caller("jo"))["status"] == "redeemed"
    assert state_of(coupon["id"])[:2] == (1, 1)
    client.faults.clear()
    client.fail("transact_write_items", _timeout, after=True)  # the first retry commits, its answer is lost
    assert checkout.rollback(rid, SHOP)["status"] == "rolled_back"
    assert state_of(coupon["id"])[:2] == (0, 0)
    assert checkout.rollback(rid, SHOP)["status"] == "rolled_back"
    assert state_of(coupon["id"])[:2] == (0, 0)


def test_through_the_handler_a_store_fault_is_a_503_with_retry_after(aws_env: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    import importlib.util

    from coupons_infra.resources import function

    create(code="FAULT-HTTP", max_uses=3)
    faulty = Faulty(aws.client("dynamodb"))
    faulty.fail("transact_write_items", lambda: _throttled("TransactWriteItems"), times=10)
    from types import SimpleNamespace

    from coupons.routes import checkout as checkout_routes

    real_client = aws.client
    monkeypatch.setattr(checkout_routes, "aws",
                        SimpleNamespace(client=lambda name: faulty if name == "dynamodb" else real_client(name)))
    spec = importlib.util.spec_from_file_location("redeem_handler", function("redeem").directory / "handler.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    event = {
        "resource": "/redemptions", "path": "/redemptions", "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"}, "multiValueHeaders": {},
        "queryStringParameters": None, "pathParameters": None, "isBase64Encoded": False,
        "body": json.dumps({"code": "fault-http", "channel": "web", "order": ORDER, "order_id": "o-http"}),
        "requestContext": {"resourcePath": "/redemptions", "httpMethod": "POST", "stage": "test",
                           "requestId": "r1", "identity": {"sourceIp": "10.1.1.1", "userAgent": "t"},
                           "authorizer": {"token_use": "id", "sub": "kim", "exp": str(int(time.time()) + 600)}},
    }

    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "redeem", 512, "r1"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:redeem"

    response = module.lambda_handler(event, Context())
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"]["code"] == "TRY_AGAIN"
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    multi = {k.lower(): v for k, v in (response.get("multiValueHeaders") or {}).items()}
    assert headers.get("retry-after") == "1" or multi.get("retry-after") == ["1"]
    faulty.faults.clear()
    assert module.lambda_handler(event, Context())["statusCode"] == 201


def test_an_order_needs_no_more_than_its_fields(aws_env: Any) -> None:
    # The redemption keeps discount and totals as computed at the time
    create(code="FIELDS-1", discount_type="FIXED", discount_value=700, currency="USD",
           expires_at=(utcnow() + timedelta(days=2)).isoformat())
    done = service().redeem(redeem_request("fields-1"), caller("lee"))
    stored = item(f"REDEMPTION#{done.view['redemption_id']}", "REDEMPTION")
    assert stored is not None
    assert stored["discount_amount"]["N"] == "700" and stored["order_subtotal"]["N"] == "10000"
    assert stored["gsi3pk"]["S"].startswith(f"DAY#{utcnow().date().isoformat()}#")


def test_unknown_malformed_and_deleted_codes_cost_the_same_work(aws_env: Any) -> None:
    # Given a deleted coupon
    gone = create(code="SAME-WORK-GONE")
    wiring.admin_service().delete(gone["id"], "admin-1")
    checkout = service()
    checkout.validate(validate_request(create(code="SAME-WORK-WARM")["code"]), caller("warm-up"))
    shapes = []
    for code in ("SAME-WORK-UNKNOWN", "!!malformed!!", "same-work-gone"):
        seen: list[dict[str, Any]] = []

        def capture(params: dict[str, Any], seen: list[dict[str, Any]] = seen, **_: Any) -> None:
            seen.append(params)

        events = aws.client("dynamodb").meta.events
        events.register("provide-client-params.dynamodb.*", capture)
        try:
            with counting("dynamodb", "kms") as count_calls, pytest.raises(CouponNotFound) as raised:
                checkout.validate(validate_request(code), caller(f"guess-{len(shapes)}"))
        finally:
            events.unregister("provide-client-params.dynamodb.*", capture)
        # The same calls, the same number of keys per table in the read, the same answer
        read = seen[0]["RequestItems"]
        shapes.append((dict(count_calls.calls), {t: len(v["Keys"]) for t, v in read.items()},
                       raised.value.body()))
    assert shapes[0] == shapes[1] == shapes[2], shapes
