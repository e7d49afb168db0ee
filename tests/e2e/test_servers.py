"""Servers as callers (issue 12) over HTTP: a shop backend or POS terminal checks out on behalf of a
customer or a guest; rollback is the shop's call; every wrong combination is a clear 4xx that changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from checkout_helpers import ORDER, assert_conserved, customer, redeem, validate
from conftest import HttpResult, LocalStack, unique
from coupons_local import tokens

pytestmark = pytest.mark.e2e


def server(client: str = "shop-backend", *scopes: str) -> str:
    """A server's access token, as `coupons-local token --client ID [--scope S]` prints it."""
    return tokens.issue_access(client, scopes=scopes or ("coupons/checkout",))


def as_server(stack: LocalStack, token: str, code: str, who: dict[str, Any] | None = None, *,
              order_id: str | None = None, path: str = "/redemptions", channel: str = "web") -> HttpResult:
    body: dict[str, Any] = {"code": code, "channel": channel, "order": ORDER}
    if path == "/redemptions":
        body["order_id"] = order_id or unique("order-")
    if who is not None:
        body["customer"] = who
    return stack.request("POST", path, body, token=token)


# --- on behalf of a customer --------------------------------------------------------------------


def test_a_shop_backend_redeems_for_a_customer_who_is_then_the_same_person_for_every_limit(
        stack: LocalStack) -> None:
    code = unique("BEHALF-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=1, max_uses=10)
    shopper = unique("cust-")
    done = as_server(stack, server(), code, {"id": shopper, "email": "ann@example.com", "ip": "203.0.113.5",
                                             "first_order": True})
    assert done.status == 201, done.body
    assert done.body["user_id"] == shopper
    # The customer's own token is the same person: the one use is spent
    own = customer(shopper)
    for result in (validate(stack, own, code), redeem(stack, own, code)):
        assert (result.status, result.error_code) == (422, "USER_LIMIT_REACHED"), result.body
    # and through another server too
    again = as_server(stack, server("pos"), code, {"id": shopper}, path="/coupons/validate")
    assert (again.status, again.error_code) == (422, "USER_LIMIT_REACHED")
    # The customer sees the redemption made for them; a server reads it too
    rid = done.body["redemption_id"]
    assert stack.request("GET", f"/redemptions/{rid}", token=own).body["user_id"] == shopper
    assert stack.request("GET", f"/redemptions/{rid}", token=server("pos")).status == 200
    assert stack.request("GET", f"/redemptions/{rid}", token=customer()).status == 404
    assert_conserved(stack, coupon["id"], 1)


def test_a_customers_own_use_counts_when_a_server_redeems_for_them_later(stack: LocalStack) -> None:
    code = unique("BEHALF2-")
    stack.create_coupon(code=code, discount_value=10, uses_per_user=1)
    shopper = unique("cust-")
    assert redeem(stack, customer(shopper), code).status == 201
    late = as_server(stack, server(), code, {"id": shopper})
    assert (late.status, late.error_code) == (422, "USER_LIMIT_REACHED")


def test_a_server_vouches_for_the_email_it_names(stack: LocalStack) -> None:
    code = unique("STAFF-")
    stack.create_coupon(code=code, discount_value=30, allowed_domains=["corp.example"], uses_per_user=None)
    ok = as_server(stack, server(), code, {"id": unique("c-"), "email": "Kim@Corp.Example"},
                   path="/coupons/validate")
    assert ok.status == 200, ok.body
    for who in ({"id": unique("c-")}, {"id": unique("c-"), "email": "kim@elsewhere.example"}):
        refused = as_server(stack, server(), code, who, path="/coupons/validate")
        assert (refused.status, refused.error_code) == (422, "DOMAIN_NOT_ALLOWED")


def test_an_order_id_belongs_to_its_caller(stack: LocalStack) -> None:
    code = unique("OWN-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    order_id = unique("order-")
    first = as_server(stack, server("shop-backend"), code, {"id": "c-1"}, order_id=order_id)
    other_server = as_server(stack, server("pos"), code, {"id": "c-1"}, order_id=order_id)
    a_customer = redeem(stack, customer(), code, order_id)
    another_customer = redeem(stack, customer(), code, order_id)
    assert [r.status for r in (first, other_server, a_customer, another_customer)] == [201] * 4
    assert len({r.body["redemption_id"] for r in (first, other_server, a_customer, another_customer)}) == 4
    # The same caller's same order is a replay, its other order a conflict
    replay = as_server(stack, server("shop-backend"), code, {"id": "c-1"}, order_id=order_id)
    assert (replay.status, replay.body) == (200, first.body)
    conflict = as_server(stack, server("shop-backend"), code, {"id": "c-2"}, order_id=order_id)
    assert (conflict.status, conflict.error_code) == (409, "IDEMPOTENCY_CONFLICT")
    assert_conserved(stack, coupon["id"], 4)


# --- guests ---------------------------------------------------------------------------------------


def test_a_pos_terminal_checks_out_a_walk_in_guest_on_a_guest_coupon(stack: LocalStack) -> None:
    code = unique("WALKIN-")
    coupon = stack.create_coupon(code=code, discount_value=15, uses_per_user=None, max_uses=3)
    pos = server("pos")
    assert as_server(stack, pos, code, path="/coupons/validate", channel="pos").status == 200
    done = as_server(stack, pos, code, channel="pos")
    assert done.status == 201, done.body
    assert done.body["user_id"] is None
    # a customer object with no id is a guest too (its IP still counts for the lockouts)
    assert as_server(stack, pos, code, {"ip": "198.51.100.20"}, channel="pos").body["user_id"] is None
    assert_conserved(stack, coupon["id"], 2)


GUEST_REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("a per-user limit (the default)", {}),
    ("a per-user limit of its own", {"uses_per_user": 2}),
    ("email domains", {"uses_per_user": None, "allowed_domains": ["corp.example"]}),
    # the customer check comes before every other one (contract order)
    ("a per-user limit, paused", {"status": "disabled"}),
]


@pytest.mark.parametrize(("why", "fields"), GUEST_REFUSED, ids=[g[0] for g in GUEST_REFUSED])
def test_a_guest_may_not_use_a_coupon_that_needs_a_customer(stack: LocalStack, why: str,
                                                            fields: dict[str, Any]) -> None:
    code = unique("NOGUEST-")
    coupon = stack.create_coupon(code=code, discount_value=10, **fields)
    for who in (None, {"email": "guest@corp.example", "ip": "198.51.100.21"}):
        for path in ("/coupons/validate", "/redemptions"):
            result = as_server(stack, server("pos"), code, who, path=path)
            assert (result.status, result.error_code) == (422, "CUSTOMER_REQUIRED"), (why, path, result.body)
    assert_conserved(stack, coupon["id"], 0)


# --- bad input: a clear 4xx, nothing changed ------------------------------------------------------


BAD_CUSTOMERS: list[tuple[str, Any]] = [
    ("empty id", {"id": ""}),
    ("200-character id", {"id": "c" * 200}),
    ("id with a space", {"id": "a b"}),
    ("id not a string", {"id": 42}),
    ("ip that is not an ip", {"id": "c-1", "ip": "not-an-ip"}),
    ("ip with a port", {"id": "c-1", "ip": "203.0.113.5:443"}),
    ("email that is not an email", {"id": "c-1", "email": "nobody"}),
    ("first_order not a boolean", {"id": "c-1", "first_order": "yes"}),
    ("unknown field", {"id": "c-1", "vip": True}),
    ("not an object", "c-1"),
]


@pytest.mark.parametrize(("why", "who"), BAD_CUSTOMERS, ids=[b[0] for b in BAD_CUSTOMERS])
def test_a_bad_customer_is_a_400_naming_the_field_and_changes_nothing(stack: LocalStack, why: str,
                                                                      who: Any) -> None:
    code = unique("BADC-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    for path in ("/coupons/validate", "/redemptions"):
        result = as_server(stack, server(), code, who, path=path)
        assert (result.status, result.error_code) == (400, "VALIDATION_ERROR"), (why, result.body)
        assert all(d["field"].startswith("customer") for d in result.body["error"]["details"]), result.body
    assert_conserved(stack, coupon["id"], 0)


def test_a_customers_token_may_not_name_a_customer(stack: LocalStack) -> None:
    code = unique("SELF-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    for token in (customer(), stack.admin_token):
        for path in ("/coupons/validate", "/redemptions"):
            result = as_server(stack, token, code, {"id": "someone-else"}, path=path)
            assert (result.status, result.error_code) == (400, "VALIDATION_ERROR"), result.body
            assert result.body["error"]["details"][0]["field"] == "customer"
    assert_conserved(stack, coupon["id"], 0)


def test_a_server_without_the_checkout_scope_is_403_on_checkout_routes(stack: LocalStack) -> None:
    code = unique("SCOPE-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    rid = as_server(stack, server(), code).body["redemption_id"]
    crm = server("crm", "coupons/admin")
    for method, path, body in (
            ("POST", "/coupons/validate", {"code": code, "channel": "web", "order": ORDER}),
            ("POST", "/redemptions", {"code": code, "channel": "web", "order": ORDER, "order_id": "o-crm"}),
            ("GET", f"/redemptions/{rid}", None), ("POST", f"/redemptions/{rid}/rollback", None)):
        result = stack.request(method, path, body, token=crm)
        assert (result.status, result.error_code) == (403, "FORBIDDEN"), (path, result.body)
    # and a checkout-only server is 403 on the admin routes
    for method, path, body in (("GET", "/coupons", None), ("POST", "/coupons", {"discount_value": 5}),
                               ("GET", f"/coupons/{coupon['id']}/redemptions", None),
                               ("GET", "/reports/summary?from=2026-01-01&to=2026-01-01", None)):
        result = stack.request(method, path, body, token=server())
        assert (result.status, result.error_code) == (403, "FORBIDDEN"), (path, result.body)
    assert_conserved(stack, coupon["id"], 1)


def test_a_crm_with_the_admin_scope_uses_the_admin_routes(stack: LocalStack) -> None:
    crm = server("crm", "coupons/admin")
    created = stack.request("POST", "/coupons", {"code": unique("CRM-"), "discount_value": 20}, token=crm)
    assert created.status == 201, created.body
    assert stack.request("GET", f"/coupons/{created.body['id']}", token=crm).status == 200


# --- rollback is the shop's call --------------------------------------------------------------------


def test_customers_may_not_roll_back_servers_and_admins_may(stack: LocalStack) -> None:
    code = unique("REFUND-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=1, max_uses=5)
    shopper = unique("cust-")
    own = customer(shopper)
    rid = redeem(stack, own, code).body["redemption_id"]
    refused = stack.request("POST", f"/redemptions/{rid}/rollback", token=own)
    assert (refused.status, refused.error_code) == (403, "FORBIDDEN")
    assert stack.request("GET", f"/redemptions/{rid}", token=own).body["status"] == "redeemed"
    assert_conserved(stack, coupon["id"], 1)
    # the shop backend refunds the order: the use comes back, once
    for _ in range(2):
        done = stack.request("POST", f"/redemptions/{rid}/rollback", token=server())
        assert (done.status, done.body["status"]) == (200, "rolled_back")
    assert_conserved(stack, coupon["id"], 0)
    assert validate(stack, own, code).status == 200
    # an admin may roll back too (from the console)
    rid2 = as_server(stack, server(), code, {"id": shopper}).body["redemption_id"]
    assert stack.admin("POST", f"/redemptions/{rid2}/rollback").body["status"] == "rolled_back"
    # an unknown id is still a 404 for a server
    unknown = stack.request("POST", f"/redemptions/{uuid.uuid4()}/rollback", token=server())
    assert (unknown.status, unknown.error_code) == (404, "REDEMPTION_NOT_FOUND")


# --- a shopper's own history ------------------------------------------------------------------------


def test_me_redemptions_pages_a_customers_own_history_newest_first(stack: LocalStack) -> None:
    code = unique("HIST-")
    stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    shopper = unique("cust-")
    own = customer(shopper)
    made = [redeem(stack, own, code).body["redemption_id"] for _ in range(3)]
    made.append(as_server(stack, server(), code, {"id": shopper}).body["redemption_id"])  # made for them
    redeem(stack, customer(), code)  # someone else's
    first = stack.request("GET", "/me/redemptions?limit=3", token=own)
    assert first.status == 200, first.body
    assert len(first.body["items"]) == 3 and first.body["next_cursor"]
    second = stack.request("GET", f"/me/redemptions?limit=3&cursor={first.body['next_cursor']}", token=own)
    assert second.status == 200 and second.body["next_cursor"] is None
    items = first.body["items"] + second.body["items"]
    assert [i["redemption_id"] for i in items] == list(reversed(made))  # newest first, all of theirs only
    assert {i["user_id"] for i in items} == {shopper}
    assert [i["redeemed_at"] for i in items] == sorted((i["redeemed_at"] for i in items), reverse=True)
    # Another customer cannot page through them with the cursor
    stranger = stack.request("GET", f"/me/redemptions?limit=3&cursor={first.body['next_cursor']}",
                             token=customer())
    assert stranger.status == 400 or not stranger.body["items"], stranger.body
    # An admin has their own (none); a server has no "me"; bad paging is a 400
    assert stack.request("GET", "/me/redemptions", token=stack.admin_token).body == {"items": [],
                                                                                     "next_cursor": None}
    refused = stack.request("GET", "/me/redemptions", token=server())
    assert (refused.status, refused.error_code) == (403, "FORBIDDEN")
    for query in ("limit=0", "limit=101", "limit=x", "cursor=not-a-cursor"):
        bad = stack.request("GET", f"/me/redemptions?{query}", token=own)
        assert (bad.status, bad.error_code) == (400, "VALIDATION_ERROR"), (query, bad.body)


# --- redemptions carry their order ------------------------------------------------------------------


def test_a_redemption_body_carries_its_orders_totals_everywhere_it_is_read(stack: LocalStack) -> None:
    code = unique("TOTALS-")
    stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    shopper = unique("cust-")
    done = as_server(stack, server(), code, {"id": shopper})  # ORDER: 2 x 50.00
    assert done.status == 201, done.body
    expected = {"order_subtotal": 10000, "shipping_amount": 0, "total_after_discount": 9000,
                "discount_amount": 1000, "currency": "USD"}
    assert {k: done.body[k] for k in expected} == expected
    rid = done.body["redemption_id"]
    reads = [stack.request("GET", f"/redemptions/{rid}", token=customer(shopper)).body,
             stack.request("GET", "/me/redemptions", token=customer(shopper)).body["items"][0],
             stack.request("POST", f"/redemptions/{rid}/rollback", token=server()).body]
    for body in reads:
        assert {k: body[k] for k in expected} == expected, body
    # and a customer's own redemption, with its replay
    own = customer()
    first = redeem(stack, own, code, "o-own")
    replay = redeem(stack, own, code, "o-own")
    assert (first.status, replay.status) == (201, 200) and replay.body == first.body
    assert {k: first.body[k] for k in expected} == expected


# --- tokens that do not fit ---------------------------------------------------------------------------


def _access(**overrides: Any) -> dict[str, Any]:
    import time

    now = int(time.time())
    return {"sub": "shop-backend", "iss": tokens.SERVER_ISSUER, "client_id": "shop-backend", "token_use": "access",
            "scope": "coupons/checkout", "iat": now, "exp": now + 3600, **overrides}


def _rescoped() -> str:
    import base64
    import json

    header, _, signature = server().split(".")
    payload = base64.urlsafe_b64encode(json.dumps(_access(scope="coupons/admin")).encode()).rstrip(b"=")
    return f"{header}.{payload.decode()}.{signature}"


BAD_SERVER_TOKENS = {
    "re-scoped (payload edited, signature kept)": _rescoped,
    "a customer's own access token (customers' pool)": lambda: tokens.sign(_access(iss=tokens.ISSUER,
                                                                                  client_id="web")),
    "access token without a scope": lambda: tokens.sign({k: v for k, v in _access().items() if k != "scope"}),
    "access token without a client": lambda: tokens.sign({k: v for k, v in _access().items() if k != "client_id"}),
    "expired access token": lambda: tokens.sign(_access(exp=1_700_000_000, iat=1_699_990_000)),
    "an ID token's claims marked access": lambda: tokens.sign({**_access(), "token_use": "refresh"}),
    "an access token marked as an ID token (no aud)": lambda: tokens.sign(_access(token_use="id")),
}


@pytest.mark.parametrize("kind", list(BAD_SERVER_TOKENS))
def test_server_tokens_that_do_not_fit_are_401_and_change_nothing(stack: LocalStack, kind: str) -> None:
    code = unique("BADTOK-")
    coupon = stack.create_coupon(code=code, discount_value=10, uses_per_user=None)
    token = BAD_SERVER_TOKENS[kind]()
    for path in ("/coupons/validate", "/redemptions"):
        result = as_server(stack, token, code, {"id": "c-1"}, path=path)
        assert (result.status, result.error_code) == (401, "UNAUTHENTICATED"), (kind, result.body)
    for method, path in (("GET", "/coupons"), ("GET", "/me/redemptions")):
        assert stack.request(method, path, token=token).status == 401, (kind, path)
    assert_conserved(stack, coupon["id"], 0)


def test_the_cli_prints_access_tokens_shaped_like_cognitos(stack: LocalStack) -> None:
    import jwt

    printed = stack.cli("token", "--client", "crm", "--scope", "coupons/admin", "--scope", "coupons/checkout")
    claims = jwt.decode(printed.stdout.strip(), options={"verify_signature": False})
    assert claims["token_use"] == "access" and claims["client_id"] == claims["sub"] == "crm"
    assert claims["scope"] == "coupons/admin coupons/checkout" and "aud" not in claims and "email" not in claims
    assert jwt.get_unverified_header(printed.stdout.strip())["alg"] == "RS256"
    default = stack.cli("token", "--client", "pos").stdout.strip()
    assert jwt.decode(default, options={"verify_signature": False})["scope"] == "coupons/checkout"
    for wrong in (["--client", "pos", "--email", "a@b.com"], ["--client", "pos", "--admin"],
                  ["--user", "ann", "--scope", "coupons/admin"], ["--client", "pos", "--scope", "coupons/root"],
                  ["--client", "pos", "--user", "ann"]):
        assert stack.cli("token", *wrong, check=False).returncode != 0, wrong
