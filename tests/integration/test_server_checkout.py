"""Servers' checkouts in the store (issue 12): what they cost, what they record, what a guest leaves behind."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from coupons import wiring
from coupons.errors import CouponNotFound, RuleViolation
from coupons.http import Identity
from coupons.models import CouponUpdate, RedeemRequest, ValidateRequest
from coupons.settings import get_settings
from test_checkout_store import ORDER, aws_env, caller, counting, create, item, service

__all__ = ["aws_env"]  # a fixture, used by name

BACKEND = Identity(user_id="client:shop-backend", email=None, groups=frozenset(), ip="10.10.10.10",
                   user_agent="backend/2.0", client_id="shop-backend", scopes=frozenset({"coupons/checkout"}))


def body(code: str, customer: dict[str, Any] | None, order_id: str | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {"code": code, "channel": "pos", "order": ORDER}
    if customer is not None:
        values["customer"] = customer
    if order_id is not None:
        values["order_id"] = order_id
    return values


def guards(pk: str) -> dict[str, Any] | None:
    return boto3.client("dynamodb").get_item(TableName=get_settings().guards_table,
                                             Key={"pk": {"S": pk}, "sk": {"S": "WINDOW"}}).get("Item")


@pytest.mark.parametrize("customer", [{"id": "kim", "ip": "203.0.113.9"}, {"id": "kim"}, None])
def test_a_servers_validate_stays_one_dynamodb_call(aws_env: Any, customer: dict[str, Any] | None) -> None:
    code = f"SRV-COST-{len(customer or {})}"
    create(code=code, uses_per_user=None)
    checkout = service()
    request = ValidateRequest.model_validate(body(code, customer))
    checkout.validate(request, BACKEND)  # warm: the keyring, and this container learns the code's coupon id
    with counting("dynamodb", "kms") as calls:
        assert checkout.validate(request, BACKEND)["discount_amount"] == 1000
        # coupon, the customer's usage, the client's, customer's and shopper IP's counters: one BatchGetItem
        assert dict(calls.calls) == {"dynamodb:BatchGetItem": 1}


def test_a_servers_failed_guess_counts_for_the_client_customer_and_named_ip_never_its_own(aws_env: Any) -> None:
    checkout = service()
    with pytest.raises(CouponNotFound):
        checkout.validate(ValidateRequest.model_validate(body("NO-SUCH", {"id": "lee", "ip": "203.0.113.10"})),
                          BACKEND)
    for pk in ("FAIL#client#shop-backend", "FAIL#user#lee", "FAIL#ip#203.0.113.10"):
        found = guards(pk)
        assert found is not None and found["current"]["N"] == "1", pk
    assert guards("FAIL#ip#10.10.10.10") is None  # the server's own address
    # a guest without an IP counts for the client only
    with pytest.raises(CouponNotFound):
        checkout.validate(ValidateRequest.model_validate(body("NO-SUCH-2", None)), BACKEND)
    assert guards("FAIL#client#shop-backend")["current"]["N"] == "2"  # type: ignore[index]
    assert guards("FAIL#ip#10.10.10.10") is None


def test_what_a_redemption_records_for_a_customer_and_for_a_guest(aws_env: Any) -> None:
    coupon = create(code="SRV-REC", uses_per_user=None, max_uses=5)
    checkout = service()
    named = checkout.redeem(RedeemRequest.model_validate(
        body("srv-rec", {"id": "max", "email": "max@example.com", "ip": "203.0.113.11"}, "o-1")), BACKEND)
    guest = checkout.redeem(RedeemRequest.model_validate(body("srv-rec", {"ip": "203.0.113.12"}, "o-2")), BACKEND)
    own = checkout.redeem(RedeemRequest.model_validate(body("srv-rec", None, "o-1")), caller("max", ip="10.0.0.7"))
    stored = {name: item(f"REDEMPTION#{done.view['redemption_id']}", "REDEMPTION")
              for name, done in (("named", named), ("guest", guest), ("own", own))}
    assert all(stored.values())
    record = stored["named"]
    assert record is not None
    assert (record["caller"]["S"], record["client_id"]["S"], record["user_id"]["S"], record["ip"]["S"]) == \
        ("server", "shop-backend", "max", "203.0.113.11")
    assert record["gsi2pk"]["S"] == "UREDEEM#max"  # the customer's history has it
    assert record["order_subtotal"]["N"] == "10000" and record["total_after_discount"]["N"] == "9000"
    record = stored["guest"]
    assert record is not None
    assert "user_id" not in record and "gsi2pk" not in record and record["caller"]["S"] == "server"
    assert record["ip"]["S"] == "203.0.113.12"
    record = stored["own"]
    assert record is not None
    assert (record["caller"]["S"], "client_id" in record, record["ip"]["S"]) == ("customer", False, "10.0.0.7")
    # "o-1" of the server and "o-1" of the customer are two orders; max's usage counts both of theirs
    assert named.view["redemption_id"] != own.view["redemption_id"]
    usage = item(f"USAGE#{coupon['id']}", "USER#max")
    assert usage is not None and usage["uses"]["N"] == "2"
    assert item(f"USAGE#{coupon['id']}", "USER#None") is None  # a guest has no usage item


def test_a_guest_redeem_of_a_coupon_that_gained_a_per_customer_limit_is_refused(aws_env: Any) -> None:
    coupon = create(code="SRV-LATE", uses_per_user=None)
    checkout = service()
    request = RedeemRequest.model_validate(body("srv-late", None, "o-late"))
    assert checkout.validate(ValidateRequest.model_validate(body("srv-late", None)), BACKEND)["valid"]
    wiring.admin_service().update(coupon["id"], CouponUpdate(uses_per_user=1), "admin-1")
    with pytest.raises(RuleViolation) as raised:
        checkout.redeem(request, BACKEND)
    assert raised.value.code == "CUSTOMER_REQUIRED"
