"""What every API function shares: the resolver, the error envelope, identity and logging.

Handlers build their app with `build_app(*routers)` and export `lambda_handler =
entry(app)`. Identity comes only from the authorizer's claims.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)
from aws_lambda_powertools.event_handler.router import Router
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.utilities.typing import LambdaContext

from .errors import (
    DomainError,
    Forbidden,
    InternalError,
    PayloadTooLarge,
    RouteNotFound,
    Unauthenticated,
    ValidationFailed,
)
from .models import validation_details
from .settings import get_settings

SERVICE = "coupons"
MAX_BODY_BYTES = 256 * 1024  # far above any coupon or order; API Gateway itself allows 10 MB
# DynamoDB refuses items nested deeper than 32 levels, and no contract body nests past 6: deeper
# JSON is refused before parsing (at ~1,000 levels json.loads itself raises RecursionError).
MAX_JSON_DEPTH = 32
SENSITIVE_KEYS = frozenset({"code", "codes", "plaintext", "authorization", "token", "body"})


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: ("***" if str(k).lower() in SENSITIVE_KEYS else _redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Plaintext codes, tokens and bodies never reach a log line, whatever a caller logs."""

    def serialize(self, log: Any) -> str:
        return super().serialize(_redact(log) if isinstance(log, Mapping) else log)


logger = Logger(service=SERVICE, logger_formatter=RedactingFormatter())
metrics = Metrics(namespace="Coupons", service=SERVICE)
# No Powertools Tracer: importing the X-Ray SDK costs ~300 ms of cold start; Lambda's active
# tracing (enabled in CDK) still records each invocation and API Gateway's stage traces.


CHECKOUT_SCOPE = "coupons/checkout"  # the resource server `coupons`: validate, redeem, roll back, read
ADMIN_SCOPE = "coupons/admin"  # the admin routes


@dataclass(frozen=True)
class Identity:
    """Who is calling, from the authorizer's verified claims (never from a body).

    A person (a customer, or an admin: an ID token) or a server (a shop backend, a POS terminal, a
    CRM: an access token of the client-credentials grant, with `client_id` and scopes). `user_id`
    is a person's `sub`; a server's is `client:<client_id>`, the name audit fields give it (who
    created a coupon, who rolled back). A server's shopper is named in the body (coupons.shoppers).
    """

    user_id: str
    email: str | None
    groups: frozenset[str]
    ip: str  # the caller's source IP: a shopper's own for a person, the server's for a server
    user_agent: str
    client_id: str | None = None  # set for servers only
    scopes: frozenset[str] = frozenset()

    @property
    def is_server(self) -> bool:
        return self.client_id is not None

    @property
    def is_admin(self) -> bool:
        """An admin person (a server with the admin scope is not a person: see may_admin)."""
        return not self.is_server and get_settings().admin_group in self.groups

    @property
    def may_admin(self) -> bool:
        return self.is_admin or ADMIN_SCOPE in self.scopes

    @property
    def may_checkout(self) -> bool:
        return not self.is_server or CHECKOUT_SCOPE in self.scopes

    @property
    def kind(self) -> str:
        """`customer`, `admin` or `server`: what a redemption records as its caller."""
        return "server" if self.is_server else "admin" if self.is_admin else "customer"

    @property
    def email_domain(self) -> str | None:
        if not self.email or "@" not in self.email:
            return None
        return self.email.rsplit("@", 1)[1].lower()


def _verified(raw: Any) -> bool:
    # API Gateway hands every authorizer context value over as a string ("true"/"false"); a token
    # read directly carries a JSON boolean. Anything else (absent, "1", "yes") is not verified.
    return raw is True or (isinstance(raw, str) and raw.strip().lower() == "true")


def _groups(raw: Any) -> frozenset[str]:
    # The authorizer flattens the list claim to "a,b" (a context holds no lists); "[a, b]" is read too.
    if isinstance(raw, list | tuple):
        return frozenset(str(g) for g in raw)
    if isinstance(raw, str):
        return frozenset(g for g in re.split(r"[\s,\[\]]+", raw) if g)
    return frozenset()


def _from_admin_pool(claims: Mapping[str, Any]) -> bool:
    """Whether the token was issued by the admin pool (its `iss`, exactly). The authorizer accepts
    both pools' tokens, so a `coupon-admins` group claim counts only on a token from there."""
    admin_issuer = get_settings().admin_issuer
    return bool(admin_issuer) and claims.get("iss") == admin_issuer


def _trusted_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The claims, without the admin group unless the token comes from the admin pool."""
    if _from_admin_pool(claims):
        return dict(claims)
    admin_group = get_settings().admin_group
    return {**claims, "cognito:groups": sorted(_groups(claims.get("cognito:groups")) - {admin_group})}


def _unexpired(claims: Mapping[str, Any]) -> None:
    """API Gateway reuses an authorizer's answer for its cache TTL: a token may expire meanwhile."""
    try:
        expires = int(str(claims.get("exp")))
    except ValueError:
        raise Unauthenticated() from None
    if expires <= time.time():
        raise Unauthenticated()


def identity_of(app: Any) -> Identity:
    """The caller, from the token authorizer's context (coupons/authorizer.py: verified claims)."""
    context = app.current_event.request_context
    claims = context.authorizer.raw_event if context.authorizer else {}
    _unexpired(claims)
    ip = context.identity.source_ip or "unknown"
    user_agent = (context.identity.user_agent or "")[:512]
    use = claims.get("token_use")
    if use == "access":  # a server: client credentials
        client_id = claims.get("client_id")
        if not client_id:
            raise Unauthenticated()
        return Identity(user_id=f"client:{client_id}", email=None, groups=frozenset(), ip=ip,
                        user_agent=user_agent, client_id=str(client_id),
                        scopes=frozenset(str(claims.get("scope") or "").split()))
    if use != "id":
        raise Unauthenticated()
    claims = _trusted_claims(claims)
    user_id = claims.get("sub")
    if not user_id:
        raise Unauthenticated()
    # An unverified email is no email: the user pool lets shoppers type any address (issue 11).
    email = claims.get("email") if _verified(claims.get("email_verified")) else None
    return Identity(
        user_id=str(user_id),
        email=str(email) if email else None,
        groups=_groups(claims.get("cognito:groups")),
        ip=ip,
        user_agent=user_agent,
    )


def require_admin(app: Any) -> Identity:
    """Admin routes: an admin, or a server with the scope coupons/admin (a CRM)."""
    who = identity_of(app)
    if not who.may_admin:
        raise Forbidden("This route is for coupon admins (or servers with the scope coupons/admin).")
    return who


def require_checkout(app: Any) -> Identity:
    """Checkout routes: people, and servers with the scope coupons/checkout."""
    who = identity_of(app)
    if not who.may_checkout:
        raise Forbidden("This route needs the scope coupons/checkout.")
    return who


def require_person(app: Any) -> Identity:
    """Routes about the caller themselves (`/me/...`): a server has no `me`."""
    who = identity_of(app)
    if who.is_server:
        raise Forbidden("This route is for customers signed in with their own token.")
    return who


def error_response(error: DomainError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return Response(status_code=error.status, content_type="application/json",
                    body=json.dumps(error.body()), headers=headers)


def json_response(status: int, body: Any) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body, default=str))


def _body_error(message: str, detail: str) -> ValidationFailed:
    return ValidationFailed(message, details=[{"field": "body", "message": detail}])


def _header(event: dict[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return str(value) if value is not None else None
    return None


def _is_json(content_type: str | None) -> bool:
    """`application/json`, with no charset or UTF-8 (JSON is UTF-8: RFC 8259); absent means JSON."""
    if content_type is None or not content_type.strip():
        return True
    media, *params = content_type.split(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


# Brackets kept (as one kind: depth is all that is measured), every other byte deleted.
_AS_PARENS = bytes.maketrans(b"{[}]", b"(())")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"{[}]")
_TOO_MANY_OPEN = b"(" * (MAX_JSON_DEPTH + 1)
# Both alternatives start with the literal \u, so the scan jumps from escape to escape.
_LONE_SURROGATE = re.compile(
    r"\\u(?:[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u)[dD][c-fC-F][0-9a-fA-F]{2})")


def _too_deep(body: str) -> bool:
    """Whether the JSON nests more than MAX_JSON_DEPTH containers, measured without parsing.

    Escapes go first (escaped backslashes, then escaped quotes), so the quotes left delimit the
    strings; outside them only brackets are kept, and innermost `()` pairs are peeled off one level
    per pass (bytes.replace does not cascade). Each step is a C-speed pass over at most
    MAX_BODY_BYTES; malformed text stops shrinking and is left to the parser's 400."""
    unescaped = body.replace("\\\\", "").replace('\\"', "")
    outside = "".join(unescaped.split('"')[0::2])
    if not outside.isascii():  # outside strings JSON is ASCII: this is not JSON, the parser says so
        return False
    brackets = outside.encode("ascii").translate(_AS_PARENS, _NOT_BRACKETS)
    if _TOO_MANY_OPEN in brackets:  # the usual attack, a plain chain, found in one pass
        return True
    for _ in range(MAX_JSON_DEPTH):
        peeled = brackets.replace(b"()", b"")
        if peeled == brackets:  # empty (shallow enough) or malformed
            return False
        brackets = peeled
    return b"()" in brackets


def body_rejection(event: dict[str, Any]) -> DomainError | None:
    """Bodies no route could accept, refused before parsing (Powertools' validation runs first
    otherwise, and would crash on bytes that are not UTF-8, on multipart without a boundary or on
    deep nesting, or would unwrap a one-element array)."""
    body = event.get("body")
    # JSON in: form data, multipart (whose parser fails without a boundary) and other charsets are refused
    if (event.get("httpMethod") in ("POST", "PUT") or body) and not _is_json(_header(event, "content-type")):
        return _body_error("The body must be JSON (Content-Type: application/json, UTF-8).", "send application/json")
    if not body:
        return None
    if len(body) > MAX_BODY_BYTES:
        return PayloadTooLarge(details=[{"field": "body", "message": f"at most {MAX_BODY_BYTES} bytes"}])
    if event.get("isBase64Encoded"):
        return _body_error("The body must be UTF-8 JSON.", "not UTF-8 text")
    if event.get("httpMethod") in ("POST", "PUT") and not body.lstrip().startswith("{"):
        return _body_error("The body must be a JSON object.", "send a JSON object")
    if _too_deep(body):
        return _body_error("The body is nested too deeply.", f"at most {MAX_JSON_DEPTH} levels of nesting")
    # A lone UTF-16 surrogate (raw, or the escape \ud800 alone) is no character: it cannot be stored,
    # exported or published as UTF-8. Escaped backslashes go first: `"\\ud800"` is plain text.
    if not body.isascii():
        try:
            body.encode("utf-8")
        except UnicodeEncodeError:
            return _body_error("The body must be valid UTF-8 text.", "contains a lone surrogate")
    if "\\u" in body and _LONE_SURROGATE.search(body.replace("\\\\", "")):
        return _body_error("The body must be valid UTF-8 text.", "contains a lone surrogate escape")
    return None


def _plain_json_content_type(event: dict[str, Any]) -> None:
    """A body let through is JSON: spell its type as Powertools matches it (case-sensitively),
    so `Application/JSON; charset="UTF-8"` is parsed like `application/json`."""
    headers = event.get("headers") or {}
    for key in [k for k in headers if k.lower() == "content-type" and headers[k]]:
        headers[key] = "application/json"


def _proxy_error(error: DomainError) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
    if error.retry_after:
        headers["Retry-After"] = str(error.retry_after)
    return {"statusCode": error.status, "headers": headers, "body": json.dumps(error.body())}


class _Resolver(APIGatewayRestResolver):
    """Powertools' resolver, with path parameters that take any character but `/`.

    Its own pattern takes a fixed set (word characters and some punctuation), so an id holding a
    backslash or a bidi control answered "no such route" although API Gateway had matched the
    route. Every id now reaches its route, which answers a malformed one like an unknown one."""

    @staticmethod
    def _compile_regex(rule: str, base_regex: str = "^{}/*$") -> re.Pattern[str]:
        return re.compile(base_regex.format(re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", rule)))


def build_app(*routers: Router) -> APIGatewayRestResolver:
    app = _Resolver(
        enable_validation=True,
        response_validation_error_http_code=500,
        cors=CORSConfig(allow_origin="*", allow_headers=["Authorization", "Content-Type", "Idempotency-Key"], max_age=600),
    )

    @app.exception_handler(RequestValidationError)
    def _invalid(error: RequestValidationError) -> Response:
        return error_response(ValidationFailed(details=validation_details(error.errors())))

    @app.exception_handler(ResponseValidationError)
    def _bad_response(error: ResponseValidationError) -> Response:
        logger.error("response failed its schema", extra={"errors": str(error.errors())[:2000]})
        return json_response(500, {"error": {"code": "INTERNAL_ERROR", "message": "Something went wrong."}})

    @app.exception_handler(RequestUnsupportedContentType)
    def _content_type(error: RequestUnsupportedContentType) -> Response:
        return error_response(ValidationFailed(
            "The body must be JSON.", details=[{"field": "body", "message": "send application/json"}]))

    @app.exception_handler(DomainError)
    def _domain(error: DomainError) -> Response:
        if error.status >= 500:
            logger.warning("transient store failure", extra={"error_code": error.code})
        return error_response(error)

    @app.not_found
    def _no_route(_: Exception) -> Response:
        return error_response(RouteNotFound())

    for router in routers:
        app.include_router(router)
    return app


def entry(app: APIGatewayRestResolver) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda entry point: Powertools decorators around `app.resolve`."""

    @logger.inject_lambda_context(correlation_id_path="requestContext.requestId", log_event=False)
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        rejected = body_rejection(event)
        if rejected is not None:
            return _proxy_error(rejected)
        _plain_json_content_type(event)
        try:
            return app.resolve(event, context)
        except Exception:  # a bug must still answer with the envelope, never a traceback
            logger.exception("unhandled error")
            return _proxy_error(InternalError())

    return handler
