"""Ids in paths: a malformed id is not found, exactly like an unknown or deleted one (contract v2:
a 404, never a 400). Checked in the route, after the caller's rights, so a malformed id costs no read
and a customer on an admin route still gets 403."""

from __future__ import annotations

import re
from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path

from ..errors import CampaignNotFound, CouponNotFound

_COUPON_ID = re.compile(r"[A-Za-z0-9-]{1,64}")  # uuid or alphanumeric (COUPON_ID_FORMAT)
_CAMPAIGN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# No pattern or length on the path parameters themselves: Powertools would answer those with a 400.
CouponIdParam = Annotated[str, Path(description="A coupon id; any other string is COUPON_NOT_FOUND")]
CampaignIdParam = Annotated[str, Path(description="[A-Za-z0-9_-], 1-64; any other string is CAMPAIGN_NOT_FOUND")]
RedemptionIdParam = Annotated[str, Path(description="A redemption id; any other string is REDEMPTION_NOT_FOUND")]
JobIdParam = Annotated[str, Path(description="A job id; any other string is JOB_NOT_FOUND")]


def coupon_id(raw: str) -> str:
    if not _COUPON_ID.fullmatch(raw):
        raise CouponNotFound()
    return raw


def campaign_id(raw: str) -> str:
    if not _CAMPAIGN_ID.fullmatch(raw):
        raise CampaignNotFound()
    return raw
