"""Issue 17, finding 8b: a re-code's CouponUpdated names every field the same PUT changed.

A new code moves the coupon to a new item (the stream shows an INSERT and a REMOVE on different
keys, which may arrive in different shards); the INSERT alone must still say which fields changed.
"""

from __future__ import annotations

import itertools
from typing import Any

from coupons import wiring
from coupons.models import CouponCreate, CouponUpdate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_expiry import published, stream_records

_numbers = itertools.count(1)  # examples share one emulated table: each takes fresh codes


def updates(coupon_id: str) -> list[dict[str, Any]]:
    return [e.detail for e in published(stream_records())
            if e.detail_type == "CouponUpdated" and e.detail["coupon_id"] == coupon_id]


def test_a_recode_that_also_changes_other_fields_names_them_all(aws_env: Any) -> None:
    # Given a coupon
    service = wiring.admin_service()
    created = service.create(CouponCreate.model_validate(
        {"code": "SPRING-OLD", "discount_value": 10, "max_uses": 5}), "admin-1")
    # When one PUT changes the code, the discount and the cap
    service.update(created["id"], CouponUpdate.model_validate(
        {"code": "SPRING-NEW", "discount_value": 15, "max_uses": 9}), "admin-2")
    # Then the one CouponUpdated names all three fields, and never the code's value
    [detail] = updates(created["id"])
    assert detail["changed"] == ["code", "discount_value", "max_uses"]
    assert detail["actor"] == "admin-2"
    assert "SPRING" not in repr(detail)


def test_a_recode_that_pauses_reports_the_previous_status(aws_env: Any) -> None:
    service = wiring.admin_service()
    created = service.create(CouponCreate.model_validate({"code": "PAUSE-OLD", "discount_value": 10}), "admin-1")
    service.update(created["id"], CouponUpdate.model_validate({"code": "PAUSE-NEW", "status": "disabled"}),
                   "admin-1")
    [detail] = updates(created["id"])
    assert detail["changed"] == ["code", "status"]
    assert (detail["status"], detail["previous_status"]) == ("disabled", "active")


def test_a_later_plain_edit_after_a_recode_names_only_its_own_fields(aws_env: Any) -> None:
    service = wiring.admin_service()
    created = service.create(CouponCreate.model_validate({"code": "LATER-OLD", "discount_value": 10}), "admin-1")
    service.update(created["id"], CouponUpdate.model_validate({"code": "LATER-NEW", "discount_value": 11}),
                   "admin-1")
    service.update(created["id"], CouponUpdate.model_validate({"max_uses": 3}), "admin-1")
    assert [d["changed"] for d in updates(created["id"])] == [["code", "discount_value"], ["max_uses"]]


EDITS = st.fixed_dictionaries({}, optional={
    "discount_value": st.integers(min_value=1, max_value=99),
    "max_uses": st.integers(min_value=1, max_value=1000) | st.none(),
    "uses_per_user": st.integers(min_value=1, max_value=5),
    "status": st.sampled_from(["active", "disabled"]),
    "channels": st.sampled_from([["web"], ["pos", "web"], ["mobile"]]),
    "metadata": st.sampled_from([{}, {"note": "x"}]),
})


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=EDITS)
def test_property_a_recode_names_exactly_what_a_same_code_edit_would_plus_code(
        aws_env: Any, edit: dict[str, Any]) -> None:
    # Two identical coupons get the same edit, one with a new code and one without: the re-code's
    # `changed` is the plain edit's `changed` plus "code" (the plain edit is the stream's diff).
    number = next(_numbers)
    service = wiring.admin_service()
    base = {"discount_value": 10, "max_uses": 20, "uses_per_user": 1, "channels": ["web", "mobile", "pos"]}
    plain = service.create(CouponCreate.model_validate({**base, "code": f"P{number}X"}), "admin-1")
    moved = service.create(CouponCreate.model_validate({**base, "code": f"M{number}X"}), "admin-1")
    service.update(plain["id"], CouponUpdate.model_validate(edit), "admin-1")
    service.update(moved["id"], CouponUpdate.model_validate({**edit, "code": f"N{number}X"}), "admin-1")
    plain_changes = updates(plain["id"])
    [moved_detail] = updates(moved["id"])
    expected = sorted({"code", *(plain_changes[0]["changed"] if plain_changes else [])})
    assert moved_detail["changed"] == expected
