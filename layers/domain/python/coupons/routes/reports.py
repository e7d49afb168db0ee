"""Finance routes (`coupon-admins` only): `GET /reports/summary?from=YYYY-MM-DD&to=YYYY-MM-DD`."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict, Field

from .. import report_range, reports
from ..adapters.report_store import default_aggregates, default_source
from ..clock import utcnow
from ..http import require_admin

router = APIGatewayRouter()


class Totals(BaseModel):
    redemptions: int
    rollbacks: int
    discount_totals: dict[str, int] = Field(description="per currency, minor units, net of rollbacks")


class CouponTotals(Totals):
    coupon_id: str
    campaign_id: str | None


class ReportSummary(BaseModel):
    """Made in the range (UTC days, both ends included); discount_totals net of the rollbacks in it."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", examples=["2026-05-01"])
    to: str = Field(examples=["2026-05-31"])
    redemptions: int
    rollbacks: int
    discount_totals: dict[str, int]
    by_channel: dict[str, Totals]
    by_coupon: list[CouponTotals] = Field(description="most redemptions first, at most 1000")
    by_coupon_truncated: bool
    failed_attempts: int
    suspicious: list[dict[str, object]] = Field(description="the fraud flags and lockouts of the range with the "
                                                            "highest count, at most 100 (every one is in the "
                                                            "daily suspicious.csv)")
    suspicious_count: int = Field(description="how many flags and lockouts were raised in the range")
    suspicious_truncated: bool


Day = Annotated[str | None, Query(max_length=10, description="a UTC day, YYYY-MM-DD")]


@router.get("/reports/summary", summary="Redemption totals for a UTC date range", tags=["reports"],
            responses={200: {"description": "The summary",
                             "content": {"application/json": {"model": ReportSummary}}},
                       400: {"description": "VALIDATION_ERROR"}, 401: {"description": "UNAUTHENTICATED"},
                       403: {"description": "FORBIDDEN"},
                       503: {"description": "TRY_AGAIN (Retry-After): days not kept yet took too long; "
                                            "those done are kept, so a retry continues"}})
def report_summary(
    first: Annotated[str | None, Query(alias="from", max_length=10, description="first UTC day, YYYY-MM-DD")] = None,
    to: Day = None,
) -> Response[ReportSummary]:
    require_admin(router)
    start, end = reports.parse_range(first, to)
    # Past days come from their kept aggregates; only days not settled yet (or never kept) are read live.
    body = report_range.summary(default_source(), start, end, store=default_aggregates(), now=utcnow(),
                                budget_seconds=report_range.SUMMARY_BUDGET_SECONDS)
    return Response(status_code=200, content_type="application/json", body=ReportSummary.model_validate(body))
