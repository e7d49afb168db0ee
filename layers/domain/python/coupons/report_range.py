"""The summary of a UTC date range (`GET /reports/summary`): kept days merged, the others read live.

A day's figures are final once it is over (everything counts on the day it was made), so a
settled day is kept as an aggregate (`AggregateStore`: the daily job writes it, or this
module the first time it computes the day) and a range merges them in day order. Only days
that may still receive writes, or were never kept, are read from the day indexes: a year
costs a Query per month partition plus today, not 18 Queries a day. The answer is exactly
the one a full re-read gives (tests/unit/test_report_aggregates.py holds that property).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from .errors import TryAgain, ValidationFailed
from .reports import Aggregate, KeptDay, ReportSource, day_aggregate, days

# A write made at 23:59:59.9 can land (and reach the day index) a little after midnight; a day's
# aggregate is only kept once this long has passed after its end (redeem's Lambda times out at 10 s).
SETTLE_AFTER = timedelta(minutes=5)
SUMMARY_BUDGET_SECONDS = 12.0  # the API stops starting live days after this (API Gateway gives up at 29 s)
# by_coupon ranks every coupon of the range, so a summary's work grows with its coupon-days (each
# day's coupons, summed): ~6 µs of CPU each when merged. Past this a range is refused at once (a
# 400 naming a shorter range) rather than left to time out and be retried.
MAX_COUPON_DAYS = 2_000_000
log = logging.getLogger(__name__)


def is_settled(day: date, now: datetime) -> bool:
    """True once nothing more can be made on `day`: its figures are final and may be kept."""
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return now.astimezone(UTC) >= end + SETTLE_AFTER


def last_settled_day(now: datetime) -> date:
    return (now.astimezone(UTC) - SETTLE_AFTER).date() - timedelta(days=1)


class AggregateStore(Protocol):
    def load(self, first: date, last: date) -> dict[date, KeptDay]:
        """The kept days among these (a day missing, not intact or kept in another form is left out)."""
        ...

    def save(self, day: date, aggregate: Aggregate) -> None: ...



def summary(source: ReportSource, first: date, last: date, *, store: AggregateStore | None = None,
            now: datetime | None = None, workers: int = 8, budget_seconds: float | None = None,
            monotonic: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The body of `GET /reports/summary`.

    Without `now` every day is read from the day indexes. With `now`, days after tomorrow
    are empty (nothing is made in the future), settled days come from `store` when kept
    there, and the others are read live in parallel (and kept in `store` when settled).
    Past `budget_seconds` no further day is started: the days done are kept and TryAgain
    is raised, so a retry continues instead of starting over.
    """
    span = days(first, last)
    kept: dict[date, KeptDay] = {}
    if now is not None:
        horizon = now.astimezone(UTC).date() + timedelta(days=1)  # tomorrow: clocks a little ahead
        span = [day for day in span if day <= horizon]
        settled = min(last, last_settled_day(now))
        if store is not None and first <= settled:
            kept = store.load(first, settled)
    missing = [day for day in span if day not in kept]
    _check_coupon_days(kept, {}, first, last)  # before any live work
    computed = _live(source, missing, store=store, now=now, workers=workers, budget_seconds=budget_seconds,
                     monotonic=monotonic)
    _check_coupon_days(kept, computed, first, last)
    total = Aggregate()
    for day in span:  # in day order: a coupon's campaign is the first one seen in the range
        if day in kept:
            total.merge_kept(kept[day])
        else:
            total.merge(computed[day])
    return total.summary(first, last)


def _check_coupon_days(kept: Mapping[date, KeptDay], computed: Mapping[date, Aggregate], first: date,
                       last: date) -> None:
    coupon_days = sum(int(day.head.get("coupon_count", 0)) for day in kept.values()) + \
        sum(len(aggregate.by_coupon) for aggregate in computed.values())
    if coupon_days > MAX_COUPON_DAYS:
        average = max(1, coupon_days // max(1, (last - first).days + 1))
        raise ValidationFailed(details=[{"field": "to", "message": (
            f"this range has {coupon_days:,} coupon-days (coupons redeemed per day, summed); one summary ranks "
            f"at most {MAX_COUPON_DAYS:,}: ask for at most {max(1, MAX_COUPON_DAYS // average)} days at a time "
            "(the daily files have every day)")}])


def _live(source: ReportSource, span: list[date], *, store: AggregateStore | None, now: datetime | None,
          workers: int, budget_seconds: float | None, monotonic: Callable[[], float]) -> dict[date, Aggregate]:
    if not span:
        return {}
    started = monotonic()

    def one(day: date) -> Aggregate | None:
        if budget_seconds is not None and monotonic() - started >= budget_seconds:
            return None
        aggregate = day_aggregate(source, day)
        if store is not None and now is not None and is_settled(day, now):
            _keep(store, day, aggregate)
        return aggregate

    if len(span) == 1:
        results = [one(span[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(span))) as pool:
            results = list(pool.map(one, span))
    done = {day: aggregate for day, aggregate in zip(span, results, strict=True) if aggregate is not None}
    if len(done) < len(span):
        raise TryAgain(f"The range is still being computed ({len(span) - len(done)} of {len(span)} days left); "
                       "the days done are kept, so asking again continues from there.", retry_after=1)
    return done


def _keep(store: AggregateStore, day: date, aggregate: Aggregate) -> None:
    try:
        store.save(day, aggregate)
    except Exception:  # keeping is an optimisation here: the answer is exact without it
        log.warning("could not keep the aggregate of %s", day.isoformat(), exc_info=True)
