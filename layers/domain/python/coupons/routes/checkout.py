"""Checkout route: `POST /coupons/validate` (customers, admins, servers with the scope coupons/checkout)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from .. import wiring
from ..adapters import aws
from ..adapters.checkout_store import CheckoutStore
from ..checkout import CheckoutService
from ..http import metrics, require_checkout
from ..models import ValidateRequest, ValidationResult
from ..settings import Settings, get_settings

router = APIGatewayRouter()

CUSTOMER_ERRORS: dict[int, Any] = {
    400: {"description": "VALIDATION_ERROR (also: a `customer` sent with a customer's own token)"},
    401: {"description": "UNAUTHENTICATED"},
    403: {"description": "FORBIDDEN: a server token without the scope coupons/checkout"},
    404: {"description": "COUPON_NOT_FOUND (unknown, malformed or deleted code: one answer for all)"},
    422: {"description": "CUSTOMER_REQUIRED (a guest, on a coupon that needs a customer), "
                         "COUPON_DISABLED, COUPON_NOT_YET_ACTIVE, COUPON_EXPIRED, CHANNEL_NOT_ALLOWED, "
                         "DOMAIN_NOT_ALLOWED, CURRENCY_MISMATCH, MIN_ORDER_NOT_MET, NOT_APPLICABLE, "
                         "COUPON_EXHAUSTED, USER_LIMIT_REACHED (checked in this order)"},
    429: {"description": "RATE_LIMITED: too many failed attempts from this customer, IP or server client "
                         "(Retry-After)"},
    503: {"description": "TRY_AGAIN: a transient store failure, nothing changed (Retry-After)"},
}


class MetricSignals:
    """Checkout signals as CloudWatch metrics (EMF through Powertools)."""

    def count(self, name: str, value: int = 1) -> None:
        metrics.add_metric(name=name, unit="Count", value=value)


@lru_cache(maxsize=4)
def _service(dynamodb: Any, settings: Settings) -> CheckoutService:
    store = CheckoutStore(dynamodb, settings.coupons_table, settings.guards_table)
    return CheckoutService(store, wiring.cipher, settings, signals=MetricSignals())


def checkout_service() -> CheckoutService:
    """This container's checkout service (rebuilt when wiring.reset() gives new clients or settings)."""
    return _service(aws.client("dynamodb"), get_settings())


@router.post("/coupons/validate", summary="Check a code against an order (changes nothing)", tags=["checkout"],
             responses={200: {"description": "The discount this order would get",
                              "content": {"application/json": {"model": ValidationResult}}}, **CUSTOMER_ERRORS})
def validate_coupon(body: Annotated[ValidateRequest, Body()]) -> ValidationResult:
    who = require_checkout(router)
    return ValidationResult.model_validate(checkout_service().validate(body, who))
