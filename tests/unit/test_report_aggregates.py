"""Issue 17, findings 2, 5 and 8a: per-day aggregates, a bounded `suspicious`, a daily report without /tmp.

- 2: `GET /reports/summary` re-read every raw redemption of every day of the range (18 Queries
  a day, 366 days). Past days now come from per-day aggregates written once the day is over;
  only the days that cannot be final yet are read live, and the answer is exactly the one a
  full re-read gives.
- 5: one day of a guessing campaign raises ~47,000 fraud flags; the API body carried them all
  (over Lambda's 6 MB response limit). It now carries the top `SUSPICIOUS_LIMIT` and a count;
  the daily files have every flag.
- 8a: the daily CSV spooled to /tmp (512 MB on Lambda) past 8 MB; it now streams to the sink.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import random
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from coupons import report_files, report_range, reports
from coupons.adapters.checkout_store import fraud_flag
from coupons.errors import TryAgain, ValidationFailed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TODAY = date(2026, 6, 30)
YEAR_START = TODAY - timedelta(days=364)


def at(day: date, hh: int, mm: int = 0, ss: int = 0) -> str:
    return f"{day.isoformat()}T{hh:02d}:{mm:02d}:{ss:02d}.000000Z"


def moment(day: date, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=UTC)


def reports_iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Source:
    """Redemptions as the checkout store leaves them; counts the raw reads of each day."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.failed: dict[date, int] = defaultdict(int)
        self.flags: dict[date, list[dict[str, Any]]] = defaultdict(list)
        self.raw_reads: Counter[date] = Counter()

    def redeem(self, rid: str, when: str, *, coupon: str = "c-1", amount: int = 100, currency: str = "USD",
               channel: str = "web", campaign: str | None = "spring") -> dict[str, Any]:
        item = {"redemption_id": rid, "coupon_id": coupon, "campaign_id": campaign, "user_id": "u-1",
                "order_id": f"o-{rid}", "channel": channel, "currency": currency, "discount_amount": amount,
                "status": "redeemed", "redeemed_at": when}
        self.items.append(item)
        return item

    def roll_back(self, item: dict[str, Any], when: str) -> None:
        item.update(status="rolled_back", rolled_back_at=when)

    def redemptions(self, day: date) -> Iterator[dict[str, Any]]:
        self.raw_reads[day] += 1
        return iter(sorted((i for i in self.items if i["redeemed_at"][:10] == day.isoformat()),
                           key=lambda i: (i["redeemed_at"], i["redemption_id"])))

    def rollbacks(self, day: date) -> Iterator[dict[str, Any]]:
        return iter(sorted((i for i in self.items if (i.get("rolled_back_at") or "")[:10] == day.isoformat()),
                           key=lambda i: (i["rolled_back_at"], i["redemption_id"])))

    def failed_attempts(self, day: date) -> int:
        return self.failed[day]

    def suspicious(self, day: date) -> Iterator[dict[str, Any]]:
        return iter(self.flags[day])


class Store:
    """Per-day aggregates kept the way a table keeps them: serialised, read back as new objects."""

    def __init__(self) -> None:
        self.days: dict[date, str] = {}
        self.saves: Counter[date] = Counter()

    def load(self, first: date, last: date) -> dict[date, reports.KeptDay]:
        return {day: reports.kept_day(json.loads(text)) for day, text in self.days.items() if first <= day <= last}

    def save(self, day: date, aggregate: reports.Aggregate) -> None:
        self.days[day] = json.dumps(aggregate.to_dict())
        self.saves[day] += 1


class Sink:
    """The reports bucket: whole objects, and streams that record the size of every write."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.writes: dict[str, list[int]] = defaultdict(list)

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        self.objects[key] = body

    @contextmanager
    def open_stream(self, key: str, content_type: str) -> Iterator[Any]:
        parts: list[bytes] = []
        sink = self

        class Stream:
            def write(self, data: bytes) -> None:
                parts.append(bytes(data))
                sink.writes[key].append(len(data))

        yield Stream()
        self.objects[key] = b"".join(parts)


def busy_year() -> Source:
    """A redemption or two every day of a year, rollbacks of older ones, failed guesses and flags."""
    rng = random.Random(17)
    source = Source()
    made: list[dict[str, Any]] = []
    for n in range((TODAY - YEAR_START).days + 1):
        day = YEAR_START + timedelta(days=n)
        for k in range(rng.randrange(1, 3)):
            made.append(source.redeem(f"r-{n}-{k}", at(day, rng.randrange(24), rng.randrange(60)),
                                      coupon=f"c-{rng.randrange(40)}", amount=rng.randrange(1, 5000),
                                      currency=rng.choice(("USD", "EUR")), channel=rng.choice(reports.CHANNELS),
                                      campaign=rng.choice((None, "spring", "autumn"))))
        if rng.random() < 0.3 and made:
            older = rng.choice(made)
            if "rolled_back_at" not in older and older["redeemed_at"][:10] <= day.isoformat():
                source.roll_back(older, at(day, 23, 59, 59))
        source.failed[day] = rng.randrange(5)
        if rng.random() < 0.2:
            source.flags[day].append(flag(day, f"u-{n}", count=rng.randrange(10, 40)))
    return source


def flag(day: date, subject: str, *, count: int = 11, kind: str = "lockout", scope: str = "user",
         hh: int = 12, bucket: int = 0) -> dict[str, Any]:
    item = fraud_flag(kind=kind, scope=scope, subject=subject, bucket=bucket, now=moment(day, hh),
                      count=count, limit=10, window=600)
    return {k: v for k, v in item.items() if k not in ("pk", "sk", "ttl", "entity")}


# --- finding 2: a year's summary from per-day aggregates ------------------------------------------


def test_a_365_day_range_reads_raw_redemptions_only_for_today_once_the_daily_job_has_run() -> None:
    # Given a year of redemptions (rollbacks of older ones made on later days) and the 01:00 job run every day
    source = busy_year()
    store = Store()
    for n in range(364):
        day = YEAR_START + timedelta(days=n)
        ran = report_files.daily_report(source, Sink(), day, store=store, now=moment(day + timedelta(days=1), 1))
        assert ran["aggregate_stored"] is True
    expected = report_range.summary(source, YEAR_START, TODAY)  # every day re-read: the old way

    # When finance asks for the whole year at noon today
    source.raw_reads.clear()
    body = report_range.summary(source, YEAR_START, TODAY, store=store, now=moment(TODAY, 12))

    # Then the answer is exactly the full re-read, and only today was read raw
    assert body == expected
    assert dict(source.raw_reads) == {TODAY: 1}
    assert set(store.saves) == {YEAR_START + timedelta(days=n) for n in range(364)}


def test_days_without_an_aggregate_are_computed_live_and_kept_once_they_are_over() -> None:
    # Given a year in which the daily job never ran (a new deployment, or a gap)
    source = busy_year()
    store = Store()
    expected = report_range.summary(source, YEAR_START, TODAY)
    expected_first = report_range.summary(source, YEAR_START, TODAY - timedelta(days=1))

    # When the year is asked for twice, a minute after midnight and ten minutes later
    first = report_range.summary(source, YEAR_START, TODAY - timedelta(days=1), store=store, now=moment(TODAY, 0, 1))
    kept_first = set(store.days)
    source.raw_reads.clear()
    second = report_range.summary(source, YEAR_START, TODAY, store=store, now=moment(TODAY, 0, 10))

    # Then both are exact; yesterday was not kept at 00:01 (a late write may still land) but was at 00:10
    assert first == expected_first
    assert second == expected
    assert TODAY - timedelta(days=1) not in kept_first and len(kept_first) == 363
    assert dict(source.raw_reads) == {TODAY - timedelta(days=1): 1, TODAY: 1}
    assert TODAY - timedelta(days=1) in store.days and TODAY not in store.days


def test_a_day_is_never_kept_before_it_is_over_and_settled() -> None:
    # Given a redemption made at 23:59:59 whose write lands after midnight (index propagation, clock skew)
    source = Source()
    day = TODAY - timedelta(days=1)
    source.redeem("r-1", at(day, 10))
    store = Store()

    # When the report is run early (today, and at 00:03), it is written but its aggregate is not kept
    assert report_files.daily_report(source, Sink(), TODAY, store=store, now=moment(TODAY, 9))["aggregate_stored"] is False
    early = report_files.daily_report(source, Sink(), day, store=store, now=moment(TODAY, 0, 3))
    assert early["aggregate_stored"] is False and store.days == {}
    source.redeem("r-late", at(day, 23, 59, 59))

    # Then the day's figures, once settled, include the late write
    assert report_range.is_settled(day, moment(TODAY, 0, 5)) and not report_range.is_settled(day, moment(TODAY, 0, 4))
    body = report_range.summary(source, day, day, store=store, now=moment(TODAY, 0, 6))
    assert body["redemptions"] == 2 and day in store.days
    assert report_range.summary(source, day, day, store=store, now=moment(TODAY, 1))["redemptions"] == 2


def test_days_after_tomorrow_are_not_read_at_all() -> None:
    source = Source()
    source.redeem("r-1", at(TODAY, 10))
    body = report_range.summary(source, TODAY, TODAY + timedelta(days=200), store=Store(), now=moment(TODAY, 12))
    assert body["redemptions"] == 1
    assert set(source.raw_reads) == {TODAY, TODAY + timedelta(days=1)}  # tomorrow: clocks a little ahead


def test_a_range_too_slow_to_compute_answers_503_and_the_retry_continues_where_it_stopped() -> None:
    # Given 60 past days without aggregates, each taking 1 s to read, and a 10 s budget
    source = busy_year()
    store = Store()
    clock = [0.0]
    reads = source.redemptions

    def slow(day: date) -> Iterator[dict[str, Any]]:
        clock[0] += 1.0
        return reads(day)

    source.redemptions = slow  # type: ignore[method-assign]
    first_day, last_day = TODAY - timedelta(days=60), TODAY - timedelta(days=1)
    expected = report_range.summary(source, first_day, last_day)
    clock[0] = 0.0

    # When it is asked for, it says 503 with a Retry-After, having kept what it computed
    def ask() -> dict[str, Any]:
        return report_range.summary(source, first_day, last_day, store=store, now=moment(TODAY, 12), workers=2,
                               budget_seconds=10, monotonic=lambda: clock[0])

    answers: list[dict[str, Any] | TryAgain] = []
    for _ in range(20):
        clock[0] = 0.0
        try:
            answers.append(ask())
            break
        except TryAgain as error:
            assert error.retry_after is not None and 1 <= error.retry_after <= 30
            answers.append(error)
    # Then each retry made progress, and the last answer is exact
    assert isinstance(answers[0], TryAgain) and isinstance(answers[-1], dict)
    assert 2 <= len(answers) <= 10
    assert answers[-1] == expected
    assert all(n == 1 for n in store.saves.values()) and len(store.saves) == 60


def test_a_range_with_more_coupon_days_than_one_answer_can_rank_is_refused_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a year of personal codes (every redemption a different coupon) kept day by day
    source = busy_year()
    for n, item in enumerate(source.items):
        item["coupon_id"] = f"personal-{n}"
    store = Store()
    for n in range(364):
        day = YEAR_START + timedelta(days=n)
        report_files.daily_report(source, Sink(), day, store=store, now=moment(day + timedelta(days=1), 1))
    monkeypatch.setattr(report_range, "MAX_COUPON_DAYS", 200)
    source.raw_reads.clear()

    # When the year is asked for, it is a 400 naming a range that fits, before any live read
    with pytest.raises(ValidationFailed) as refused:
        report_range.summary(source, YEAR_START, TODAY, store=store, now=moment(TODAY, 12))
    assert refused.value.details and refused.value.details[0]["field"] == "to"
    assert "ask for at most" in refused.value.details[0]["message"]
    assert not source.raw_reads

    # And a range within the limit is answered, exactly
    body = report_range.summary(source, TODAY - timedelta(days=60), TODAY, store=store, now=moment(TODAY, 12))
    assert body == report_range.summary(source, TODAY - timedelta(days=60), TODAY)


event = st.tuples(st.integers(0, 5), st.integers(0, 23), st.integers(1, 10**7), st.sampled_from(["USD", "EUR"]),
                  st.sampled_from(reports.CHANNELS), st.integers(0, 3), st.none() | st.integers(0, 5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event, max_size=30), stored=st.sets(st.integers(0, 5)), now_day=st.integers(0, 7),
       now_minute=st.integers(0, 1439), first=st.integers(0, 5), length=st.integers(0, 5),
       failed=st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_a_summary_from_aggregates_is_exactly_a_full_re_read(
        events: list[tuple[int, int, int, str, str, int, int | None]], stored: set[int], now_day: int,
        now_minute: int, first: int, length: int, failed: list[int]) -> None:
    # Given redemptions over six days, some rolled back on a later day (rollbacks count the day they are made)
    base = date(2026, 2, 26)  # across a month's end
    now = moment(base + timedelta(days=now_day)) + timedelta(minutes=now_minute)
    source = Source()
    # (nothing is made after `now`: the figures are for what has happened)
    for n, (d, hh, amount, currency, channel, coupon, back) in enumerate(events):
        when = at(base + timedelta(days=d), hh)
        if when > reports_iso(now):
            continue
        item = source.redeem(f"r-{n:03d}", when, amount=amount, currency=currency,
                             channel=channel, coupon=f"c-{coupon}", campaign=None if coupon == 0 else f"k-{coupon}")
        back_at = None if back is None or back < d else at(base + timedelta(days=back), 23 if back == d else hh)
        if back_at is not None and back_at <= reports_iso(now):
            source.roll_back(item, back_at)
    for d, count in enumerate(failed):
        if d <= now_day:
            source.failed[base + timedelta(days=d)] = count
            source.flags[base + timedelta(days=d)] = [flag(base + timedelta(days=d), f"s-{k}", count=10 + k)
                                                      for k in range(count)]
    store = Store()
    # And some days' reports run (at 01:00 the next day, or right after the day if that is earlier than now)
    for d in sorted(stored):
        day = base + timedelta(days=d)
        run_at = min(now, moment(day + timedelta(days=1), 1))
        report_files.daily_report(source, Sink(), day, store=store, now=run_at)
    start = base + timedelta(days=first)
    end = start + timedelta(days=length)

    # When the range is summarised with the aggregates, twice (the first answer may keep more days)
    once = report_range.summary(source, start, end, store=store, now=now)
    twice = report_range.summary(source, start, end, store=store, now=now)

    # Then both are exactly the full re-read, and no unfinished day was ever kept
    expected = report_range.summary(source, start, end)
    assert once == expected and twice == expected
    assert all(report_range.is_settled(day, now) for day in store.days)


# --- finding 5: suspicious is capped, counted, and complete in the daily files --------------------


def guessing_campaign(day: date, flags: int) -> Source:
    """30 proxy IPs guessing all day: lockouts for every user and IP that crosses a limit."""
    source = Source()
    for n in range(flags):
        subject, scope = (f"203.0.113.{n // 10 % 30}", "ip") if n % 10 == 0 else (f"guesser-{n}", "user")
        source.flags[day].append(flag(day, subject, scope=scope, count=11 + (n * 7919) % 500,
                                      hh=(n // 2000) % 24, bucket=n // 30))
    source.failed[day] = flags * 10
    return source


def test_a_guessing_campaign_s_47000_flags_do_not_make_the_summary_body_unbounded() -> None:
    # Given a modest guessing campaign (30 proxy IPs): about 47,000 fraud flags in a day
    day = TODAY - timedelta(days=1)
    source = guessing_campaign(day, 47_000)

    # When finance asks for that day
    body = report_range.summary(source, day, day)

    # Then the body carries the top flags by count and says how many there were, far below 6 MB
    size = len(json.dumps(body))
    assert size < 1_000_000, f"{size:,} bytes, {len(body['suspicious']):,} flags (Lambda answers at most 6 MB)"
    assert body["suspicious_count"] == 47_000 and body["suspicious_truncated"] is True
    assert len(body["suspicious"]) == reports.SUSPICIOUS_LIMIT
    counts = [entry["count"] for entry in body["suspicious"]]
    assert counts == sorted(counts, reverse=True)
    assert min(counts) >= sorted((f["count"] for f in source.flags[day]), reverse=True)[reports.SUSPICIOUS_LIMIT - 1]


def test_the_daily_files_have_every_flag_and_summary_json_the_capped_body() -> None:
    day = TODAY - timedelta(days=1)
    source = guessing_campaign(day, 47_000)
    sink = Sink()
    result = report_files.daily_report(source, sink, day)
    keys = report_files.report_keys(day)
    rows = list(csv.DictReader(io.StringIO(sink.objects[keys["suspicious"]].decode())))
    assert len(rows) == 47_000 == result["suspicious"]
    assert list(rows[0]) == list(report_files.SUSPICIOUS_COLUMNS)
    assert Counter(r["scope"] for r in rows) == Counter(user=42_300, ip=4_700)
    assert {r["ip"] for r in rows if r["scope"] == "ip"} == {f"203.0.113.{n}" for n in range(30)}
    summary = json.loads(sink.objects[keys["summary"]])
    assert summary == report_range.summary(source, day, day)
    assert summary["suspicious_count"] == 47_000 and len(summary["suspicious"]) == reports.SUSPICIOUS_LIMIT


def test_a_flag_s_text_cannot_become_a_spreadsheet_formula() -> None:
    day = TODAY - timedelta(days=1)
    source = Source()
    source.flags[day].append(flag(day, "=HYPERLINK(\"http://x\")"))
    sink = Sink()
    report_files.daily_report(source, sink, day)
    rows = list(csv.DictReader(io.StringIO(sink.objects[report_files.report_keys(day)["suspicious"]].decode())))
    assert rows[0]["user_id"] == "'=HYPERLINK(\"http://x\")"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(10, 14), st.integers(0, 23)), max_size=40),
       st.integers(1, 5))
def test_the_capped_list_of_a_range_is_the_top_of_all_its_flags(flags: list[tuple[int, int, int]],
                                                                  limit: int) -> None:
    base = date(2026, 3, 1)
    source = Source()
    for n, (d, count, hh) in enumerate(flags):
        source.flags[base + timedelta(days=d)].append(flag(base + timedelta(days=d), f"s-{n}", count=count, hh=hh))
    store = Store()
    original = reports.SUSPICIOUS_LIMIT
    reports.SUSPICIOUS_LIMIT = limit
    try:
        for d in range(0, 5, 2):  # some days from aggregates, the others live
            report_files.daily_report(source, Sink(), base + timedelta(days=d), store=store,
                                 now=moment(base + timedelta(days=d + 1), 1))
        body = report_range.summary(source, base, base + timedelta(days=4), store=store, now=moment(base, 0) +
                               timedelta(days=30))
    finally:
        reports.SUSPICIOUS_LIMIT = original
    everything = sorted((json.loads(json.dumps(f)) for fs in source.flags.values() for f in fs),
                        key=reports.suspicious_rank)
    assert body["suspicious"] == everything[:limit]
    assert body["suspicious_count"] == len(flags) and body["suspicious_truncated"] == (len(flags) > limit)


# --- finding 8a: the daily CSV streams to the sink, never to /tmp ---------------------------------


class BigDay:
    """One day of redemptions made on the fly (80,000 make a CSV of ~10 MB)."""

    def __init__(self, day: date, count: int) -> None:
        self.day, self.count = day, count

    def redemptions(self, day: date) -> Iterator[dict[str, Any]]:
        for n in range(self.count if day == self.day else 0):
            yield {"redemption_id": f"{n:08d}-0000-4000-8000-000000000000", "coupon_id": f"coupon-{n % 500:04d}",
                   "campaign_id": "spring", "user_id": f"user-{n}", "order_id": f"order-{n}", "channel": "web",
                   "currency": "USD", "discount_amount": 100 + n % 7, "status": "redeemed",
                   "redeemed_at": at(day, n * 24 // self.count, (n // 60) % 60, n % 60)}

    def rollbacks(self, day: date) -> Iterator[dict[str, Any]]:
        return iter(())

    def failed_attempts(self, day: date) -> int:
        return 0

    def suspicious(self, day: date) -> Iterator[dict[str, Any]]:
        return iter(())


def test_a_day_bigger_than_the_old_spool_is_written_with_tmp_full(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a day whose CSV is ~10 MB, and a /tmp with no space left (512 MB on Lambda: a big enough day)
    def no_space(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, no_space)
    day = TODAY - timedelta(days=1)
    sink = Sink()

    # When the daily report runs
    result = report_files.daily_report(BigDay(day, 80_000), sink, day)

    # Then the CSV went to the sink as a stream of bounded writes, and reconciles with summary.json
    data = sink.objects[report_files.report_keys(day)["csv"]]
    assert len(data) > 9_000_000 and result["rows"] == 80_000
    assert max(sink.writes[report_files.report_keys(day)["csv"]]) <= 1_000_000
    summary = json.loads(sink.objects[report_files.report_keys(day)["summary"]])
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert sum(int(r["discount_amount"]) for r in rows) == summary["discount_totals"]["USD"]
