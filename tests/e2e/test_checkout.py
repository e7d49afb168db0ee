"""Validation and redemption over HTTP against `coupons-local serve`: every rule, error code and answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from checkout_helpers import (
    ORDER,
    assert_conserved,
    customer,
    dynamodb,
    line,
    order,
    redeem,
    redemption_records,
    validate,
)
from conftest import LocalStack, unique
from coupons_local import tokens

pytestmark = pytest.mark.e2e


def at(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_validate_quotes_the_discount_without_changing_anything(stack: LocalStack) -> None:
    # Given 12.5% off shoes, capped at 30.00 USD, on a two-category order
    code = unique("SHOES-")
    coupon = stack.create_coupon(code=code, discount_value=12.5, max_discount_amount=3000, currency="USD",
                                 applicable_categories=["shoes"], max_uses=10)
    basket = order(line("s1", "shoes", 4999, 2), line("h1", "hats", 1500))
    # When it is validated (in another spelling of the code)
    result = validate(stack, customer(), code.lower(), body_order=basket)
    # Then the answer is the contract's, to the minor unit (12.5% of 99.98 = 12.4975 -> 12.50)
    assert result.status == 200, result.body
    assert result.body == {
        "valid": True, "coupon_id": coupon["id"], "discount_type": "PERCENT", "discount_amount": 1250,
        "currency": "USD", "order_subtotal": 11498, "eligible_subtotal": 9998, "shipping_amount": 0,
        "total_after_discount": 10248,
    }
    # And nothing was counted
    assert_conserved(stack, coupon["id"], 0)


def test_a_fixed_discount_needs_the_orders_currency_and_never_exceeds_the_eligible_subtotal(
        stack: LocalStack) -> None:
    code = unique("FIX-")
    stack.create_coupon(code=code, discount_type="FIXED", discount_value=2500, currency="EUR")
    token = customer()
    euros = order(line("p1", unit_price=1000, quantity=2), currency="EUR")
    assert validate(stack, token, code, body_order=euros).body["discount_amount"] == 2000
    assert validate(stack, token, code, body_order=euros).body["total_after_discount"] == 0
    mismatch = validate(stack, token, code)  # a USD order
    assert (mismatch.status, mismatch.error_code) == (422, "CURRENCY_MISMATCH")


# Each rule, the coupon that breaks it, and the request that meets it (contract order).
RULES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("COUPON_DISABLED", {"status": "disabled"}, {}),
    ("COUPON_NOT_YET_ACTIVE", {"starts_at": at(days=1), "expires_at": at(days=2)}, {}),
    ("COUPON_EXPIRED", {"starts_at": at(days=-2), "expires_at": at(days=-1)}, {}),
    ("CHANNEL_NOT_ALLOWED", {"channels": ["pos", "mobile"]}, {}),
    ("DOMAIN_NOT_ALLOWED", {"allowed_domains": ["corp.example"]}, {}),
    ("CURRENCY_MISMATCH", {"discount_type": "FIXED", "discount_value": 100, "currency": "GBP"}, {}),
    ("MIN_ORDER_NOT_MET", {"min_order_amount": 10001, "currency": "USD"}, {}),
    ("NOT_APPLICABLE", {"applicable_products": ["p9"], "applicable_categories": ["hats"]}, {}),
    ("NOT_APPLICABLE", {"excluded_categories": ["shoes"]}, {}),
]


@pytest.mark.parametrize(("code_expected", "fields", "_"), RULES, ids=[f"{r[0]}-{i}" for i, r in enumerate(RULES)])
def test_each_rule_has_its_own_422_on_validate_and_on_redeem(stack: LocalStack, code_expected: str,
                                                             fields: dict[str, Any], _: dict[str, Any]) -> None:
    code = unique("RULE-")
    coupon = stack.create_coupon(code=code, **{"discount_value": 10, **fields})
    token = customer(email="shopper@example.com")
    for result in (validate(stack, token, code), redeem(stack, token, code)):
        assert (result.status, result.error_code) == (422, code_expected), result.body
        assert result.body["error"]["message"]
    assert_conserved(stack, coupon["id"], 0)


def test_total_uses_then_uses_by_this_user(stack: LocalStack) -> None:
    code = unique("CAP-")
    coupon = stack.create_coupon(code=code, discount_value=5, max_uses=2, uses_per_user=1)
    alice, bob, carol = customer(), customer(), customer()
    assert redeem(stack, alice, code).status == 201
    again = redeem(stack, alice, code)
    assert (again.status, again.error_code) == (422, "USER_LIMIT_REACHED")
    assert validate(stack, alice, code).error_code == "USER_LIMIT_REACHED"
    assert redeem(stack, bob, code).status == 201
    for result in (validate(stack, carol, code), redeem(stack, carol, code), validate(stack, alice, code)):
        assert (result.status, result.error_code) == (422, "COUPON_EXHAUSTED")  # total uses come first
    assert_conserved(stack, coupon["id"], 2)
    view = stack.admin("GET", f"/coupons/{coupon['id']}").body
    assert (view["status"], view["remaining_uses"]) == ("exhausted", 0)


def test_the_first_broken_rule_in_the_contracts_order_is_named(stack: LocalStack) -> None:
    code = unique("ORDER-")
    stack.create_coupon(code=code, discount_value=5, channels=["pos"], min_order_amount=10**9, currency="USD",
                        allowed_domains=["corp.example"], applicable_products=["nothing"])
    assert validate(stack, customer(), code).error_code == "CHANNEL_NOT_ALLOWED"
    assert validate(stack, customer(), code, channel="pos").error_code == "DOMAIN_NOT_ALLOWED"
    assert validate(stack, customer(email="a@corp.example"), code, channel="pos").error_code == "MIN_ORDER_NOT_MET"
    later = unique("LATER-")
    stack.create_coupon(code=later, discount_value=5, status="disabled", starts_at=at(days=3), expires_at=at(days=4))
    assert validate(stack, customer(), later).error_code == "COUPON_DISABLED"


def test_domains_come_from_the_tokens_email(stack: LocalStack) -> None:
    code = unique("STAFF-")
    stack.create_coupon(code=code, discount_value=30, allowed_domains=["corp.example"], uses_per_user=None)
    assert validate(stack, customer(email="ann@corp.example"), code).status == 200
    assert validate(stack, customer(email="ann@CORP.EXAMPLE"), code).status == 200
    assert validate(stack, customer(email="ann@corp.example.evil"), code).error_code == "DOMAIN_NOT_ALLOWED"
    assert validate(stack, customer(), code).error_code == "DOMAIN_NOT_ALLOWED"  # no email in the token


def test_codes_ignore_case_spaces_and_dashes(stack: LocalStack) -> None:
    code = unique("SUMMER-")
    coupon = stack.create_coupon(code=code, discount_value=25)
    token = customer()
    for spelling in (code, code.lower(), code.replace("-", ""), " ".join(code), "-".join(code)):
        result = validate(stack, token, spelling)
        assert result.status == 200 and result.body["coupon_id"] == coupon["id"], (spelling, result.body)


def test_redeem_replay_and_conflict(stack: LocalStack) -> None:
    code = unique("ONCE-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=1)
    token = customer("replayer")
    first = redeem(stack, token, code, "order-1")
    assert first.status == 201, first.body
    assert first.body["status"] == "redeemed" and first.body["user_id"] == "replayer"
    assert first.body["order_id"] == "order-1" and first.body["discount_amount"] == 1000
    assert first.body["redeemed_at"].endswith("Z")
    # The same order again (items in another order, code in another spelling): 200, same redemption
    swapped = order(*reversed([line("a", "x", 100), line("b", "y", 9900)]))
    second = redeem(stack, customer("replayer-2"), code, "order-2", body_order=order(line("a", "x", 100),
                                                                                    line("b", "y", 9900)))
    assert second.status == 201
    replay = redeem(stack, customer("replayer-2"), code.lower(), "order-2", body_order=swapped)
    assert replay.status == 200 and replay.body == second.body
    assert redeem(stack, token, code, "order-1").body == first.body
    # A different order under a used order_id: 409
    changed = redeem(stack, token, code, "order-1", body_order=order(line("p1", "shoes", 5000, 3)))
    assert (changed.status, changed.error_code) == (409, "IDEMPOTENCY_CONFLICT")
    assert redeem(stack, token, code, "order-1", channel="pos").error_code == "IDEMPOTENCY_CONFLICT"
    assert_conserved(stack, coupon["id"], 2)


def test_rollback_gives_the_use_back_once_and_shows_the_redemption_rolled_back(stack: LocalStack) -> None:
    code = unique("BACK-")
    coupon = stack.create_coupon(code=code, discount_value=10, max_uses=1, uses_per_user=1)
    token = customer()
    done = redeem(stack, token, code, "o-1").body
    rid = done["redemption_id"]
    assert validate(stack, customer(), code).error_code == "COUPON_EXHAUSTED"
    # Issue 12: the shop rolls back (a refund), not the shopper
    assert stack.request("POST", f"/redemptions/{rid}/rollback", token=token).status == 403
    shop = tokens.issue_access("shop-backend")
    rolled = stack.request("POST", f"/redemptions/{rid}/rollback", token=shop)
    assert rolled.status == 200
    assert rolled.body["status"] == "rolled_back" and rolled.body["rolled_back_at"]
    assert {k: v for k, v in rolled.body.items() if k not in ("status", "rolled_back_at")} == \
        {k: v for k, v in done.items() if k not in ("status", "rolled_back_at")}
    assert stack.request("POST", f"/redemptions/{rid}/rollback", token=shop).body == rolled.body
    assert stack.request("GET", f"/redemptions/{rid}", token=token).body == rolled.body
    assert_conserved(stack, coupon["id"], 0)
    # The uses are back: this user (uses_per_user 1) and the cap (max_uses 1) allow another redemption
    assert redeem(stack, token, code, "o-2").status == 201
    assert_conserved(stack, coupon["id"], 1)


def test_a_coupons_redemptions_page_for_admins(stack: LocalStack) -> None:
    code = unique("LIST-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    token = customer()
    ids = [redeem(stack, token, code, f"o-{i}").body["redemption_id"] for i in range(3)]
    first = stack.admin("GET", f"/coupons/{coupon['id']}/redemptions?limit=2")
    assert first.status == 200 and len(first.body["items"]) == 2 and first.body["next_cursor"]
    rest = stack.admin("GET", f"/coupons/{coupon['id']}/redemptions?limit=2&cursor={first.body['next_cursor']}")
    listed = [r["redemption_id"] for r in first.body["items"] + rest.body["items"]]
    assert sorted(listed) == sorted(ids) and listed[0] == ids[-1]  # newest first
    assert rest.body["next_cursor"] is None
    # The history stays after the coupon is deleted; an unknown coupon is 404
    assert stack.admin("DELETE", f"/coupons/{coupon['id']}").status == 204
    assert len(stack.admin("GET", f"/coupons/{coupon['id']}/redemptions").body["items"]) == 3
    missing = stack.admin("GET", "/coupons/no-such-coupon/redemptions")
    assert (missing.status, missing.error_code) == (404, "COUPON_NOT_FOUND")
    assert stack.admin("GET", f"/coupons/{coupon['id']}/redemptions?limit=0").status == 400
    assert stack.admin("GET", f"/coupons/{coupon['id']}/redemptions?cursor=bogus").status == 400


def test_every_redemption_records_user_ip_user_agent_and_channel_but_never_the_code(stack: LocalStack) -> None:
    code = unique("TRACK-")
    coupon = stack.create_coupon(code=code, discount_value=10, channels=["mobile"])
    done = redeem(stack, customer("tracked"), code, "o-t", channel="mobile",
                  headers={"User-Agent": "ShopApp/7.1 (iOS)"}).body
    [record] = redemption_records(stack, coupon["id"])
    assert record["redemption_id"]["S"] == done["redemption_id"]
    assert record["user_id"]["S"] == "tracked" and record["channel"]["S"] == "mobile"
    assert record["ip"]["S"] == "127.0.0.1" and record["user_agent"]["S"] == "ShopApp/7.1 (iOS)"
    assert record["coupon_id"]["S"] == coupon["id"] and record["order_id"]["S"] == "o-t"
    client, table = dynamodb(stack)
    usage = client.query(TableName=table, KeyConditionExpression="pk = :p",
                         ExpressionAttributeValues={":p": {"S": f"USAGE#{coupon['id']}"}})["Items"]
    assert usage, "the usage item is kept by coupon id"
    stored = json.dumps([record, usage]).upper()
    assert code.upper() not in stored and code.replace("-", "").upper() not in stored


BAD = [
    ("unknown field", {"surprise": 1}),
    ("user_id in the body", {"user_id": "someone-else"}),
    ("price as a string", {"order": order({**line("p1"), "unit_price": "10"})}),
    ("price as a float", {"order": order({**line("p1"), "unit_price": 10.5})}),
    ("negative price", {"order": order({**line("p1"), "unit_price": -1})}),
    ("zero quantity", {"order": order({**line("p1"), "quantity": 0})}),
    ("no items", {"order": order()}),
    ("unknown currency", {"order": order(line("p1"), currency="XYZ")}),
    ("unknown channel", {"channel": "fax"}),
    ("missing order", {"order": None}),
    ("code too long", {"code": "C" * 201}),
    ("code not a string", {"code": 12345}),
    ("unknown item field", {"order": order({**line("p1"), "discount": 5})}),
]


@pytest.mark.parametrize(("case", "change"), BAD, ids=[b[0] for b in BAD])
def test_bad_bodies_are_400_with_the_field_named(stack: LocalStack, case: str, change: dict[str, Any]) -> None:
    token = customer()
    base = {"code": "WELCOME10", "channel": "web", "order": ORDER}
    body = {k: v for k, v in {**base, **change}.items() if v is not None}
    for path, extra in (("/coupons/validate", {}), ("/redemptions", {"order_id": "o-bad"})):
        result = stack.request("POST", path, {**body, **extra}, token=token)
        assert (result.status, result.error_code) == (400, "VALIDATION_ERROR"), (path, result.body)
        assert result.body["error"]["details"], result.body


def test_unparseable_bodies_and_order_ids_are_400(stack: LocalStack) -> None:
    token = customer()
    assert stack.request("POST", "/coupons/validate", raw=b"{not json", token=token).status == 400
    assert stack.request("POST", "/redemptions", raw=b"[]", token=token).status == 400
    body = {"code": "WELCOME10", "channel": "web", "order": ORDER}
    for order_id in ("", "has space", "x" * 129):
        result = stack.request("POST", "/redemptions", {**body, "order_id": order_id}, token=token)
        assert (result.status, result.error_code) == (400, "VALIDATION_ERROR"), order_id
    assert stack.request("POST", "/redemptions", body, token=token).status == 400  # no order_id


def test_the_openapi_document_describes_the_checkout_routes(stack: LocalStack) -> None:
    paths = stack.request("GET", "/openapi.json").body["paths"]
    assert "post" in paths["/coupons/validate"] and "post" in paths["/redemptions"]
    assert "get" in paths["/redemptions/{redemption_id}"]
    assert "post" in paths["/redemptions/{redemption_id}/rollback"]
    assert "get" in paths["/coupons/{coupon_id}/redemptions"]


def test_a_new_code_keeps_every_customers_count(stack: LocalStack) -> None:
    # Given a one-per-customer coupon that a customer has used
    code = unique("LEAKED-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=1)
    token = customer()
    assert redeem(stack, token, code).status == 201
    # When the admin gives it a new code (the old one leaked)
    fresh = unique("FRESH-")
    assert stack.admin("PUT", f"/coupons/{coupon['id']}", {"code": fresh}).status == 200
    # Then that customer has still used it, under the new code too
    again = redeem(stack, token, fresh)
    assert (again.status, again.error_code) == (422, "USER_LIMIT_REACHED"), again.body
    assert validate(stack, token, fresh).error_code == "USER_LIMIT_REACHED"
    # While another customer may use it
    assert redeem(stack, customer(), fresh).status == 201
    assert_conserved(stack, coupon["id"], 2)


def test_replaying_a_rolled_back_order_is_409_already_rolled_back(stack: LocalStack) -> None:
    code = unique("RBREPLAY-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    token = customer()
    done = redeem(stack, token, code, "order-rb")
    assert done.status == 201
    rolled = stack.admin("POST", f"/redemptions/{done.body['redemption_id']}/rollback")
    assert rolled.status == 200 and rolled.body["status"] == "rolled_back"
    # The same order again is not a success that a client checking the status could believe
    replay = redeem(stack, token, code, "order-rb")
    assert (replay.status, replay.error_code) == (409, "ALREADY_ROLLED_BACK"), replay.body
    assert_conserved(stack, coupon["id"], 0)
