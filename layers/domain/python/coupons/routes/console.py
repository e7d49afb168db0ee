"""The admin console and checkout demo pages (public: the pages hold no data; their API calls
carry the signed-in user's token). Not part of the API document."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from .. import console
from ..errors import RouteNotFound
from ..settings import get_settings

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


def _signin_origin() -> str | None:
    """The origin of the admin pool's managed login, when one is configured (AWS)."""
    parts = urlsplit(get_settings().admin_signin_url.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _security_headers() -> dict[str, str]:
    # The console trades the sign-in code for tokens at the managed login's token endpoint:
    # that one origin joins 'self' in connect-src (issue 17).
    origin = _signin_origin()
    if origin is None:
        return dict(SECURITY_HEADERS)
    policy = CONTENT_SECURITY_POLICY.replace("connect-src 'self';", f"connect-src 'self' {origin};")
    return {**SECURITY_HEADERS, "Content-Security-Policy": policy}


def _serve(file: console.StaticFile | None) -> Response[str]:
    if file is None:
        raise RouteNotFound()
    headers = {**_security_headers(), "ETag": file.etag}
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


@router.get("/console/signin", include_in_schema=False)
def signin_settings() -> Response[str]:
    """Where the console signs admins in: the admin pool's managed login (authorization code grant
    with PKCE, public client). `{}` when none is configured (locally: paste a token)."""
    origin, client_id = _signin_origin(), get_settings().admin_client_id.strip()
    body: dict[str, str] = {}
    if origin and client_id:
        base = get_settings().admin_signin_url.strip().rstrip("/")
        body = {"authorize_url": f"{base}/oauth2/authorize", "token_url": f"{base}/oauth2/token",
                "logout_url": f"{base}/logout", "client_id": client_id, "scope": "openid email profile"}
    return Response(status_code=200, content_type="application/json", body=json.dumps(body),
                    headers=_security_headers())
