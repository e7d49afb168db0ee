"""Failed guesses: counted first, answered after, so that the limits hold under any concurrency.

A guess for a code that does not exist is counted for each of its subjects in turn (the
customer, the shopper's IP, the server client: those the call has), each with one
conditional write (guard_store.GuardStore.count_failure) that succeeds only while the
subject's estimate is below its limit on the counter as it is at that moment (see guards,
"Counting under concurrency"). Only a guess counted under every limit is answered 404; any
other is answered 429 and counted nowhere (counts already made are taken back), so:

- however many guesses race, and however stale the read each of them made, no more than
  the limit are answered 404 in a window, per customer, per IP and per client;
- the counters hold the failures that were answered, so a caller who keeps trying while
  locked out is not kept locked by its own refused tries.

The policy is pure (guards.Policy); this module drives the store with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .adapters.dynamo import StoreBusy
from .adapters.guard_store import GuardMoved, fraud_flag
from .errors import RateLimited, TryAgain
from .guards import Counts, Policy, Scope, Window

ATTEMPTS = 8  # the counter moved under us (other guesses were counted first): decide again from it
RETRY_AFTER_SECONDS = 1


class GuardCounters(Protocol):
    def count_failure(self, scope: str, subject: str, *, seen: Window | None, bucket: int, previous: int,
                      room: int, ttl: int) -> Window: ...

    def take_back(self, scope: str, subject: str, bucket: int) -> None: ...

    def record_failure(self, *, now: datetime, flags: list[dict[str, object]]) -> None: ...


class Signals(Protocol):
    def count(self, name: str, value: int = 1) -> None: ...


@dataclass(frozen=True)
class Counted:
    """A failure counted: the counter after it, the limit it was held to, the moment it was decided at."""

    window: Window
    limit: int
    moment: float


@dataclass(frozen=True)
class Subject:
    """Someone a failed guess counts for, the counter as the request read it, and their limit."""

    scope: Scope
    name: str
    seen: Window | None
    limit: int


@dataclass(frozen=True)
class Refused:
    retry_after: int


class FailedGuesses:
    def __init__(self, store: GuardCounters, policy: Policy, signals: Signals,
                 backoff: Callable[[int], int]) -> None:
        self._store = store
        self._policy = policy
        self._signals = signals
        self._backoff = backoff  # sleeps, returns the next try's number; raises TryAgain when spent

    def count(self, subjects: list[Subject], now: datetime, *, client_id: str | None = None) -> None:
        """Count one failed guess; return if it may be answered 404, else raise RateLimited (or TryAgain).

        Each subject carries its counter as the request read it (maybe stale: the conditional
        writes correct that). `client_id`: the server that made the call, named on its flags.
        """
        at = now.timestamp()
        counted: list[tuple[Scope, str, Counted]] = []
        try:
            for scope, subject, seen, limit in ((s.scope, s.name, s.seen, s.limit) for s in subjects):
                outcome = self._count(scope, subject, seen, limit, at)
                if isinstance(outcome, Refused):
                    raise RateLimited(retry_after=outcome.retry_after)
                counted.append((scope, subject, outcome))
        except (RateLimited, TryAgain):
            for scope, subject, done in counted:  # refused after all: this guess counts nowhere
                self._store.take_back(scope, subject, done.window.bucket)
            raise
        flags: list[dict[str, object]] = []
        for scope, subject, done in counted:
            # The lockout this failure starts, if it is the one that crosses the limit
            trip = self._policy.trip(scope, Counts(done.window.current - 1, done.window.previous), done.limit,
                                     done.moment)
            if trip is not None:
                flags.append(fraud_flag(kind="lockout", scope=scope, subject=subject, bucket=done.window.bucket,
                                        now=now, count=trip.count, limit=trip.limit, window=self._policy.window,
                                        client_id=client_id))
        self._store.record_failure(now=now, flags=flags)
        self._signals.count("FailedAttempts")
        if flags:
            self._signals.count("Lockouts", len(flags))

    def _count(self, scope: Scope, subject: str, seen: Window | None, limit: int, at: float) -> Counted | Refused:
        """One subject's conditional count: made only while its estimate is below the limit."""
        policy = self._policy
        state = seen
        busy = 0
        for _ in range(ATTEMPTS):
            bucket, moment = policy.bucket(at), at
            if state is not None and state.bucket > bucket:
                # Counted from the next bucket already (our clock was read just before it began):
                # count there, as at its start, where the bucket we belong to weighs in full.
                bucket, moment = state.bucket, float(state.bucket * policy.window)
            counts = state.counts_at(bucket) if state is not None else Counts()
            room = policy.room(counts.previous, limit, moment)
            if counts.current >= room:
                wait = policy.retry_after(counts, limit, moment) + max(0, math.ceil(moment - at))
                return Refused(retry_after=max(1, wait))
            try:
                window = self._store.count_failure(scope, subject, seen=state, bucket=bucket,
                                                   previous=counts.previous, room=room,
                                                   ttl=(bucket + 2) * policy.window + 60)
            except GuardMoved as moved:
                state = moved.window
                continue
            except StoreBusy:
                busy = self._backoff(busy)
                continue
            return Counted(window, limit, moment)
        raise TryAgain(retry_after=RETRY_AFTER_SECONDS)
