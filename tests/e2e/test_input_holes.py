"""Issue 11's input holes, over HTTP against `coupons-local serve`: each test replays the reported
scenario exactly and checks the contract's answer.

3   an unverified email is no email (domain-restricted coupons);
6   an order subtotal is at most 10^12 minor units;
7   a coupon with a money threshold has a currency, and an order in another currency is refused;
9   no body answers 500 (deep JSON, multipart without a boundary, odd content types and text);
10a a malformed id is a 404 like an unknown one, on every route with an id.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from checkout_helpers import ORDER, dynamodb, line, order, redeem, redemption_records, validate
from conftest import HttpResult, LocalStack, unique
from coupons_infra import resources as r
from coupons_local import tokens

pytestmark = pytest.mark.e2e

MAX_SUBTOTAL = 10**12


def assert_envelope(result: HttpResult, status: int, code: str) -> None:
    assert (result.status, result.error_code) == (status, code), result.body
    assert result.body["error"]["message"], result.body


# --- 3: an unverified email is trusted ---------------------------------------------------------


def test_an_unverified_partner_email_does_not_open_a_partner_only_coupon(stack: LocalStack) -> None:
    # Given a partner-only coupon
    code = unique("PARTNER-")
    coupon = stack.create_coupon(code=code, discount_value=30, allowed_domains=["partner.com"],
                                 uses_per_user=None)
    # And a self-registered shopper who changed their email to x@partner.com but never verified it
    sneaky = stack.token(unique("shopper-"), email="x@partner.com", email_verified=False)
    assert jwt.decode(sneaky, options={"verify_signature": False})["email_verified"] is False
    # When they validate and redeem it, Then they are treated as having no email
    for result in (validate(stack, sneaky, code), redeem(stack, sneaky, code)):
        assert_envelope(result, 422, "DOMAIN_NOT_ALLOWED")
    assert redemption_records(stack, coupon["id"]) == []
    # While the same email, verified, is a partner's
    partner = stack.token(unique("partner-"), email="x@partner.com")
    assert jwt.decode(partner, options={"verify_signature": False})["email_verified"] is True
    assert validate(stack, partner, code).status == 200
    assert redeem(stack, partner, code).status == 201


def signed(claims: dict[str, Any]) -> str:
    """A token signed like the CLI's, with claims chosen by the test (what a user pool could issue)."""
    now = int(time.time())
    base = {"iss": tokens.ISSUER, "aud": tokens.AUDIENCE, "iat": now, "exp": now + 3600, "token_use": "id"}
    return tokens.sign({**base, **claims})  # issue 12: RS256 with the local pools' key


@pytest.mark.parametrize(("verified", "counts"), [
    (None, False),  # no email_verified claim at all
    (False, False), ("false", False), ("False", False), ("", False), ("yes", False), (1, False),
    (True, True), ("true", True), ("TRUE", True),  # Cognito's REST authorizer hands over "true"
])
def test_email_counts_only_when_the_token_says_it_is_verified(stack: LocalStack, verified: Any,
                                                              counts: bool) -> None:
    code = unique("VER-")
    stack.create_coupon(code=code, discount_value=5, allowed_domains=["partner.com"], uses_per_user=None)
    claims: dict[str, Any] = {"sub": unique("u-"), "email": "ann@partner.com"}
    if verified is not None:
        claims["email_verified"] = verified
    result = validate(stack, signed(claims), code)
    if counts:
        assert result.status == 200, result.body
    else:
        assert_envelope(result, 422, "DOMAIN_NOT_ALLOWED")


def test_an_unverified_email_fails_the_global_domain_list_too(make_stack: Any) -> None:
    guarded = make_stack({"ALLOWED_DOMAINS": "partner.com"})
    code = unique("GLOBAL-")
    guarded.create_coupon(code=code, discount_value=5, uses_per_user=None)
    unverified = guarded.token(unique("s-"), email="x@partner.com", email_verified=False)
    assert_envelope(validate(guarded, unverified, code), 422, "DOMAIN_NOT_ALLOWED")
    assert validate(guarded, guarded.token(unique("p-"), email="x@partner.com"), code).status == 200


# --- 6: order totals have no upper bound -------------------------------------------------------


def test_an_order_of_500_lines_at_the_largest_price_and_quantity_is_refused(stack: LocalStack) -> None:
    # Given an ordinary 25% coupon
    code = unique("HUGE-")
    coupon = stack.create_coupon(code=code, discount_value=25, uses_per_user=None)
    token = stack.token(unique("big-"))
    # When an order of 500 lines x 10^12 x 10^5 is validated and redeemed (the reported request)
    huge = order(*[line(f"p{i}", unit_price=10**12, quantity=10**5) for i in range(500)])
    for result in (validate(stack, token, code, body_order=huge), redeem(stack, token, code, body_order=huge)):
        # Then it is a 400 naming the order's lines, and no discount of 1.25e19 is quoted or counted
        assert_envelope(result, 400, "VALIDATION_ERROR")
        fields = {d["field"] for d in result.body["error"]["details"]}
        assert fields and all(f.startswith("order.items") for f in fields), fields
    assert redemption_records(stack, coupon["id"]) == []
    assert stack.admin("GET", f"/coupons/{coupon['id']}").body["redeemed_count"] == 0


def test_the_subtotal_bound_is_10_to_the_12_minor_units_per_line_and_in_sum(stack: LocalStack) -> None:
    code = unique("EDGE-")
    stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    token = stack.token(unique("edge-"))
    half = MAX_SUBTOTAL // 2
    at_bound = validate(stack, token, code, body_order=order(line("a", unit_price=half), line("b", unit_price=half)))
    assert at_bound.status == 200 and at_bound.body["order_subtotal"] == MAX_SUBTOTAL, at_bound.body
    at_line_bound = order(line("a", unit_price=10**7, quantity=10**5))  # 10^7 x 10^5 = 10^12 is fine
    assert validate(stack, token, code, body_order=at_line_bound).status == 200
    cases = {
        "order.items": order(line("a", unit_price=half), line("b", unit_price=half + 1)),  # the sum
        "order.items.1": order(line("a", unit_price=1), line("b", unit_price=10**7 + 1, quantity=10**5)),
    }
    for field, body_order in cases.items():
        for result in (validate(stack, token, code, body_order=body_order),
                       redeem(stack, token, code, body_order=body_order)):
            assert_envelope(result, 400, "VALIDATION_ERROR")
            assert [d["field"] for d in result.body["error"]["details"]] == [field], result.body


# --- 7: money thresholds without a currency ----------------------------------------------------


@pytest.mark.parametrize("threshold", [{"min_order_amount": 2000}, {"max_discount_amount": 500},
                                       {"min_order_amount": 0}])
def test_a_coupon_with_a_money_threshold_needs_a_currency(stack: LocalStack, threshold: dict[str, int]) -> None:
    code = unique("THR-")
    created = stack.admin("POST", "/coupons", {"code": code, "discount_value": 10, **threshold})
    assert_envelope(created, 400, "VALIDATION_ERROR")
    assert [d["field"] for d in created.body["error"]["details"]] == ["currency"], created.body
    assert stack.admin("GET", f"/coupons?code={code}").body["items"] == []  # nothing stored
    # With its currency it is accepted
    assert stack.admin("POST", "/coupons", {"code": code, "discount_value": 10, "currency": "usd",
                                            **threshold}).status == 201


def test_an_update_that_would_leave_a_threshold_without_currency_is_refused(stack: LocalStack) -> None:
    plain = stack.create_coupon(code=unique("UPD-"), discount_value=10)
    for patch in ({"min_order_amount": 5000}, {"max_discount_amount": 100}):
        result = stack.admin("PUT", f"/coupons/{plain['id']}", patch)
        assert_envelope(result, 400, "VALIDATION_ERROR")
        assert [d["field"] for d in result.body["error"]["details"]] == ["currency"], result.body
    unchanged = stack.admin("GET", f"/coupons/{plain['id']}").body
    assert unchanged["min_order_amount"] is None and unchanged["max_discount_amount"] is None
    assert stack.admin("PUT", f"/coupons/{plain['id']}", {"min_order_amount": 5000, "currency": "EUR"}).status == 200
    # Taking the currency away from a coupon with a threshold is refused too
    dropped = stack.admin("PUT", f"/coupons/{plain['id']}", {"currency": None})
    assert_envelope(dropped, 400, "VALIDATION_ERROR")
    assert stack.admin("GET", f"/coupons/{plain['id']}").body["currency"] == "EUR"


@pytest.mark.parametrize("threshold", [{"min_order_amount": 2000}, {"max_discount_amount": 500}])
def test_an_order_in_another_currency_than_the_thresholds_is_a_currency_mismatch(
        stack: LocalStack, threshold: dict[str, int]) -> None:
    code = unique("EUR-")
    coupon = stack.create_coupon(code=code, discount_value=10, currency="EUR", uses_per_user=None, **threshold)
    token = stack.token(unique("cur-"))
    for result in (validate(stack, token, code), redeem(stack, token, code)):  # ORDER is in USD
        assert_envelope(result, 422, "CURRENCY_MISMATCH")
    assert redemption_records(stack, coupon["id"]) == []
    euros = {**ORDER, "currency": "EUR"}
    assert validate(stack, token, code, body_order=euros).status == 200


def test_the_currency_step_comes_after_domain_and_before_min_order(stack: LocalStack) -> None:
    code = unique("STEP-")
    stack.create_coupon(code=code, discount_value=10, currency="EUR", min_order_amount=10**9,
                        allowed_domains=["corp.example"])
    assert_envelope(validate(stack, stack.token(unique("o-")), code), 422, "DOMAIN_NOT_ALLOWED")
    insider = stack.token(unique("i-"), email="ann@corp.example")
    assert_envelope(validate(stack, insider, code), 422, "CURRENCY_MISMATCH")
    assert_envelope(validate(stack, insider, code, body_order={**ORDER, "currency": "EUR"}), 422,
                    "MIN_ORDER_NOT_MET")


def test_a_stored_coupon_with_a_threshold_but_no_currency_matches_no_order(stack: LocalStack) -> None:
    # Given a coupon stored before version 2: a threshold and no currency (written straight to the table)
    code = unique("OLD-")
    coupon = stack.create_coupon(code=code, discount_value=10, currency="USD", min_order_amount=100,
                                 uses_per_user=None)
    client, table = dynamodb(stack)
    pointer = client.get_item(TableName=table, Key={"pk": {"S": f"COUPON#{coupon['id']}"}, "sk": {"S": "COUPON"}})
    client.update_item(TableName=table, Key={"pk": {"S": f"CODE#{pointer['Item']['code_hash']['S']}"},
                                             "sk": {"S": "COUPON"}}, UpdateExpression="REMOVE currency")
    assert stack.admin("GET", f"/coupons/{coupon['id']}").body["currency"] is None
    # Then no order's currency matches it: it can neither be quoted nor redeemed
    token = stack.token(unique("old-"))
    for currency in ("USD", "EUR"):
        body_order = {**ORDER, "currency": currency}
        for result in (validate(stack, token, code, body_order=body_order),
                       redeem(stack, token, code, body_order=body_order)):
            assert_envelope(result, 422, "CURRENCY_MISMATCH")
    assert redemption_records(stack, coupon["id"]) == []
    # And an admin repairs it by giving it a currency in the same edit
    assert_envelope(stack.admin("PUT", f"/coupons/{coupon['id']}", {"max_uses": 10}), 400, "VALIDATION_ERROR")
    assert stack.admin("PUT", f"/coupons/{coupon['id']}", {"currency": "USD"}).status == 200
    assert validate(stack, token, code).status == 200


def test_a_csv_row_with_a_threshold_and_no_currency_is_rejected(stack: LocalStack) -> None:
    s3 = stack.boto("s3")
    bucket = stack.info()["buckets"]["imports"]
    name = f"{unique('thresholds-')}.csv"
    codes = [unique("CSV-") for _ in range(3)]
    body = ("code,discount_value,min_order_amount,max_discount_amount,currency\n"
            f"{codes[0]},10,2000,,\n{codes[1]},10,,500,\n{codes[2]},10,2000,500,USD\n")
    stack.record_csv(body.encode())  # audited when the stack stops (tests/conftest.py)
    s3.put_object(Bucket=bucket, Key=f"incoming/{name}", Body=body.encode())
    deadline = time.monotonic() + 120
    while True:
        try:
            text = s3.get_object(Bucket=bucket, Key=f"results/{name}")["Body"].read().decode()
            break
        except s3.exceptions.NoSuchKey:
            assert time.monotonic() < deadline, "no import result"
            time.sleep(0.5)
    rows = {row["row"]: row for row in csv.DictReader(io.StringIO(text))}
    assert [rows[str(i)]["status"] for i in (1, 2, 3)] == ["rejected", "rejected", "created"], rows
    assert "currency" in rows["1"]["error"] and "currency" in rows["2"]["error"]
    assert stack.admin("GET", f"/coupons?code={codes[0]}").body["items"] == []


# --- 9: bodies that answer 500 -----------------------------------------------------------------

DEEP = ('{"a":' * 1000 + "1" + "}" * 1000).encode()  # the reported ~6 KB body, 1,000 levels deep


def body_routes(stack: LocalStack) -> list[tuple[str, str, str]]:
    """Every POST and PUT route of the API (from resources.py), with ids that exist or are well formed."""
    coupon = stack.create_coupon(code=unique("BODY-"), discount_value=5)
    ids = {"coupon_id": coupon["id"], "redemption_id": str(uuid.uuid4()), "campaign_id": "e2e-bodies"}
    found = []
    for function in r.FUNCTIONS:
        for route in function.routes:
            if route.method in ("POST", "PUT"):
                found.append((route.method, route.path.format(**ids), route.path))
    assert len(found) >= 6
    return found


def test_json_nested_1000_levels_deep_is_a_400_on_every_body_route(stack: LocalStack) -> None:
    for method, path, _ in body_routes(stack):
        result = stack.request(method, path, raw=DEEP, token=stack.admin_token)
        assert_envelope(result, 400, "VALIDATION_ERROR")
        assert result.body["error"]["details"][0]["field"] == "body", (path, result.body)


def test_multipart_without_a_boundary_is_a_400_on_every_body_route(stack: LocalStack) -> None:
    for method, path, _ in body_routes(stack):
        for raw in (b'{"discount_value": 5}', b"", b"--x\r\ncontent-disposition: form-data; name=a\r\n\r\n1\r\n--x--"):
            result = stack.request(method, path, raw=raw, token=stack.admin_token,
                                   headers={"Content-Type": "multipart/form-data"})
            assert_envelope(result, 400, "VALIDATION_ERROR")


ODD_CONTENT_TYPES = [
    "multipart/form-data; boundary=x", "multipart/form-data; boundary=", "multipart/mixed",
    "application/x-www-form-urlencoded", "text/plain", "application/xml", "text/html; charset=utf-8",
    "application/json; charset=latin-1", "application/json; charset=utf-16", "application/jsonp",
    "application/vnd.api+json", "*/*", "application/json, text/plain", ";", "json",
]


@pytest.mark.parametrize("content_type", ODD_CONTENT_TYPES)
def test_odd_content_types_are_400_with_the_envelope(stack: LocalStack, content_type: str) -> None:
    coupon_body = json.dumps({"code": unique("CT-"), "discount_value": 5}).encode()
    checkout_body = json.dumps({"code": "WELCOME10", "channel": "web", "order": ORDER}).encode()
    for path, raw, token in (("/coupons", coupon_body, stack.admin_token),
                             ("/coupons/validate", checkout_body, stack.token("odd-ct")),
                             ("/coupons/validate", b"a=1&b=2", stack.token("odd-ct"))):
        result = stack.request("POST", path, raw=raw, token=token, headers={"Content-Type": content_type})
        assert_envelope(result, 400, "VALIDATION_ERROR")
    assert stack.admin("GET", f"/coupons?code={json.loads(coupon_body)['code']}").body["items"] == []


def test_json_with_utf8_charset_or_no_content_type_is_still_accepted(stack: LocalStack) -> None:
    for content_type in ("application/json; charset=utf-8", "Application/JSON; Charset=\"UTF-8\"",
                         "application/json;charset=utf-8"):
        result = stack.request("POST", "/coupons", raw=json.dumps({"discount_value": 5}).encode(),
                               token=stack.admin_token, headers={"Content-Type": content_type})
        assert result.status == 201, (content_type, result.body)
    token = stack.token(unique("noct-"))
    checkout = json.dumps({"code": "WELCOME10", "channel": "web", "order": ORDER}).encode()
    result = stack.request("POST", "/coupons/validate", raw=checkout, token=token, headers={"Content-Type": ""})
    assert result.status == 200, result.body


def test_empty_array_null_and_scalar_bodies_are_400_on_every_body_route(stack: LocalStack) -> None:
    for method, path, template in body_routes(stack):
        for raw in (b"", b"[]", b'[{"discount_value": 5}]', b"null", b"5", b'"x"', b"{}", b"   "):
            if raw == b"{}" and method == "PUT":
                continue  # an empty partial update is a valid no-op
            result = stack.request(method, path, raw=raw, token=stack.admin_token)
            if template.endswith("/rollback"):  # takes no body: a well-formed unknown id is simply not found
                assert result.status in (400, 404), (path, raw, result.body)
            else:
                assert_envelope(result, 400, "VALIDATION_ERROR")


UNICODE_TRICKS = [
    '{"code": "\\ud800", "channel": "web", "order": %s}',  # a lone surrogate
    '{"code": "\\udfff\\ud800", "channel": "web", "order": %s}',  # reversed pair
    '{"code": "WELCOME10", "channel": "web", "order": %s, "\\ud800": 1}',
    '{"code": "WEL\\u0000COME10", "channel": "web", "order": %s}',
    '{"code": "WELCOME10\\u202e", "channel": "web", "order": %s}',
    '\ufeff{"code": "WELCOME10", "channel": "web", "order": %s}',
    '{"code": "WELCOME10", "channel": "w\\u0435b", "order": %s}',
]


def test_unicode_tricks_are_4xx_never_5xx(make_stack: Any) -> None:
    # A stack of its own: these unknown codes count as failed guesses, which must not lock others out
    stack = make_stack({"FAILED_ATTEMPTS_PER_USER": "1000", "FAILED_ATTEMPTS_PER_IP": "1000"}, seed=True)
    token = stack.token(unique("uni-"))
    lone_item = json.dumps(order(line("p1"))).replace('"p1"', '"\\ud83d"')
    for template in UNICODE_TRICKS:
        for order_json in (json.dumps(ORDER), lone_item):
            raw = (template % order_json).encode()
            for path, extra in (("/coupons/validate", b""), ("/redemptions", b', "order_id": "o-uni"')):
                body = raw[:-1] + extra + b"}" if extra else raw
                result = stack.request("POST", path, raw=body, token=token)
                assert 400 <= result.status < 500 and result.error_code, (template, path, result.status, result.body)
    for raw in (b'{"discount_value": 5, "metadata": {"\\udc00": "x"}}', b'{"discount_value": 5, "code": "A\\ud800B"}',
                b'{"discount_value": 5, "campaign_id": "c\\ud800"}', b'{"discount_value": 5, "metadata": {"k": "\\ud800"}}',
                b'{"discount_value": 5, "allowed_domains": ["ex\\u0430mple.com"]}', b"\xc0\xaf{}", b"{\xed\xa0\x80}",
                b'{"discount_value": 5, "applicable_products": ["p\\ud800"]}'):
        result = stack.request("POST", "/coupons", raw=raw, token=stack.admin_token)
        assert_envelope(result, 400, "VALIDATION_ERROR")
    # A proper surrogate pair (an emoji) is ordinary text
    fine = stack.admin("POST", "/coupons", {"discount_value": 5, "metadata": {"note": "\U0001f389"}})
    assert fine.status == 201 and fine.body["metadata"] == {"note": "\U0001f389"}


def test_metadata_nested_deeper_than_the_table_allows_is_a_400(stack: LocalStack) -> None:
    nested: Any = "x"
    for _ in range(40):  # DynamoDB refuses items nested more than 32 levels
        nested = {"n": nested}
    result = stack.admin("POST", "/coupons", {"discount_value": 5, "metadata": nested})
    assert_envelope(result, 400, "VALIDATION_ERROR")


def test_a_body_over_10_mb_is_still_a_413(stack: LocalStack) -> None:
    raw = b'{"discount_value": 5, "metadata": {"x": "' + b"a" * (10 * 1024 * 1024) + b'"}}'
    assert_envelope(stack.request("POST", "/coupons", raw=raw, token=stack.admin_token), 413, "VALIDATION_ERROR")


# --- 10a: a malformed id answers 400 -----------------------------------------------------------

MALFORMED_IDS = ["' OR 1=1", "' OR '1'='1' --", "a" * 300, "x" * 2000, "<script>", "..\\..\\etc\\passwd",
                 "é", "%00", "a b", "{}", "\u202e", "*", "a.b"]


@pytest.mark.parametrize("raw_id", MALFORMED_IDS)
def test_a_malformed_id_is_a_404_on_every_route_with_an_id(stack: LocalStack, raw_id: str) -> None:
    bad = quote(raw_id, safe="")
    unknown = {"coupon_id": str(uuid.uuid4()), "redemption_id": str(uuid.uuid4()), "job_id": uuid.uuid4().hex}
    expected = {"coupon_id": "COUPON_NOT_FOUND", "redemption_id": "REDEMPTION_NOT_FOUND",
                "job_id": "JOB_NOT_FOUND", "campaign_id": "CAMPAIGN_NOT_FOUND"}
    bodies = {"PUT": {"status": "disabled"}, "POST": {"count": 1, "template": {"discount_value": 5}}}
    checked = 0
    for function in r.FUNCTIONS:
        for route in function.routes:
            if route.public or "{" not in route.path:
                continue
            param = route.path.split("{", 1)[1].split("}", 1)[0]
            body = bodies.get(route.method) if not route.path.endswith("/rollback") else None
            result = stack.admin(route.method, route.path.replace(f"{{{param}}}", bad), body)
            assert_envelope(result, 404, expected[param])
            if param in unknown:  # the same answer as an unknown, well-formed id
                same = stack.admin(route.method, route.path.replace(f"{{{param}}}", unknown[param]), body)
                assert (same.status, same.error_code) == (result.status, result.error_code)
            checked += 1
    assert checked >= 7


def test_a_customer_still_gets_403_not_404_for_a_malformed_id_on_an_admin_route(stack: LocalStack) -> None:
    result = stack.request("GET", f"/coupons/{quote(chr(39) + ' OR 1=1', safe='')}", token=stack.token("nosy"))
    assert_envelope(result, 403, "FORBIDDEN")
    mine = stack.request("GET", f"/redemptions/{quote(chr(39) + ' OR 1=1', safe='')}", token=stack.token("nosy"))
    assert_envelope(mine, 404, "REDEMPTION_NOT_FOUND")
