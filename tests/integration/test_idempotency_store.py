"""Issue 17, finding 9: `Idempotency-Key` through the real admin and jobs handlers, against moto.

The interleavings e2e cannot pin down are forced here: a duplicate arriving while the first
request is still running, a first attempt that died mid-way, a store that fails.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import boto3
import pytest
from coupons import idempotency, wiring
from coupons.settings import get_settings
from coupons_infra import resources as r
from coupons_local import threadsafe
from coupons_local.gateway import FakeContext, FunctionHost

ADMIN_ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_admins"
ADMIN = {"sub": "admin-1", "cognito:groups": "coupon-admins", "email": "a@example.com", "email_verified": "true",
         "iss": ADMIN_ISSUER}


def event(path: str, body: Any, *, key: str | None, claims: dict[str, Any] | None = None,
          resource: str | None = None, path_parameters: dict[str, str] | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key is not None else {})}
    return {
        "resource": resource or path, "path": path, "httpMethod": "POST", "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()}, "queryStringParameters": None,
        "multiValueQueryStringParameters": None, "pathParameters": path_parameters, "stageVariables": None,
        "requestContext": {"resourcePath": resource or path, "httpMethod": "POST", "path": path, "stage": "test",
                           "requestId": str(uuid.uuid4()), "accountId": "1", "apiId": "x",
                           "identity": {"sourceIp": "10.0.0.9", "userAgent": "pytest"},
                           # issue 12: the token authorizer's context (an ID token's claims, flat)
                           "authorizer": {"token_use": "id", "exp": "4102444800", **(claims or ADMIN)}},
        "body": json.dumps(body), "isBase64Encoded": False,
    }


@pytest.fixture
def admin(aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("ADMIN_ISSUER", ADMIN_ISSUER)  # the admin group counts on the admin pool's tokens
    get_settings.cache_clear()
    threadsafe.install()  # requests run in threads below, as in the local stack
    host = FunctionHost()
    function = r.function("admin")
    handler = host.handler(function)

    def call(body: Any, key: str | None, claims: dict[str, Any] | None = None) -> dict[str, Any]:
        context = FakeContext("admin", function.memory_mb, function.timeout_seconds, str(uuid.uuid4()),
                              time.monotonic())
        answer = handler(event("/coupons", body, key=key, claims=claims), context)
        answer["json"] = json.loads(answer["body"]) if answer.get("body") else None
        return dict(answer)

    return call


def header(answer: dict[str, Any], name: str) -> str | None:
    values = {k.lower(): v for k, v in (answer.get("multiValueHeaders") or {}).items()}
    single = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    return values[name.lower()][-1] if name.lower() in values else single.get(name.lower())


def coupons_in(campaign: str) -> int:
    return len(wiring.admin_service().list(status=None, campaign_id=campaign, code=None, limit=100,
                                           cursor=None)["items"])


def records() -> list[dict[str, Any]]:
    # A test may scan: it reads everything stored to prove what is there.
    return list(boto3.client("dynamodb").scan(TableName=r.IDEMPOTENCY_TABLE.name)["Items"])


def test_a_duplicate_while_the_first_runs_gets_try_again_then_the_first_answer(admin: Any) -> None:
    # Given a create that is still running (held inside the store's write)
    service = wiring.admin_service()
    real_create = service.create
    entered, release = threading.Event(), threading.Event()

    def slow_create(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return real_create(*args, **kwargs)

    service.create = slow_create  # type: ignore[method-assign]
    body = {"discount_value": 5, "campaign_id": "inflight"}
    first: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: first.update(admin(body, "k-inflight")))
    runner.start()
    try:
        assert entered.wait(30)
        # When the client's retry arrives meanwhile
        duplicate = admin(body, "k-inflight")
    finally:
        release.set()
        runner.join(30)
    service.create = real_create  # type: ignore[method-assign]
    # Then it is told to try again (never a 500), and nothing more was created
    assert duplicate["statusCode"] == 503, duplicate["json"]
    assert duplicate["json"]["error"]["code"] == "TRY_AGAIN"
    assert int(header(duplicate, "Retry-After") or 0) >= 1
    assert first["statusCode"] == 201
    assert coupons_in("inflight") == 1
    # ... and the retry after the first finished gets the first answer, marked as a replay
    replay = admin(body, "k-inflight")
    assert (replay["statusCode"], replay["json"]) == (201, first["json"])
    assert header(replay, "Idempotent-Replayed") == "true"
    assert header(first, "Idempotent-Replayed") is None


def test_a_first_attempt_that_died_mid_way_frees_the_key_at_its_deadline(aws_env: Any, admin: Any) -> None:
    # Given a first attempt killed after writing its in-progress record (as Lambda kills a function
    # at its timeout: no Exception handler runs), whose deadline has passed
    service = wiring.admin_service()
    real_create = service.create

    def killed(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt  # a BaseException: Powertools leaves its record, like a killed Lambda

    service.create = killed  # type: ignore[method-assign]
    handler = FunctionHost().handler(r.function("admin"))
    no_time_left = FakeContext("admin", 512, 0, "died", time.monotonic())
    body = {"discount_value": 5, "campaign_id": "died"}
    with pytest.raises(KeyboardInterrupt):
        handler(event("/coupons", body, key="k-died"), no_time_left)
    service.create = real_create  # type: ignore[method-assign]
    [record] = records()
    assert record["status"]["S"] == "INPROGRESS"
    time.sleep(0.01)
    # When the client retries
    retry = admin(body, "k-died")
    # Then the create runs (once)
    assert retry["statusCode"] == 201, retry["json"]
    assert coupons_in("died") == 1


def test_a_failing_store_is_try_again_and_creates_nothing(admin: Any) -> None:
    boto3.client("dynamodb").delete_table(TableName=r.IDEMPOTENCY_TABLE.name)
    answer = admin({"discount_value": 5, "campaign_id": "nostore"}, "k-nostore")
    assert (answer["statusCode"], answer["json"]["error"]["code"]) == (503, "TRY_AGAIN")
    assert coupons_in("nostore") == 0
    # without a key the create does not need the table
    assert admin({"discount_value": 5, "campaign_id": "nostore"}, None)["statusCode"] == 201


def test_a_request_that_fails_frees_its_key(admin: Any) -> None:
    taken = admin({"code": "TAKEN-IDEM", "discount_value": 5}, None)
    assert taken["statusCode"] == 201
    refused = admin({"code": "TAKEN-IDEM", "discount_value": 5}, "k-taken")
    assert (refused["statusCode"], refused["json"]["error"]["code"]) == (409, "CODE_ALREADY_EXISTS")
    assert records() == []
    fixed = admin({"code": "FREE-IDEM", "discount_value": 5}, "k-taken")
    assert fixed["statusCode"] == 201


def test_the_stored_answer_is_sealed_and_bound_to_its_caller_and_key(admin: Any) -> None:
    created = admin({"code": "SEALED-CODE-1", "discount_value": 5}, "k-sealed")
    assert created["statusCode"] == 201
    [record] = records()
    assert "SEALED" not in json.dumps(record) and "k-sealed" not in json.dumps(record)
    stored = json.loads(record["data"]["S"])
    assert set(stored) == {"sealed", "key_version"}
    # The sealed answer opens only under the scope it was sealed for
    cipher = wiring.cipher()
    other_scope = "idempotency:" + "0" * 64
    with pytest.raises(Exception):  # noqa: B017 (AES-GCM's InvalidTag)
        cipher.decrypt(stored["sealed"], other_scope, int(stored["key_version"]))


def test_the_idempotency_table_is_provisioned_with_powertools_keys_and_ttl(aws_env: Any) -> None:
    client = boto3.client("dynamodb")
    table = client.describe_table(TableName=r.IDEMPOTENCY_TABLE.name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    ttl = client.describe_time_to_live(TableName=r.IDEMPOTENCY_TABLE.name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expiration")
    assert idempotency.EXPIRES_AFTER_SECONDS == 24 * 3600
