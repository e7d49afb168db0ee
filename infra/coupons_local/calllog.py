"""Which AWS calls each function makes: a log for checking IAM grants against real behaviour.

moto enforces no IAM, so a function that calls an action its role does not grant works locally
and fails on AWS. With `COUPONS_LOCAL_CALL_LOG=<file>` set, `coupons-local serve` records every
AWS API call made on behalf of a function (through botocore's `before-parameter-build` event,
which also fires for presigned URLs), one JSON line per distinct call shape:

    {"function": "csv_import", "service": "s3", "operation": "GetObject",
     "params": {"Bucket": "coupons-imports", "Key": "incoming/a.csv"}, "presign": false}

`function` is the function whose handler (or whose event source mapping: the queue and stream
pollers act with the function's role on AWS) was running; calls of the stack itself (provisioning,
wiring) have `function: null`. Only the parameters that name resources are kept (tables, indexes,
buckets, object keys, queues, KMS key and encryption context, bus): never items, bodies or codes.

Every function shares this one process, and so would share what a container caches (the unwrapped
keyring, services, settings): one function would ride on calls another made. So with the log on,
invocations run one at a time, each in a fresh container (`fresh_container`), and each function
shows its own cold start.
tests/infra/test_iam_calls.py turns the log into IAM actions and resources and checks them against
each function's role in the CDK app.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import functools
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ENV = "COUPONS_LOCAL_CALL_LOG"
_acting: contextvars.ContextVar[str | None] = contextvars.ContextVar("coupons_local_function", default=None)
_SCALARS = ("TableName", "IndexName", "Bucket", "Key", "Prefix", "VersionId", "QueueUrl", "KeyId",
            "EncryptionContext", "StreamArn", "EventBusName", "Name", "ChecksumMode")


class CallLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, params: dict[str, Any], model: Any, context: dict[str, Any] | None = None,
                 **_: Any) -> None:
        entry = {
            "function": _acting.get(),
            "service": model.service_model.service_name,
            "operation": model.name,
            "params": naming_params(params),
            "presign": bool((context or {}).get("is_presign_request")),
        }
        line = json.dumps(entry, sort_keys=True, default=str)
        with self._lock:
            if line in self._seen:
                return
            self._seen.add(line)
            with self.path.open("a") as out:
                out.write(line + "\n")


def naming_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a call that name what it touches (and nothing it carries)."""
    kept: dict[str, Any] = {k: params[k] for k in _SCALARS if k in params}
    if "RequestItems" in params:  # BatchGetItem / BatchWriteItem
        kept["RequestItems"] = sorted(params["RequestItems"])
    if "TransactItems" in params:  # TransactWriteItems / TransactGetItems: (operation, table) per item
        kept["TransactItems"] = sorted({(op, body.get("TableName")) for item in params["TransactItems"]
                                        for op, body in item.items()})
    if "Entries" in params:  # PutEvents: the buses; SendMessageBatch and the like: nothing
        buses = {e.get("EventBusName", "default") for e in params["Entries"] if isinstance(e, dict)
                 and "Source" in e}
        if buses:
            kept["EventBusNames"] = sorted(buses)
    if "ShardIterator" in params:  # GetRecords: moto's iterators start with the stream's ARN
        kept["StreamArn"] = str(params["ShardIterator"]).split("|", 1)[0]
    if "Delete" in params:  # DeleteObjects: the keys
        kept["Keys"] = sorted(o["Key"] for o in params["Delete"].get("Objects", []))
    return kept


def fresh_container() -> None:
    """Forget what a Lambda container keeps between invocations (settings, the unwrapped keyring,
    services and what they cache), but not the boto3 clients: they hold no data, and building them
    again costs more than the rest of an invocation."""
    from coupons import bulk_wiring
    from coupons.adapters import aws

    reset_clients = aws.reset_clients
    aws.reset_clients = lambda: None  # type: ignore[assignment]
    try:
        bulk_wiring.reset()  # and wiring.reset()
    finally:
        aws.reset_clients = reset_clients  # type: ignore[assignment]


@contextlib.contextmanager
def acting_as(function: str) -> Iterator[None]:
    """AWS calls made inside are the named function's (its handler, or its event source mapping)."""
    token = _acting.set(function)
    try:
        yield
    finally:
        _acting.reset(token)


_log: CallLog | None = None


def install(path: str | None = None) -> CallLog | None:
    """Record calls to `path` (default: $COUPONS_LOCAL_CALL_LOG) from every botocore session created
    from now on; a no-op without a path. Call it before any boto3 client exists."""
    global _log
    target = path or os.environ.get(ENV)
    if not target or _log is not None:
        return _log
    from botocore import handlers

    _log = CallLog(Path(target))
    # botocore registers these on every new session, whatever creates it (boto3's default session,
    # coupons.adapters.aws's own): so every client of the process reports to the log.
    handlers.BUILTIN_HANDLERS.append(("before-parameter-build", _log))
    _propagate_to_pool_threads()
    return _log


def _propagate_to_pool_threads() -> None:
    """A function's worker threads (ThreadPoolExecutor, e.g. the reports' parallel day queries) act
    as the function: on Lambda they would share its role. Tasks run in the submitter's context."""
    submit: Any = concurrent.futures.ThreadPoolExecutor.submit

    @functools.wraps(submit)
    def submit_in_context(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

    concurrent.futures.ThreadPoolExecutor.submit = submit_in_context  # type: ignore[method-assign]
