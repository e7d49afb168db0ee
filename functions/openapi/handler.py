"""Serves the OpenAPI document of the whole API (no authorizer on this one route)."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from coupons.http import build_app, entry
from coupons.openapi import document

app = build_app()


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[dict[str, Any]]:
    return Response(status_code=200, content_type="application/json", body=document())


lambda_handler = entry(app)
