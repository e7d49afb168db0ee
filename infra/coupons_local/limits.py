"""Lambda's limits, enforced by the local function host (issue 17): timeout, 6 MB response, /tmp.

The local stack runs every function in one process, on threads. Lambda does not forgive what a
thread would, so each invocation is held to its function's definition in resources.py:

- **Timeout** (`timeout_seconds`). Each invocation runs on a thread of its own while the caller
  waits at most the timeout. At the deadline the caller gets `FunctionTimedOut` (the gateway
  answers 504 in the error envelope; an SQS or stream poller counts the invocation as failed and
  the event source's retry applies). A Python thread cannot be killed, so the invocation is
  *fenced* instead: from its deadline on, every AWS call it (or a thread it started) tries to
  make raises `InvocationKilled` before anything is sent, and `InvocationKilled` is also raised
  asynchronously in its thread, which stops it at its next Python instruction. It is a
  BaseException, so `except Exception` (Powertools' batch and idempotency handlers, our own error
  envelope) does not swallow it, just as nothing runs after Lambda kills a function.
  What this guarantees: no AWS call *starts* after the deadline, so nothing the invocation would
  have done later is committed. What it does not: a call already in flight at the deadline
  completes (as it does on AWS, where the request has left the container), and effects that are
  not AWS calls (memory, files in its /tmp) happen until the thread reaches its next instruction
  (a C call that blocks, such as a socket read, delays that by at most the call's own timeout).
  A killed invocation's /tmp is discarded, as Lambda discards the container.
- **Response size**: a result over 6 MB once serialised (or one that is not JSON) is
  `ResponseTooLarge` / `ResponseNotJson`; the gateway answers 502 in the envelope.
- **/tmp** (`ephemeral_storage_mb`): each concurrent invocation gets a directory of its own as
  `tempfile`'s directory; a write past the budget fails with OSError(ENOSPC) (tmp_budget.py says
  which writes are covered).

The handler's module is imported before the clock starts (Lambda's init phase has its own
limit). The handler runs in a copy of the caller's contextvars context: per-invocation state the
host sets for it must be a ContextVar (a threading.local set by the caller is not seen there).

`COUPONS_LOCAL_FUNCTION_TIMEOUTS` overrides timeouts for tests and demos: `0.5` for every
function, or `admin=0.2,jobs=1` (seconds).
"""

from __future__ import annotations

import atexit
import contextvars
import ctypes
import io
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coupons_infra import resources as r

from .tmp_budget import Slots, TmpBudget, open_with_budget, tmp_dir

MAX_RESPONSE_BYTES = 6 * 1024 * 1024  # Lambda's synchronous response payload limit
TIMEOUTS_ENV = "COUPONS_LOCAL_FUNCTION_TIMEOUTS"


# --- what callers see -------------------------------------------------------------------------


class FunctionError(Exception):
    """The invocation failed the way Lambda fails it; `status`/`code` are the gateway's answer."""

    status = 502
    code = "INTERNAL_ERROR"

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": str(self)}}


class FunctionTimedOut(FunctionError):
    status = 504


class ResponseTooLarge(FunctionError):
    status = 502


class ResponseNotJson(FunctionError):
    status = 502


class InvocationKilled(BaseException):
    """Raised inside an invocation past its deadline. Not an Exception: handlers must not catch it."""


# --- one invocation -------------------------------------------------------------------------


@dataclass
class Invocation:
    function: str
    deadline: float  # time.monotonic()
    tmp: TmpBudget
    killed: bool = False
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fenced(self) -> bool:
        return self.killed or time.monotonic() >= self.deadline


_current: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("coupons_local_invocation",
                                                                            default=None)


def current() -> Invocation | None:
    return _current.get()


def _current_tmp() -> TmpBudget | None:
    invocation = _current.get()
    return None if invocation is None else invocation.tmp


# --- the fence: no AWS call after the deadline ------------------------------------------------


def _fence(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        invocation = _current.get()
        if invocation is not None and invocation.fenced():
            invocation.killed = True
            raise InvocationKilled(f"{invocation.function} is past its timeout: no AWS call is made")
        return original(self, *args, **kwargs)

    create_request.__wrapped__ = original  # type: ignore[attr-defined]
    return create_request


def _threads_inherit(original: Callable[..., Any]) -> Callable[..., Any]:
    """Threads an invocation starts (a report's pool) carry its context, so the fence holds there too."""

    def start(self: threading.Thread) -> None:
        if _current.get() is not None:
            context = contextvars.copy_context()
            run = self.run
            self.run = lambda: context.run(run)  # type: ignore[method-assign]
        original(self)

    start.__wrapped__ = original  # type: ignore[attr-defined]
    return start


def _quiet_kills(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A thread stopped at its invocation's deadline ends silently, as a killed Lambda's would."""

    def excepthook(args: Any) -> None:
        if args.exc_type is not None and issubclass(args.exc_type, InvocationKilled):
            return
        original(args)

    return excepthook


_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Patch botocore, threading, io/open and tempfile for invocations (idempotent; local stack only)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        import builtins

        from botocore.endpoint import Endpoint

        Endpoint.create_request = _fence(Endpoint.create_request)  # type: ignore[method-assign]
        threading.Thread.start = _threads_inherit(threading.Thread.start)  # type: ignore[method-assign]
        threading.excepthook = _quiet_kills(threading.excepthook)
        budget_open = open_with_budget(io.open, _current_tmp)
        builtins.open = budget_open
        io.open = budget_open
        tempfile.gettempdir = tmp_dir(tempfile.gettempdir, _current_tmp, as_bytes=False)
        tempfile.gettempdirb = tmp_dir(tempfile.gettempdirb, _current_tmp, as_bytes=True)
        _installed = True


# --- the host's side --------------------------------------------------------------------------


def timeout_overrides(text: str) -> dict[str, float]:
    """`0.5` (every function) or `admin=0.2,jobs=1`."""
    found: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.rpartition("=")
        found[name.strip() or "*"] = float(value)
    return found


class Limits:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.overrides = timeout_overrides(env.get(TIMEOUTS_ENV, ""))
        self._root: Path | None = None
        self._slots: dict[str, Slots] = {}
        self._lock = threading.Lock()

    def timeout_of(self, function: r.Function) -> float:
        return float(self.overrides.get(function.name, self.overrides.get("*", function.timeout_seconds)))

    def slots(self, function: r.Function) -> Slots:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="coupons-local-tmp-"))
                atexit.register(shutil.rmtree, self._root, True)
            if function.name not in self._slots:
                self._slots[function.name] = Slots(self._root / function.name)
            return self._slots[function.name]

    def run(self, function: r.Function, handler: Callable[..., Any], event: Any, context: Any) -> Any:
        """Call the handler as Lambda would: within its timeout, /tmp and response size."""
        install()
        timeout = self.timeout_of(function)
        slots = self.slots(function)
        invocation = Invocation(function.name, time.monotonic() + timeout,
                                TmpBudget(slots.acquire(), function.ephemeral_storage_mb * 1024 * 1024))
        outcome: dict[str, Any] = {}
        done = threading.Event()
        caller_context = contextvars.copy_context()  # per-invocation state the host set (e.g. recording)

        def body() -> None:
            _current.set(invocation)
            try:
                outcome["result"] = handler(event, context)
            except BaseException as error:
                outcome["error"] = error
            finally:
                with invocation.lock:
                    invocation.finished = True

        def target() -> None:
            try:
                caller_context.run(body)
            except InvocationKilled:
                pass  # a kill that landed as the handler ended
            finally:
                done.set()
                slots.release(invocation.tmp.path, discard=invocation.killed)

        thread = threading.Thread(target=target, name=f"lambda-{function.name}", daemon=True)
        thread.start()
        if not done.wait(max(0.0, invocation.deadline - time.monotonic())):
            self._kill(invocation, thread)
            raise FunctionTimedOut(f"{function.name} did not answer within its {timeout:g} s timeout.")
        error = outcome.get("error")
        if isinstance(error, InvocationKilled):
            raise FunctionTimedOut(f"{function.name} did not answer within its {timeout:g} s timeout.")
        if error is not None:
            raise error
        return check_response(function, outcome.get("result"))

    @staticmethod
    def _kill(invocation: Invocation, thread: threading.Thread) -> None:
        with invocation.lock:
            invocation.killed = True
            if invocation.finished or thread.ident is None:
                return
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                       ctypes.py_object(InvocationKilled))


def check_response(function: r.Function, result: Any) -> Any:
    """Lambda serialises the result and refuses one over 6 MB (or one JSON cannot carry)."""
    try:
        size = len(json.dumps(result).encode())
    except (TypeError, ValueError):
        raise ResponseNotJson(f"{function.name} returned a result that is not JSON.") from None
    if size > MAX_RESPONSE_BYTES:
        raise ResponseTooLarge(f"{function.name}'s response is {size} bytes, over Lambda's "
                               f"{MAX_RESPONSE_BYTES}-byte limit.")
    return result
