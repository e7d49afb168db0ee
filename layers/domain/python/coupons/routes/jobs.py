"""Bulk routes (`coupon-admins` only): start a generation job, follow any job."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from ..bulk_wiring import generation_service, job_service
from ..generation import GenerationAccepted, GenerationRequest
from ..http import metrics, require_admin
from ..idempotency import IdempotencyKeyHeader, once
from ..jobs import JobView
from .ids import CampaignIdParam, JobIdParam
from .ids import campaign_id as well_formed_campaign

router = APIGatewayRouter()

_ERRORS: dict[int, Any] = {400: {"description": "VALIDATION_ERROR"}, 401: {"description": "UNAUTHENTICATED"},
           403: {"description": "FORBIDDEN"}}


@router.post("/campaigns/<campaign_id>/codes", summary="Generate up to 1,000,000 codes for a campaign",
             description="Asynchronous: answers 202 with a job id; follow it with GET /jobs/{job_id}. The "
                         "template takes every coupon field but `code`; `pattern` (default `####-####-####`, "
                         "each `#` one random character) must leave a guess at most a 1e-9 chance. Safe to "
                         "retry with an `Idempotency-Key` header: the same key and request within 24 hours "
                         "returns the first job id and starts nothing again.",
             tags=["bulk"],
             responses={202: {"description": "The job was accepted",
                              "content": {"application/json": {"model": GenerationAccepted}}},
                        404: {"description": "CAMPAIGN_NOT_FOUND (a malformed campaign id)"},
                        409: {"description": "IDEMPOTENCY_CONFLICT (the key was used with another request)"},
                        503: {"description": "TRY_AGAIN"}, **_ERRORS})
def generate_codes(campaign_id: CampaignIdParam, body: Annotated[GenerationRequest, Body()],
                   idempotency_key: IdempotencyKeyHeader = None) -> Response[GenerationAccepted]:
    who = require_admin(router)
    campaign = well_formed_campaign(campaign_id)

    def start() -> Response[GenerationAccepted]:
        job_id = generation_service().start(campaign, body, who.user_id)
        metrics.add_metric(name="GenerationJobsStarted", unit="Count", value=1)
        return Response(status_code=202, content_type="application/json", body=GenerationAccepted(job_id=job_id))

    # A retried 1,000,000-code job must not make 2,000,000 codes (issue 17).
    return once(router, caller=who.user_id, key=idempotency_key, produce=start)


@router.get("/jobs/<job_id>", summary="Follow a bulk job (CSV import or code generation)", tags=["bulk"],
            description="`result` holds the counts; a finished generation job adds `export_key` and "
                        "`export_url` (a presigned GET, valid for an hour, made at each read).",
            responses={404: {"description": "JOB_NOT_FOUND"}, **_ERRORS})
def get_job(job_id: JobIdParam) -> JobView:
    require_admin(router)
    return JobView.model_validate(job_service().get(job_id))
