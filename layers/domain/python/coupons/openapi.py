"""The OpenAPI document: built from every router, so it cannot drift from the routes."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

# Each entry is a routes module with a `router`; later issues append theirs.
ROUTE_MODULES = ("coupons.routes.admin", "coupons.routes.reports", "coupons.routes.checkout",
                 "coupons.routes.redemptions", "coupons.routes.jobs")


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.event_handler.openapi.models import (
        HTTPBearer,
    )

    app = APIGatewayRestResolver(enable_validation=True)
    for name in ROUTE_MODULES:
        app.include_router(importlib.import_module(name).router)
    schema = app.get_openapi_json_schema(
        title="Coupon service",
        version="1.0.0",
        description="Create, validate, redeem and account for discount codes. "
        "Every route but this document needs `Authorization: Bearer <JWT>`.",
        security_schemes={"bearer": HTTPBearer(bearerFormat="JWT")},
        security=[{"bearer": []}],
    )
    import json

    return dict(json.loads(schema))
