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
- **/tmp** (`ephemeral_storage_mb`): each concurrent invocation of a function gets a directory
  of its own (reused by later invocations, like a warm container's /tmp) as `tempfile`'s
  directory. A write through a Python file object (`open`, `tempfile.*`, `pathlib`) that would
  take the directory (plus its open unlinked temporary files) past the budget fails with
  OSError(ENOSPC), as on Lambda. Not covered: writes through raw descriptors (`os.write`,
  `os.sendfile`, so `shutil.copyfile`'s fast path), code that builds paths from TMPDIR or a
  literal "/tmp" (tests/unit/test_function_limits.py checks the functions use `tempfile`), and
  file descriptors' paths outside Linux's /proc.

`COUPONS_LOCAL_FUNCTION_TIMEOUTS` overrides timeouts for tests and demos: `0.5` for every
function, or `admin=0.2,jobs=1` (seconds).
"""

from __future__ import annotations

import atexit
import contextvars
import ctypes
import errno
import io
import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coupons_infra import resources as r

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
    tmp: Path
    tmp_budget: int  # bytes
    killed: bool = False
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    open_files: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)

    def fenced(self) -> bool:
        return self.killed or time.monotonic() >= self.deadline


_current: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("coupons_local_invocation",
                                                                            default=None)


def current() -> Invocation | None:
    return _current.get()


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


# --- /tmp ------------------------------------------------------------------------------------


def _tmp_usage(invocation: Invocation) -> int:
    """Bytes in the invocation's /tmp: its files, and its open temporary files already unlinked."""
    used = 0
    for folder, _, files in os.walk(invocation.tmp):
        for name in files:
            try:
                used += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    for handle in list(invocation.open_files):
        try:
            stat = os.fstat(handle.fileno())
        except (OSError, ValueError):
            continue
        if stat.st_nlink == 0:
            used += stat.st_size
    return used


class _BudgetedFileIO(io.FileIO):
    """A raw file in an invocation's /tmp: a write past the budget fails with ENOSPC."""

    _invocation: Invocation

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        current_size = os.fstat(self.fileno()).st_size
        end = current_size if "a" in self.mode else self.tell()
        growth = max(0, end + size - current_size)
        if growth and _tmp_usage(self._invocation) + growth > self._invocation.tmp_budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.name))
        return int(super().write(data) or 0)


def _raw_mode(mode: str) -> str:
    return "".join(c for c in "xrwa+" if c in mode)


def _budgeted_open(invocation: Invocation, file: Any, mode: str = "r", buffering: int = -1,
                   encoding: str | None = None, errors: str | None = None, newline: str | None = None,
                   closefd: bool = True, opener: Any = None) -> Any:
    """`open` for a file in the invocation's /tmp, built like io.open builds its layers."""
    raw = _BudgetedFileIO(file, _raw_mode(mode), closefd=closefd, opener=opener)
    raw._invocation = invocation
    invocation.open_files.add(raw)
    binary = "b" in mode
    line_buffering = buffering == 1 and not binary
    if buffering in (1, -1) or buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0:
        if not binary:
            raise ValueError("can't have unbuffered text I/O")
        return raw
    buffer: Any
    if "+" in mode:
        buffer = io.BufferedRandom(raw, buffering)
    elif any(c in mode for c in "wxa"):
        buffer = io.BufferedWriter(raw, buffering)
    else:
        buffer = io.BufferedReader(raw, buffering)
    if binary:
        return buffer
    text = io.TextIOWrapper(buffer, io.text_encoding(encoding), errors, newline, line_buffering)
    text.mode = mode  # type: ignore[misc]
    return text


def _path_of(file: Any) -> str | None:
    if isinstance(file, int):
        try:
            return os.readlink(f"/proc/self/fd/{file}")  # Linux: where a descriptor points
        except OSError:
            return None
    try:
        return os.path.realpath(os.fsdecode(file))
    except (TypeError, ValueError):
        return None


def _in_tmp(invocation: Invocation, file: Any) -> bool:
    path = _path_of(file)
    root = str(invocation.tmp)
    return path is not None and (path == root or path.startswith(root + os.sep))


def _open_with_budget(original: Callable[..., Any]) -> Callable[..., Any]:
    def budget_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        invocation = _current.get()
        if invocation is None or not any(c in mode for c in "wxa+") or not _in_tmp(invocation, file):
            return original(file, mode, *args, **kwargs)
        return _budgeted_open(invocation, file, mode, *args, **kwargs)

    budget_open.__wrapped__ = original  # type: ignore[attr-defined]
    return budget_open


def _tmp_dir(original: Callable[[], Any], as_bytes: bool) -> Callable[[], Any]:
    def gettempdir() -> Any:
        invocation = _current.get()
        if invocation is None:
            return original()
        return os.fsencode(invocation.tmp) if as_bytes else str(invocation.tmp)

    gettempdir.__wrapped__ = original  # type: ignore[attr-defined]
    return gettempdir


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
        budget_open = _open_with_budget(io.open)
        builtins.open = budget_open
        io.open = budget_open
        tempfile.gettempdir = _tmp_dir(tempfile.gettempdir, as_bytes=False)
        tempfile.gettempdirb = _tmp_dir(tempfile.gettempdirb, as_bytes=True)
        _installed = True


# --- the host's side --------------------------------------------------------------------------


def timeout_overrides(text: str) -> dict[str, float]:
    """`0.5` (every function) or `admin=0.2,jobs=1`."""
    found: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.rpartition("=")
        found[name.strip() or "*"] = float(value)
    return found


class _Slots:
    """A function's /tmp directories: one per concurrent invocation, reused like warm containers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.free: list[int] = []
        self.count = 0
        self.lock = threading.Lock()

    def acquire(self) -> Path:
        with self.lock:
            if self.free:
                number = min(self.free)
                self.free.remove(number)
            else:
                number = self.count
                self.count += 1
        path = self.root / str(number)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def release(self, path: Path, *, discard: bool) -> None:
        if discard:  # a killed invocation's container is gone, and its /tmp with it
            shutil.rmtree(path, ignore_errors=True)
        with self.lock:
            self.free.append(int(path.name))


class Limits:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.overrides = timeout_overrides(env.get(TIMEOUTS_ENV, ""))
        self._root: Path | None = None
        self._slots: dict[str, _Slots] = {}
        self._lock = threading.Lock()

    def timeout_of(self, function: r.Function) -> float:
        return float(self.overrides.get(function.name, self.overrides.get("*", function.timeout_seconds)))

    def slots(self, function: r.Function) -> _Slots:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="coupons-local-tmp-"))
                atexit.register(shutil.rmtree, self._root, True)
            if function.name not in self._slots:
                self._slots[function.name] = _Slots(self._root / function.name)
            return self._slots[function.name]

    def run(self, function: r.Function, handler: Callable[..., Any], event: Any, context: Any) -> Any:
        """Call the handler as Lambda would: within its timeout, /tmp and response size."""
        install()
        timeout = self.timeout_of(function)
        slots = self.slots(function)
        invocation = Invocation(function.name, time.monotonic() + timeout, slots.acquire(),
                                function.ephemeral_storage_mb * 1024 * 1024)
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
                slots.release(invocation.tmp, discard=invocation.killed)

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
