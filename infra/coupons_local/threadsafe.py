"""Per-request state of Powertools' event handler, made per thread for the local gateway.

On Lambda a container serves one request at a time, so Powertools keeps the
current event and context in class attributes (`BaseRouter.current_event`,
`BaseRouter.lambda_context`) shared by every resolver and router of the process.
The local gateway serves concurrent requests from threads of one process, where
that sharing lets one request read another's event: its body, its claims, its
identity (seen as swapped redemptions under load). `install()` turns both
attributes into per-thread values, which is what one-request-per-container means
inside a threaded server. Only the local stack calls it; Lambda never does.
"""

from __future__ import annotations

import threading
from abc import ABCMeta
from typing import Any

_PER_THREAD = ("current_event", "lambda_context")
_values = threading.local()


class _PerThread:
    """A data descriptor whose value belongs to the calling thread."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        try:
            return getattr(_values, self.name)
        except AttributeError:
            raise AttributeError(self.name) from None

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(_values, self.name, value)


class _PerThreadContext:
    """`ApiGatewayResolver.context` per thread and app. Powertools keeps the matched route, its
    path arguments and the parsed request in one dict per app, which concurrent requests to the
    same function would share: one request read another's route arguments (a stylesheet served
    as a script) or found them cleared (KeyError: '_route' -> 500)."""

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        contexts: dict[int, dict[str, Any]] = _values.__dict__.setdefault("contexts", {})
        return contexts.setdefault(id(obj), {})

    def __set__(self, obj: Any, value: Any) -> None:
        _values.__dict__.setdefault("contexts", {})[id(obj)] = value


class _PerThreadMeta(ABCMeta):
    # Class-level reads and writes (`BaseRouter.current_event = ...`) go through these.
    current_event = _PerThread("current_event")
    lambda_context = _PerThread("lambda_context")


def install() -> None:
    """Idempotent; call once before serving concurrent requests."""
    from aws_lambda_powertools.event_handler import api_gateway

    resolver: Any = api_gateway.ApiGatewayResolver
    if not isinstance(resolver.__dict__.get("context"), _PerThreadContext):
        resolver.context = _PerThreadContext()
    base: Any = api_gateway.BaseRouter
    if type(base) is _PerThreadMeta:
        return
    for name in _PER_THREAD:
        if name in base.__dict__:
            delattr(base, name)
        setattr(base, name, _PerThread(name))  # instance-level reads and writes (app.current_event)
    base.__class__ = _PerThreadMeta


def installed() -> bool:
    from aws_lambda_powertools.event_handler import api_gateway

    return type(api_gateway.BaseRouter) is _PerThreadMeta
