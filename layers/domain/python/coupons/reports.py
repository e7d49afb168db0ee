"""Finance reports: what the figures mean, and a day's aggregate.

The summary of a range is `report_range.summary`; the daily files (CSV, suspicious.csv,
summary.json, chart) are written by `report_files`.

Definitions (one place, used by `GET /reports/summary`, summary.json and the CSV alike):

- `redemptions` / `rollbacks`: how many were *made* in the range (a redemption made
  on Monday and rolled back on Tuesday counts as a redemption on Monday and a
  rollback on Tuesday);
- `discount_totals`: per currency, the discount of the redemptions made in the
  range minus the discount given back by the rollbacks made in the range;
- `by_channel`: `{channel: {"redemptions", "rollbacks", "discount_totals"}}`, always
  with `web`, `mobile` and `pos`;
- `by_coupon`: `[{"coupon_id", "campaign_id", "redemptions", "rollbacks",
  "discount_totals"}]`, most redemptions first (ties: coupon id), at most
  `BY_COUPON_LIMIT` entries (`by_coupon_truncated` says when there were more);
- `failed_attempts`: failed guesses counted in the range; `suspicious`: the fraud
  flags and lockouts raised in the range, the `SUSPICIOUS_LIMIT` highest by
  `count` (`suspicious_rank`), with `suspicious_count` (all of them) and
  `suspicious_truncated`; the daily files list every flag (`suspicious.csv`).

The CSV has one row per redemption and per rollback; a rollback row carries the
discount given back as a negative amount, so per currency the sum of the
`discount_amount` column is exactly `discount_totals`.

Because everything counts on the day it was *made*, a day's figures never change once
the day is over: a rollback today of last month's redemption counts today. So each past
day is kept as an aggregate (written by the daily job, or by the summary the first time
it computes that day) and a range merges them; only days that may still receive writes
(today, tomorrow for clocks a little ahead, and yesterday until `SETTLE_AFTER` past
midnight) are read from the day indexes. See `report_range`.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

from .errors import ValidationFailed
from .events import jsonable

CHANNELS = ("web", "mobile", "pos")
BY_COUPON_LIMIT = 1000
SUSPICIOUS_LIMIT = 100  # flags in an API body; a day of a guessing campaign raises tens of thousands
MAX_RANGE_DAYS = 366
AGGREGATE_VERSION = 1
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


# --- dates --------------------------------------------------------------------------------------


def parse_day(text: str | None, field_name: str) -> date:
    if not text or not _DAY.fullmatch(text):
        raise ValidationFailed(details=[{"field": field_name, "message": "must be a date YYYY-MM-DD"}])
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(details=[{"field": field_name, "message": "not a calendar date"}]) from None


def parse_range(start: str | None, end: str | None) -> tuple[date, date]:
    first, last = parse_day(start, "from"), parse_day(end, "to")
    if last < first:
        raise ValidationFailed(details=[{"field": "to", "message": "must not be before from"}])
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise ValidationFailed(details=[{"field": "to", "message": f"the range is at most {MAX_RANGE_DAYS} days"}])
    return first, last


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- ports --------------------------------------------------------------------------------------


class ReportSource(Protocol):
    def redemptions(self, day: date) -> Iterator[dict[str, Any]]: ...

    def rollbacks(self, day: date) -> Iterator[dict[str, Any]]: ...

    def failed_attempts(self, day: date) -> int: ...

    def suspicious(self, day: date) -> Iterable[dict[str, Any]]: ...


@dataclass(frozen=True)
class KeptDay:
    """A kept day as a store hands it over: its small head now, its coupons decoded when merged.

    `head` is `Aggregate.to_dict()` without "coupons" (checked by `check_kept`); `coupons`
    yields the coupon entries a slice at a time, so a year is merged one day at a time.
    """

    head: Mapping[str, Any]
    coupons: Callable[[], Iterable[list[Any]]]


def check_kept(head: Mapping[str, Any]) -> None:
    """ValueError unless this head was kept in this version's form, with at least today's suspicious cap."""
    if head.get("v") != AGGREGATE_VERSION:
        raise ValueError("an aggregate of another version")
    if len(head["suspicious"]) < min(int(head["suspicious_count"]), SUSPICIOUS_LIMIT):
        raise ValueError("kept with a smaller suspicious cap")


def kept_day(data: Mapping[str, Any]) -> KeptDay:
    """A whole `Aggregate.to_dict()` as a KeptDay (checked)."""
    head = {k: v for k, v in data.items() if k != "coupons"}
    check_kept(head)
    return KeptDay(head, lambda: data["coupons"])


# --- aggregation --------------------------------------------------------------------------------


@dataclass(slots=True)  # slots: a year's range may hold a million coupons' totals
class Totals:
    redemptions: int = 0
    rollbacks: int = 0
    discount: dict[str, int] = field(default_factory=dict)

    def add(self, currency: str, amount: int, *, rollback: bool) -> None:
        if rollback:
            self.rollbacks += 1
            self.discount[currency] = self.discount.get(currency, 0) - amount
        else:
            self.redemptions += 1
            self.discount[currency] = self.discount.get(currency, 0) + amount

    def merge(self, other: Totals) -> None:
        self.redemptions += other.redemptions
        self.rollbacks += other.rollbacks
        for currency, amount in other.discount.items():
            self.discount[currency] = self.discount.get(currency, 0) + amount

    def body(self) -> dict[str, Any]:
        return {"redemptions": self.redemptions, "rollbacks": self.rollbacks,
                "discount_totals": dict(sorted(self.discount.items()))}

    def packed(self) -> list[Any]:
        return [self.redemptions, self.rollbacks, dict(sorted(self.discount.items()))]

    @classmethod
    def unpacked(cls, value: list[Any]) -> Totals:
        return cls(int(value[0]), int(value[1]), {str(c): int(a) for c, a in value[2].items()})


def suspicious_rank(entry: Any) -> tuple[int, str, str]:
    """The order of `suspicious`: highest count first, then earliest, then the whole entry (a total order)."""
    if isinstance(entry, Mapping):
        count = entry.get("count")
        when = entry.get("at") or entry.get("detected_at") or entry.get("created_at") or ""
        return (-count if isinstance(count, int) else 0, str(when), json.dumps(entry, sort_keys=True, default=str))
    return (0, "", str(entry))


@dataclass
class Aggregate:
    total: Totals = field(default_factory=Totals)
    by_channel: dict[str, Totals] = field(default_factory=dict)
    by_coupon: dict[str, Totals] = field(default_factory=dict)
    campaigns: dict[str, str | None] = field(default_factory=dict)
    hourly: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in range(24)])
    failed_attempts: int = 0
    suspicious: list[Any] = field(default_factory=list)  # the top SUSPICIOUS_LIMIT (kept pruned)
    suspicious_count: int = 0

    def add(self, row: Row) -> None:
        rollback = row.event == "rolled_back"
        self.total.add(row.currency, abs(row.discount_amount), rollback=rollback)
        self.by_channel.setdefault(row.channel or "unknown", Totals()).add(
            row.currency, abs(row.discount_amount), rollback=rollback)
        self.by_coupon.setdefault(row.coupon_id, Totals()).add(
            row.currency, abs(row.discount_amount), rollback=rollback)
        self.campaigns.setdefault(row.coupon_id, row.campaign_id or None)
        hour = int(row.at[11:13]) if len(row.at) >= 13 and row.at[11:13].isdigit() else 0
        self.hourly[hour % 24][1 if rollback else 0] += 1

    def flag(self, entry: Mapping[str, Any]) -> None:
        self.suspicious_count += 1
        self.suspicious.append(jsonable(entry))
        if len(self.suspicious) > 2 * SUSPICIOUS_LIMIT:
            self._prune()

    def _prune(self) -> None:
        # The top N of a union is within the union of the top Ns: exact for days and ranges alike.
        self.suspicious = heapq.nsmallest(SUSPICIOUS_LIMIT, self.suspicious, key=suspicious_rank)

    def merge(self, other: Aggregate) -> None:
        self.total.merge(other.total)
        for name, totals in other.by_channel.items():
            self.by_channel.setdefault(name, Totals()).merge(totals)
        for coupon_id, totals in other.by_coupon.items():
            self.by_coupon.setdefault(coupon_id, Totals()).merge(totals)
            self.campaigns.setdefault(coupon_id, other.campaigns.get(coupon_id))
        for hour in range(24):
            self.hourly[hour][0] += other.hourly[hour][0]
            self.hourly[hour][1] += other.hourly[hour][1]
        self.failed_attempts += other.failed_attempts
        self.suspicious_count += other.suspicious_count
        self.suspicious.extend(other.suspicious)
        if len(self.suspicious) > 2 * SUSPICIOUS_LIMIT:
            self._prune()

    def summary(self, first: date, last: date) -> dict[str, Any]:
        channels = {name: Totals() for name in CHANNELS}
        channels.update(self.by_channel)
        ranked = heapq.nsmallest(BY_COUPON_LIMIT + 1, self.by_coupon.items(), key=lambda kv: (-kv[1].redemptions,
                                                                                                kv[0]))
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "redemptions": self.total.redemptions,
            "rollbacks": self.total.rollbacks,
            "discount_totals": dict(sorted(self.total.discount.items())),
            "by_channel": {name: channels[name].body() for name in sorted(channels, key=_channel_order)},
            "by_coupon": [{"coupon_id": coupon_id, "campaign_id": self.campaigns.get(coupon_id), **totals.body()}
                          for coupon_id, totals in ranked[:BY_COUPON_LIMIT]],
            "by_coupon_truncated": len(ranked) > BY_COUPON_LIMIT,
            "failed_attempts": self.failed_attempts,
            "suspicious": heapq.nsmallest(SUSPICIOUS_LIMIT, self.suspicious, key=suspicious_rank),
            "suspicious_count": self.suspicious_count,
            "suspicious_truncated": self.suspicious_count > SUSPICIOUS_LIMIT,
        }

    # A day as it is kept: everything a range needs, every coupon (by_coupon is ranked over the range).

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": AGGREGATE_VERSION,
            "total": self.total.packed(),
            "by_channel": {name: totals.packed() for name, totals in sorted(self.by_channel.items())},
            "coupons": [[coupon_id, self.campaigns.get(coupon_id), *totals.packed()]
                        for coupon_id, totals in sorted(self.by_coupon.items())],
            "failed_attempts": self.failed_attempts,
            "suspicious": sorted(self.suspicious, key=suspicious_rank)[:SUSPICIOUS_LIMIT],
            "suspicious_count": self.suspicious_count,
            "suspicious_limit": SUSPICIOUS_LIMIT,
            "coupon_count": len(self.by_coupon),
        }

    def merge_kept(self, day: KeptDay) -> None:
        """`merge` of a kept day, straight from its stored form (no per-day objects: a year stays cheap)."""
        head = day.head
        self.total.merge(Totals.unpacked(head["total"]))
        for name, packed in head["by_channel"].items():
            self.by_channel.setdefault(str(name), Totals()).merge(Totals.unpacked(packed))
        by_coupon, campaigns = self.by_coupon, self.campaigns
        for coupon_id, campaign_id, redemptions, rollbacks, discount in day.coupons():
            totals = by_coupon.get(coupon_id)
            if totals is None:
                by_coupon[coupon_id] = Totals(redemptions, rollbacks, dict(discount))
                campaigns.setdefault(coupon_id, campaign_id)
                continue
            totals.redemptions += redemptions
            totals.rollbacks += rollbacks
            for currency, amount in discount.items():
                totals.discount[currency] = totals.discount.get(currency, 0) + amount
        self.failed_attempts += int(head["failed_attempts"])
        self.suspicious_count += int(head["suspicious_count"])
        self.suspicious.extend(head["suspicious"])
        if len(self.suspicious) > 2 * SUSPICIOUS_LIMIT:
            self._prune()

    @classmethod
    def from_kept(cls, day: KeptDay) -> Aggregate:
        aggregate = cls()
        aggregate.merge_kept(day)
        return aggregate


def _channel_order(name: str) -> tuple[int, str]:
    return (CHANNELS.index(name) if name in CHANNELS else len(CHANNELS), name)


# --- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    at: str
    event: str  # redeemed | rolled_back
    redemption_id: str
    coupon_id: str
    campaign_id: str
    user_id: str
    order_id: str
    channel: str
    currency: str
    discount_amount: int  # negative on a rollback row
    order_subtotal: int = 0  # the whole order's, on a rollback row too (issue 12)
    total_after_discount: int = 0

    def cells(self) -> list[str]:
        return [csv_cell(self.at), self.event, csv_cell(self.redemption_id), csv_cell(self.coupon_id),
                csv_cell(self.campaign_id), csv_cell(self.user_id), csv_cell(self.order_id),
                csv_cell(self.channel), csv_cell(self.currency), str(self.discount_amount),
                str(self.order_subtotal), str(self.total_after_discount)]


def row_of(item: Mapping[str, Any], event: str) -> Row:
    amount = int(item.get("discount_amount") or 0)
    at = item.get("rolled_back_at") if event == "rolled_back" else item.get("redeemed_at")
    return Row(
        at=str(at or ""), event=event, redemption_id=str(item.get("redemption_id", "")),
        coupon_id=str(item.get("coupon_id", "")), campaign_id=str(item.get("campaign_id") or ""),
        user_id=str(item.get("user_id") or ""), order_id=str(item.get("order_id") or ""),
        channel=str(item.get("channel") or ""), currency=str(item.get("currency") or ""),
        discount_amount=-amount if event == "rolled_back" else amount,
        # what the order was, not a movement of money: the same on its rollback row
        order_subtotal=int(item.get("order_subtotal") or 0),
        total_after_discount=int(item["total_after_discount"]) if item.get("total_after_discount") is not None
        else int(item.get("order_subtotal") or 0) - amount,
    )


def rows(source: ReportSource, day: date) -> Iterator[Row]:
    """Every redemption and rollback made on this day, in time order."""
    redeemed = (row_of(item, "redeemed") for item in source.redemptions(day))
    rolled = (row_of(item, "rolled_back") for item in source.rollbacks(day))
    return heapq.merge(redeemed, rolled, key=lambda r: (r.at, r.event == "rolled_back", r.redemption_id))


def csv_cell(value: str) -> str:
    """A text cell no spreadsheet will run as a formula (OWASP CSV injection)."""
    if value and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def day_aggregate(source: ReportSource, day: date, *, sink_rows: Callable[[Row], Any] | None = None,
                  sink_flags: Callable[[Mapping[str, Any]], Any] | None = None) -> Aggregate:
    aggregate = Aggregate()
    for row in rows(source, day):
        aggregate.add(row)
        if sink_rows is not None:
            sink_rows(row)
    aggregate.failed_attempts = source.failed_attempts(day)
    for entry in source.suspicious(day):
        aggregate.flag(entry)
        if sink_flags is not None:
            sink_flags(entry)
    return aggregate


# --- usage statistics of one coupon -------------------------------------------------------------


def coupon_usage(view: Mapping[str, Any], last_redeemed_at: str | None) -> dict[str, Any]:
    """What `GET /coupons/{id}` adds: counters already on the coupon plus one indexed read.

    Totals that need every redemption (discount given, rollbacks) are not computed per
    GET (that would read O(redemptions) items); they are in `GET /reports/summary`'s
    `by_coupon` and in `GET /coupons/{id}/redemptions`.
    """
    max_uses = view.get("max_uses")
    redeemed = int(view.get("redeemed_count") or 0)
    return {
        "redeemed_count": redeemed,
        "remaining_uses": view.get("remaining_uses"),
        "utilisation": None if not max_uses else round(redeemed / int(max_uses), 4),
        "last_redeemed_at": last_redeemed_at,
    }
