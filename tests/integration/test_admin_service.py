"""Admin use cases through the real DynamoDB and KMS adapters (moto)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import boto3
import pytest
from coupons import wiring
from coupons.clock import utcnow
from coupons.errors import CodeAlreadyExists, CouponNotFound, ValidationFailed
from coupons.models import CouponCreate, CouponUpdate


def create(**fields: Any) -> dict[str, Any]:
    return wiring.admin_service().create(CouponCreate.model_validate(fields), "admin-1")


def all_items(table: str) -> list[dict[str, Any]]:
    # A test may scan: it reads everything stored to prove what is not there.
    client = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=table):
        items.extend(page["Items"])
    return items


def test_create_then_find_by_id_and_by_any_spelling_of_the_code(aws_env: Any) -> None:
    created = create(code="Summer-25", discount_value=25, max_uses=10)
    service = wiring.admin_service()
    assert created["code"] == "SUMMER-25"
    assert service.get(created["id"])["code"] == "SUMMER-25"
    for spelling in ("summer25", "SUMMER 25", "s-u-m-m-e-r-2-5"):
        found = service.find_by_code(spelling)
        assert found is not None and found["id"] == created["id"]
    assert service.find_by_code("WINTER25") is None


def test_a_taken_code_is_refused_whatever_its_spelling(aws_env: Any) -> None:
    create(code="TAKEN-1", discount_value=5)
    with pytest.raises(CodeAlreadyExists):
        create(code="taken1", discount_value=5)
    other = create(code="FREE-1", discount_value=5)
    with pytest.raises(CodeAlreadyExists):
        wiring.admin_service().update(other["id"], CouponUpdate(code="TAKEN1"), "admin-1")


def test_no_plaintext_code_in_any_table_after_creates_and_updates(aws_env: Any) -> None:
    codes = ["PLAIN-TEXT-1", "PLAINTEXT2", "RECODED-3"]
    first = create(code=codes[0], discount_value=5, metadata={"note": "x"})
    create(code=codes[1], discount_type="FIXED", discount_value=100, currency="USD")
    wiring.admin_service().update(first["id"], CouponUpdate(code=codes[2], discount_value=7), "admin-1")
    generated = create(discount_value=3)["code"]
    stored = repr([all_items(t) for t in (aws_env.tables["coupons"], aws_env.tables["guards"])])
    for code in [*codes, generated]:
        for form in (code, code.replace("-", ""), code.lower()):
            assert form not in stored, form
    assert wiring.admin_service().get(first["id"])["code"] == "RECODED-3"
    assert wiring.admin_service().find_by_code("PLAIN-TEXT-1") is None  # the old code stopped working


def test_warm_get_by_code_makes_no_kms_call_and_one_dynamodb_call(aws_env: Any, count_calls: Any) -> None:
    create(code="WARM-1", discount_value=5)
    service = wiring.admin_service()
    count_calls.attach("dynamodb", "kms")
    assert service.find_by_code("warm-1") is not None
    assert count_calls.by_service("kms") == 0
    assert count_calls.by_service("dynamodb") == 1


def test_a_cold_container_unwraps_the_key_once(aws_env: Any, count_calls: Any) -> None:
    create(code="COLD-1", discount_value=5)
    wiring.reset()  # a new container
    count_calls.attach("dynamodb", "kms")
    service = wiring.admin_service()
    service.find_by_code("COLD-1")
    service.find_by_code("COLD-1")
    assert count_calls.calls["kms:Decrypt"] == 1
    assert count_calls.calls["kms:GenerateDataKey"] == 0


def test_partial_update_changes_only_what_was_sent(aws_env: Any) -> None:
    created = create(code="PARTIAL-1", discount_value=10, max_uses=5, campaign_id="spring",
                     applicable_categories=["shoes"])
    updated = wiring.admin_service().update(created["id"], CouponUpdate(status="disabled"), "admin-2")
    assert updated["status"] == "disabled"
    for field in ("discount_value", "max_uses", "campaign_id", "applicable_categories", "expires_at", "code"):
        assert updated[field] == created[field], field
    resumed = wiring.admin_service().update(created["id"], CouponUpdate(status="active", max_uses=None), "a")
    assert resumed["status"] == "active" and resumed["max_uses"] is None and resumed["remaining_uses"] is None


def test_activating_an_expired_coupon_needs_a_later_expires_at_in_the_same_request(aws_env: Any) -> None:
    """Issue 11, 10b: `status: active` on an expired coupon used to answer 200 and change nothing."""
    from coupons.adapters.expiry_store import DynamoExpiryStore

    now = utcnow()
    service = wiring.admin_service()
    lapsed = create(code="LAPSED-1", discount_value=10, starts_at=now - timedelta(days=2),
                    expires_at=now - timedelta(days=1))  # expired by its date; the sweep has not run
    swept = create(code="SWEPT-1", discount_value=10, starts_at=now - timedelta(days=2),
                   expires_at=now - timedelta(hours=1))
    sweep = DynamoExpiryStore(boto3.client("dynamodb"), aws_env.tables["coupons"])
    pointer = wiring.coupon_store().get_pointer(swept["id"])
    assert pointer is not None
    assert sweep.expire({"pk": f"CODE#{pointer['code_hash']}", "sk": "COUPON"}, now)
    swept = service.get(swept["id"])
    assert lapsed["status"] == swept["status"] == "expired"
    still_past = (now - timedelta(minutes=1)).isoformat()
    for coupon in (lapsed, swept):
        for patch in ({"status": "active"}, {"status": "active", "expires_at": still_past}):
            with pytest.raises(ValidationFailed) as refused:
                service.update(coupon["id"], CouponUpdate.model_validate(patch), "admin-1")
            assert {d["field"] for d in refused.value.details} == {"status", "expires_at"}, patch
            assert service.get(coupon["id"]) == coupon  # nothing stored
        later = (now + timedelta(days=5)).replace(microsecond=0)
        revived = service.update(coupon["id"], CouponUpdate(status="active", expires_at=later), "admin-1")
        assert (revived["status"], revived["expires_at"]) == ("active", later)
    # Setting `active` on a coupon that is not expired stays a no-op 200
    live = create(code="LIVE-1", discount_value=10)
    assert service.update(live["id"], CouponUpdate(status="active"), "admin-1")["status"] == "active"


def test_an_update_that_breaks_a_rule_stores_nothing(aws_env: Any) -> None:
    created = create(code="RULES-1", discount_value=10)
    with pytest.raises(ValidationFailed):
        wiring.admin_service().update(created["id"], CouponUpdate.model_validate(
            {"expires_at": (utcnow() - timedelta(days=400)).isoformat()}), "a")
    with pytest.raises(ValidationFailed):
        wiring.admin_service().update(created["id"], CouponUpdate(discount_type="FIXED"), "a")  # no currency
    assert wiring.admin_service().get(created["id"]) == created


def test_delete_stops_the_code_and_frees_it(aws_env: Any) -> None:
    created = create(code="GONE-1", discount_value=10)
    service = wiring.admin_service()
    service.delete(created["id"], "admin-1")
    assert service.find_by_code("GONE-1") is None
    with pytest.raises(CouponNotFound):
        service.get(created["id"])
    with pytest.raises(CouponNotFound):
        service.delete(created["id"], "admin-1")
    assert create(code="GONE-1", discount_value=5)["id"] != created["id"]


def test_list_pages_by_status_and_campaign(aws_env: Any) -> None:
    ids = {create(discount_value=5, campaign_id="paging")["id"] for _ in range(7)}
    disabled = create(discount_value=5, campaign_id="paging", status="disabled")["id"]
    service = wiring.admin_service()
    seen: list[str] = []
    cursor = None
    while True:
        page = service.list(status=None, campaign_id="paging", code=None, limit=3, cursor=cursor)
        assert len(page["items"]) <= 3
        seen.extend(i["id"] for i in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([*ids, disabled])
    active = service.list(status="active", campaign_id=None, code=None, limit=100, cursor=None)
    assert ids <= {i["id"] for i in active["items"]} and disabled not in {i["id"] for i in active["items"]}
    paused = service.list(status="disabled", campaign_id=None, code=None, limit=100, cursor=None)
    assert [i["id"] for i in paused["items"]] == [disabled]
