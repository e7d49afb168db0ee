"""Key rotation over HTTP: a deployment at CODE_KEY_VERSION=2 serving data written under version 1.

The local stack keeps its state in memory, so it cannot be restarted with another key version on
the same data. Instead the stack is started at version 2 (`CODE_KEY_VERSION=2 coupons-local
serve`, what `-c code_key_version=2` gives every function on AWS), and this test process plays the
previous deployment: the domain services at version 1, against the stack's emulated AWS (same
tables, same KMS key). Then every route is used over HTTP.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from conftest import LocalStack, start_stack, unique
from coupons.errors import CodeAlreadyExists
from coupons.models import CouponCreate
from coupons_infra import resources as r

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("rotation")]

ORDER = {"currency": "USD", "items": [{"product_id": "p1", "category": "shoes", "unit_price": 5000, "quantity": 2}]}


@pytest.fixture(scope="module")
def rotated() -> Iterator[LocalStack]:
    stack = start_stack({"CODE_KEY_VERSION": "2"}, seed=False)  # no demo coupons: no key until v1 exists
    try:
        yield stack
    finally:
        stack.stop()


def client(info: dict[str, Any], service: str) -> Any:
    return boto3.client(service, endpoint_url=info["aws_endpoint"], region_name=info["region"],
                        aws_access_key_id="local", aws_secret_access_key="local")


@contextmanager
def previous_deployment(stack: LocalStack, version: int) -> Iterator[Any]:
    """The admin service of a deployment at `version`, on the stack's tables and key."""
    from coupons import wiring

    info = stack.info()
    env = {"AWS_ENDPOINT_URL": info["aws_endpoint"], "AWS_DEFAULT_REGION": info["region"],
           "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "KMS_KEY_ID": r.KMS_KEY_ALIAS,
           "CODE_KEY_VERSION": str(version),
           **{t.env: info["tables"][t.key] for t in r.TABLES}}
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        wiring.reset()
        try:
            yield wiring.admin_service()
        finally:
            wiring.reset()  # forget that deployment's clients and keys, with its environment
    wiring.reset()


def stored_versions(info: dict[str, Any]) -> list[int]:
    page = client(info, "dynamodb").query(
        TableName=info["tables"]["coupons"], KeyConditionExpression="pk = :k",
        ExpressionAttributeValues={":k": {"S": "KEYRING"}}, ConsistentRead=True)
    return sorted(int(i["version"]["N"]) for i in page["Items"])


def import_result(stack: LocalStack, info: dict[str, Any], name: str, rows: list[str]) -> list[list[str]]:
    s3 = client(info, "s3")
    bucket = info["buckets"]["imports"]
    body = "code,discount_type,discount_value,campaign_id\r\n" + "\r\n".join(rows) + "\r\n"
    stack.record_csv(body.encode())  # audited when the stack stops (tests/conftest.py)
    s3.put_object(Bucket=bucket, Key=f"incoming/{name}", Body=body.encode())
    deadline = time.monotonic() + 120
    while True:
        try:
            marker = json.loads(s3.get_object(Bucket=bucket, Key=f"results/{name}.json")["Body"].read())
            if stack.admin("GET", f"/jobs/{marker['job_id']}").body["status"] in ("succeeded", "failed"):
                result = s3.get_object(Bucket=bucket, Key=f"results/{name}")["Body"].read().decode()
                return list(csv.reader(io.StringIO(result)))[1:]
        except s3.exceptions.NoSuchKey:
            pass
        assert time.monotonic() < deadline, f"no result for {name}"
        time.sleep(0.5)


def test_a_rotated_deployment_serves_old_codes_and_refuses_them_as_new_ones(rotated: LocalStack) -> None:
    stack = rotated
    info = stack.info()
    code = unique("ROT-")
    # Given a coupon the previous deployment (key version 1) created
    with previous_deployment(stack, 1) as admin_v1:
        old = admin_v1.create(CouponCreate.model_validate(
            {"code": code, "discount_value": 10, "max_uses": 5, "uses_per_user": None}), "admin-v1")
    assert stored_versions(info) == [1]
    customer = stack.token("rot-shopper")
    body = {"code": code.lower(), "channel": "web", "order": ORDER}
    # When the version-2 deployment is used over HTTP
    # Then the old code validates and redeems, in any spelling
    validated = stack.request("POST", "/coupons/validate", body, token=customer)
    assert validated.status == 200 and validated.body["coupon_id"] == old["id"], validated.body
    spaced = stack.request("POST", "/coupons/validate", {**body, "code": " ".join(code)}, token=customer)
    assert spaced.status == 200, spaced.body
    redeemed = stack.request("POST", "/redemptions", {**body, "order_id": "rot-o-1"}, token=customer)
    assert redeemed.status == 201 and redeemed.body["coupon_id"] == old["id"], redeemed.body
    # And creating that code again is refused, whatever the spelling, by POST and by a re-code through PUT
    for spelling in (code, code.lower(), code.replace("-", ""), "-".join(code.replace("-", ""))):
        again = stack.admin("POST", "/coupons", {"code": spelling, "discount_value": 5})
        assert again.status == 409 and again.error_code == "CODE_ALREADY_EXISTS", (spelling, again.body)
    other = stack.create_coupon(code=unique("ROT2-"), discount_value=5)
    recode = stack.admin("PUT", f"/coupons/{other['id']}", {"code": code.lower()})
    assert recode.status == 409 and recode.error_code == "CODE_ALREADY_EXISTS", recode.body
    assert stored_versions(info) == [1, 2]  # the new coupon was sealed under version 2
    # And the CSV import reports it as a duplicate
    # (the file is not named after the code: its name is in the job and its event, a code never is)
    rows = import_result(stack, info, f"{unique('rotation-')}.csv", [f"{code.lower()},PERCENT,10,rot",
                                                      f"{unique('ROT3-')},PERCENT,10,rot"])
    assert [row[1] for row in rows] == ["duplicate", "created"], rows
    assert rows[0][3] == "code: a coupon with this code exists already"
    # And exactly one coupon answers to the code
    listed = stack.admin("GET", f"/coupons?code={code.lower()}")
    assert [c["id"] for c in listed.body["items"]] == [old["id"]]
    assert stack.admin("GET", f"/coupons/{old['id']}").body["redeemed_count"] == 1


def test_a_rollback_to_version_1_keeps_version_2_codes_unique(rotated: LocalStack) -> None:
    # Given a coupon the version-2 deployment created
    stack = rotated
    code = unique("ROTB-")
    newer = stack.create_coupon(code=code, discount_value=5)
    # When an operator rolls back to version 1 (the previous deployment again)
    with previous_deployment(stack, 1) as admin_v1:
        # Then it refuses the version-2 code, and finds it
        with pytest.raises(CodeAlreadyExists):
            admin_v1.create(CouponCreate.model_validate({"code": code.lower(), "discount_value": 5}), "admin-v1")
        found = admin_v1.find_by_code(code)
        assert found is not None and found["id"] == newer["id"]
