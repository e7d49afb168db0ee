"""Failed-attempt lockouts and fraud signals: the policy, pure (the store keeps the counters).

Sliding-window counter
    Time is cut into fixed buckets of `window` seconds. For each subject (a customer,
    a shopper IP or a server client) the store keeps the number of failed guesses in the current bucket and in
    the previous one. At a moment `f` of the way through the current bucket
    (0 <= f < 1) the failures "in the last window" are estimated as

        estimate = current + previous * (1 - f)

    (Cloudflare's sliding-window counter: two counters per subject, exact at bucket
    edges, linear in between). A failure is admitted only if it fits: estimate + 1 <=
    limit. So a subject is locked while estimate > limit - 1: the `limit`-th failure is
    still answered normally, every request after it gets 429 until the estimate is back
    at limit - 1 or below, which `retry_after` computes exactly assuming no new failure.

    Why a whole failure must fit, not just "estimate < limit": just after a bucket edge
    a full previous bucket weighs a little under the limit (10 failures a second ago
    weigh 9.98 of 10), so "estimate < limit" would admit an 11th failure a moment after
    the 10th, which any burst straddling an edge gets. With the failure's own weight
    counted, no burst is answered more than `limit` failures, wherever the edge falls.

Counting under concurrency
    A subject's two counters live in one item (`Window`: the bucket, its count and the
    count of the bucket before), so that one conditional write sees both. A failed guess
    is counted before it is answered: the write adds 1 only while the bucket's count is
    below `room` (how many failures this bucket may hold given the previous one's
    weight now) and the item is still as the request read it; a request whose condition
    fails decides again from the item as it is (returned by the failed write). So the
    store admits a guess only when `estimate < limit` held on the exact counts at that
    moment, however many guesses race and however stale the read was: no more than the
    limit are answered 404 in a window. A guess past the room is refused (429) and not
    counted, so the estimate counts answered failures only, and a caller who keeps
    trying while locked stays locked no longer than the window says. A guess counted for
    the user but refused for the IP is taken back from the user.

    `SLACK`: estimates are floats; a billionth of a failure is forgiven so that a moment
    the arithmetic says is exactly "limit - 1" counts as free.

Distinct users per IP
    Successful redemptions record their user in a per-IP set per bucket; the distinct
    users of the current and previous buckets together are compared with the
    threshold (a window of between one and two buckets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Scope = Literal["user", "ip", "client"]
SLACK = 1e-9


@dataclass(frozen=True)
class Counts:
    """Failures of one subject in the current and the previous bucket."""

    current: int = 0
    previous: int = 0


@dataclass(frozen=True)
class Window:
    """One subject's failure counter as stored: `current` failures in `bucket`, `previous` in the one before."""

    bucket: int
    current: int = 0
    previous: int = 0

    def counts_at(self, bucket: int) -> Counts:
        """The counts as a request in `bucket` sees them (an older item has aged out, wholly or in part).

        An item ahead of the request (written from the next bucket already) is read as of its own bucket.
        """
        if bucket <= self.bucket:
            return Counts(self.current, self.previous)
        if bucket == self.bucket + 1:
            return Counts(0, self.current)
        return Counts()


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
    per_client: int = 10_000  # a server client's (issue 12): a whole shop's guesses go through it

    def bucket(self, now: float) -> int:
        return int(now // self.window)

    def estimate(self, counts: Counts, now: float) -> float:
        elapsed = (now - self.bucket(now) * self.window) / self.window
        return counts.current + counts.previous * (1 - elapsed)

    def fits(self, counts: Counts, limit: int, now: float) -> bool:
        """Whether one more failure fits under the limit: estimate + 1 <= limit."""
        return self.estimate(counts, now) <= limit - 1 + SLACK

    def room(self, previous: int, limit: int, now: float) -> int:
        """How many failures the current bucket may hold: a failure is admitted while current < room.

        The smallest c at which one more failure no longer fits, computed with `fits` itself so
        that the two never disagree at a float edge.
        """
        room = max(0, math.floor(limit - self.estimate(Counts(0, previous), now)))
        while room > 0 and not self.fits(Counts(room - 1, previous), limit, now):
            room -= 1
        while self.fits(Counts(room, previous), limit, now):
            room += 1
        return room

    def retry_after(self, counts: Counts, limit: int, now: float) -> int:
        """Seconds until one more failure fits again (0 if it already does), assuming no new failure."""
        if self.fits(counts, limit, now):
            return 0
        start = self.bucket(now) * self.window
        free = limit - 1  # the estimate at which a failure fits again
        if counts.current <= free:
            # Within this bucket: current + previous * (1 - x) <= free  <=>  x >= 1 - (free - current) / previous
            free_at = start + self.window * (1 - (free - counts.current) / counts.previous)
        else:
            # Next bucket, where this bucket's count becomes the weighted one: current * (1 - x) <= free
            free_at = start + self.window + self.window * (1 - free / counts.current)
        return max(1, math.ceil(free_at - now - SLACK))

    def verdict(self, user: Counts, ip: Counts, now: float) -> Verdict:
        """Whether this caller may try a code at all right now (a customer and their IP)."""
        return self.verdict_of([("user", user, self.per_user), ("ip", ip, self.per_ip)], now)

    def verdict_of(self, subjects: list[tuple[Scope, Counts, int]], now: float) -> Verdict:
        """Whether a caller with these subjects (scope, failures, limit) may try a code at all right now."""
        waits = [(self.retry_after(counts, limit, now), scope) for scope, counts, limit in subjects]
        wait, scope = max(waits, default=(0, "user"))
        if wait <= 0:
            return Verdict(False)
        return Verdict(True, wait, scope)

    def trips(self, user: Counts, ip: Counts, now: float) -> list[Trip]:
        """The lockouts one more failure starts (crossing the limit, not already past it)."""
        found = [self.trip("user", user, self.per_user, now), self.trip("ip", ip, self.per_ip, now)]
        return [t for t in found if t is not None]

    def trip(self, scope: Scope, before: Counts, limit: int, now: float) -> Trip | None:
        """The lockout that one more failure on top of `before` starts: it fitted, and the next one will not."""
        after = Counts(before.current + 1, before.previous)
        if self.fits(before, limit, now) and not self.fits(after, limit, now):
            return Trip(scope, math.ceil(self.estimate(after, now) - SLACK), limit)
        return None


def distinct_users(previous: set[str], current: set[str]) -> int:
    return len(previous | current)


def crosses(threshold: int, before: int, after: int) -> bool:
    """True once, when a count reaches the threshold."""
    return before < threshold <= after
