"""The daily finance report's files, in the reports bucket under `daily/YYYY-MM-DD/`.

- `redemptions.csv`: one row per redemption and per rollback made that day (see `reports`);
- `suspicious.csv`: every fraud flag and lockout raised that day (the API body keeps the top ones);
- `summary.json`: exactly the body `GET /reports/summary` answers for that day;
- `chart.html`: the day at a glance.

The CSVs stream to the sink as rows are made: memory stays constant and nothing is written to
local disk (Lambda's /tmp is 512 MB by default, less than a busy day's CSV).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from .errors import ValidationFailed
from .report_chart import chart_html
from .report_range import AggregateStore, is_settled
from .reports import ReportSource, csv_cell, day_aggregate, parse_day

CSV_COLUMNS = ("at", "event", "redemption_id", "coupon_id", "campaign_id", "user_id", "order_id",
               "channel", "currency", "discount_amount", "order_subtotal", "total_after_discount")
# client_id (issue 12): the server client locked out, or whose calls locked out a customer or an address
SUSPICIOUS_COLUMNS = ("at", "kind", "scope", "user_id", "ip", "count", "limit", "window_seconds", "client_id")
WRITE_CHARS = 128 * 1024  # CSV text handed to the sink per write (the S3 sink makes the 8 MB parts)


class ByteStream(Protocol):
    def write(self, data: bytes) -> Any: ...


class ReportSink(Protocol):
    def put_bytes(self, key: str, body: bytes, content_type: str) -> None: ...

    def open_stream(self, key: str, content_type: str) -> AbstractContextManager[ByteStream]:
        """A new object written as it comes (constant memory); it only appears if the block ends well."""
        ...


def suspicious_cells(entry: Mapping[str, Any]) -> list[str]:
    def text(name: str) -> str:
        value = entry.get(name)
        return "" if value is None else csv_cell(str(value))

    return [text(name) for name in SUSPICIOUS_COLUMNS]



def report_keys(day: date) -> dict[str, str]:
    prefix = f"daily/{day.isoformat()}"
    return {"csv": f"{prefix}/redemptions.csv", "summary": f"{prefix}/summary.json",
            "chart": f"{prefix}/chart.html", "suspicious": f"{prefix}/suspicious.csv"}


class _CsvStream:
    """CSV rows to a byte stream in modest writes: memory stays constant whatever the day's size."""

    def __init__(self, out: ByteStream, header: Iterable[str]) -> None:
        self._out = out
        self._text = io.StringIO()
        self._writer = csv.writer(self._text, lineterminator="\r\n")
        self.count = -1
        self.row(header)

    def row(self, cells: Iterable[str]) -> None:
        self._writer.writerow(cells)
        self.count += 1
        if self._text.tell() >= WRITE_CHARS:
            self.flush()

    def flush(self) -> None:
        text = self._text.getvalue()
        if text:
            self._out.write(text.encode("utf-8"))
            self._text.seek(0)
            self._text.truncate()


def daily_report(source: ReportSource, sink: ReportSink, day: date, *, store: AggregateStore | None = None,
                 now: datetime | None = None) -> dict[str, Any]:
    """Write the day's CSV, suspicious.csv, summary.json and chart; keep its aggregate once it is settled.

    The CSVs stream to the sink as they are made (no local file). summary.json is the
    body `GET /reports/summary` answers for this day.
    """
    keys = report_keys(day)
    csv_type = "text/csv; charset=utf-8"
    with sink.open_stream(keys["csv"], csv_type) as rows_out, \
            sink.open_stream(keys["suspicious"], csv_type) as flags_out:
        rows_csv, flags_csv = _CsvStream(rows_out, CSV_COLUMNS), _CsvStream(flags_out, SUSPICIOUS_COLUMNS)
        aggregate = day_aggregate(source, day, sink_rows=lambda row: rows_csv.row(row.cells()),
                                  sink_flags=lambda entry: flags_csv.row(suspicious_cells(entry)))
        rows_csv.flush()
        flags_csv.flush()
    body = aggregate.summary(day, day)
    sink.put_bytes(keys["summary"], json.dumps(body, indent=2).encode(), "application/json")
    sink.put_bytes(keys["chart"], chart_html(body, aggregate.hourly).encode(), "text/html; charset=utf-8")
    stored = store is not None and now is not None and is_settled(day, now)
    if stored:
        assert store is not None
        store.save(day, aggregate)
    return {"date": day.isoformat(), "rows": rows_csv.count, "suspicious": flags_csv.count, "keys": keys,
            "redemptions": body["redemptions"], "rollbacks": body["rollbacks"],
            "discount_totals": body["discount_totals"], "aggregate_stored": stored}


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
