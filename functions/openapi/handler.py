"""Serves the OpenAPI document of the whole API (no authorizer on this one route)."""

from aws_lambda_powertools.event_handler import Response
from coupons.http import build_app, entry, json_response
from coupons.openapi import document

app = build_app()


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[dict]:
    return json_response(200, document())


lambda_handler = entry(app)
