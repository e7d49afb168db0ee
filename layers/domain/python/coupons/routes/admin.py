"""Admin routes for coupons (`coupon-admins` only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from ..adapters.report_store import default_source
from ..http import metrics, require_admin
from ..idempotency import IdempotencyKeyHeader, once
from ..models import CouponCreate, CouponPage, CouponUpdate, CouponView
from ..reports import coupon_usage
from ..wiring import admin_service, cipher
from .ids import CouponIdParam
from .ids import coupon_id as well_formed

router = APIGatewayRouter()

_ERRORS: dict[int, Any] = {400: {"description": "VALIDATION_ERROR"}, 401: {"description": "UNAUTHENTICATED"},
           403: {"description": "FORBIDDEN"}}


@router.post("/coupons", summary="Create a coupon", tags=["admin"],
             description="Safe to retry with an `Idempotency-Key` header: the same key and body within 24 "
                         "hours returns the first answer and creates nothing again.",
             responses={201: {"description": "The coupon",
                              "content": {"application/json": {"model": CouponView}}},
                        409: {"description": "CODE_ALREADY_EXISTS; IDEMPOTENCY_CONFLICT (the key was used "
                                             "with another body)"},
                        503: {"description": "TRY_AGAIN (a request with this Idempotency-Key is in progress)"},
                        **_ERRORS})
def create_coupon(body: Annotated[CouponCreate, Body()],
                  idempotency_key: IdempotencyKeyHeader = None) -> Response[CouponView]:
    who = require_admin(router)

    def create() -> Response[CouponView]:
        view = admin_service().create(body, who.user_id)
        metrics.add_metric(name="CouponsCreated", unit="Count", value=1)
        return Response(status_code=201, content_type="application/json", body=CouponView.model_validate(view))

    # The answer carries the code: its stored copy is sealed with the keyring (issue 17).
    return once(router, caller=who.user_id, key=idempotency_key, produce=create, sealer=cipher)


@router.get("/coupons", summary="List coupons", tags=["admin"], responses=_ERRORS)
def list_coupons(
    status: Annotated[Literal["active", "disabled", "expired", "exhausted"] | None, Query()] = None,
    campaign_id: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    code: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> CouponPage:
    require_admin(router)
    page = admin_service().list(status=status, campaign_id=campaign_id, code=code, limit=limit, cursor=cursor)
    return CouponPage.model_validate(page)


@router.get("/coupons/<coupon_id>", summary="Get a coupon", tags=["admin"],
            responses={404: {"description": "COUPON_NOT_FOUND"}, **_ERRORS})
def get_coupon(coupon_id: CouponIdParam) -> CouponView:
    require_admin(router)
    coupon_id = well_formed(coupon_id)
    view = admin_service().get(coupon_id)
    view["usage"] = coupon_usage(view, default_source().last_redemption_at(coupon_id))  # issue 6
    return CouponView.model_validate(view)


@router.put("/coupons/<coupon_id>", summary="Edit, pause or resume a coupon (partial)", tags=["admin"],
            responses={404: {"description": "COUPON_NOT_FOUND"}, 409: {"description": "CODE_ALREADY_EXISTS"},
                       **_ERRORS})
def update_coupon(coupon_id: CouponIdParam, body: Annotated[CouponUpdate, Body()]) -> CouponView:
    who = require_admin(router)
    return CouponView.model_validate(admin_service().update(well_formed(coupon_id), body, who.user_id))


@router.delete("/coupons/<coupon_id>", summary="Delete a coupon (its history stays)", tags=["admin"],
               responses={204: {"description": "Deleted"}, 404: {"description": "COUPON_NOT_FOUND"}, **_ERRORS})
def delete_coupon(coupon_id: CouponIdParam) -> Response[str]:
    who = require_admin(router)
    admin_service().delete(well_formed(coupon_id), who.user_id)
    return Response(status_code=204, body="")
