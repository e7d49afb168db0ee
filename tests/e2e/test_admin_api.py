"""Admin CRUD over real HTTP against `coupons-local serve`."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from conftest import LocalStack, unique

BAD_BODIES: list[tuple[str, Any]] = [
    ("percent 0", {"discount_value": 0}),
    ("percent 101", {"discount_value": 101}),
    ("fixed without currency", {"discount_type": "FIXED", "discount_value": 500}),
    ("fixed fractional", {"discount_type": "FIXED", "discount_value": 12.5, "currency": "USD"}),
    ("unknown discount type", {"discount_type": "HALF", "discount_value": 5}),
    ("timestamp without offset", {"discount_value": 5, "expires_at": "2027-01-01T00:00:00"}),
    ("end before start", {"discount_value": 5, "starts_at": "2027-01-02T00:00:00Z",
                          "expires_at": "2027-01-01T00:00:00Z"}),
    ("max_uses 0", {"discount_value": 5, "max_uses": 0}),
    ("max_uses string", {"discount_value": 5, "max_uses": "ten"}),
    ("negative uses_per_user", {"discount_value": 5, "uses_per_user": -2}),
    ("code with spaces", {"discount_value": 5, "code": "NO SPACES"}),
    ("code with punctuation", {"discount_value": 5, "code": "WOW!"}),
    ("formula code", {"discount_value": 5, "code": "=1+1"}),
    ("code over 64", {"discount_value": 5, "code": "C" * 65}),
    ("unknown channel", {"discount_value": 5, "channels": ["telegram"]}),
    ("unknown field", {"discount_value": 5, "surprise": 1}),
    ("server field", {"discount_value": 5, "redeemed_count": 0}),
    ("metadata over 4 KB", {"discount_value": 5, "metadata": {"blob": "z" * 4097}}),
    ("invalid currency", {"discount_type": "FIXED", "discount_value": 5, "currency": "DOGE"}),
    ("array body", [{"discount_value": 5}]),
    ("string body", "discount_value"),
    ("null body", None),
]



@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_create_is_a_400_with_details_and_stores_nothing(stack: LocalStack, case: str, body: Any) -> None:
    code = unique("BAD")
    if isinstance(body, dict) and "code" not in body:
        body = {**body, "code": code}
    raw = json.dumps(body).encode() if body is not None else b"null"
    result = stack.request("POST", "/coupons", raw=raw, token=stack.admin_token)
    assert result.status == 400, (case, result.body)
    assert result.error_code == "VALIDATION_ERROR"
    assert result.body["error"]["message"]
    assert result.body["error"].get("details"), case
    assert stack.admin("GET", f"/coupons?code={code}").body["items"] == []


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe\x00", b'{"discount_value": 5,}'])
def test_non_json_is_a_400(stack: LocalStack, raw: bytes) -> None:
    result = stack.request("POST", "/coupons", raw=raw, token=stack.admin_token)
    assert (result.status, result.error_code) == (400, "VALIDATION_ERROR")


def test_a_10_mb_body_is_a_clean_4xx(stack: LocalStack) -> None:
    body = json.dumps({"discount_value": 5, "metadata": {"x": "a" * (10 * 1024 * 1024 - 64)}}).encode()
    result = stack.request("POST", "/coupons", raw=body, token=stack.admin_token)
    assert result.status == 400 and result.error_code == "VALIDATION_ERROR"


def test_crud_walkthrough(stack: LocalStack) -> None:
    code = unique("SUMMER-")
    created = stack.create_coupon(code=code.lower(), discount_type="PERCENT", discount_value=25, max_uses=100,
                                  campaign_id="e2e-crud", applicable_categories=["shoes"],
                                  expires_at="2030-01-01T00:00:00+02:00")
    assert created["code"] == code
    assert created["status"] == "active" and created["redeemed_count"] == 0 and created["remaining_uses"] == 100
    assert created["expires_at"] == "2029-12-31T22:00:00Z"
    assert set(created) >= {"id", "created_at", "updated_at", "channels", "uses_per_user"}

    fetched = stack.admin("GET", f"/coupons/{created['id']}")
    assert fetched.status == 200
    usage = fetched.body.pop("usage")
    assert usage["redeemed_count"] == 0 and usage["remaining_uses"] == 100
    assert fetched.body == {k: v for k, v in created.items() if k != "usage"}

    by_code = stack.admin("GET", f"/coupons?code={quote(code.replace('-', ' ').lower())}")
    assert [c["id"] for c in by_code.body["items"]] == [created["id"]]

    paused = stack.admin("PUT", f"/coupons/{created['id']}", {"status": "disabled"})
    assert paused.status == 200 and paused.body["status"] == "disabled"
    assert paused.body["discount_value"] == 25 and paused.body["max_uses"] == 100

    listed = stack.admin("GET", "/coupons?status=disabled&limit=100")
    assert created["id"] in {c["id"] for c in listed.body["items"]}

    assert stack.admin("DELETE", f"/coupons/{created['id']}").status == 204
    for method, path in (("GET", f"/coupons/{created['id']}"), ("PUT", f"/coupons/{created['id']}"),
                         ("DELETE", f"/coupons/{created['id']}")):
        gone = stack.admin(method, path, {"status": "active"} if method == "PUT" else None)
        assert (gone.status, gone.error_code) == (404, "COUPON_NOT_FOUND"), method
    assert stack.admin("GET", f"/coupons?code={code}").body["items"] == []


def test_generated_codes_are_long_and_unique(stack: LocalStack) -> None:
    codes = {stack.create_coupon(discount_value=5, campaign_id="e2e-gen")["code"] for _ in range(5)}
    assert len(codes) == 5
    for code in codes:
        assert len(code.replace("-", "")) >= 12


def test_duplicate_codes_are_409(stack: LocalStack) -> None:
    code = unique("DUP-")
    stack.create_coupon(code=code, discount_value=5)
    again = stack.admin("POST", "/coupons", {"code": code.lower().replace("-", ""), "discount_value": 9})
    assert (again.status, again.error_code) == (409, "CODE_ALREADY_EXISTS")
    other = stack.create_coupon(code=unique("DUP-"), discount_value=5)
    moved = stack.admin("PUT", f"/coupons/{other['id']}", {"code": code})
    assert (moved.status, moved.error_code) == (409, "CODE_ALREADY_EXISTS")


def test_counters_cannot_be_set(stack: LocalStack) -> None:
    created = stack.create_coupon(code=unique("CNT-"), discount_value=5)
    for field in ("redeemed_count", "remaining_uses", "id", "created_at"):
        result = stack.admin("PUT", f"/coupons/{created['id']}", {field: 1})
        assert (result.status, result.error_code) == (400, "VALIDATION_ERROR"), field
        assert result.body["error"]["details"][0]["field"] == field


def test_activating_an_expired_coupon_without_a_later_expires_at_is_400(stack: LocalStack) -> None:
    """Issue 11, 10b: it used to answer 200 and change nothing."""
    from datetime import UTC, datetime, timedelta

    def at(**delta: float) -> str:
        return (datetime.now(UTC) + timedelta(**delta)).isoformat()

    lapsed = stack.create_coupon(code=unique("LAPSED-"), discount_value=5, starts_at=at(days=-2),
                                 expires_at=at(days=-1))
    swept = stack.create_coupon(code=unique("SWEPT-"), discount_value=5, starts_at=at(days=-2),
                                expires_at=at(minutes=-5))
    stack.cli("run", "expiry-sweep", "--port", str(stack.port))
    for coupon in (lapsed, swept):
        before = stack.admin("GET", f"/coupons/{coupon['id']}").body
        assert before["status"] == "expired"
        for body in ({"status": "active"}, {"status": "active", "expires_at": at(minutes=-1)}):
            refused = stack.admin("PUT", f"/coupons/{coupon['id']}", body)
            assert (refused.status, refused.error_code) == (400, "VALIDATION_ERROR"), (body, refused.body)
            assert {d["field"] for d in refused.body["error"]["details"]} == {"status", "expires_at"}
            assert stack.admin("GET", f"/coupons/{coupon['id']}").body == before  # nothing stored
        revived = stack.admin("PUT", f"/coupons/{coupon['id']}", {"status": "active", "expires_at": at(days=3)})
        assert (revived.status, revived.body["status"]) == (200, "active")


@pytest.mark.parametrize("coupon_id", ["does-not-exist", "0" * 64, "%3Cscript%3E", "a" * 300])
def test_unknown_or_malformed_ids_are_404(stack: LocalStack, coupon_id: str) -> None:
    # Contract v2: a malformed id is a 404 like an unknown one, never a 400 (was: 400 or 404)
    result = stack.admin("GET", f"/coupons/{coupon_id}")
    assert (result.status, result.error_code) == (404, "COUPON_NOT_FOUND")


def test_bad_list_parameters_are_400(stack: LocalStack) -> None:
    for query in ("limit=0", "limit=1000", "limit=abc", "status=gone", "cursor=%%%", "cursor=eyJwIjo5fQ"):
        result = stack.admin("GET", f"/coupons?{query}")
        assert (result.status, result.error_code) == (400, "VALIDATION_ERROR"), query


def test_identity_is_required_and_admin_routes_need_the_group(stack: LocalStack) -> None:
    assert stack.request("GET", "/coupons").error_code == "UNAUTHENTICATED"
    customer = stack.token("shopper-1", email="s@example.com")
    forbidden = stack.request("GET", "/coupons", token=customer)
    assert (forbidden.status, forbidden.error_code) == (403, "FORBIDDEN")
    created = stack.request("POST", "/coupons", {"discount_value": 5}, token=customer)
    assert created.status == 403


def test_the_openapi_document_is_public_and_describes_the_routes(stack: LocalStack) -> None:
    result = stack.request("GET", "/openapi.json")
    assert result.status == 200
    paths = result.body["paths"]
    assert {"post", "get"} <= set(paths["/coupons"])
    assert {"get", "put", "delete"} <= set(paths["/coupons/{coupon_id}"])


def test_cors_preflight_is_answered(stack: LocalStack) -> None:
    result = stack.request("OPTIONS", "/coupons", headers={"Origin": "http://localhost:5173",
                                                           "Access-Control-Request-Method": "POST"})
    assert result.status == 204
    assert result.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in result.headers["Access-Control-Allow-Headers"]


def test_demo_coupons_are_seeded(stack: LocalStack) -> None:
    for code in ("WELCOME10", "SAVE5", "SHOES-20", "POS-ONLY", "STAFF30"):
        assert len(stack.admin("GET", f"/coupons?code={code}").body["items"]) == 1, code
