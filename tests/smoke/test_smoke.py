"""A short end-to-end flow against a deployed coupon API.

Environment: COUPONS_API_URL (the stack's ApiUrl output), COUPONS_TOKEN (a Cognito ID token;
with the coupon-admins group the flow creates its own coupon and deletes it afterwards),
optionally COUPONS_SMOKE_CODE (an existing code a customer token may redeem) and
COUPONS_API_KEY (when the stack requires channel API keys).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

API_URL = os.environ.get("COUPONS_API_URL", "").rstrip("/")
TOKEN = os.environ.get("COUPONS_TOKEN", "")
SMOKE_CODE = os.environ.get("COUPONS_SMOKE_CODE", "")
API_KEY = os.environ.get("COUPONS_API_KEY", "")
ORDER = {"currency": "USD", "items": [{"product_id": "smoke-1", "category": "smoke", "unit_price": 2000,
                                       "quantity": 2}]}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def code(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error.get("code") if isinstance(error, dict) else None


def call(method: str, path: str, body: Any = None, *, token: str | None = TOKEN) -> Answer:
    headers = {"Content-Type": "application/json", "User-Agent": "coupons-smoke"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if API_KEY:
        headers["X-Api-Key"] = API_KEY
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(API_URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), dict(error.headers)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return Answer(status, got, parsed)


def claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified: only to decide which flow this token can run."""
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


def is_admin(token: str) -> bool:
    groups = claims(token).get("cognito:groups", [])
    return "coupon-admins" in (groups if isinstance(groups, list) else str(groups).split(","))


def test_the_openapi_document_is_public() -> None:
    answer = call("GET", "/openapi.json", token=None)
    assert answer.status == 200, answer
    assert "/coupons" in answer.body["paths"]


def test_no_token_gets_401_in_the_contract_envelope() -> None:
    answer = call("POST", "/coupons/validate", {"code": "NOPE1234", "channel": "web", "order": ORDER}, token=None)
    assert answer.status == 401, answer
    assert answer.code == "UNAUTHENTICATED"


def test_an_unknown_code_is_404_coupon_not_found() -> None:
    answer = call("POST", "/coupons/validate",
                  {"code": f"SMOKE-{secrets.token_hex(6).upper()}", "channel": "web", "order": ORDER})
    assert answer.status == 404, answer
    assert answer.code == "COUPON_NOT_FOUND"


def test_validate_redeem_replay_and_rollback() -> None:
    coupon_id = None
    code = SMOKE_CODE
    if is_admin(TOKEN):  # Given a coupon of our own...
        code = f"SMOKE{secrets.token_hex(5).upper()}"
        created = call("POST", "/coupons", {"code": code, "discount_type": "PERCENT", "discount_value": 10,
                                            "max_uses": 5, "uses_per_user": 5, "channels": ["web"]})
        assert created.status == 201, created
        coupon_id = created.body["id"]
    elif not code:  # ...or, with a customer token and no code to spend, what a customer may not do
        forbidden = call("POST", "/coupons", {"discount_type": "PERCENT", "discount_value": 10})
        assert forbidden.status == 403 and forbidden.code == "FORBIDDEN", forbidden
        return
    try:
        # When it is validated, Then the discount is exact and nothing is spent
        valid = call("POST", "/coupons/validate", {"code": code, "channel": "web", "order": ORDER})
        assert valid.status == 200, valid
        assert valid.body["valid"] is True and valid.body["order_subtotal"] == 4000
        # When it is redeemed, and the same order again, Then one redemption
        order_id = f"smoke-{secrets.token_hex(6)}"
        body = {"code": code, "channel": "web", "order": ORDER, "order_id": order_id}
        redeemed = call("POST", "/redemptions", body)
        assert redeemed.status == 201, redeemed
        assert redeemed.body["status"] == "redeemed" and redeemed.body["order_id"] == order_id
        replay = call("POST", "/redemptions", body)
        assert replay.status == 200, replay
        assert replay.body["redemption_id"] == redeemed.body["redemption_id"]
        fetched = call("GET", f"/redemptions/{redeemed.body['redemption_id']}")
        assert fetched.status == 200 and fetched.body["redemption_id"] == redeemed.body["redemption_id"]
        if not is_admin(TOKEN):  # issue 12: rolling back is the shop's call (a server or an admin)
            refused = call("POST", f"/redemptions/{redeemed.body['redemption_id']}/rollback")
            assert refused.status == 403 and refused.code == "FORBIDDEN", refused
            return
        # When it is rolled back (twice), Then it is rolled back once
        for _ in range(2):
            rolled = call("POST", f"/redemptions/{redeemed.body['redemption_id']}/rollback")
            assert rolled.status == 200, rolled
            assert rolled.body["status"] == "rolled_back"
        if coupon_id:
            coupon = call("GET", f"/coupons/{coupon_id}")
            assert coupon.status == 200 and coupon.body["redeemed_count"] == 0, coupon
    finally:
        if coupon_id:
            assert call("DELETE", f"/coupons/{coupon_id}").status == 204
