"""Shared by the edit-race tests: a module-scoped moto environment, a coupon's raw state, and two ways
to force an interleaving (`PauseBeforeWrite`: run something inside the first write call;
`Paused`: run an operation in a thread stopped just before its first write)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from coupons import wiring
from coupons.adapters import aws
from coupons.adapters.checkout_store import CheckoutStore, shard_key
from coupons.adapters.coupon_store import CouponStore
from coupons.admin import AdminService
from coupons.checkout import CheckoutService
from coupons.errors import RuleViolation
from coupons.http import Identity
from coupons.models import CouponCreate, CouponUpdate, RedeemRequest
from coupons.settings import get_settings

THRESHOLD = 5
SHARDS = 3
ORDER = {"currency": "USD", "items": [{"product_id": "p1", "category": "shoes", "unit_price": 5000, "quantity": 1}]}
WRITES = frozenset({"transact_write_items", "update_item", "put_item", "delete_item"})


@contextmanager
def moto_environment() -> Iterator[Any]:
    """One moto environment for a module (provisioning per test costs seconds); each test has its own codes."""
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


# Issue 12: the shop rolls back (a server or an admin), not the customer
SHOP = Identity(user_id="client:shop-backend", email=None, groups=frozenset(), ip="10.0.0.2",
                user_agent="pytest/1.0", client_id="shop-backend", scopes=frozenset({"coupons/checkout"}))


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
