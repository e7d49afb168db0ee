"""Issue 17: `coupons-local serve` holds functions to Lambda's timeout, over real HTTP.

The stack is started with the jobs function's timeout cut to nothing (COUPONS_LOCAL_FUNCTION_TIMEOUTS),
so every call to it is past its deadline before it can touch AWS: the caller must get API Gateway's
504 in the error envelope, and nothing may be committed. (The host-level tests in
tests/integration/test_function_limits.py let a function run into its timeout half-way.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LocalStack, start_stack, unique

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def strict() -> Iterator[LocalStack]:
    stack = start_stack({"COUPONS_LOCAL_FUNCTION_TIMEOUTS": "jobs=0"}, seed=False)
    try:
        yield stack
    finally:
        stack.stop()


def count(stack: LocalStack, service: str, **call: Any) -> int:
    client = stack.boto(service)
    if service == "dynamodb":  # a test may scan: it proves what is not there
        return int(client.scan(Select="COUNT", **call)["Count"])
    attributes = client.get_queue_attributes(AttributeNames=["All"], **call)["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_an_api_call_past_its_timeout_is_a_504_envelope_and_commits_nothing(strict: LocalStack) -> None:
    info = strict.info()
    answer = strict.admin("POST", f"/campaigns/{unique('late').lower()}/codes",
                          {"count": 3, "template": {"discount_value": 5}})
    assert answer.status == 504, answer.body
    assert answer.error_code == "INTERNAL_ERROR" and "timeout" in answer.body["error"]["message"]
    assert answer.headers.get("Access-Control-Allow-Origin") == "*"
    # No job, no queued plan, no idempotency record: the invocation was fenced before any AWS call
    assert count(strict, "dynamodb", TableName=info["tables"]["jobs"]) == 0
    assert count(strict, "sqs", QueueUrl=info["queues"]["generation"]) == 0
    # ... the same with an Idempotency-Key: no record holds the key afterwards
    keyed = strict.request("POST", f"/campaigns/{unique('late').lower()}/codes",
                           {"count": 3, "template": {"discount_value": 5}}, token=strict.admin_token,
                           headers={"Idempotency-Key": "late-1"})
    assert keyed.status == 504
    assert count(strict, "dynamodb", TableName=info["tables"]["idempotency"]) == 0


def test_other_functions_keep_their_own_timeouts(strict: LocalStack) -> None:
    created = strict.admin("POST", "/coupons", {"discount_value": 5})
    assert created.status == 201, created.body
    assert strict.admin("GET", f"/coupons/{created.body['id']}").status == 200
