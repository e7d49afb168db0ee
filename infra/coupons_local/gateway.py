"""A real HTTP server that behaves like the REST API: routes, authorizer, proxy events.

Each request's bearer token goes to the same TOKEN authorizer function API Gateway calls
on AWS (`functions/authorizer`), whose answer is cached by token for as long as API
Gateway caches it; the request then becomes an API Gateway REST proxy event with the
authorizer's context in `requestContext.authorizer` (values as strings, with
`principalId`, as API Gateway passes them) and goes to the same `lambda_handler` Lambda
would call, loaded from `functions/<name>/handler.py`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coupons_infra import resources as r
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import calllog
from .limits import FunctionError, Limits

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization,Content-Type,Idempotency-Key",
    "Access-Control-Allow-Methods": "GET,POST,PUT,DELETE,OPTIONS",
    "Access-Control-Expose-Headers": "Retry-After",
}


def envelope(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"error": {"code": code, "message": message}}), status=status,
                    headers={**CORS_HEADERS, **(headers or {})}, content_type="application/json")


@dataclass
class FakeContext:
    """The parts of the Lambda context Powertools reads."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: float
    aws_request_id: str
    started: float

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_seconds - time.monotonic()) * 1000))


class FunctionHost:
    """Loads each function's handler module once, as Lambda would per container."""

    def __init__(self) -> None:
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()
        # With the call log on: one invocation at a time, each in a fresh container (see calllog).
        self.isolated = False
        self._isolation = threading.Lock()
        self.limits = Limits()  # Lambda's timeout, 6 MB response and /tmp (issue 17: see limits.py)

    def handler(self, function: r.Function) -> Callable[..., Any]:
        with self._lock:
            if function.name not in self._handlers:
                path = function.directory / "handler.py"
                module_name = f"coupons_fn_{function.name}"
                spec = importlib.util.spec_from_file_location(module_name, path)
                assert spec and spec.loader
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
                self._handlers[function.name] = module.lambda_handler
            return self._handlers[function.name]

    after_invoke: Callable[[], None] | None = None  # the stack wakes its pollers after each run

    def invoke(self, function: r.Function, event: dict[str, Any]) -> Any:
        """Run the handler within the function's limits; raises limits.FunctionError when Lambda would fail it."""
        handler = self.handler(function)  # the init phase is not part of the invocation's time
        context = FakeContext(function.name, function.memory_mb, self.limits.timeout_of(function),
                              str(uuid.uuid4()), time.monotonic())
        try:
            if not self.isolated:
                with calllog.acting_as(function.name):
                    return self.limits.run(function, handler, event, context)
            with self._isolation:
                calllog.fresh_container()
                handler = self.handler(function)  # a fresh container initialises again
                with calllog.acting_as(function.name):
                    return self.limits.run(function, handler, event, context)
        finally:
            if self.after_invoke is not None:
                self.after_invoke()


def _rule_path(path: str) -> str:
    return re.sub(r"\{(\w+)\}", r"<\1>", path)


class TokenAuthorizer:
    """API Gateway's TOKEN authorizer: the authorizer function, its answers cached by token."""

    def __init__(self, host: FunctionHost, ttl_seconds: int = r.AUTHORIZER_CACHE_SECONDS) -> None:
        self.host = host
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[float, dict[str, str] | None]] = {}
        self._lock = threading.Lock()

    def context(self, header: str) -> dict[str, str] | None:
        """The request context's `authorizer` for this Authorization header; None: 401."""
        if not r.AUTHORIZATION_PATTERN.fullmatch(header):  # API Gateway's validation expression
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(header)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        started = time.monotonic()
        event = {"type": "TOKEN", "authorizationToken": header,
                 "methodArn": "arn:aws:execute-api:us-east-1:123456789012:local/local/GET/"}
        try:
            answer = self.host.invoke(r.function(r.AUTHORIZER), event)
        except Exception as error:
            if str(error) != "Unauthorized":
                raise  # an authorizer failure: answered 503 like API Gateway's AUTHORIZER_FAILURE here
            result: dict[str, str] | None = None
        else:
            allowed = all(s.get("Effect") == "Allow" for s in answer["policyDocument"]["Statement"])
            result = {k: json.dumps(v) if isinstance(v, bool) else str(v)
                      for k, v in (answer.get("context") or {}).items()} if allowed else None
            if result is not None:
                result["principalId"] = str(answer["principalId"])
                result["integrationLatency"] = str(int((time.monotonic() - started) * 1000))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[header] = (now, result)
        return result


class Gateway:
    def __init__(self, host: FunctionHost, control: dict[str, Callable[[dict[str, Any]], Any]],
                 control_secret: str) -> None:
        self.host = host
        self.authorizer = TokenAuthorizer(host)
        self.control = control
        self.control_secret = control_secret
        rules = []
        self.routes: dict[str, tuple[r.Function, r.Route]] = {}
        for function in r.FUNCTIONS:
            for route in function.routes:
                endpoint = f"{route.method} {route.path}"
                self.routes[endpoint] = (function, route)
                rules.append(Rule(_rule_path(route.path), methods=[route.method], endpoint=endpoint))
        rules.append(Rule("/_local/run/<job>", methods=["POST"], endpoint="control"))
        self.url_map = Map(rules, strict_slashes=False, merge_slashes=False)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status=204, headers=CORS_HEADERS)
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed:
            return envelope(405, "METHOD_NOT_ALLOWED", "This route does not take that method.")
        except NotFound:
            return envelope(404, "NOT_FOUND", "No such route.")
        except HTTPException:
            return envelope(404, "NOT_FOUND", "No such route.")
        if endpoint == "control":
            return self._control(request, args["job"])
        function, route = self.routes[endpoint]
        if request.content_length and request.content_length > MAX_BODY_BYTES:
            return envelope(413, "VALIDATION_ERROR", "The request body is larger than 10 MB.")
        body = request.get_data(cache=False)
        if len(body) > MAX_BODY_BYTES:
            return envelope(413, "VALIDATION_ERROR", "The request body is larger than 10 MB.")
        authorizer: dict[str, str] | None = None
        if not route.public:
            try:
                authorizer = self.authorizer.context(request.headers.get("Authorization", ""))
            except Exception:
                return envelope(503, "TRY_AGAIN", "The service could not check the token; try again.",
                                {"Retry-After": "1"})
            if authorizer is None:
                return envelope(401, "UNAUTHENTICATED", "A valid bearer token is required.")
        event = self._event(request, route, args, body, authorizer)
        try:
            result = self.host.invoke(function, event)
        except FunctionError as error:  # as API Gateway answers a timed-out or oversized Lambda answer
            return envelope(error.status, error.code, str(error))
        return self._response(result)

    def _event(self, request: Request, route: r.Route, args: Any, body: bytes,
               authorizer: dict[str, str] | None) -> dict[str, Any]:
        try:
            text: str | None = body.decode("utf-8") if body else None
            encoded = False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode(), True
        query = request.args
        headers = dict(request.headers.items())
        now = datetime.now(UTC)
        return {
            "resource": route.path,
            "path": request.path,
            "httpMethod": request.method,
            "headers": headers,
            "multiValueHeaders": {k: request.headers.getlist(k) for k in headers},
            "queryStringParameters": {k: query.get(k) for k in query} or None,
            "multiValueQueryStringParameters": {k: query.getlist(k) for k in query} or None,
            "pathParameters": dict(args) or None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": route.path,
                "httpMethod": request.method,
                "path": f"/local{request.path}",
                "stage": "local",
                "requestId": str(uuid.uuid4()),
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "accountId": "123456789012",
                "apiId": "local",
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "identity": {
                    "sourceIp": request.remote_addr or "127.0.0.1",
                    "userAgent": request.headers.get("User-Agent", ""),
                },
                "authorizer": authorizer,
            },
            "body": text,
            "isBase64Encoded": encoded,
        }

    @staticmethod
    def _response(result: dict[str, Any]) -> Response:
        headers = dict(CORS_HEADERS)
        headers.update(result.get("headers") or {})
        response = Response(status=int(result.get("statusCode", 502)), headers=headers)
        for name, values in (result.get("multiValueHeaders") or {}).items():
            # The function's values replace the defaults (as API Gateway merges them): no second
            # Content-Type after werkzeug's text/plain, no doubled Access-Control-Allow-Origin.
            response.headers.setlist(name, list(values))
        body = result.get("body") or ""
        response.set_data(base64.b64decode(body) if result.get("isBase64Encoded") else body.encode())
        return response

    def _control(self, request: Request, job: str) -> Response:
        if request.headers.get("X-Local-Control") != self.control_secret:
            return envelope(403, "FORBIDDEN", "Local control needs this stack's control secret.")
        if job not in self.control:
            return envelope(404, "JOB_NOT_FOUND", f"No local job named {job}.")
        payload = request.get_json(silent=True) or {}
        try:
            result = self.control[job](payload)
        except FunctionError as error:
            return envelope(error.status, error.code, str(error))
        return Response(json.dumps(result, default=str), status=200, content_type="application/json")
