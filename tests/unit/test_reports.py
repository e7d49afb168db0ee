"""Finance report logic with an in-memory source and sink: totals, rows, CSV safety, the chart, dates."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import pytest
from coupons import report_chart, report_files, report_range, reports
from coupons.errors import ValidationFailed
from hypothesis import given, settings
from hypothesis import strategies as st

DAY = date(2026, 5, 1)
NEXT = date(2026, 5, 2)


class FakeSource:
    """Redemptions as the checkout store leaves them: a rollback keeps the item, adds rolled_back_at."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.failed: dict[date, int] = defaultdict(int)
        self.flags: dict[date, list[dict[str, Any]]] = defaultdict(list)

    def redeem(self, rid: str, at: str, *, coupon: str = "c-1", amount: int = 100, currency: str = "USD",
               channel: str = "web", campaign: str | None = "spring", user: str = "u-1",
               order: str | None = None) -> dict[str, Any]:
        item = {"redemption_id": rid, "coupon_id": coupon, "campaign_id": campaign, "user_id": user,
                "order_id": order or f"o-{rid}", "channel": channel, "currency": currency,
                "discount_amount": amount, "status": "redeemed", "redeemed_at": at}
        self.items.append(item)
        return item

    def roll_back(self, item: dict[str, Any], at: str) -> None:
        item.update(status="rolled_back", rolled_back_at=at)

    def redemptions(self, day: date) -> Iterator[dict[str, Any]]:
        return iter(sorted((i for i in self.items if i["redeemed_at"][:10] == day.isoformat()),
                           key=lambda i: (i["redeemed_at"], i["redemption_id"])))

    def rollbacks(self, day: date) -> Iterator[dict[str, Any]]:
        return iter(sorted((i for i in self.items if (i.get("rolled_back_at") or "")[:10] == day.isoformat()),
                           key=lambda i: (i["rolled_back_at"], i["redemption_id"])))

    def failed_attempts(self, day: date) -> int:
        return self.failed[day]

    def suspicious(self, day: date) -> list[dict[str, Any]]:
        return self.flags[day]


class FakeSink:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        self.objects[key] = (body, content_type)

    @contextmanager
    def open_stream(self, key: str, content_type: str) -> Iterator[io.BytesIO]:
        stream = io.BytesIO()
        yield stream
        self.objects[key] = (stream.getvalue(), content_type)


def at(day: date, hh: int, mm: int = 0) -> str:
    return f"{day.isoformat()}T{hh:02d}:{mm:02d}:00.000000Z"


@pytest.fixture
def busy_day() -> FakeSource:
    """Two currencies, three channels, rollbacks the same day and the next."""
    source = FakeSource()
    a = source.redeem("r-a", at(DAY, 9), amount=1000, channel="web")
    source.redeem("r-b", at(DAY, 9, 30), amount=250, channel="mobile", coupon="c-2", campaign=None)
    c = source.redeem("r-c", at(DAY, 10), amount=700, currency="EUR", channel="pos", coupon="c-3")
    source.redeem("r-d", at(DAY, 23, 59), amount=333, currency="EUR", channel="web")
    e = source.redeem("r-e", at(NEXT, 1), amount=50, channel="mobile")
    source.roll_back(a, at(DAY, 12))
    source.roll_back(c, at(NEXT, 8))
    source.roll_back(e, at(NEXT, 2))
    source.failed[DAY] = 7
    source.flags[DAY] = [{"kind": "lockout", "scope": "ip", "ip": "203.0.113.9", "count": 101, "at": at(DAY, 11)}]
    return source


def test_given_a_day_when_summarised_then_counts_and_net_totals_per_currency_channel_and_coupon(
        busy_day: FakeSource) -> None:
    body = report_range.summary(busy_day, DAY, DAY)
    assert (body["from"], body["to"]) == ("2026-05-01", "2026-05-01")
    assert (body["redemptions"], body["rollbacks"]) == (4, 1)
    assert body["discount_totals"] == {"EUR": 1033, "USD": 250}  # r-a given back the same day
    assert body["by_channel"] == {
        "web": {"redemptions": 2, "rollbacks": 1, "discount_totals": {"EUR": 333, "USD": 0}},
        "mobile": {"redemptions": 1, "rollbacks": 0, "discount_totals": {"USD": 250}},
        "pos": {"redemptions": 1, "rollbacks": 0, "discount_totals": {"EUR": 700}},
    }
    assert body["by_coupon"][0] == {"coupon_id": "c-1", "campaign_id": "spring", "redemptions": 2,
                                    "rollbacks": 1, "discount_totals": {"EUR": 333, "USD": 0}}
    assert [c["coupon_id"] for c in body["by_coupon"]] == ["c-1", "c-2", "c-3"]
    assert body["by_coupon"][1]["campaign_id"] is None
    assert body["failed_attempts"] == 7 and body["suspicious"][0]["kind"] == "lockout"


def test_a_rollback_counts_on_the_day_it_is_made(busy_day: FakeSource) -> None:
    body = report_range.summary(busy_day, NEXT, NEXT)
    assert (body["redemptions"], body["rollbacks"]) == (1, 2)
    assert body["discount_totals"] == {"EUR": -700, "USD": 0}
    both = report_range.summary(busy_day, DAY, NEXT)
    assert (both["redemptions"], both["rollbacks"]) == (5, 3)
    assert both["discount_totals"] == {"EUR": 333, "USD": 250}
    assert both["failed_attempts"] == 7 and len(both["suspicious"]) == 1


def test_a_range_is_the_sum_of_its_days(busy_day: FakeSource) -> None:
    one, two = report_range.summary(busy_day, DAY, DAY), report_range.summary(busy_day, NEXT, NEXT)
    both = report_range.summary(busy_day, DAY, NEXT)
    for currency in ("USD", "EUR"):
        assert both["discount_totals"][currency] == one["discount_totals"].get(currency, 0) + \
            two["discount_totals"].get(currency, 0)


def parse_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_the_daily_report_rows_reconcile_exactly_with_summary_json(busy_day: FakeSource) -> None:
    sink = FakeSink()
    result = report_files.daily_report(busy_day, sink, DAY)
    data, content_type = sink.objects["daily/2026-05-01/redemptions.csv"]
    assert content_type.startswith("text/csv")
    rows = parse_csv(data)
    assert list(rows[0]) == list(report_files.CSV_COLUMNS)
    assert [(r["event"], r["redemption_id"]) for r in rows] == [
        ("redeemed", "r-a"), ("redeemed", "r-b"), ("redeemed", "r-c"), ("rolled_back", "r-a"),
        ("redeemed", "r-d")]
    assert rows[3]["discount_amount"] == "-1000" and rows[3]["at"] == at(DAY, 12)
    summary = json.loads(sink.objects["daily/2026-05-01/summary.json"][0])
    assert summary == report_range.summary(busy_day, DAY, DAY)
    net: dict[str, int] = defaultdict(int)
    for row in rows:
        net[row["currency"]] += int(row["discount_amount"])
    assert dict(net) == summary["discount_totals"]
    assert sum(r["event"] == "redeemed" for r in rows) == summary["redemptions"]
    assert sum(r["event"] == "rolled_back" for r in rows) == summary["rollbacks"]
    assert result["rows"] == 5


def test_an_empty_day_still_writes_all_four_files() -> None:
    sink = FakeSink()
    report_files.daily_report(FakeSource(), sink, DAY)
    assert sorted(sink.objects) == ["daily/2026-05-01/chart.html", "daily/2026-05-01/redemptions.csv",
                                    "daily/2026-05-01/summary.json", "daily/2026-05-01/suspicious.csv"]
    assert sink.objects["daily/2026-05-01/redemptions.csv"][0].decode().splitlines() == [",".join(report_files.CSV_COLUMNS)]
    assert sink.objects["daily/2026-05-01/suspicious.csv"][0].decode().splitlines() == [
        ",".join(report_files.SUSPICIOUS_COLUMNS)]


@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\r=1"])
def test_a_cell_that_a_spreadsheet_would_evaluate_is_neutralised(value: str) -> None:
    assert reports.csv_cell(value) == "'" + value
    assert reports.csv_cell("order-7") == "order-7"


def test_user_supplied_values_cannot_become_formulas_but_amounts_stay_numbers() -> None:
    source = FakeSource()
    item = source.redeem("r-x", at(DAY, 8), order="=cmd|' /C calc'!A0", user="@evil", amount=500)
    source.roll_back(item, at(DAY, 9))
    sink = FakeSink()
    report_files.daily_report(source, sink, DAY)
    rows = parse_csv(sink.objects["daily/2026-05-01/redemptions.csv"][0])
    assert rows[0]["order_id"] == "'=cmd|' /C calc'!A0" and rows[0]["user_id"] == "'@evil"
    assert [r["discount_amount"] for r in rows] == ["500", "-500"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 23), st.integers(1, 10**9), st.sampled_from(["USD", "EUR", "JPY"]),
                          st.sampled_from(["web", "mobile", "pos"]), st.booleans()), max_size=40))
def test_totals_always_reconcile_with_the_csv(redemptions: list[tuple[int, int, str, str, bool]]) -> None:
    source = FakeSource()
    for n, (hour, amount, currency, channel, rolled) in enumerate(redemptions):
        item = source.redeem(f"r-{n:03d}", at(DAY, hour), amount=amount, currency=currency, channel=channel,
                             coupon=f"c-{n % 4}")
        if rolled:
            source.roll_back(item, at(DAY, 23, 30))
    sink = FakeSink()
    report_files.daily_report(source, sink, DAY)
    rows = parse_csv(sink.objects["daily/2026-05-01/redemptions.csv"][0])
    summary = json.loads(sink.objects["daily/2026-05-01/summary.json"][0])
    net: dict[str, int] = defaultdict(int)
    for row in rows:
        net[row["currency"]] += int(row["discount_amount"])
    assert dict(net) == summary["discount_totals"]
    for channel, totals in summary["by_channel"].items():
        mine = [r for r in rows if r["channel"] == channel]
        assert totals["redemptions"] == sum(r["event"] == "redeemed" for r in mine)
        assert sum(totals["discount_totals"].values()) == sum(int(r["discount_amount"]) for r in mine)
    assert sum(c["redemptions"] for c in summary["by_coupon"]) == summary["redemptions"]
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)


def test_by_coupon_is_capped_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reports, "BY_COUPON_LIMIT", 3)
    source = FakeSource()
    for n in range(5):
        for k in range(n + 1):
            source.redeem(f"r-{n}-{k}", at(DAY, 10), coupon=f"c-{n}")
    body = report_range.summary(source, DAY, DAY)
    assert [c["coupon_id"] for c in body["by_coupon"]] == ["c-4", "c-3", "c-2"]
    assert body["by_coupon_truncated"] is True


def test_the_chart_is_a_self_contained_page_with_the_figures_and_escaped_ids(busy_day: FakeSource) -> None:
    busy_day.redeem("r-z", at(DAY, 15), coupon="<script>alert(1)</script>", campaign="x")
    sink = FakeSink()
    report_files.daily_report(busy_day, sink, DAY)
    page, content_type = sink.objects["daily/2026-05-01/chart.html"]
    text = page.decode()
    assert content_type.startswith("text/html")
    assert "<svg" in text and "<script" not in text
    assert "&lt;script&gt;" in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "10.33 EUR" in text and "3.50 USD" in text  # net totals, in major units for people


@pytest.mark.parametrize(("amount", "currency", "shown"), [(123456, "USD", "1,234.56 USD"), (-5, "EUR", "-0.05 EUR"),
                                                           (1500, "JPY", "1,500 JPY"), (1234, "KWD", "1.234 KWD")])
def test_money_is_shown_in_the_currency_s_minor_units(amount: int, currency: str, shown: str) -> None:
    assert report_chart.money(amount, currency) == shown


# --- dates --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end", "field"), [
    (None, "2026-05-01", "from"), ("2026-05-01", None, "to"), ("2026-5-1", "2026-05-01", "from"),
    ("2026-02-30", "2026-03-01", "from"), ("2026-05-02", "2026-05-01", "to"), ("2025-01-01", "2026-01-02", "to"),
    ("01/05/2026", "2026-05-01", "from"), ("２０２６-05-01", "2026-05-01", "from"),
])
def test_a_bad_range_is_a_validation_error_naming_the_field(start: str | None, end: str | None, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        reports.parse_range(start, end)
    assert caught.value.details and caught.value.details[0]["field"] == field


def test_a_full_leap_year_is_the_longest_range() -> None:
    assert reports.parse_range("2028-01-01", "2028-12-31") == (date(2028, 1, 1), date(2028, 12, 31))
    assert reports.parse_range("2026-05-01", "2026-05-01") == (DAY, DAY)


def test_the_scheduled_run_reports_the_previous_utc_day_unless_a_date_is_given() -> None:
    now = datetime(2026, 5, 2, 1, 0, 5, tzinfo=UTC)
    assert report_files.scheduled_day({"time": "2026-05-02T01:00:00Z"}, now) == DAY
    assert report_files.scheduled_day({}, now) == DAY
    assert report_files.scheduled_day({"detail": {"date": "2026-04-01"}}, now) == date(2026, 4, 1)
    assert report_files.scheduled_day({"date": "2026-04-02"}, now) == date(2026, 4, 2)
    with pytest.raises(ValidationFailed):
        report_files.scheduled_day({"detail": {"date": "yesterday"}}, now)


def test_coupon_usage_is_built_from_the_counters_and_the_last_redemption() -> None:
    capped = {"max_uses": 8, "redeemed_count": 2, "remaining_uses": 6}
    assert reports.coupon_usage(capped, at(DAY, 9)) == {
        "redeemed_count": 2, "remaining_uses": 6, "utilisation": 0.25, "last_redeemed_at": at(DAY, 9)}
    unlimited = {"max_uses": None, "redeemed_count": 0, "remaining_uses": None}
    assert reports.coupon_usage(unlimited, None)["utilisation"] is None
