"""The admin console and checkout demo pages (public: the pages hold no data; their API calls
carry the signed-in user's token). Not part of the API document."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from .. import console
from ..errors import RouteNotFound

router = APIGatewayRouter()

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidate every time (cheap: ETag + 304), so a page never runs with another release's script.
    "Cache-Control": "no-cache",
}

AssetName = Annotated[str, Path()]  # any other name is simply not found (404), never a 400


def _serve(file: console.StaticFile | None) -> Response[str]:
    if file is None:
        raise RouteNotFound()
    headers = {**SECURITY_HEADERS, "ETag": file.etag}
    if_none_match = router.current_event.headers.get("if-none-match") or ""
    if file.etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, body="", headers=headers)
    return Response(status_code=200, content_type=file.content_type, body=file.body, headers=headers)


@router.get("/console", include_in_schema=False)
def console_page() -> Response[str]:
    return _serve(console.page("console"))


@router.get("/console/checkout", include_in_schema=False)
def checkout_page() -> Response[str]:
    return _serve(console.page("checkout"))


@router.get("/console/assets/<name>", include_in_schema=False)
def console_asset(name: AssetName) -> Response[str]:
    return _serve(console.asset(name))
