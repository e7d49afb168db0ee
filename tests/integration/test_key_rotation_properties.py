"""Key rotation invariants, as properties (hypothesis) over the real services against moto.

Random sequences of: create a code (through POST /coupons's service, the bulk writer, or a
re-code through PUT) in any spelling; rotate the key version up (or an operator rolling it back);
delete a coupon. After every step:

- no normalised code is held by two live coupons, whatever versions they were sealed under;
- a create succeeds exactly when the code is not live (a model says which codes are);
- every live code is found by an admin lookup, and by the checkout's read in a function without
  kms:GenerateDataKey (a read-only keyring built afresh, maybe before the active version exists).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from coupons import wiring
from coupons.adapters import aws
from coupons.adapters.bulk_store import CODE_TAKEN, CREATED, CouponBatchWriter, PendingCoupon
from coupons.adapters.checkout_store import CheckoutStore
from coupons.adapters.coupon_store import DynamoKeyringStore
from coupons.bulk_import import build_record
from coupons.clock import utcnow
from coupons.codes import normalise
from coupons.crypto import unwrap_keyring
from coupons.errors import CodeAlreadyExists
from coupons.models import CouponCreate, CouponUpdate, resolve_spec
from coupons.settings import get_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

POOL = ("ALPHA-1", "BRAVO-22")  # few codes, so sequences collide often
MAX_VERSION = 4
_ids = itertools.count()


@pytest.fixture(scope="module")
def moto_env() -> Iterator[Any]:
    from coupons_local import moto_patches
    from coupons_local.provision import function_environment, provision
    from moto import mock_aws

    moto_patches.apply()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with mock_aws():
            provisioned = provision()
            for key, value in function_environment(provisioned, {}).items():
                patch.setenv(key, value)
            wiring.reset()
            patch.setattr(aws, "reset_clients", lambda: None)  # new containers, same clients: faster examples
            yield patch
            wiring.reset()
    os.environ.pop("AWS_ENDPOINT_URL", None)


def new_container(patch: pytest.MonkeyPatch, version: int) -> None:
    """A deployment at this key version: settings, keyring and services read afresh."""
    patch.setenv("CODE_KEY_VERSION", str(version))
    wiring.reset()


def empty_table() -> None:
    """Every example starts with no coupon and no key version (a test may scan)."""
    db = aws.client("dynamodb")
    table = get_settings().coupons_table
    for page in db.get_paginator("scan").paginate(TableName=table, ProjectionExpression="pk, sk"):
        for item in page["Items"]:
            db.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})


def live_codes() -> dict[str, list[str]]:
    """normalised code -> ids of the live coupons holding it, from what is stored."""
    cipher = wiring.cipher()
    held: dict[str, list[str]] = {}
    for page in aws.client("dynamodb").get_paginator("scan").paginate(TableName=get_settings().coupons_table):
        for item in page["Items"]:
            if item["sk"]["S"] != "COUPON" or not item["pk"]["S"].startswith("CODE#"):
                continue
            plain = cipher.decrypt(item["code_ct"]["S"], item["coupon_id"]["S"], int(item["key_version"]["N"]))
            held.setdefault(normalise(plain) or "", []).append(item["coupon_id"]["S"])
    return held


class ReadOnlyKms:
    def __init__(self, real: Any) -> None:
        self._real = real

    def generate_data_key(self, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GenerateDataKey")

    def decrypt(self, **kwargs: Any) -> Any:
        return self._real.decrypt(**kwargs)


def spelled(code: str, how: int) -> str:
    plain = code.replace("-", "")
    return [code, code.lower(), plain, "-".join(plain.lower())][how]


codes = st.sampled_from(range(len(POOL)))
steps = st.lists(st.one_of(
    st.tuples(st.just("create"), codes, st.integers(0, 3), st.sampled_from(["admin", "bulk", "recode"])),
    st.tuples(st.just("rotate"), st.sampled_from([1, 1, 1, -1])),  # mostly up; now and then a rollback
    st.tuples(st.just("delete"), codes),
), min_size=1, max_size=12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
@example(steps=[("create", 0, 0, "admin"), ("rotate", 1), ("create", 0, 3, "admin")])
@example(steps=[("create", 1, 1, "bulk"), ("rotate", 1), ("create", 1, 2, "recode"), ("create", 1, 0, "bulk")])
@example(steps=[("rotate", 1), ("create", 0, 1, "admin"), ("rotate", -1), ("create", 0, 2, "bulk"),
                ("delete", 0), ("rotate", 1), ("rotate", 1), ("create", 0, 0, "recode")])
def test_one_live_coupon_per_code_and_every_code_found_across_rotations(moto_env: Any,
                                                                         steps: list[tuple[Any, ...]]) -> None:
    patch = moto_env
    version = 1
    new_container(patch, version)
    empty_table()
    new_container(patch, version)
    model: dict[str, str] = {}  # normalised code -> the id of the coupon holding it
    spare: str | None = None  # a coupon to re-code (its own code is outside the pool)
    for step in steps:
        admin = wiring.admin_service()
        if step[0] == "rotate":
            version = min(MAX_VERSION, max(1, version + step[1]))
            new_container(patch, version)
        elif step[0] == "delete":
            wanted = normalise(POOL[step[1]]) or ""
            if wanted in model:
                gone = model.pop(wanted)
                admin.delete(gone, "prop")
                spare = None if gone == spare else spare
        else:
            _, which, how, path = step
            code = spelled(POOL[which], how)
            wanted = normalise(code) or ""
            free = wanted not in model
            if path == "admin":
                try:
                    created = admin.create(CouponCreate.model_validate({"code": code, "discount_value": 5}), "prop")
                except CodeAlreadyExists:
                    assert not free, f"{code} was free but refused"
                else:
                    assert free, f"{code} was created twice"
                    model[wanted] = created["id"]
            elif path == "bulk":
                now = utcnow()
                spec = resolve_spec({"discount_value": 5}, get_settings(), now)
                record = build_record(admin, spec, code=code, coupon_id=f"bulk-{next(_ids)}", status="active",
                                      actor="prop", now=now)
                writer = CouponBatchWriter(aws.client("dynamodb"), get_settings().coupons_table)
                outcome = writer.write([PendingCoupon(0, record)], f"job-{next(_ids)}")[0].outcome
                assert outcome == (CREATED if free else CODE_TAKEN), (code, outcome)
                if free:
                    model[wanted] = record["coupon_id"]
            else:
                if spare is None:
                    spare = admin.create(CouponCreate.model_validate(
                        {"code": f"SPARE-{next(_ids)}", "discount_value": 5}), "prop")["id"]
                mine = model.get(wanted) == spare
                try:
                    admin.update(spare, CouponUpdate(code=code), "prop")
                except CodeAlreadyExists:
                    assert not free and not mine, f"re-code to {code} refused"
                else:
                    assert free or mine, f"re-code to {code} made it live twice"
                    model = {c: i for c, i in model.items() if i != spare}
                    model[wanted] = spare
        # A function without kms:GenerateDataKey, starting now (maybe before the active version exists),
        # finds every live code through the checkout's one read
        s = get_settings()
        db = aws.client("dynamodb")
        read_only = unwrap_keyring(DynamoKeyringStore(db, s.coupons_table), ReadOnlyKms(boto3.client("kms")),
                                   s.kms_key_id, s.code_key_version)
        store = CheckoutStore(db, s.coupons_table, s.guards_table)
        for wanted, coupon_id in model.items():
            coupon = store.read(read_only.lookup_indexes(wanted), "prop-user").coupon
            assert coupon is not None and coupon["coupon_id"] == coupon_id, f"{wanted} not found (read-only)"
        # The invariants, after every step
        held = live_codes()
        for base in POOL:
            wanted = normalise(base) or ""
            assert len(held.get(wanted, [])) <= 1, f"{base} is live twice: {held[wanted]}"
            assert held.get(wanted, [None])[0] == model.get(wanted)
            found = wiring.admin_service().find_by_code(base.lower())
            assert (found or {}).get("id") == model.get(wanted)
