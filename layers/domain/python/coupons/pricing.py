"""Discount math and the checkout rules, pure: no I/O, no clock, no AWS.

Everything is integer minor units. The rules run in the contract's order:

    exists -> customer (a guest only on a coupon that needs no customer) -> status -> starts_at -> expires_at -> channel -> domain -> currency (when the coupon
    holds an amount of money) -> min order -> applicability -> total uses -> uses by this user

and the first one that fails names the 422 code. "Exists" is the caller's business
(a missing coupon never reaches this module).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .errors import ValidationFailed, rule_violation

MAX_ORDER_SUBTOTAL = 10**12  # the contract's bound; the request models refuse more first (400)


@dataclass(frozen=True)
class Line:
    """One order line (the contract's order item)."""

    product_id: str
    category: str
    unit_price: int
    quantity: int

    @property
    def amount(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class Terms:
    """The parts of a coupon the rules read (built from a stored coupon record)."""

    coupon_id: str
    status: str
    discount_type: str
    discount_value: int | Decimal
    starts_at: datetime
    expires_at: datetime
    currency: str | None = None
    max_discount_amount: int | None = None
    min_order_amount: int | None = None
    max_uses: int | None = None
    uses_per_user: int | None = None
    applicable_products: frozenset[str] = frozenset()
    applicable_categories: frozenset[str] = frozenset()
    excluded_products: frozenset[str] = frozenset()
    excluded_categories: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset({"web", "mobile", "pos"})
    allowed_domains: frozenset[str] = frozenset()

    @property
    def holds_money(self) -> bool:
        """A FIXED value or a threshold is an amount in the coupon's currency: other orders don't fit."""
        return self.discount_type == "FIXED" or self.min_order_amount is not None \
            or self.max_discount_amount is not None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Terms:
        def names(key: str) -> frozenset[str]:
            return frozenset(record.get(key) or ())

        value = record["discount_value"]
        return cls(
            coupon_id=record["coupon_id"],
            status=record["status"],
            discount_type=record["discount_type"],
            discount_value=value if isinstance(value, int) else Decimal(str(value)),
            starts_at=record["starts_at"],
            expires_at=record["expires_at"],
            currency=record.get("currency"),
            max_discount_amount=record.get("max_discount_amount"),
            min_order_amount=record.get("min_order_amount"),
            max_uses=record.get("max_uses"),
            uses_per_user=record.get("uses_per_user"),
            applicable_products=names("applicable_products"),
            applicable_categories=names("applicable_categories"),
            excluded_products=names("excluded_products"),
            excluded_categories=names("excluded_categories"),
            channels=names("channels") or frozenset({"web", "mobile", "pos"}),
            allowed_domains=frozenset(d.lower() for d in record.get("allowed_domains") or ()),
        )


@dataclass(frozen=True)
class Attempt:
    """Who wants to use the coupon, where, when and for what."""

    channel: str
    email_domain: str | None
    currency: str
    lines: tuple[Line, ...]
    now: datetime
    global_domains: frozenset[str] = field(default_factory=frozenset)
    guest: bool = False  # a server's call naming no customer (issue 12)


@dataclass(frozen=True)
class Usage:
    """How much of the coupon is used up, as read from the store.

    `exhausted` overrides the count when the caller knows better (a sharded coupon's
    shards are the truth, not the coupon item's counter).
    """

    redeemed_count: int = 0
    user_uses: int = 0
    exhausted: bool | None = None


@dataclass(frozen=True)
class Quote:
    coupon_id: str
    discount_type: str
    discount_amount: int
    currency: str
    order_subtotal: int
    eligible_subtotal: int

    @property
    def total_after_discount(self) -> int:
        return self.order_subtotal - self.discount_amount

    def as_response(self) -> dict[str, Any]:
        return {
            "valid": True,
            "coupon_id": self.coupon_id,
            "discount_type": self.discount_type,
            "discount_amount": self.discount_amount,
            "currency": self.currency,
            "order_subtotal": self.order_subtotal,
            "eligible_subtotal": self.eligible_subtotal,
            "shipping_amount": 0,  # orders carry no shipping yet; total = items - discount
            "total_after_discount": self.total_after_discount,
        }


# --- discount math ----------------------------------------------------------------------


def is_eligible(line: Line, terms: Terms) -> bool:
    """Matches `applicable_*` (everything when both are empty) and no `excluded_*`."""
    if line.product_id in terms.excluded_products or line.category in terms.excluded_categories:
        return False
    if not terms.applicable_products and not terms.applicable_categories:
        return True
    return line.product_id in terms.applicable_products or line.category in terms.applicable_categories


def order_subtotal(lines: Iterable[Line]) -> int:
    return sum(line.amount for line in lines)


def eligible_lines(lines: Iterable[Line], terms: Terms) -> list[Line]:
    return [line for line in lines if is_eligible(line, terms)]


def percent_of(amount: int, percent: int | Decimal) -> int:
    """`amount * percent / 100` rounded half-up to a whole minor unit, exactly (no floats).

    The percentage is a decimal with at most a few places: written as n / 10**k it
    gives amount * n / (100 * 10**k), rounded half-up in integers.
    """
    if amount < 0:
        raise ValueError("amount must not be negative")
    value = Decimal(percent)
    sign, digits, exponent = value.as_tuple()
    if sign or not isinstance(exponent, int):
        raise ValueError("percent must be a finite, non-negative number")
    numerator = int("".join(map(str, digits)) or "0")
    scale = 10 ** max(0, -exponent)
    numerator *= 10 ** max(0, exponent)
    denominator = 100 * scale
    return (2 * amount * numerator + denominator) // (2 * denominator)


def discount_for(terms: Terms, eligible: int) -> int:
    """The discount on an eligible subtotal: never negative, never above that subtotal."""
    if terms.discount_type == "PERCENT":
        amount = percent_of(eligible, terms.discount_value)
        if terms.max_discount_amount is not None:
            amount = min(amount, terms.max_discount_amount)
    else:
        amount = int(terms.discount_value)
    return max(0, min(amount, eligible))


# --- the rules, in order ----------------------------------------------------------------


def needs_customer(terms: Terms, global_domains: frozenset[str]) -> bool:
    """A guest has no per-user count and no email: a coupon that limits either is not for guests."""
    return terms.uses_per_user is not None or bool(terms.allowed_domains) or bool(global_domains)



def check_terms(terms: Terms, attempt: Attempt) -> Quote:
    """Every rule that depends on the coupon and the order, not on how much it is used."""
    subtotal = order_subtotal(attempt.lines)
    if subtotal > MAX_ORDER_SUBTOTAL:  # defence in depth: never quote a discount on an unbounded order
        raise ValidationFailed(details=[{"field": "order.items",
                                         "message": f"the order subtotal must be at most {MAX_ORDER_SUBTOTAL}"}])
    if attempt.guest and needs_customer(terms, attempt.global_domains):
        raise rule_violation("CUSTOMER_REQUIRED")
    if terms.status == "disabled":
        raise rule_violation("COUPON_DISABLED")
    if terms.status == "expired":
        raise rule_violation("COUPON_EXPIRED")
    if attempt.now < terms.starts_at:
        raise rule_violation("COUPON_NOT_YET_ACTIVE")
    if attempt.now >= terms.expires_at:
        raise rule_violation("COUPON_EXPIRED")
    if attempt.channel not in terms.channels:
        raise rule_violation("CHANNEL_NOT_ALLOWED")
    for allowed in (terms.allowed_domains, attempt.global_domains):
        if allowed and (attempt.email_domain or "").lower() not in allowed:
            raise rule_violation("DOMAIN_NOT_ALLOWED")
    # A coupon stored before version 2 with a threshold but no currency matches no order (None != any).
    if terms.holds_money and terms.currency != attempt.currency:
        raise rule_violation("CURRENCY_MISMATCH")
    if terms.min_order_amount is not None and subtotal < terms.min_order_amount:
        raise rule_violation("MIN_ORDER_NOT_MET")
    eligible = eligible_lines(attempt.lines, terms)
    if not eligible:
        raise rule_violation("NOT_APPLICABLE")
    eligible_total = order_subtotal(eligible)
    return Quote(
        coupon_id=terms.coupon_id,
        discount_type=terms.discount_type,
        discount_amount=discount_for(terms, eligible_total),
        currency=attempt.currency,
        order_subtotal=subtotal,
        eligible_subtotal=eligible_total,
    )


def check_usage(terms: Terms, usage: Usage) -> None:
    """The last two rules: total uses, then this user's uses."""
    exhausted = usage.exhausted
    if exhausted is None:
        exhausted = terms.max_uses is not None and usage.redeemed_count >= terms.max_uses
    if exhausted:
        raise rule_violation("COUPON_EXHAUSTED")
    if terms.uses_per_user is not None and usage.user_uses >= terms.uses_per_user:
        raise rule_violation("USER_LIMIT_REACHED")


def evaluate(terms: Terms, attempt: Attempt, usage: Usage) -> Quote:
    """All rules in the contract's order; the first failure raises its RuleViolation."""
    quote = check_terms(terms, attempt)
    check_usage(terms, usage)
    return quote


def lines_of(items: Sequence[Mapping[str, Any]]) -> tuple[Line, ...]:
    return tuple(
        Line(str(i["product_id"]), str(i.get("category") or ""), int(i["unit_price"]), int(i["quantity"]))
        for i in items
    )
