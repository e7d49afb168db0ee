"""The expiry sweep: coupons past `expires_at` get `status: expired` (and so one `CouponExpired` each).

Reads only what is due through the sparse expiry index, never the table.
Idempotent: the update is conditional on the coupon still being live and due,
so a second run, an overlapping run or a stale index entry changes nothing.
Validation never relies on the sweep (it compares `expires_at` itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from .clock import iso

PAGE_SIZE = 200


class ExpiryStore(Protocol):
    shards: int

    def due(self, shard: int, now: datetime, limit: int,
            start: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]: ...

    def expire(self, item: dict[str, Any], now: datetime) -> bool: ...


@dataclass
class SweepResult:
    now: str
    expired: int = 0
    unchanged: int = 0  # due in the index but already expired, deleted or extended
    pages: int = 0
    complete: bool = True  # False when the time budget ran out first (the next run goes on)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep(store: ExpiryStore, now: datetime, *, page_size: int = PAGE_SIZE,
          out_of_time: Callable[[], bool] = lambda: False) -> SweepResult:
    result = SweepResult(now=iso(now))
    for shard in range(store.shards):
        start: dict[str, Any] | None = None
        while True:
            if out_of_time():
                result.complete = False
                return result
            items, start = store.due(shard, now, page_size, start)
            result.pages += 1
            for item in items:
                if store.expire(item, now):
                    result.expired += 1
                else:
                    result.unchanged += 1
            if not start:
                break
    return result
