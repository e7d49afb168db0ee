"""The HTTP edge (coupons.http), in process: bodies refused before parsing, and identity from claims."""

from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace
from typing import Annotated, Any

import pytest
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from coupons.http import MAX_JSON_DEPTH, body_rejection, build_app, entry, identity_of
from coupons.models import ValidateRequest
from coupons_local.gateway import FakeContext
from hypothesis import given, settings
from hypothesis import strategies as st


def event(body: str | None, *, method: str = "POST", content_type: str | None = "application/json",
          claims: dict[str, Any] | None = None, path: str = "/echo") -> dict[str, Any]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return {
        "resource": path, "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()}, "queryStringParameters": None,
        "multiValueQueryStringParameters": None, "pathParameters": None, "stageVariables": None,
        "requestContext": {"resourcePath": path, "httpMethod": method, "path": path, "stage": "test",
                           "requestId": str(uuid.uuid4()), "accountId": "1", "apiId": "x",
                           "identity": {"sourceIp": "10.0.0.9", "userAgent": "pytest"},
                           "authorizer": authorizer_context(claims or {"sub": "u1"})},
        "body": body, "isBase64Encoded": False,
    }


def authorizer_context(claims: dict[str, Any]) -> dict[str, Any]:
    """The token authorizer's context for an ID token with these claims (issue 12: a Lambda authorizer)."""
    return {"token_use": "id", "exp": str(int(time.time()) + 3600), "principalId": "p", **claims}


def nested(depth: int) -> str:
    """An object `depth` levels deep (the outer object counts as one)."""
    return '{"a":' * depth + "1" + "}" * depth


# --- bodies refused before parsing ---------------------------------------------------------------


def test_the_reported_1000_level_body_is_a_400_naming_the_body() -> None:
    refused = body_rejection(event(nested(1000)))
    assert refused is not None and (refused.status, refused.code) == (400, "VALIDATION_ERROR")
    assert refused.details and refused.details[0]["field"] == "body"


def test_depth_up_to_the_limit_passes_and_one_more_is_refused() -> None:
    assert body_rejection(event(nested(MAX_JSON_DEPTH))) is None
    assert body_rejection(event(nested(MAX_JSON_DEPTH + 1))) is not None


TEXT = st.text(alphabet='{}[]"\\:,ab \u00e9', max_size=8)  # brackets and escapes inside strings
LEAF = st.one_of(TEXT, st.integers(), st.none(), st.booleans())
LEVEL = st.tuples(st.booleans(), TEXT, st.lists(LEAF, max_size=2))  # object or array, key, siblings


@settings(max_examples=200, deadline=None)
@given(st.integers(1, MAX_JSON_DEPTH + 8), st.lists(LEVEL, min_size=MAX_JSON_DEPTH + 8, max_size=MAX_JSON_DEPTH + 8),
       LEAF)
def test_the_depth_limit_counts_containers_not_brackets_inside_strings(
        depth: int, levels: list[tuple[bool, str, list[Any]]], leaf: Any) -> None:
    # Given a body exactly `depth` containers deep, with siblings and strings full of brackets
    value = leaf
    for is_object, key, siblings in levels[:depth - 1]:
        value = {**{f"s{i}": s for i, s in enumerate(siblings)}, key: value} if is_object else [*siblings, value]
    body = json.dumps({"v": value})
    # Then it is refused exactly when it is deeper than the limit
    refused = body_rejection(event(body))
    assert (refused is None) == (depth <= MAX_JSON_DEPTH), (depth, body)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["POST", "PUT", "GET", "DELETE"]),
       st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["application/json", "multipart/form-data"])))
def test_any_text_is_either_refused_as_a_4xx_or_let_through(body: str, method: str,
                                                            content_type: str | None) -> None:
    refused = body_rejection(event(body, method=method, content_type=content_type))
    assert refused is None or 400 <= refused.status < 500


@pytest.mark.parametrize("content_type", [
    "multipart/form-data", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "text/plain",
    "application/json; charset=latin-1", "application/json; charset=utf-16", "application/jsonp", ";",
    "application/json, text/plain", "application/vnd.api+json",
])
def test_only_json_is_taken(content_type: str) -> None:
    for body in ('{"a": 1}', None, ""):
        refused = body_rejection(event(body, content_type=content_type))
        assert refused is not None and refused.status == 400, (content_type, body)


@pytest.mark.parametrize("content_type", [None, "", "application/json", "APPLICATION/JSON",
                                          "application/json; charset=utf-8", 'application/json;charset="UTF-8"'])
def test_json_is_taken(content_type: str | None) -> None:
    assert body_rejection(event('{"a": 1}', content_type=content_type)) is None


def test_a_get_or_delete_without_a_body_has_no_content_type_to_check() -> None:
    for method in ("GET", "DELETE"):
        assert body_rejection(event(None, method=method, content_type="multipart/form-data")) is None


@pytest.mark.parametrize(("body", "refused"), [
    ('{"code": "\\ud800"}', True),
    ('{"code": "\\uDFFF"}', True),
    ('{"code": "\\udc00\\ud800"}', True),
    ('{"\\ud83d": 1}', True),
    ('{"code": "\\ud83d\\ude00"}', False),  # a proper pair: an emoji
    ('{"code": "\\\\ud800"}', False),  # an escaped backslash, then the letters ud800
    ('{"code": "\\\\\\ud800"}', True),  # an escaped backslash, then a lone surrogate
    ('{"code": "\ud800"}', True),  # the character itself (not UTF-8 encodable)
])
def test_lone_surrogates_are_refused(body: str, refused: bool) -> None:
    assert (body_rejection(event(body)) is not None) == refused


# --- the whole entry point: never a 500 for a body -------------------------------------------------

router = APIGatewayRouter()


@router.post("/echo")
def _echo(body: Annotated[ValidateRequest, Body()]) -> dict[str, Any]:
    return {"code": body.code}


@router.get("/things/<thing_id>")
def _thing(thing_id: str) -> dict[str, Any]:
    return {"id": thing_id}


HANDLER = entry(build_app(router))


def invoke(raw: dict[str, Any]) -> dict[str, Any]:
    context = FakeContext("test", 256, 10, str(uuid.uuid4()), time.monotonic())
    return HANDLER(raw, context)  # type: ignore[arg-type]


@pytest.mark.parametrize(("body", "content_type"), [
    (nested(1000), "application/json"),
    ('{"code": "X"}', "multipart/form-data"),
    ("", "multipart/form-data"),
    ('{"code": "X"}', "application/x-www-form-urlencoded"),
    ("[" * 5000 + "]" * 5000, "application/json"),
    ('{"a": ' + "[" * 990 + "]" * 990 + "}", "application/json"),
])
def test_bodies_that_used_to_answer_500_answer_400_in_the_envelope(body: str, content_type: str) -> None:
    answer = invoke(event(body, content_type=content_type))
    assert answer["statusCode"] == 400, answer
    assert json.loads(answer["body"])["error"]["code"] == "VALIDATION_ERROR"


def test_an_ordinary_body_still_reaches_the_route() -> None:
    body = json.dumps({"code": "X", "channel": "web", "order": {"currency": "USD", "items": [
        {"product_id": "p", "unit_price": 1, "quantity": 1}]}})
    answer = invoke(event(body))
    assert (answer["statusCode"], json.loads(answer["body"])) == (200, {"code": "X"})


@pytest.mark.parametrize("thing_id", ["a\\b", "\u202e", "é", "' OR 1=1", "<x>", "a\"b", "%00", "x" * 3000])
def test_any_id_without_a_slash_reaches_its_route(thing_id: str) -> None:
    # Powertools' own pattern left some ids unmatched ("no such route"): the route must judge them
    raw = event(None, method="GET", path=f"/things/{thing_id}")
    answer = invoke({**raw, "resource": "/things/{thing_id}"})
    assert (answer["statusCode"], json.loads(answer["body"])) == (200, {"id": thing_id})
    assert invoke(event(None, method="GET", path="/things/a/b"))["statusCode"] == 404


# --- identity: an email only when it is verified ---------------------------------------------------


def caller(claims: dict[str, Any]) -> Any:
    return identity_of(SimpleNamespace(current_event=APIGatewayProxyEvent(event(None, method="GET",
                                                                                 claims=claims))))


@pytest.mark.parametrize(("verified", "email"), [
    ("true", "ann@partner.com"), ("TRUE", "ann@partner.com"), (True, "ann@partner.com"),
    ("false", None), (False, None), (None, None), ("", None), ("1", None), ("yes", None), (1, None),
])
def test_the_email_counts_only_when_verified(verified: Any, email: str | None) -> None:
    claims: dict[str, Any] = {"sub": "u1", "email": "ann@partner.com"}
    if verified is not None:
        claims["email_verified"] = verified
    who = caller(claims)
    assert who.user_id == "u1" and who.email == email
    assert who.email_domain == (None if email is None else "partner.com")


def test_local_tokens_hand_the_claim_over_as_cognito_does() -> None:
    # Issue 12: local tokens go through the same token authorizer as on AWS, whose context carries it.
    from coupons import authorizer
    from coupons_local import tokens

    config = authorizer.AuthorizerConfig.from_env(tokens.authorizer_environment())
    keys = authorizer.KeySets(config)

    def context(token: str) -> dict[str, Any]:
        answer = authorizer.authorize({"authorizationToken": f"Bearer {token}", "methodArn": "arn:x:y/s/GET/"},
                                      config, keys)
        return {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in answer["context"].items()}

    for verified, expected in ((True, "true"), (False, "false")):
        claims = context(tokens.issue("u", email="a@b.com", email_verified=verified))
        assert claims["email_verified"] == expected
        assert caller(claims).email == ("a@b.com" if verified else None)
    assert "email_verified" not in context(tokens.issue("u"))  # no email, nothing to verify
