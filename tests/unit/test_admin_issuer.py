"""Admins are the admin pool's users (issue 17, finding 7): a token's issuer decides, then the group.

API Gateway's one Cognito authorizer verifies ID tokens of both pools (shoppers and admins), so a
`coupon-admins` group claim alone proves nothing: a group of that name could be created in the
shoppers' pool. Only a token whose `iss` is the admin pool (ADMIN_ISSUER) may be an admin.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from coupons import http
from coupons.errors import Forbidden
from coupons.settings import get_settings
from hypothesis import given
from hypothesis import strategies as st

ADMIN_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AdminPool"
SHOPPERS_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_ShopPool"


@pytest.fixture(autouse=True)
def admin_issuer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ADMIN_ISSUER", ADMIN_ISSUER)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def app_with(claims: dict[str, Any]) -> Any:
    # Issue 12: the token authorizer's context (an ID token's claims, flattened) instead of Cognito's `claims`
    context = {"token_use": "id", "exp": str(int(time.time()) + 3600), **claims}
    event = APIGatewayProxyEvent({"requestContext": {"authorizer": context,
                                                     "identity": {"sourceIp": "203.0.113.9"}}})
    return SimpleNamespace(current_event=event)


def who(claims: dict[str, Any]) -> http.Identity:
    return http.identity_of(app_with(claims))


def test_a_shoppers_pool_token_in_a_group_named_coupon_admins_is_not_an_admin() -> None:
    # Given a shopper's ID token with a coupon-admins group claim (the REST authorizer's string form)
    claims = {"sub": "mallory", "iss": SHOPPERS_ISSUER, "cognito:groups": "coupon-admins"}
    # Then the caller is a customer: not an admin, refused on admin routes
    assert not who(claims).is_admin
    with pytest.raises(Forbidden):
        http.require_admin(app_with(claims))


def test_an_admin_pool_token_in_the_group_is_an_admin() -> None:
    claims = {"sub": "ada", "iss": ADMIN_ISSUER, "cognito:groups": "[coupon-admins, auditors]"}
    assert who(claims).is_admin
    assert http.require_admin(app_with(claims)).user_id == "ada"


def test_an_admin_pool_token_outside_the_group_is_not_an_admin() -> None:
    assert not who({"sub": "newcomer", "iss": ADMIN_ISSUER}).is_admin
    assert not who({"sub": "newcomer", "iss": ADMIN_ISSUER, "cognito:groups": "auditors"}).is_admin


@pytest.mark.parametrize("issuer", [
    None, "", ADMIN_ISSUER + "/", ADMIN_ISSUER.upper(), ADMIN_ISSUER + "x", ADMIN_ISSUER[:-1],
    "http://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AdminPool", f" {ADMIN_ISSUER}",
])
def test_the_issuer_must_be_exactly_the_admin_pool(issuer: str | None) -> None:
    claims: dict[str, Any] = {"sub": "mallory", "cognito:groups": "coupon-admins"}
    if issuer is not None:
        claims["iss"] = issuer
    assert not who(claims).is_admin


def test_without_a_configured_admin_issuer_nobody_is_an_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADMIN_ISSUER")
    get_settings.cache_clear()
    assert not who({"sub": "ada", "iss": ADMIN_ISSUER, "cognito:groups": "coupon-admins"}).is_admin
    assert not who({"sub": "ada", "iss": "", "cognito:groups": "coupon-admins"}).is_admin


groups = st.lists(st.sampled_from(["coupon-admins", "auditors", "staff", "COUPON-ADMINS"]), max_size=4)


@given(issuer=st.text(max_size=80).filter(lambda text: text != ADMIN_ISSUER), names=groups)
def test_only_the_admin_issuer_can_make_an_admin(issuer: str, names: list[str]) -> None:
    # Whatever the groups, a token of any other issuer is never an admin; its other groups are kept.
    identity = who({"sub": "someone", "iss": issuer, "cognito:groups": ",".join(names)})
    assert not identity.is_admin
    assert identity.groups == frozenset(names) - {"coupon-admins"}


@given(names=groups)
def test_with_the_admin_issuer_the_group_decides(names: list[str]) -> None:
    identity = who({"sub": "someone", "iss": ADMIN_ISSUER, "cognito:groups": ",".join(names)})
    assert identity.is_admin == ("coupon-admins" in names)
