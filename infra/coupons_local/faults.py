"""Fault injection for the emulated EventBridge: moto's PutEvents never fails, AWS's does.

`COUPONS_LOCAL_PUTEVENTS_FAULTS` (read by `coupons-local serve`) makes the local bus misbehave,
as a throttled or degraded EventBridge does:

- `throttle=15s`: every PutEvents call is refused whole with `ThrottlingException` (HTTP 400)
  for 15 seconds, counted from the first PutEvents call the stack receives (so the window
  covers the first events, whatever the start-up took);
- `fail=0.1`: outside that window, each entry is refused on its own with
  `ErrorCode: InternalFailure` with probability 0.1 (a partial failure: `FailedEntryCount` > 0,
  the other entries are published);
- `seed=7`: the random choices repeat from run to run.

Separated by commas, `:` or `=` alike: `throttle:15s,fail:0.05`. The patch sits on moto's
events backend, below the HTTP layer, so the clients see real error responses (botocore's own
retries included), in the served stack and under `mock_aws` alike.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FAULTS_ENV = "COUPONS_LOCAL_PUTEVENTS_FAULTS"


@dataclass
class PutEventsFaults:
    throttle_seconds: float = 0.0
    fail_rate: float = 0.0
    seed: int | None = None
    clock: Callable[[], float] = time.monotonic
    # What happened (tests and logs read these).
    calls: int = 0
    throttled_calls: int = 0
    refused_entries: int = 0
    window_started: float | None = None
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _original: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.fail_rate < 1:
            raise ValueError("fail rate must be in [0, 1)")
        if self.throttle_seconds < 0:
            raise ValueError("throttle seconds must be >= 0")
        if self.seed is not None:
            self._rng.seed(self.seed)

    @classmethod
    def parse(cls, text: str) -> PutEventsFaults:
        """`throttle=15s,fail=0.1,seed=7` (`:` works as well as `=`)."""
        options: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            name, sep, value = part.replace(":", "=", 1).partition("=")
            name, value = name.strip().lower(), value.strip().lower()
            if not sep or not value:
                raise ValueError(f"{FAULTS_ENV}: {part!r} is not name=value")
            if name == "throttle":
                options["throttle_seconds"] = float(value.removesuffix("s"))
            elif name == "fail":
                options["fail_rate"] = float(value)
            elif name == "seed":
                options["seed"] = int(value)
            else:
                raise ValueError(f"{FAULTS_ENV}: unknown fault {name!r} (throttle, fail, seed)")
        return cls(**options)

    def describe(self) -> str:
        return f"PutEvents throttled for {self.throttle_seconds:g}s from the first call, " \
               f"{self.fail_rate:.0%} of entries refused"

    def throttling(self) -> bool:
        """True while the throttle window is open (it opens on the first call)."""
        now = self.clock()
        if self.window_started is None:
            self.window_started = now
        return now - self.window_started < self.throttle_seconds

    def end_throttle(self) -> None:
        """Close the window now (tests that want the bus back)."""
        self.throttle_seconds = 0.0

    def put_events(self, backend: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """moto's `EventsBackend.put_events`, with the faults."""
        from moto.events.exceptions import JsonRESTError

        with self._lock:
            self.calls += 1
            if self.throttling():
                self.throttled_calls += 1
                raise JsonRESTError("ThrottlingException", "Rate exceeded (injected by coupons-local)")
            refused = {i for i in range(len(events)) if self.fail_rate and self._rng.random() < self.fail_rate}
            self.refused_entries += len(refused)
        if len(events) > 10:  # let moto answer with its own validation error
            refused = set()
        accepted = iter(self._original(backend, [e for i, e in enumerate(events) if i not in refused]))
        failure = {"ErrorCode": "InternalFailure", "ErrorMessage": "injected by coupons-local"}
        return [dict(failure) if i in refused else next(accepted) for i in range(len(events))]

    def install(self) -> PutEventsFaults:
        """Patch moto's events backend (one injector at a time; `uninstall` puts moto's back)."""
        from moto.events.models import EventsBackend

        if self._original is not None:
            return self
        current = EventsBackend.put_events
        self._original = getattr(current, "moto_original", current)
        faults = self

        def put_events(backend: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return faults.put_events(backend, events)

        put_events.moto_original = self._original  # type: ignore[attr-defined]
        EventsBackend.put_events = put_events  # type: ignore[method-assign,assignment]
        return self

    def uninstall(self) -> None:
        from moto.events.models import EventsBackend

        if self._original is not None:
            EventsBackend.put_events = self._original  # type: ignore[method-assign]
            self._original = None


def from_environment(text: str | None) -> PutEventsFaults | None:
    """The injector `COUPONS_LOCAL_PUTEVENTS_FAULTS` asks for, installed; None when unset."""
    if not text or not text.strip():
        return None
    return PutEventsFaults.parse(text).install()
