"""Identity over HTTP: only valid tokens get in, only admins reach admin routes, identity never comes from a body."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from checkout_helpers import ORDER, customer, redeem, validate
from conftest import LocalStack, unique
from coupons_local import tokens
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.e2e

# Issue 12: local tokens are RS256 with a kid, like Cognito's, verified by the token authorizer.
FORGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "mallory", "iss": tokens.ISSUER, "aud": tokens.AUDIENCE, "iat": now, "exp": now + 3600,
            "token_use": "id", "cognito:groups": ["coupon-admins"]}
    return {**base, **overrides}


def signed(payload: dict[str, Any]) -> str:
    """Signed with the local pools' own key: a token they could issue."""
    return tokens.sign(payload)


def forged(payload: dict[str, Any]) -> str:
    """Signed with another key, under the local key's kid."""
    kid = jwt.get_unverified_header(tokens.issue("anyone"))["kid"]
    return jwt.encode(payload, FORGER_KEY, algorithm="RS256", headers={"kid": kid})


def tampered() -> str:
    """A genuine token whose payload was swapped for one naming someone else (signature kept)."""
    header, _, signature = tokens.issue("mallory").split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims(sub="victim")).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


BAD_TOKENS = {
    "forged with another key": lambda: forged(claims()),
    "tampered payload": tampered,
    "expired": lambda: signed(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
    "alg none": lambda: jwt.encode(claims(), None, algorithm="none"),
    "alg none, no signature part": lambda: jwt.encode(claims(), None, algorithm="none").rstrip("."),
    "wrong issuer": lambda: signed(claims(iss="https://cognito-idp.example/other-pool")),
    "wrong audience": lambda: signed(claims(aud="another-app")),
    "no subject": lambda: signed({k: v for k, v in claims().items() if k != "sub"}),
    "garbage": lambda: "not.a.jwt",
}
ROUTES = [
    ("POST", "/coupons/validate", {"code": "WELCOME10", "channel": "web", "order": ORDER}),
    ("POST", "/redemptions", {"code": "WELCOME10", "channel": "web", "order": ORDER, "order_id": "o-1"}),
    ("GET", f"/redemptions/{uuid.uuid4()}", None),
    ("POST", f"/redemptions/{uuid.uuid4()}/rollback", None),
    ("GET", "/coupons", None),
    ("POST", "/coupons", {"discount_value": 5}),
    ("GET", "/coupons/some-id/redemptions", None),
]


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_invalid_tokens_are_401_on_every_route(stack: LocalStack, kind: str) -> None:
    token = BAD_TOKENS[kind]()
    for method, path, body in ROUTES:
        result = stack.request(method, path, body, token=token)
        assert (result.status, result.error_code) == (401, "UNAUTHENTICATED"), (kind, method, path, result.body)


def test_missing_or_malformed_authorization_headers_are_401(stack: LocalStack) -> None:
    good = tokens.issue("someone")
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer  "},
                    {"Authorization": f"Basic {good}"}, {"Authorization": good}):
        for method, path, body in ROUTES[:2]:
            result = stack.request(method, path, body, headers=headers)
            assert (result.status, result.error_code) == (401, "UNAUTHENTICATED"), (headers, result.body)
    # the public document needs none
    assert stack.request("GET", "/openapi.json").status == 200


def test_customers_are_403_on_admin_routes_and_change_nothing(stack: LocalStack) -> None:
    coupon = stack.create_coupon(code=unique("ADM-"), discount_value=10)
    token = customer()
    for method, path, body in [
        ("GET", "/coupons", None), ("POST", "/coupons", {"discount_value": 5}),
        ("GET", f"/coupons/{coupon['id']}", None), ("PUT", f"/coupons/{coupon['id']}", {"discount_value": 50}),
        ("DELETE", f"/coupons/{coupon['id']}", None), ("GET", f"/coupons/{coupon['id']}/redemptions", None),
    ]:
        result = stack.request(method, path, body, token=token)
        assert (result.status, result.error_code) == (403, "FORBIDDEN"), (method, path, result.body)
    after = stack.admin("GET", f"/coupons/{coupon['id']}").body
    assert after["discount_value"] == 10 and after["status"] == "active"


def test_a_customers_token_with_a_group_named_coupon_admins_is_not_an_admin(stack: LocalStack) -> None:
    # Issue 17, finding 7: one authorizer accepts both pools' tokens, so the admin group claim of a
    # token from the customers' pool (a group of that name created there) must not make an admin.
    coupon = stack.create_coupon(code=unique("ISS-"), discount_value=10)
    forged = tokens.issue(unique("mallory-"), groups=["coupon-admins"])  # customers' issuer, admin group
    assert jwt.decode(forged, options={"verify_signature": False})["cognito:groups"] == ["coupon-admins"]
    for method, path, body in [
        ("GET", "/coupons", None), ("POST", "/coupons", {"discount_value": 5}),
        ("PUT", f"/coupons/{coupon['id']}", {"discount_value": 50}), ("DELETE", f"/coupons/{coupon['id']}", None),
        ("GET", f"/coupons/{coupon['id']}/redemptions", None), ("GET", "/reports/summary?from=2026-01-01&to=2026-01-01", None),
        ("POST", "/campaigns/spring/codes", {"count": 1, "template": {"discount_value": 5}}),
    ]:
        result = stack.request(method, path, body, token=forged)
        assert (result.status, result.error_code) == (403, "FORBIDDEN"), (method, path, result.body)
    assert stack.admin("GET", f"/coupons/{coupon['id']}").body["discount_value"] == 10
    # The admin token (`coupons-local token --admin`) comes from the distinct admin issuer, and works
    admin = stack.token(unique("ada-"), admin=True)
    issuer = jwt.decode(admin, options={"verify_signature": False})["iss"]
    assert issuer == tokens.ADMIN_ISSUER and issuer != tokens.ISSUER
    assert stack.request("GET", "/coupons", token=admin).status == 200
    # An admin-pool token without the group is a customer
    plain = signed(claims(sub=unique("staff-"), iss=tokens.ADMIN_ISSUER, **{"cognito:groups": []}))
    assert stack.request("GET", "/coupons", token=plain).status == 403


def test_identity_comes_only_from_the_token(stack: LocalStack) -> None:
    code = unique("WHO-")
    stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    me = customer("the-real-me")
    # A user_id in the body is an unknown field, on both customer routes
    for path, extra in (("/coupons/validate", {}), ("/redemptions", {"order_id": "o-x"})):
        body = {"code": code, "channel": "web", "order": ORDER, "user_id": "victim", **extra}
        result = stack.request("POST", path, body, token=me)
        assert result.status == 400 and result.body["error"]["details"] == [
            {"field": "user_id", "message": "unknown field"}], result.body
    # Claims, headers and query strings that name someone else are ignored: the token's sub is the user
    sneaky = signed(claims(sub="the-real-me", user_id="victim", username="victim", **{"cognito:groups": []}))
    done = stack.request("POST", "/redemptions?user_id=victim",
                         {"code": code, "channel": "web", "order": ORDER, "order_id": unique("o-")},
                         token=sneaky, headers={"X-User-Id": "victim", "X-Forwarded-User": "victim"})
    assert done.status == 201 and done.body["user_id"] == "the-real-me"
    assert redeem(stack, me, code).body["user_id"] == "the-real-me"
    # A body cannot make anyone an admin either
    assert stack.request("GET", "/coupons", token=sneaky).status == 403


def test_a_redemption_is_visible_and_reversible_only_by_its_user_or_an_admin(stack: LocalStack) -> None:
    code = unique("PRIV-")
    stack.create_coupon(code=code, discount_value=10, max_uses=5)
    owner, stranger = customer(), customer()
    rid = redeem(stack, owner, code).body["redemption_id"]
    unknown = stack.request("GET", f"/redemptions/{uuid.uuid4()}", token=stranger)
    assert (unknown.status, unknown.error_code) == (404, "REDEMPTION_NOT_FOUND")
    # Someone else's redemption does not exist for you: the same 404, and nothing changes
    for method, path in (("GET", f"/redemptions/{rid}"), ("POST", f"/redemptions/{rid}/rollback")):
        result = stack.request(method, path, token=stranger)
        assert (result.status, result.raw) == (404, unknown.raw)
    assert stack.request("GET", f"/redemptions/{rid}", token=owner).body["status"] == "redeemed"
    assert stack.request("GET", "/redemptions/not-an-id", token=owner).error_code == "REDEMPTION_NOT_FOUND"
    # An admin may read it and roll it back; its user then sees it rolled back
    assert stack.admin("GET", f"/redemptions/{rid}").body["redemption_id"] == rid
    assert stack.admin("POST", f"/redemptions/{rid}/rollback").body["status"] == "rolled_back"
    assert stack.request("GET", f"/redemptions/{rid}", token=owner).body["status"] == "rolled_back"
    assert validate(stack, owner, code).status == 200
