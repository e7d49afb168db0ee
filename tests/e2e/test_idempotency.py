"""Issue 17, finding 9: admin creates are safe to retry with an `Idempotency-Key` (contract v2).

Over real HTTP against `coupons-local serve`: a client that times out and retries gets the first
answer and creates nothing again; the same key with another body is 409 IDEMPOTENCY_CONFLICT; a
key is the caller's own and the route's own; a malformed key is a 400; duplicates in flight at
once get a clear answer (the first answer, or 503 TRY_AGAIN with Retry-After), never a 500.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from typing import Any

import boto3
import pytest
from conftest import HttpResult, LocalStack, unique

pytestmark = [pytest.mark.e2e]

DAY = 24 * 3600


def new_key() -> str:
    return f"retry-{secrets.token_hex(8)}"


def create(stack: LocalStack, body: Any, key: str | None, *, token: str | None = None,
           header: str = "Idempotency-Key") -> HttpResult:
    headers = {header: key} if key is not None else {}
    return stack.request("POST", "/coupons", body, token=token or stack.admin_token, headers=headers)


def campaign_coupons(stack: LocalStack, campaign: str) -> list[dict[str, Any]]:
    page = stack.admin("GET", f"/coupons?campaign_id={campaign}&limit=100")
    assert page.status == 200, page.body
    return list(page.body["items"])


def idempotency_items(stack: LocalStack) -> list[dict[str, Any]]:
    # A test may scan: it reads everything stored to prove what is (not) there.
    info = stack.info()
    table = info["tables"]["idempotency"]
    client = boto3.client("dynamodb", endpoint_url=info["aws_endpoint"], region_name=info["region"],
                          aws_access_key_id="local", aws_secret_access_key="local")
    return [item for page in client.get_paginator("scan").paginate(TableName=table) for item in page["Items"]]


# --- POST /coupons --------------------------------------------------------------------------------


def test_a_retried_create_returns_the_first_answer_and_creates_one_coupon(stack: LocalStack) -> None:
    # Given a create with a generated code (each run would draw another code and id)
    campaign = unique("idem").lower()
    body = {"discount_value": 7, "campaign_id": campaign}
    key = new_key()
    # When the client retries it (twice, the last time with the header spelled in lower case)
    first = create(stack, body, key)
    second = create(stack, body, key)
    third = create(stack, body, key, header="idempotency-key")
    # Then each answer is the first one, and there is one coupon
    assert first.status == 201, first.body
    assert (second.status, second.body) == (201, first.body)
    assert (third.status, third.body) == (201, first.body)
    assert [c["id"] for c in campaign_coupons(stack, campaign)] == [first.body["id"]]


def test_a_retried_vanity_create_is_not_a_code_already_exists(stack: LocalStack) -> None:
    code = unique("IDEMV")
    key = new_key()
    first = create(stack, {"code": code, "discount_value": 5}, key)
    again = create(stack, {"code": code, "discount_value": 5}, key)
    assert first.status == 201, first.body
    assert (again.status, again.body) == (201, first.body)


def test_the_same_body_in_another_key_order_is_the_same_request(stack: LocalStack) -> None:
    campaign = unique("idemo").lower()
    key = new_key()
    first = create(stack, {"discount_value": 7, "campaign_id": campaign}, key)
    again = stack.request("POST", "/coupons", raw=f'{{ "campaign_id": "{campaign}",  "discount_value": 7 }}'.encode(),
                          token=stack.admin_token, headers={"Idempotency-Key": key})
    assert (again.status, again.body) == (201, first.body)


def test_the_same_key_with_another_body_is_a_409_and_creates_nothing(stack: LocalStack) -> None:
    campaign = unique("idemc").lower()
    key = new_key()
    first = create(stack, {"discount_value": 7, "campaign_id": campaign}, key)
    other = create(stack, {"discount_value": 8, "campaign_id": campaign}, key)
    assert first.status == 201
    assert (other.status, other.error_code) == (409, "IDEMPOTENCY_CONFLICT")
    assert "Idempotency-Key" in other.body["error"]["message"]
    assert [c["id"] for c in campaign_coupons(stack, campaign)] == [first.body["id"]]
    # ... and the first body still gets the first answer
    assert create(stack, {"discount_value": 7, "campaign_id": campaign}, key).body == first.body


def test_a_key_belongs_to_its_caller(stack: LocalStack) -> None:
    # Two admins who happen to pick the same key make two coupons: neither sees the other's answer
    campaign = unique("idemw").lower()
    key = new_key()
    other_admin = stack.token("other-admin", email="other@example.com", admin=True)
    mine = create(stack, {"discount_value": 7, "campaign_id": campaign}, key)
    theirs = create(stack, {"discount_value": 7, "campaign_id": campaign}, key, token=other_admin)
    assert (mine.status, theirs.status) == (201, 201)
    assert mine.body["id"] != theirs.body["id"] and mine.body["code"] != theirs.body["code"]
    assert len(campaign_coupons(stack, campaign)) == 2


def test_a_create_without_a_key_is_not_deduplicated(stack: LocalStack) -> None:
    campaign = unique("idemn").lower()
    body = {"discount_value": 7, "campaign_id": campaign}
    assert create(stack, body, None).status == 201
    assert create(stack, body, None).status == 201
    assert len(campaign_coupons(stack, campaign)) == 2


@pytest.mark.parametrize("key", ["", "k" * 129], ids=["empty", "129 characters"])
def test_a_malformed_key_is_a_400_and_creates_nothing(stack: LocalStack, key: str) -> None:
    campaign = unique("idemb").lower()
    answer = create(stack, {"discount_value": 7, "campaign_id": campaign}, key)
    assert (answer.status, answer.error_code) == (400, "VALIDATION_ERROR"), answer.body
    assert any("idempotency" in d["field"].lower() for d in answer.body["error"]["details"])
    assert campaign_coupons(stack, campaign) == []


def test_a_128_character_key_is_fine(stack: LocalStack) -> None:
    key = secrets.token_hex(64)
    assert len(key) == 128
    first = create(stack, {"discount_value": 3}, key)
    assert first.status == 201 and create(stack, {"discount_value": 3}, key).body == first.body


def test_a_failed_create_is_not_kept_and_a_fixed_retry_succeeds(stack: LocalStack) -> None:
    # A 4xx created nothing: the key is free again, so the corrected request is not a conflict.
    key = new_key()
    bad = create(stack, {"discount_type": "FIXED", "discount_value": 500}, key)  # no currency
    assert bad.status == 400
    good = create(stack, {"discount_type": "FIXED", "discount_value": 500, "currency": "USD"}, key)
    assert good.status == 201, good.body


def test_duplicates_in_flight_at_once_get_the_first_answer_or_try_again(stack: LocalStack) -> None:
    campaign = unique("idemr").lower()
    body = {"discount_value": 7, "campaign_id": campaign}
    key = new_key()
    answers: list[HttpResult] = []
    barrier = threading.Barrier(6)

    def send() -> None:
        barrier.wait()
        answers.append(create(stack, body, key))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {201, 503}, [a.body for a in answers]
    created = [a.body for a in answers if a.status == 201]
    assert created and all(body == created[0] for body in created)
    for busy in (a for a in answers if a.status == 503):
        assert busy.error_code == "TRY_AGAIN" and int(busy.headers["Retry-After"]) >= 1
    assert [c["id"] for c in campaign_coupons(stack, campaign)] == [created[0]["id"]]
    # ... and once it is done, a retry gets the first answer
    assert create(stack, body, key).body == created[0]


def test_the_stored_answer_holds_no_plaintext_code_and_lives_24_hours(stack: LocalStack) -> None:
    code = unique("IDEMSECRET")
    key = new_key()
    before = time.time()
    assert create(stack, {"code": code, "discount_value": 5}, key).status == 201
    items = idempotency_items(stack)
    assert items
    stored = repr(items)
    for form in (code, code.lower(), key):
        assert form not in stored
    expirations = [int(item["expiration"]["N"]) for item in items]
    assert any(before + DAY - 120 <= e <= time.time() + DAY + 120 for e in expirations)


# --- POST /campaigns/{campaign_id}/codes ----------------------------------------------------------


def wait_for_job(stack: LocalStack, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = stack.admin("GET", f"/jobs/{job_id}").body
        if job["status"] in ("succeeded", "failed"):
            return dict(job)
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


def generate(stack: LocalStack, campaign: str, body: Any, key: str | None) -> HttpResult:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return stack.request("POST", f"/campaigns/{campaign}/codes", body, token=stack.admin_token, headers=headers)


def test_a_retried_generation_makes_the_codes_once(stack: LocalStack) -> None:
    # The reported case, scaled down: a retried POST /campaigns/{id}/codes made the codes twice
    campaign = unique("idemg").lower()
    body = {"count": 5, "template": {"discount_value": 10}}
    key = new_key()
    first = generate(stack, campaign, body, key)
    again = generate(stack, campaign, body, key)
    assert first.status == 202, first.body
    assert (again.status, again.body) == (202, first.body)
    job = wait_for_job(stack, first.body["job_id"])
    assert job["status"] == "succeeded"
    assert len(campaign_coupons(stack, campaign)) == 5
    # ... a retry after the job finished still gets the first answer, and makes nothing
    assert generate(stack, campaign, body, key).body == first.body
    assert len(campaign_coupons(stack, campaign)) == 5


def test_a_generation_key_reused_for_another_campaign_or_body_is_a_409(stack: LocalStack) -> None:
    key = new_key()
    body = {"count": 2, "template": {"discount_value": 10}}
    first = generate(stack, unique("idemk").lower(), body, key)
    assert first.status == 202
    elsewhere = generate(stack, unique("idemk").lower(), body, key)
    assert (elsewhere.status, elsewhere.error_code) == (409, "IDEMPOTENCY_CONFLICT")
    bigger = generate(stack, unique("idemk").lower(), {**body, "count": 3}, key)
    assert (bigger.status, bigger.error_code) == (409, "IDEMPOTENCY_CONFLICT")


def test_a_key_belongs_to_its_route(stack: LocalStack) -> None:
    # The same key on POST /coupons and on a generation is two requests, not a conflict
    key = new_key()
    assert create(stack, {"discount_value": 4}, key).status == 201
    assert generate(stack, unique("idemx").lower(), {"count": 1, "template": {"discount_value": 4}},
                    key).status == 202


@pytest.mark.parametrize("key", ["", "g" * 129], ids=["empty", "129 characters"])
def test_a_malformed_generation_key_is_a_400(stack: LocalStack, key: str) -> None:
    answer = generate(stack, unique("idemz").lower(), {"count": 1, "template": {"discount_value": 4}}, key)
    assert (answer.status, answer.error_code) == (400, "VALIDATION_ERROR")


def test_the_openapi_document_describes_the_header(stack: LocalStack) -> None:
    document = stack.request("GET", "/openapi.json").body
    for path in ("/coupons", "/campaigns/{campaign_id}/codes"):
        parameters = document["paths"][path]["post"].get("parameters", [])
        header = [p for p in parameters if p["in"] == "header" and p["name"].lower() == "idempotency-key"]
        assert header, path
