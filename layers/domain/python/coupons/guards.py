"""Failed-attempt lockouts and fraud signals: the policy, pure (the store keeps the counters).

Sliding-window counter
    Time is cut into fixed buckets of `window` seconds. For each subject (a user or
    an IP) the store keeps the number of failed guesses in the current bucket and in
    the previous one. At a moment `f` of the way through the current bucket
    (0 <= f < 1) the failures "in the last window" are estimated as

        estimate = current + previous * (1 - f)

    (Cloudflare's sliding-window counter: two counters per subject, exact at bucket
    edges, linear in between). A subject is locked while estimate >= limit: the
    `limit`-th failure is still answered normally, every request after it gets 429
    until the estimate falls below the limit again, which `retry_after` computes
    exactly assuming no new failure.

Distinct users per IP
    Successful redemptions record their user in a per-IP set per bucket; the distinct
    users of the current and previous buckets together are compared with the
    threshold (a window of between one and two buckets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Scope = Literal["user", "ip"]


@dataclass(frozen=True)
class Counts:
    """Failures of one subject in the current and the previous bucket."""

    current: int = 0
    previous: int = 0


@dataclass(frozen=True)
class Verdict:
    locked: bool
    retry_after: int = 0  # whole seconds, >= 1 when locked
    scope: Scope | None = None


@dataclass(frozen=True)
class Trip:
    """A failure that made a subject cross its limit: the moment a lockout starts."""

    scope: Scope
    count: int
    limit: int


@dataclass(frozen=True)
class Policy:
    per_user: int
    per_ip: int
    window: int  # seconds

    def bucket(self, now: float) -> int:
        return int(now // self.window)

    def estimate(self, counts: Counts, now: float) -> float:
        elapsed = (now - self.bucket(now) * self.window) / self.window
        return counts.current + counts.previous * (1 - elapsed)

    def retry_after(self, counts: Counts, limit: int, now: float) -> int:
        """Seconds until the estimate is below `limit` again (0 if it already is)."""
        if self.estimate(counts, now) < limit:
            return 0
        start = self.bucket(now) * self.window
        if counts.current < limit:
            # Within this bucket: current + previous * (1 - x) < limit  <=>  x > 1 - (limit - current) / previous
            free_at = start + self.window * (1 - (limit - counts.current) / counts.previous)
        else:
            # Next bucket, where this bucket's count becomes the weighted one: current * (1 - x) < limit
            free_at = start + self.window + self.window * (1 - limit / counts.current)
        return max(1, math.floor(free_at - now) + 1)

    def verdict(self, user: Counts, ip: Counts, now: float) -> Verdict:
        """Whether this caller may try a code at all right now."""
        waits = [(self.retry_after(user, self.per_user, now), "user"), (self.retry_after(ip, self.per_ip, now), "ip")]
        wait, scope = max(waits)
        if wait <= 0:
            return Verdict(False)
        return Verdict(True, wait, scope)  # type: ignore[arg-type]

    def trips(self, user: Counts, ip: Counts, now: float) -> list[Trip]:
        """The lockouts one more failure starts (crossing the limit, not already past it)."""
        found = []
        for scope, counts, limit in (("user", user, self.per_user), ("ip", ip, self.per_ip)):
            before = self.estimate(counts, now)
            after = before + 1
            if before < limit <= after:
                found.append(Trip(scope, math.ceil(after), limit))  # type: ignore[arg-type]
        return found


def distinct_users(previous: set[str], current: set[str]) -> int:
    return len(previous | current)


def crosses(threshold: int, before: int, after: int) -> bool:
    """True once, when a count reaches the threshold."""
    return before < threshold <= after
