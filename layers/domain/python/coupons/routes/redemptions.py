"""Redemption routes: redeem, read (its customer, a server, an admin), roll back (a server or an admin);
a coupon's redemptions (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from ..http import require_admin, require_checkout, require_person
from ..models import RedeemRequest, RedemptionPage, RedemptionView
from .checkout import CUSTOMER_ERRORS, checkout_service
from .ids import CouponIdParam, RedemptionIdParam
from .ids import coupon_id as well_formed

router = APIGatewayRouter()

# Any string: an id that is not one of ours is simply not found (404), like someone else's.
_NOT_FOUND: dict[int, Any] = {404: {"description": "REDEMPTION_NOT_FOUND (unknown, or not yours)"},
              400: {"description": "VALIDATION_ERROR"}, 401: {"description": "UNAUTHENTICATED"},
              403: {"description": "FORBIDDEN: a server token without the scope coupons/checkout"},
              503: {"description": "TRY_AGAIN (Retry-After)"}}


@router.post("/redemptions", summary="Redeem a code for an order (idempotent per order_id)", tags=["checkout"],
             responses={201: {"description": "Redeemed",
                              "content": {"application/json": {"model": RedemptionView}}},
                        200: {"description": "This order was redeemed already: the same redemption, counted once",
                              "content": {"application/json": {"model": RedemptionView}}},
                        409: {"description": "IDEMPOTENCY_CONFLICT: this order_id was used with another order; "
                                             "ALREADY_ROLLED_BACK: this order's redemption was rolled back"},
                        **CUSTOMER_ERRORS})
def redeem(body: Annotated[RedeemRequest, Body()]) -> Response[RedemptionView]:
    who = require_checkout(router)
    outcome = checkout_service().redeem(body, who)
    return Response(status_code=201 if outcome.created else 200, content_type="application/json",
                    body=RedemptionView.model_validate(outcome.view))


@router.get("/redemptions/<redemption_id>", summary="Get a redemption (its customer, a server or an admin)",
            tags=["checkout"], responses=_NOT_FOUND)
def get_redemption(redemption_id: RedemptionIdParam) -> RedemptionView:
    who = require_checkout(router)
    return RedemptionView.model_validate(checkout_service().get_redemption(redemption_id, who))


@router.post("/redemptions/<redemption_id>/rollback",
             summary="Roll a redemption back (a server or an admin: a refund; gives its uses back once)",
             tags=["checkout"],
             responses={**_NOT_FOUND, 403: {"description": "FORBIDDEN: customers may not roll back (the shop "
                                                           "does, on a refund); a server without coupons/checkout"}})
def rollback_redemption(redemption_id: RedemptionIdParam) -> RedemptionView:
    who = require_checkout(router)
    return RedemptionView.model_validate(checkout_service().rollback(redemption_id, who))


@router.get("/me/redemptions", summary="My redemptions, newest first (customers: their own history)",
            tags=["checkout"],
            responses={400: {"description": "VALIDATION_ERROR (a bad limit, or a cursor not from this route)"},
                       401: {"description": "UNAUTHENTICATED"},
                       403: {"description": "FORBIDDEN: a server's token (a server has no 'me')"},
                       503: {"description": "TRY_AGAIN (Retry-After)"}})
def my_redemptions(
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> RedemptionPage:
    who = require_person(router)
    return RedemptionPage.model_validate(checkout_service().my_redemptions(who, limit=limit, cursor=cursor))


@router.get("/coupons/<coupon_id>/redemptions", summary="A coupon's redemptions, newest first", tags=["admin"],
            responses={404: {"description": "COUPON_NOT_FOUND"}, 403: {"description": "FORBIDDEN"}, **_NOT_FOUND})
def list_coupon_redemptions(
    coupon_id: CouponIdParam,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> RedemptionPage:
    require_admin(router)
    return RedemptionPage.model_validate(checkout_service().list_redemptions(well_formed(coupon_id), limit=limit,
                                                                             cursor=cursor))
