"""Callers (issue 12): people (ID tokens) and servers (access tokens), from the authorizer's context."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from coupons import http
from coupons.errors import Forbidden, Unauthenticated


def app_with(context: dict[str, Any], ip: str = "198.51.100.7") -> Any:
    event = APIGatewayProxyEvent({"requestContext": {"authorizer": context,
                                                     "identity": {"sourceIp": ip, "userAgent": "ua"}}})
    return SimpleNamespace(current_event=event)


def later() -> str:
    return str(int(time.time()) + 600)


def server(scope: str = "coupons/checkout", client: str = "shop-backend") -> dict[str, Any]:
    return {"token_use": "access", "client_id": client, "scope": scope, "exp": later(), "principalId": "x"}


def person(**claims: Any) -> dict[str, Any]:
    return {"token_use": "id", "sub": "alice", "exp": later(), **claims}


def test_a_servers_access_token_makes_a_server_identity() -> None:
    who = http.identity_of(app_with(server("coupons/checkout coupons/admin")))
    assert who.is_server and who.client_id == "shop-backend" and who.kind == "server"
    assert who.scopes == {"coupons/checkout", "coupons/admin"}
    assert who.user_id == "client:shop-backend"  # its name in audit fields, never a shopper's id
    assert who.email is None and not who.is_admin


def test_a_server_is_never_an_admin_person_whatever_its_claims_say() -> None:
    context = {**server(), "cognito:groups": "coupon-admins", "sub": "ada", "iss": "anything"}
    who = http.identity_of(app_with(context))
    assert who.is_server and not who.is_admin and who.groups == frozenset()


@pytest.mark.parametrize(("scope", "checkout", "admin"), [
    ("coupons/checkout", True, False), ("coupons/admin", False, True),
    ("coupons/checkout coupons/admin", True, True), ("coupons/other", False, False),
])
def test_scopes_decide_what_a_server_may_use(scope: str, checkout: bool, admin: bool) -> None:
    app = app_with(server(scope))
    for allowed, guard in ((checkout, http.require_checkout), (admin, http.require_admin)):
        if allowed:
            assert guard(app).client_id == "shop-backend"
        else:
            with pytest.raises(Forbidden):
                guard(app)
    with pytest.raises(Forbidden):  # a server has no "me"
        http.require_person(app)


def test_people_may_check_out_and_have_a_me_but_only_admins_administer() -> None:
    app = app_with(person())
    assert http.require_checkout(app).kind == "customer"
    assert http.require_person(app).user_id == "alice"
    with pytest.raises(Forbidden):
        http.require_admin(app)


@pytest.mark.parametrize("context", [
    {},  # no authorizer context at all
    {"token_use": "id", "sub": "alice"},  # no exp
    {"token_use": "id", "sub": "alice", "exp": "soon"},
    {"token_use": "id", "sub": "alice", "exp": str(int(time.time()) - 1)},  # expired while its policy was cached
    {"token_use": "refresh", "sub": "alice", "exp": later()},
    {"token_use": "id", "exp": later()},  # no subject
    {"token_use": "access", "scope": "coupons/checkout", "exp": later()},  # no client
    {"sub": "alice", "exp": later()},  # no token_use
])
def test_contexts_that_name_no_caller_are_401(context: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated):
        http.identity_of(app_with(context))
