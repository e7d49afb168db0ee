"""Pydantic models of the contract: what clients send and what they get back.

Request models reject unknown fields; money is integer minor units; timestamps
must carry an offset and are held in UTC.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .codes import VANITY_CODE
from .currencies import ISO_4217
from .errors import ValidationFailed
from .pricing import MAX_ORDER_SUBTOTAL  # the contract's bound on each line and on an order's items together
from .settings import Settings

Channel = Literal["web", "mobile", "pos"]
CHANNELS: tuple[Channel, ...] = ("web", "mobile", "pos")
DiscountType = Literal["PERCENT", "FIXED"]
CouponStatus = Literal["active", "disabled", "expired", "exhausted"]
AdminSettableStatus = Literal["active", "disabled"]

MAX_MONEY = 10**12  # a trillion minor units: far above any real order, far below int64
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 16  # well inside DynamoDB's 32 levels of nesting per item
MAX_LIST_ITEMS = 1000

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339_only(value: object) -> object:
    # Lax pydantic would take epoch numbers and offset-less strings; the contract takes neither.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-12-01T00:00:00Z")
    return value


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only), AfterValidator(_to_utc)]
Money = Annotated[StrictInt, Field(ge=0, le=MAX_MONEY)]
PositiveMoney = Annotated[StrictInt, Field(gt=0, le=MAX_MONEY)]
ShortText = Annotated[StrictStr, Field(min_length=1, max_length=128)]


def _currency(value: object) -> object:
    if isinstance(value, str) and value.upper() in ISO_4217:
        return value.upper()
    raise ValueError("must be an ISO 4217 currency code such as USD")


Currency = Annotated[StrictStr, BeforeValidator(_currency)]


def _number(value: object) -> object:
    # JSON numbers only: a string "10" or a boolean is a type error, not a discount.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a number")
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


DiscountValue = Annotated[Decimal, BeforeValidator(_number)]

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _domain(value: str) -> str:
    lowered = value.strip().lower()
    if not _DOMAIN.fullmatch(lowered):
        raise ValueError("must be a domain name such as example.com")
    return lowered


Domain = Annotated[StrictStr, AfterValidator(_domain)]
CampaignId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _unique_channels(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("must name at least one channel")
    return [c for c in CHANNELS if c in value]


def _vanity(value: str) -> str:
    if not VANITY_CODE.fullmatch(value):
        raise ValueError("must be 3 to 64 characters of A-Z, 0-9, - and _")
    return value.upper()


VanityCode = Annotated[StrictStr, AfterValidator(_vanity)]


def _depth(value: Any) -> int:
    """Levels of objects and arrays in a JSON value (iterative: no recursion limit to hit)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        node, level = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in children)
    return deepest


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    if _depth(value) > MAX_METADATA_DEPTH:
        raise ValueError(f"must nest at most {MAX_METADATA_DEPTH} levels of objects and arrays")
    encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if len(encoded) > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
NameList = Annotated[list[ShortText], Field(max_length=MAX_LIST_ITEMS)]


class _Strict(BaseModel):
    # defer_build: a function builds the validators of the models it uses on first use,
    # not those of every model in the package at import (cold start).
    model_config = ConfigDict(extra="forbid", defer_build=True)


class _Out(BaseModel):
    model_config = ConfigDict(defer_build=True)


class CouponFields(_Strict):
    """Every settable field, all optional: the shape of create and of a partial update."""

    code: VanityCode | None = None
    discount_type: DiscountType | None = None
    discount_value: DiscountValue | None = None
    currency: Currency | None = None
    max_discount_amount: PositiveMoney | None = None
    min_order_amount: Money | None = None
    starts_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    max_uses: Annotated[StrictInt, Field(ge=1, le=MAX_MONEY)] | None = None
    uses_per_user: Annotated[StrictInt, Field(ge=1, le=MAX_MONEY)] | None = None
    applicable_products: NameList | None = None
    applicable_categories: NameList | None = None
    excluded_products: NameList | None = None
    excluded_categories: NameList | None = None
    channels: Annotated[list[Channel], AfterValidator(_unique_channels)] | None = None
    allowed_domains: Annotated[list[Domain], Field(max_length=100)] | None = None
    campaign_id: CampaignId | None = None
    metadata: Metadata | None = None


class CouponCreate(CouponFields):
    """`POST /coupons`: the code is generated when absent."""

    status: AdminSettableStatus | None = None


class CouponUpdate(CouponFields):
    """`PUT /coupons/{id}`: only the fields sent change; counters cannot be set."""

    status: AdminSettableStatus | None = None


class CouponSpec(BaseModel):
    """A complete, consistent coupon definition (after defaults and merging)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    discount_type: DiscountType
    discount_value: int | Decimal
    currency: str | None = None
    max_discount_amount: int | None = None
    min_order_amount: int | None = None
    starts_at: datetime
    expires_at: datetime
    max_uses: int | None = None
    uses_per_user: int | None = None
    applicable_products: list[str] = Field(default_factory=list)
    applicable_categories: list[str] = Field(default_factory=list)
    excluded_products: list[str] = Field(default_factory=list)
    excluded_categories: list[str] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=lambda: list(CHANNELS))
    allowed_domains: list[str] = Field(default_factory=list)
    campaign_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("starts_at", "expires_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry an offset")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self) -> CouponSpec:
        value = Decimal(self.discount_value)
        if self.discount_type == "PERCENT":
            if not Decimal(0) < value <= Decimal(100):
                raise _field_error("discount_value", "a PERCENT discount must be above 0 and at most 100")
            if value.as_tuple().exponent < -4:  # type: ignore[operator]
                raise _field_error("discount_value", "at most 4 decimal places")
            self.discount_value = int(value) if value == value.to_integral_value() else value.normalize()
        else:
            if value != value.to_integral_value() or value <= 0 or value > MAX_MONEY:
                raise _field_error(
                    "discount_value", "a FIXED discount is a whole number of minor units above 0"
                )
            self.discount_value = int(value)
            if self.currency is None:
                raise _field_error("currency", "required for a FIXED discount")
            if self.max_discount_amount is not None:
                raise _field_error("max_discount_amount", "only caps a PERCENT discount")
        if self.currency is None and (self.min_order_amount is not None or self.max_discount_amount is not None):
            # An amount of money needs its currency (issue 11): else a threshold meant as 20.00 USD
            # would apply as 20 yen or 20.00 EUR, whatever the order's currency.
            raise _field_error("currency", "required with min_order_amount or max_discount_amount")
        if self.expires_at <= self.starts_at:
            raise _field_error("expires_at", "must be after starts_at")
        return self


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _field_error(field: str, message: str) -> _FieldError:
    return _FieldError(field, message)


def validation_details(error: ValidationError | Sequence[Any]) -> list[dict[str, str]]:
    """pydantic errors as the contract's `details`: one entry per field."""
    details = []
    errors = error.errors(include_url=False) if isinstance(error, ValidationError) else error
    for item in errors:
        loc = tuple(item.get("loc") or ())
        if loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]
        location = [str(p) for p in loc]
        context = item.get("ctx") or {}
        inner = context.get("error")
        if isinstance(inner, _FieldError):  # a model's cross-field check names its field inside the model
            details.append({"field": ".".join([*location, inner.field]), "message": str(inner)})
            continue
        message = item.get("msg", "invalid").removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden":
            message = "unknown field"
        elif item.get("type") == "json_invalid":
            details.append({"field": "body", "message": "the body is not valid JSON"})
            continue
        details.append({"field": ".".join(location) or "body", "message": message})
    return details


def resolve_spec(fields: dict[str, Any], settings: Settings, now: datetime) -> CouponSpec:
    """Apply the configured defaults to a create request and validate the whole."""
    values = {k: v for k, v in fields.items() if k not in ("code", "status")}
    values.setdefault("discount_type", settings.discount_type)
    starts = values.get("starts_at") or now
    values["starts_at"] = starts
    if values.get("expires_at") is None:
        values["expires_at"] = max(starts, now) + timedelta(days=settings.default_expiration_days)
    if "uses_per_user" not in fields:
        values["uses_per_user"] = settings.max_discount_per_user
    if values.get("discount_value") is None:
        raise ValidationFailed(details=[{"field": "discount_value", "message": "field required"}])
    for key in ("channels",):
        if values.get(key) is None:
            values.pop(key, None)
    for key in ("applicable_products", "applicable_categories", "excluded_products",
                "excluded_categories", "allowed_domains", "metadata"):
        if values.get(key) is None:
            values.pop(key, None)
    return checked_spec(values)


def checked_spec(values: dict[str, Any]) -> CouponSpec:
    try:
        return CouponSpec.model_validate(values)
    except ValidationError as error:
        raise ValidationFailed(details=validation_details(error)) from None


class CouponUsage(_Out):
    """Usage statistics of one coupon (on `GET /coupons/{id}` only; each costs O(1) reads)."""

    redeemed_count: int = Field(description="uses counted now (redemptions minus rollbacks)")
    remaining_uses: int | None = Field(description="null when unlimited")
    utilisation: float | None = Field(description="redeemed_count / max_uses, null when unlimited")
    last_redeemed_at: datetime | None = Field(description="the latest redemption made, rolled back or not")


class CouponView(_Out):
    """A coupon as admins see it (the only place the plaintext code appears)."""

    id: str
    code: str
    status: CouponStatus
    discount_type: DiscountType
    discount_value: int | float
    currency: str | None
    max_discount_amount: int | None
    min_order_amount: int | None
    starts_at: datetime
    expires_at: datetime
    max_uses: int | None
    uses_per_user: int | None
    applicable_products: list[str]
    applicable_categories: list[str]
    excluded_products: list[str]
    excluded_categories: list[str]
    channels: list[Channel]
    allowed_domains: list[str]
    campaign_id: str | None
    metadata: dict[str, Any]
    redeemed_count: int
    remaining_uses: int | None
    created_at: datetime
    updated_at: datetime
    usage: CouponUsage | None = None  # GET /coupons/{id} only (none on list pages: no extra reads there)


class CouponPage(_Out):
    items: list[CouponView]
    next_cursor: str | None


# --- Checkout (validate / redeem) ---------------------------------------------------------


class OrderItem(_Strict):
    product_id: ShortText
    category: Annotated[StrictStr, Field(max_length=128)] = ""
    unit_price: Money
    quantity: Annotated[StrictInt, Field(ge=1, le=100_000)]


class Order(_Strict):
    currency: Currency
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=500)]

    @model_validator(mode="after")
    def _bounded(self) -> Order:
        # Each field is bounded, but 500 lines x 10^12 x 10^5 is not: the subtotal is (issue 11).
        subtotal = 0
        for index, item in enumerate(self.items):
            amount = item.unit_price * item.quantity
            if amount > MAX_ORDER_SUBTOTAL:
                raise _field_error(f"items.{index}", f"unit_price x quantity must be at most {MAX_ORDER_SUBTOTAL}")
            subtotal += amount
        if subtotal > MAX_ORDER_SUBTOTAL:
            raise _field_error("items", f"the order subtotal must be at most {MAX_ORDER_SUBTOTAL} minor units")
        return self


_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address such as kim@example.com")
    return value


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))  # one spelling per address: it keys the IP's lockout
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address such as 203.0.113.5") from None


class Customer(_Strict):
    """The shopper a server checks out for (issue 12). The server vouches for every field; without
    `id` the shopper is a guest. A customer's own token may not send one (their token names them)."""

    id: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")] | None = None
    email: Annotated[StrictStr, Field(max_length=254), AfterValidator(_email)] | None = None
    ip: Annotated[StrictStr, Field(max_length=64), AfterValidator(_ip)] | None = None
    first_order: StrictBool | None = None


class ValidateRequest(_Strict):
    code: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    channel: Channel
    order: Order
    customer: Customer | None = None  # servers only


class RedeemRequest(ValidateRequest):
    order_id: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]


class ValidationResult(_Out):
    valid: bool
    coupon_id: str
    discount_type: DiscountType
    discount_amount: int
    currency: str
    order_subtotal: int
    eligible_subtotal: int
    shipping_amount: int  # 0 until orders carry shipping (contract v2: always present)
    total_after_discount: int


RedemptionStatus = Literal["redeemed", "rolled_back"]


class RedemptionView(_Out):
    redemption_id: str
    coupon_id: str
    order_id: str
    user_id: str | None  # null: a guest's (a server's call naming no customer)
    discount_amount: int
    currency: str
    order_subtotal: int  # the order it belongs to (issue 12): items' sum,
    shipping_amount: int  # its shipping (0 without),
    total_after_discount: int  # and what the shopper paid: items + shipping - discount
    status: RedemptionStatus
    redeemed_at: datetime
    channel: Channel | None = None
    rolled_back_at: datetime | None = None


class RedemptionPage(_Out):
    items: list[RedemptionView]
    next_cursor: str | None


def utcnow() -> datetime:
    return datetime.now(UTC)
