"""Coupon fields: what the contract accepts and refuses (pure, no AWS)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from coupons.codes import normalise
from coupons.errors import ValidationFailed
from coupons.models import CouponCreate, CouponUpdate, checked_spec, resolve_spec
from coupons.settings import Settings
from pydantic import ValidationError

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def spec(settings: Settings | None = None, **fields: Any) -> Any:
    request = CouponCreate.model_validate(fields)
    return resolve_spec(request.model_dump(exclude_unset=True), settings or Settings(), NOW)


def field_of(error: ValidationFailed) -> set[str]:
    return {d["field"] for d in error.details or []}


class TestDefaults:
    def test_defaults_come_from_the_seed_options(self) -> None:
        settings = Settings.from_env({"DEFAULT_EXPIRATION_DAYS": "7", "MAX_DISCOUNT_PER_USER": "3",
                                      "DEFAULT_DISCOUNT_TYPE": "fixed"})
        result = spec(settings, discount_value=500, currency="eur")
        assert result.discount_type == "FIXED"
        assert result.currency == "EUR"
        assert result.starts_at == NOW
        assert result.expires_at == NOW + timedelta(days=7)
        assert result.uses_per_user == 3
        assert result.channels == ["web", "mobile", "pos"]

    def test_explicit_null_uses_per_user_means_unlimited(self) -> None:
        assert spec(discount_value=10, uses_per_user=None).uses_per_user is None

    def test_seed_spellings_of_the_discount_type(self) -> None:
        assert Settings.from_env({"DEFAULT_DISCOUNT_TYPE": "percentage"}).discount_type == "PERCENT"
        assert Settings.from_env({"ALLOWED_DOMAINS": "a.com, B.com"}).allowed_domains == ("a.com", "b.com")

    def test_timestamps_are_held_in_utc(self) -> None:
        result = spec(discount_value=10, starts_at="2026-12-01T09:00:00+09:00",
                      expires_at="2026-12-02T00:00:00-05:00")
        assert result.starts_at == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
        assert result.expires_at.utcoffset() == timedelta(0)

    def test_fractional_percent_is_kept_exactly(self) -> None:
        assert spec(discount_value=12.5).discount_value == Decimal("12.5")
        assert spec(discount_value=25).discount_value == 25


BAD_CREATES: list[tuple[str, dict[str, Any], str]] = [
    ("percent zero", {"discount_value": 0}, "discount_value"),
    ("percent over 100", {"discount_value": 101}, "discount_value"),
    ("fixed without currency", {"discount_type": "FIXED", "discount_value": 500}, "currency"),
    ("fixed fractional", {"discount_type": "FIXED", "discount_value": 5.5, "currency": "USD"}, "discount_value"),
    ("unknown type", {"discount_type": "BOGO", "discount_value": 5}, "discount_type"),
    ("value as string", {"discount_value": "10"}, "discount_value"),
    ("value as bool", {"discount_value": True}, "discount_value"),
    ("naive start", {"discount_value": 5, "starts_at": "2026-12-01T00:00:00"}, "starts_at"),
    ("epoch expiry", {"discount_value": 5, "expires_at": 1796000000}, "expires_at"),
    ("date only", {"discount_value": 5, "expires_at": "2026-12-01"}, "expires_at"),
    ("end before start", {"discount_value": 5, "starts_at": "2026-12-05T00:00:00Z",
                          "expires_at": "2026-12-04T00:00:00Z"}, "expires_at"),
    ("max_uses zero", {"discount_value": 5, "max_uses": 0}, "max_uses"),
    ("max_uses string", {"discount_value": 5, "max_uses": "5"}, "max_uses"),
    ("negative per user", {"discount_value": 5, "uses_per_user": -1}, "uses_per_user"),
    ("code with space", {"discount_value": 5, "code": "SUMMER 25"}, "code"),
    ("code with punctuation", {"discount_value": 5, "code": "SUMMER!25"}, "code"),
    ("formula code", {"discount_value": 5, "code": "=HYPERLINK(1)"}, "code"),
    ("code too long", {"discount_value": 5, "code": "A" * 65}, "code"),
    ("code too short", {"discount_value": 5, "code": "AB"}, "code"),
    ("fullwidth code", {"discount_value": 5, "code": "ＳＵＭＭＥＲ"}, "code"),
    ("unknown channel", {"discount_value": 5, "channels": ["fax"]}, "channels.0"),
    ("no channel", {"discount_value": 5, "channels": []}, "channels"),
    ("unknown field", {"discount_value": 5, "colour": "red"}, "colour"),
    ("server field", {"discount_value": 5, "redeemed_count": 3}, "redeemed_count"),
    ("metadata over 4 KB", {"discount_value": 5, "metadata": {"x": "y" * 5000}}, "metadata"),
    ("invalid currency", {"discount_type": "FIXED", "discount_value": 5, "currency": "XYZ"}, "currency"),
    ("cap on fixed", {"discount_type": "FIXED", "discount_value": 5, "currency": "USD",
                      "max_discount_amount": 3}, "max_discount_amount"),
    ("fractional min order", {"discount_value": 5, "min_order_amount": 10.5}, "min_order_amount"),
    ("bad domain", {"discount_value": 5, "allowed_domains": ["not a domain"]}, "allowed_domains.0"),
]


@pytest.mark.parametrize(("case", "fields", "field"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
def test_bad_fields_are_refused_and_named(case: str, fields: dict[str, Any], field: str) -> None:
    with pytest.raises((ValidationFailed, ValidationError)) as caught:
        spec(**fields)
    error = caught.value
    named = field_of(error) if isinstance(error, ValidationFailed) else {
        ".".join(str(p) for p in e["loc"]) for e in error.errors()}
    assert field in named, (case, named)


def test_update_is_partial_and_refuses_counters() -> None:
    patch = CouponUpdate.model_validate({"status": "disabled"})
    assert patch.model_dump(exclude_unset=True) == {"status": "disabled"}
    with pytest.raises(ValidationError):
        CouponUpdate.model_validate({"redeemed_count": 0})
    with pytest.raises(ValidationError):
        CouponUpdate.model_validate({"status": "exhausted"})


def test_checked_spec_reports_cross_field_errors() -> None:
    with pytest.raises(ValidationFailed) as caught:
        checked_spec({"discount_type": "PERCENT", "discount_value": 150, "starts_at": NOW,
                      "expires_at": NOW + timedelta(days=1)})
    assert field_of(caught.value) == {"discount_value"}


class TestNormalise:
    @pytest.mark.parametrize("typed", ["summer-25", "SUMMER25", " Summer 25 ", "sum-mer-25", "ＳＵＭＭＥＲ25"])
    def test_case_spaces_dashes_and_fullwidth_fold(self, typed: str) -> None:
        assert normalise(typed) == "SUMMER25"

    @pytest.mark.parametrize("typed", ["", "ÄPFEL", "SUMMER\u200b25", "SUMMER;25", "x" * 201, "ѕummer25"])
    def test_non_codes_are_none(self, typed: str) -> None:
        assert normalise(typed) is None


# --- issue 11: money thresholds need a currency; order subtotals are bounded ----------------------


@pytest.mark.parametrize("threshold", [{"min_order_amount": 2000}, {"max_discount_amount": 500},
                                       {"min_order_amount": 0, "max_discount_amount": 1}])
def test_a_money_threshold_without_a_currency_is_refused_and_named(threshold: dict[str, int]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        spec(discount_value=10, **threshold)
    assert field_of(caught.value) == {"currency"}
    assert caught.value.status == 400
    assert spec(discount_value=10, currency="eur", **threshold).currency == "EUR"


def test_a_merged_update_that_loses_the_currency_of_its_threshold_is_refused() -> None:
    stored = {"discount_type": "PERCENT", "discount_value": 10, "starts_at": NOW,
              "expires_at": NOW + timedelta(days=1), "min_order_amount": 100}
    with pytest.raises(ValidationFailed) as caught:
        checked_spec(stored)  # a stored coupon from before version 2, edited without giving a currency
    assert field_of(caught.value) == {"currency"}
    assert checked_spec({**stored, "currency": "USD"}).currency == "USD"


def order_body(*amounts: tuple[int, int]) -> dict[str, Any]:
    return {"code": "X", "channel": "web", "order": {"currency": "USD", "items": [
        {"product_id": f"p{i}", "unit_price": price, "quantity": qty} for i, (price, qty) in enumerate(amounts)]}}


def test_the_reported_huge_order_is_refused_naming_the_first_line_over_the_bound() -> None:
    from coupons.models import ValidateRequest, validation_details

    with pytest.raises(ValidationError) as caught:
        ValidateRequest.model_validate(order_body(*[(10**12, 10**5)] * 500))
    assert [d["field"] for d in validation_details(caught.value)] == ["order.items.0"]


@pytest.mark.parametrize(("amounts", "field"), [
    (((10**12, 1),), None),
    (((10**7, 10**5),), None),
    (((5 * 10**11, 1), (5 * 10**11, 1)), None),
    (((10**7 + 1, 10**5),), "order.items.0"),
    (((1, 1), (10**12, 2)), "order.items.1"),
    (((5 * 10**11, 1), (5 * 10**11 + 1, 1)), "order.items"),
    (((10**12, 1), (1, 1)), "order.items"),
])
def test_each_line_and_the_subtotal_are_at_most_10_to_the_12(amounts: tuple[tuple[int, int], ...],
                                                              field: str | None) -> None:
    from coupons.models import MAX_ORDER_SUBTOTAL, RedeemRequest, ValidateRequest, validation_details

    assert MAX_ORDER_SUBTOTAL == 10**12
    for model, extra in ((ValidateRequest, {}), (RedeemRequest, {"order_id": "o-1"})):
        body = {**order_body(*amounts), **extra}
        if field is None:
            model.model_validate(body)
            continue
        with pytest.raises(ValidationError) as caught:
            model.model_validate(body)
        details = validation_details(caught.value)
        assert [d["field"] for d in details] == [field]
        assert "1000000000000" in details[0]["message"]


@pytest.mark.parametrize(("depth", "ok"), [(16, True), (17, False), (40, False)])
def test_metadata_nesting_is_bounded(depth: int, ok: bool) -> None:
    nested: Any = 1
    for _ in range(depth):
        nested = {"n": nested}
    if ok:
        assert spec(discount_value=5, metadata=nested).metadata == nested
    else:
        with pytest.raises(ValidationError) as caught:
            spec(discount_value=5, metadata=nested)
        assert [e["loc"] for e in caught.value.errors()] == [("metadata",)]
