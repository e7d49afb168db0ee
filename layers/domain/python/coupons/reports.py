"""Finance reports: the summary of a UTC date range, and the daily CSV + summary.json + chart.

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
  flags and lockouts raised in the range.

The CSV has one row per redemption and per rollback; a rollback row carries the
discount given back as a negative amount, so per currency the sum of the
`discount_amount` column is exactly `discount_totals`.
"""

from __future__ import annotations

import csv
import heapq
import html
import io
import json
import re
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Protocol

from .errors import ValidationFailed
from .events import jsonable

CHANNELS = ("web", "mobile", "pos")
BY_COUPON_LIMIT = 1000
MAX_RANGE_DAYS = 366
CSV_COLUMNS = ("at", "event", "redemption_id", "coupon_id", "campaign_id", "user_id", "order_id",
               "channel", "currency", "discount_amount", "order_subtotal", "total_after_discount")
SPOOL_BYTES = 8 * 1024 * 1024  # the CSV stays in memory up to this size, then spills to /tmp
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
# Minor-unit exponents that are not 2 (for display in the chart only; amounts stay integers).
_EXPONENTS = {**dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
                               "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
              **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3)}


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

    def suspicious(self, day: date) -> list[dict[str, Any]]: ...


class ReportSink(Protocol):
    def put_bytes(self, key: str, body: bytes, content_type: str) -> None: ...

    def put_file(self, key: str, body: IO[bytes], content_type: str) -> None: ...


# --- aggregation --------------------------------------------------------------------------------


@dataclass
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


@dataclass
class Aggregate:
    total: Totals = field(default_factory=Totals)
    by_channel: dict[str, Totals] = field(default_factory=dict)
    by_coupon: dict[str, Totals] = field(default_factory=dict)
    campaigns: dict[str, str | None] = field(default_factory=dict)
    hourly: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in range(24)])
    failed_attempts: int = 0
    suspicious: list[dict[str, Any]] = field(default_factory=list)

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
        self.suspicious.extend(other.suspicious)

    def summary(self, first: date, last: date) -> dict[str, Any]:
        channels = {name: Totals() for name in CHANNELS}
        channels.update(self.by_channel)
        ranked = sorted(self.by_coupon.items(), key=lambda kv: (-kv[1].redemptions, kv[0]))
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
            "suspicious": sorted((jsonable(s) for s in self.suspicious), key=_suspicious_order),
        }


def _channel_order(name: str) -> tuple[int, str]:
    return (CHANNELS.index(name) if name in CHANNELS else len(CHANNELS), name)


def _suspicious_order(entry: Any) -> tuple[str, str]:
    if isinstance(entry, Mapping):
        when = entry.get("at") or entry.get("detected_at") or entry.get("created_at") or ""
        return (str(when), json.dumps(entry, sort_keys=True, default=str))
    return ("", str(entry))


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


def day_aggregate(source: ReportSource, day: date, *, sink_rows: Any = None) -> Aggregate:
    aggregate = Aggregate()
    for row in rows(source, day):
        aggregate.add(row)
        if sink_rows is not None:
            sink_rows(row)
    aggregate.failed_attempts = source.failed_attempts(day)
    aggregate.suspicious = list(source.suspicious(day))
    return aggregate


def summary(source: ReportSource, first: date, last: date, *, workers: int = 8) -> dict[str, Any]:
    """The body of `GET /reports/summary` (days are read in parallel and merged)."""
    total = Aggregate()
    span = days(first, last)
    if len(span) == 1:
        total.merge(day_aggregate(source, span[0]))
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(span))) as pool:
            for partial in pool.map(lambda d: day_aggregate(source, d), span):
                total.merge(partial)
    return total.summary(first, last)


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


# --- the daily report ---------------------------------------------------------------------------


def report_keys(day: date) -> dict[str, str]:
    prefix = f"daily/{day.isoformat()}"
    return {"csv": f"{prefix}/redemptions.csv", "summary": f"{prefix}/summary.json",
            "chart": f"{prefix}/chart.html"}


def daily_report(source: ReportSource, sink: ReportSink, day: date) -> dict[str, Any]:
    """Write the day's CSV, summary.json and chart; the CSV streams through a spooled file."""
    keys = report_keys(day)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+b") as spool:
        text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        count = 0

        def write(row: Row) -> None:
            nonlocal count
            writer.writerow(row.cells())
            count += 1

        aggregate = day_aggregate(source, day, sink_rows=write)
        text.flush()
        text.detach()
        sink.put_file(keys["csv"], spool, "text/csv; charset=utf-8")
    body = aggregate.summary(day, day)
    sink.put_bytes(keys["summary"], json.dumps(body, indent=2).encode(), "application/json")
    sink.put_bytes(keys["chart"], chart_html(body, aggregate.hourly).encode(), "text/html; charset=utf-8")
    return {"date": day.isoformat(), "rows": count, "keys": keys,
            "redemptions": body["redemptions"], "rollbacks": body["rollbacks"],
            "discount_totals": body["discount_totals"]}


# --- the chart ----------------------------------------------------------------------------------


def money(amount: int, currency: str) -> str:
    exponent = _EXPONENTS.get(currency, 2)
    sign = "-" if amount < 0 else ""
    whole, part = divmod(abs(amount), 10**exponent) if exponent else (abs(amount), 0)
    text = f"{whole:,}" + (f".{part:0{exponent}d}" if exponent else "")
    return f"{sign}{text} {currency}"


def _bars_svg(hourly: list[list[int]]) -> str:
    width, height, left, bottom, top = 760, 260, 44, 28, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max([1] + [max(h) for h in hourly])
    slot = plot_w / 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="Redemptions and rollbacks per hour (UTC)">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" stroke="#888"/>',
             f'<text x="4" y="{top + 10}" font-size="11">{peak}</text>',
             f'<text x="4" y="{top + plot_h}" font-size="11">0</text>']
    for hour, (redeemed, rolled) in enumerate(hourly):
        x = left + hour * slot
        for offset, value, colour, label in ((2, redeemed, "#2b6cb0", "redeemed"),
                                             (slot / 2, rolled, "#c53030", "rolled back")):
            bar = plot_h * value / peak
            parts.append(f'<rect x="{x + offset:.1f}" y="{top + plot_h - bar:.1f}" width="{slot / 2 - 3:.1f}" '
                         f'height="{bar:.1f}" fill="{colour}"><title>{hour:02d}:00 {label}: {value}</title></rect>')
        if hour % 3 == 0:
            parts.append(f'<text x="{x + 2:.1f}" y="{height - 10}" font-size="11">{hour:02d}h</text>')
    parts.append("</svg>")
    return "".join(parts)


def chart_html(body: Mapping[str, Any], hourly: list[list[int]]) -> str:
    """A self-contained page (inline SVG and CSS, no script, nothing fetched) a person reads at a glance."""
    esc = html.escape
    day = esc(str(body["from"])) if body["from"] == body["to"] else f"{esc(body['from'])} to {esc(body['to'])}"
    totals = "".join(f"<li><b>{esc(money(v, c))}</b></li>" for c, v in body["discount_totals"].items()) or \
        "<li>none</li>"
    channel_rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{t['redemptions']}</td><td>{t['rollbacks']}</td>"
        f"<td>{esc(', '.join(money(v, c) for c, v in t['discount_totals'].items()) or '-')}</td></tr>"
        for name, t in body["by_channel"].items())
    coupon_rows = "".join(
        f"<tr><td><code>{esc(str(c['coupon_id']))}</code></td><td>{esc(str(c['campaign_id'] or ''))}</td>"
        f"<td>{c['redemptions']}</td><td>{c['rollbacks']}</td>"
        f"<td>{esc(', '.join(money(v, cur) for cur, v in c['discount_totals'].items()) or '-')}</td></tr>"
        for c in body["by_coupon"][:10])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Coupon redemptions {day} (UTC)</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1a202c}}
.cards{{display:flex;gap:16px;flex-wrap:wrap}}.card{{border:1px solid #cbd5e0;border-radius:6px;padding:10px 16px}}
.card b{{font-size:22px;display:block}}table{{border-collapse:collapse;margin-top:8px}}
td,th{{border-bottom:1px solid #e2e8f0;padding:4px 10px;text-align:left}}ul{{margin:4px 0;padding:0;list-style:none}}
.key span{{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}}
</style></head><body>
<h1>Coupon redemptions, {day} (UTC)</h1>
<div class="cards">
<div class="card">Redemptions<b>{body['redemptions']}</b></div>
<div class="card">Rollbacks<b>{body['rollbacks']}</b></div>
<div class="card">Failed attempts<b>{body['failed_attempts']}</b></div>
<div class="card">Suspicious<b>{len(body['suspicious'])}</b></div>
<div class="card">Discount given (net)<ul>{totals}</ul></div>
</div>
<h2>Per hour</h2>
<div class="key"><span style="background:#2b6cb0"></span>redeemed<span style="background:#c53030"></span>rolled back</div>
{_bars_svg(hourly)}
<h2>By channel</h2>
<table><tr><th>channel</th><th>redemptions</th><th>rollbacks</th><th>discount (net)</th></tr>{channel_rows}</table>
<h2>Top coupons</h2>
<table><tr><th>coupon</th><th>campaign</th><th>redemptions</th><th>rollbacks</th><th>discount (net)</th></tr>
{coupon_rows or '<tr><td colspan="5">no redemptions</td></tr>'}</table>
</body></html>
"""


def scheduled_day(event: Mapping[str, Any], now: datetime) -> date:
    """The day a report run is for: `date` (or `detail.date`) if given, else the day before the event's time."""
    detail = event.get("detail")
    asked = (detail.get("date") if isinstance(detail, Mapping) else None) or event.get("date")
    if asked:
        return parse_day(str(asked), "date")
    when = event.get("time")
    if isinstance(when, str):
        try:
            now = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationFailed(details=[{"field": "time", "message": "not a timestamp"}]) from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
    return previous_day(now)


def previous_day(moment: datetime) -> date:
    """The UTC day before this moment's UTC day (what the 01:00 UTC run reports on)."""
    return (moment.astimezone(UTC) - timedelta(days=1)).date()
