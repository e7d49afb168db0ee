"""Discount math and rule order: pure functions, property-tested with Hypothesis."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from coupons.errors import RuleViolation
from coupons.pricing import (
    Attempt,
    Line,
    Terms,
    Usage,
    discount_for,
    evaluate,
    is_eligible,
    lines_of,
    order_subtotal,
    percent_of,
)
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MONEY = st.integers(min_value=0, max_value=10**12)
PERCENTS = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(100), places=4,
                       allow_nan=False, allow_infinity=False)


def terms(**overrides: object) -> Terms:
    base = Terms(coupon_id="c1", status="active", discount_type="PERCENT", discount_value=10,
                 starts_at=NOW - timedelta(days=1), expires_at=NOW + timedelta(days=1))
    return replace(base, **overrides)  # type: ignore[arg-type]


def attempt(lines: tuple[Line, ...] = (Line("p1", "shoes", 1000, 1),), **overrides: object) -> Attempt:
    base = Attempt(channel="web", email_domain="example.com", currency="USD", lines=lines, now=NOW)
    return replace(base, **overrides)  # type: ignore[arg-type]


def half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)).__floor__())


# --- percent_of ---------------------------------------------------------------------------


@given(MONEY, PERCENTS)
def test_percent_is_exact_half_up_rounding(amount: int, percent: Decimal) -> None:
    # Given any amount and any percentage with up to 4 places
    # Then the result is the exact rational value rounded half-up (no float anywhere)
    assert percent_of(amount, percent) == half_up(Fraction(amount) * Fraction(percent) / 100)


@pytest.mark.parametrize(("amount", "percent", "expected"), [
    (999, Decimal("12.5"), 125),  # 124.875
    (5, 10, 1),  # 0.5 rounds up
    (4, 10, 0),  # 0.4 rounds down
    (15, 10, 2),  # 1.5 rounds up
    (25, 10, 3),  # 2.5 rounds up (half-up, not banker's)
    (10**12, 100, 10**12),
    (0, 50, 0),
    (1, Decimal("0.0001"), 0),
    (3333, Decimal("33.3333"), 1111),  # 1110.98889
])
def test_percent_examples(amount: int, percent: int | Decimal, expected: int) -> None:
    assert percent_of(amount, percent) == expected


def test_percent_refuses_negative_amounts() -> None:
    with pytest.raises(ValueError):
        percent_of(-1, 10)


# --- discount invariants ------------------------------------------------------------------


@given(MONEY, PERCENTS, st.none() | st.integers(min_value=1, max_value=10**12))
def test_percent_discount_is_capped_and_never_above_the_eligible_subtotal(
        eligible: int, percent: Decimal, cap: int | None) -> None:
    discount = discount_for(terms(discount_value=percent, max_discount_amount=cap), eligible)
    assert 0 <= discount <= eligible
    if cap is not None:
        assert discount <= cap
        assert discount == min(percent_of(eligible, percent), cap)
    else:
        assert discount == percent_of(eligible, percent)


@given(MONEY, st.integers(min_value=1, max_value=10**12))
def test_fixed_discount_is_the_value_but_never_above_the_eligible_subtotal(eligible: int, value: int) -> None:
    discount = discount_for(terms(discount_type="FIXED", discount_value=value, currency="USD"), eligible)
    assert discount == min(value, eligible)


@given(MONEY, MONEY, PERCENTS)
def test_a_bigger_eligible_subtotal_never_gives_a_smaller_discount(a: int, b: int, percent: Decimal) -> None:
    low, high = sorted((a, b))
    t = terms(discount_value=percent)
    assert discount_for(t, low) <= discount_for(t, high)


LINES = st.lists(
    st.builds(Line, st.sampled_from(["p1", "p2", "p3", "p4"]), st.sampled_from(["shoes", "hats", ""]),
              st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=1000)),
    min_size=1, max_size=8,
).map(tuple)
NAMES = st.frozensets(st.sampled_from(["p1", "p2", "p3", "p4", "shoes", "hats"]), max_size=3)


@given(LINES, NAMES, NAMES, NAMES, NAMES, PERCENTS)
def test_eligible_subtotal_and_totals_add_up(lines: tuple[Line, ...], ap: frozenset[str], ac: frozenset[str],
                                             ep: frozenset[str], ec: frozenset[str], percent: Decimal) -> None:
    t = terms(discount_value=percent, applicable_products=ap, applicable_categories=ac,
              excluded_products=ep, excluded_categories=ec)
    eligible = [line for line in lines if is_eligible(line, t)]
    for line in eligible:  # an eligible line matches no exclusion, and matches the inclusions if any
        assert line.product_id not in ep and line.category not in ec
        assert (not ap and not ac) or line.product_id in ap or line.category in ac
    try:
        quote = evaluate(t, attempt(lines), Usage())
    except RuleViolation as error:
        assert error.code == "NOT_APPLICABLE" and not eligible
        return
    assert quote.order_subtotal == order_subtotal(lines)
    assert quote.eligible_subtotal == order_subtotal(eligible) <= quote.order_subtotal
    assert 0 <= quote.discount_amount <= quote.eligible_subtotal
    assert quote.total_after_discount == quote.order_subtotal - quote.discount_amount >= 0


def test_exclusions_beat_inclusions() -> None:
    t = terms(applicable_categories=frozenset({"shoes"}), excluded_products=frozenset({"p1"}))
    assert not is_eligible(Line("p1", "shoes", 100, 1), t)
    assert is_eligible(Line("p2", "shoes", 100, 1), t)
    assert not is_eligible(Line("p3", "hats", 100, 1), t)


def test_quote_on_a_mixed_order() -> None:
    # Given 20% off shoes capped at 30.00 (USD: a cap is an amount of money), and an order of shoes and a hat
    t = terms(discount_value=20, max_discount_amount=3000, currency="USD", applicable_categories=frozenset({"shoes"}))
    lines = lines_of([{"product_id": "s1", "category": "shoes", "unit_price": 4999, "quantity": 2},
                      {"product_id": "h1", "category": "hats", "unit_price": 1500, "quantity": 1}])
    # When it is evaluated
    quote = evaluate(t, attempt(lines), Usage())
    # Then only the shoes count, and the cap applies (20% of 99.98 = 20.00 < 30.00)
    assert quote.as_response() == {
        "valid": True, "coupon_id": "c1", "discount_type": "PERCENT", "discount_amount": 2000,
        "currency": "USD", "order_subtotal": 11498, "eligible_subtotal": 9998, "shipping_amount": 0,
        "total_after_discount": 9498,
    }


# --- rule order ---------------------------------------------------------------------------

# Each rule, in the contract's order, with a change to the coupon/attempt/usage that breaks it.
RULES: list[tuple[str, dict[str, object], dict[str, object], dict[str, object]]] = [
    ("COUPON_DISABLED", {"status": "disabled"}, {}, {}),
    ("COUPON_NOT_YET_ACTIVE", {"starts_at": NOW + timedelta(seconds=1)}, {}, {}),
    ("COUPON_EXPIRED", {"expires_at": NOW}, {}, {}),
    ("CHANNEL_NOT_ALLOWED", {"channels": frozenset({"pos"})}, {}, {}),
    ("DOMAIN_NOT_ALLOWED", {"allowed_domains": frozenset({"corp.example"})}, {}, {}),
    ("CURRENCY_MISMATCH", {"discount_type": "FIXED", "discount_value": 100, "currency": "EUR"}, {}, {}),
    ("MIN_ORDER_NOT_MET", {"min_order_amount": 1001}, {}, {}),
    ("NOT_APPLICABLE", {"applicable_products": frozenset({"other"})}, {}, {}),
    ("COUPON_EXHAUSTED", {"max_uses": 5}, {}, {"redeemed_count": 5}),
    ("USER_LIMIT_REACHED", {"uses_per_user": 1}, {}, {"user_uses": 1}),
]


@settings(max_examples=300)
@given(st.sets(st.integers(min_value=0, max_value=len(RULES) - 1), min_size=1))
def test_the_first_failing_rule_in_the_contracts_order_wins(broken: set[int]) -> None:
    # Given a coupon (in the order's currency, as its minimum order amount requires) and an order
    # that break any combination of rules
    coupon_changes: dict[str, object] = {"currency": "USD"}
    attempt_changes: dict[str, object] = {}
    usage_changes: dict[str, object] = {}
    for index in sorted(broken):
        _, c, a, u = RULES[index]
        coupon_changes.update(c)
        attempt_changes.update(a)
        usage_changes.update(u)
    # When it is evaluated
    with pytest.raises(RuleViolation) as raised:
        evaluate(terms(**coupon_changes), attempt(**attempt_changes), Usage(**usage_changes))  # type: ignore[arg-type]
    # Then the error names the earliest broken rule
    assert raised.value.code == RULES[min(broken)][0]
    assert raised.value.status == 422


def test_a_stored_expired_status_is_expired_even_inside_the_dates() -> None:
    with pytest.raises(RuleViolation) as raised:
        evaluate(terms(status="expired"), attempt(), Usage())
    assert raised.value.code == "COUPON_EXPIRED"


def test_the_window_is_start_inclusive_and_end_exclusive() -> None:
    evaluate(terms(starts_at=NOW), attempt(), Usage())
    with pytest.raises(RuleViolation):
        evaluate(terms(expires_at=NOW), attempt(), Usage())


@pytest.mark.parametrize(("coupon_domains", "global_domains", "email_domain", "allowed"), [
    (set(), set(), None, True),
    ({"example.com"}, set(), "example.com", True),
    ({"example.com"}, set(), "EXAMPLE.COM", True),
    ({"example.com"}, set(), "other.com", False),
    ({"example.com"}, set(), None, False),
    (set(), {"example.com"}, "other.com", False),
    (set(), {"example.com"}, None, False),
    ({"example.com", "b.com"}, {"b.com"}, "b.com", True),
    ({"example.com"}, {"b.com"}, "example.com", False),  # both lists restrict
])
def test_domains_both_restrict(coupon_domains: set[str], global_domains: set[str], email_domain: str | None,
                               allowed: bool) -> None:
    t = terms(allowed_domains=frozenset(coupon_domains))
    a = attempt(email_domain=email_domain, global_domains=frozenset(global_domains))
    if allowed:
        evaluate(t, a, Usage())
    else:
        with pytest.raises(RuleViolation) as raised:
            evaluate(t, a, Usage())
        assert raised.value.code == "DOMAIN_NOT_ALLOWED"


def test_a_percent_coupon_ignores_currency_and_quotes_in_the_orders_currency() -> None:
    quote = evaluate(terms(currency="EUR"), attempt(), Usage())
    assert quote.currency == "USD"


def test_exhausted_override_wins_over_the_count() -> None:
    with pytest.raises(RuleViolation):
        evaluate(terms(), attempt(), Usage(exhausted=True))
    evaluate(terms(max_uses=1), attempt(), Usage(redeemed_count=5, exhausted=False))


def test_terms_from_a_stored_record() -> None:
    record = {"coupon_id": "c9", "status": "active", "discount_type": "PERCENT", "discount_value": Decimal("12.5"),
              "starts_at": NOW, "expires_at": NOW + timedelta(days=1), "allowed_domains": ["Example.com"],
              "channels": [], "applicable_products": None}
    t = Terms.from_record(record)
    assert t.discount_value == Decimal("12.5")
    assert t.allowed_domains == {"example.com"}
    assert t.channels == {"web", "mobile", "pos"}
    assert t.applicable_products == frozenset()


# --- issue 11: money amounts are in the coupon's currency; order subtotals are bounded --------------


@pytest.mark.parametrize("threshold", [{"min_order_amount": 100}, {"max_discount_amount": 100}])
def test_a_threshold_binds_a_percent_coupon_to_its_currency(threshold: dict[str, int]) -> None:
    with pytest.raises(RuleViolation) as raised:
        evaluate(terms(currency="EUR", **threshold), attempt(), Usage())  # a USD order
    assert raised.value.code == "CURRENCY_MISMATCH"
    assert evaluate(terms(currency="USD", **threshold), attempt(), Usage()).currency == "USD"


@pytest.mark.parametrize("currency", ["USD", "EUR"])
def test_a_stored_threshold_without_currency_matches_no_order(currency: str) -> None:
    # Coupons stored before version 2 may have a threshold and no currency: they fit no order.
    for threshold in ({"min_order_amount": 0}, {"max_discount_amount": 10**12}):
        with pytest.raises(RuleViolation) as raised:
            evaluate(terms(currency=None, **threshold), attempt(currency=currency), Usage())
        assert raised.value.code == "CURRENCY_MISMATCH"


def test_the_currency_step_sits_between_domain_and_min_order() -> None:
    t = terms(currency="EUR", min_order_amount=10**9, allowed_domains=frozenset({"corp.example"}))
    with pytest.raises(RuleViolation) as raised:
        evaluate(t, attempt(email_domain=None), Usage())
    assert raised.value.code == "DOMAIN_NOT_ALLOWED"
    with pytest.raises(RuleViolation) as raised:
        evaluate(t, attempt(email_domain="corp.example"), Usage())
    assert raised.value.code == "CURRENCY_MISMATCH"
    with pytest.raises(RuleViolation) as raised:
        evaluate(t, attempt(email_domain="corp.example", currency="EUR"), Usage())
    assert raised.value.code == "MIN_ORDER_NOT_MET"


BOUND = 10**12
# Prices and quantities drawn from everywhere up to the model's own field limits, weighted to the bound
UNIT_PRICES = st.one_of(st.integers(0, 10**6), st.integers(10**11, BOUND), st.just(BOUND),
                        st.integers(BOUND // 10**5 - 2, BOUND // 10**5 + 2))
QUANTITIES = st.one_of(st.integers(1, 10), st.integers(10**4, 10**5), st.just(10**5))
ORDER_LINES = st.lists(st.tuples(st.sampled_from(["p1", "p2", "p3"]), st.sampled_from(["shoes", "hats"]),
                                 UNIT_PRICES, QUANTITIES), min_size=1, max_size=12)
COUPONS = st.one_of(
    st.builds(lambda v, cap, cats: terms(discount_value=v, max_discount_amount=cap, currency="USD",
                                         applicable_categories=cats),
              PERCENTS, st.none() | st.integers(1, BOUND), st.frozensets(st.sampled_from(["shoes", "hats"]))),
    st.builds(lambda v, cats: terms(discount_type="FIXED", discount_value=v, currency="USD",
                                    applicable_categories=cats),
              st.integers(1, BOUND), st.frozensets(st.sampled_from(["shoes", "hats"]))),
)


@settings(max_examples=400)
@given(ORDER_LINES, COUPONS)
def test_orders_within_the_bound_quote_within_it_and_orders_over_it_are_a_400(
        raw_lines: list[tuple[str, str, int, int]], coupon: Terms) -> None:
    from coupons.errors import ValidationFailed
    from coupons.models import RedeemRequest, ValidateRequest, validation_details
    from pydantic import ValidationError

    items = [{"product_id": p, "category": c, "unit_price": price, "quantity": qty} for p, c, price, qty in raw_lines]
    body = {"code": "X", "channel": "web", "order": {"currency": "USD", "items": items}}
    within = all(price * qty <= BOUND for *_, price, qty in raw_lines) and \
        sum(price * qty for *_, price, qty in raw_lines) <= BOUND
    for model, extra in ((ValidateRequest, {}), (RedeemRequest, {"order_id": "o-1"})):
        try:
            request = model.model_validate({**body, **extra})
        except ValidationError as error:
            # Given an order over the bound, Then it is refused as a 400 naming the order's lines
            assert not within
            refused = ValidationFailed(details=validation_details(error))
            assert refused.status == 400 and refused.code == "VALIDATION_ERROR"
            assert [d["field"].startswith("order.items") for d in refused.details or []] == [True]
            continue
        # Given an order within the bound, Then every amount of the quote is within it too
        assert within
        lines = lines_of([i.model_dump() for i in request.order.items])
        try:
            quote = evaluate(coupon, attempt(lines), Usage())
        except RuleViolation as violation:
            assert violation.code == "NOT_APPLICABLE"
            continue
        assert 0 <= quote.discount_amount <= quote.eligible_subtotal <= quote.order_subtotal <= BOUND
        assert 0 <= quote.total_after_discount <= BOUND


def test_pricing_itself_refuses_an_order_over_the_bound() -> None:
    # Defence in depth: a caller that skipped the request model still cannot price a huge order.
    from coupons.errors import ValidationFailed

    huge = tuple(Line(f"p{i}", "", 10**12, 10**5) for i in range(500))
    with pytest.raises(ValidationFailed) as raised:
        evaluate(terms(), attempt(huge), Usage())
    assert raised.value.status == 400
