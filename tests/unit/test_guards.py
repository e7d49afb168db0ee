"""The lockout policy (sliding-window counter), pure."""

from __future__ import annotations

from coupons.guards import Counts, Policy, Window, crosses, distinct_users
from hypothesis import given
from hypothesis import strategies as st

POLICY = Policy(per_user=10, per_ip=100, window=600)
T0 = 1_800_000_000  # a bucket boundary for window=600 (1_800_000_000 = 3_000_000 * 600)


def test_the_limit_th_failure_is_answered_and_the_next_request_is_locked() -> None:
    # Given 9 failures in this bucket, the user may still try
    assert not POLICY.verdict(Counts(9), Counts(9), T0 + 10).locked
    # When a 10th failure happens, it starts a lockout
    trips = POLICY.trips(Counts(9), Counts(9), T0 + 10)
    assert [(t.scope, t.count, t.limit) for t in trips] == [("user", 10, 10)]
    # Then the next request is locked, with a Retry-After that reaches into the next bucket
    verdict = POLICY.verdict(Counts(10), Counts(10), T0 + 10)
    assert verdict.locked and verdict.scope == "user"
    # (another failure fits once 10 * (1 - x) <= 9: a tenth into the next bucket, 600 - 10 + 60 seconds)
    assert verdict.retry_after == 650


def test_the_previous_bucket_weighs_less_as_time_passes() -> None:
    counts = Counts(current=0, previous=20)
    assert POLICY.estimate(counts, T0) == 20
    assert POLICY.estimate(counts, T0 + 300) == 10
    # locked until another failure fits, previous * (1 - x) <= 9, i.e. x >= 0.55: 330 s into the bucket
    assert POLICY.retry_after(counts, 10, T0 + 100) == 230
    assert POLICY.retry_after(counts, 10, T0 + 329) == 1
    assert POLICY.retry_after(counts, 10, T0 + 330) == 0


def test_ip_limit_and_the_longer_wait_wins() -> None:
    # 100 failures in this bucket: free once the next bucket has aged them to 99 (100 * (1 - x) <= 99: 6 s in)
    verdict = POLICY.verdict(Counts(0), Counts(100), T0 + 599)
    assert verdict.locked and verdict.scope == "ip" and verdict.retry_after == 7
    both = POLICY.verdict(Counts(10, 10), Counts(100), T0 + 1)
    assert both.retry_after == max(POLICY.retry_after(Counts(10, 10), 10, T0 + 1),
                                   POLICY.retry_after(Counts(100), 100, T0 + 1))


@given(st.integers(0, 50), st.integers(0, 50), st.integers(1, 30), st.integers(1, 900),
       st.floats(0, 0.999, allow_nan=False))
def test_retry_after_is_exact(current: int, previous: int, limit: int, window: int, fraction: float) -> None:
    # Given any counts at any moment of a bucket
    policy = Policy(per_user=limit, per_ip=limit, window=window)
    now = 1000 * window + fraction * window
    counts = Counts(current, previous)
    wait = policy.retry_after(counts, limit, now)

    def estimate_at(moment: float) -> float:
        # no new failures: the buckets roll over, counts age out
        shift = policy.bucket(moment) - policy.bucket(now)
        rolled = {0: counts, 1: Counts(0, current)}.get(shift, Counts(0, 0))
        return policy.estimate(rolled, moment)

    if policy.estimate(counts, now) <= limit - 1:
        assert wait == 0
        return
    # Then after the wait another failure fits (estimate + 1 <= limit), and a second earlier it did not
    assert wait >= 1
    assert estimate_at(now + wait) <= limit - 1 + 1e-9
    assert estimate_at(now + wait - 1) > limit - 1 - 1e-9 or wait == 1  # (float rounding at the edge)


@given(st.integers(1, 40), st.integers(0, 60), st.floats(0, 0.999, allow_nan=False))
def test_failures_one_by_one_trip_exactly_once(limit: int, failures: int, fraction: float) -> None:
    policy = Policy(per_user=limit, per_ip=10**6, window=600)
    now = T0 + fraction * 600
    current = 0
    trips = 0
    for _ in range(failures):
        if policy.verdict(Counts(current), Counts(0), now).locked:
            break  # a locked caller's requests are refused, not counted
        trips += len(policy.trips(Counts(current), Counts(0), now))
        current += 1
    assert current == min(failures, limit)
    assert trips == (1 if failures >= limit else 0)


def test_distinct_users_and_crossing() -> None:
    assert distinct_users({"a", "b"}, {"b", "c"}) == 3
    assert crosses(3, 2, 3) and not crosses(3, 3, 4) and not crosses(3, 1, 2)


@given(st.integers(0, 50), st.integers(1, 40), st.floats(0, 0.999, allow_nan=False))
def test_room_admits_exactly_while_one_more_failure_fits(previous: int, limit: int, fraction: float) -> None:
    # Given any previous bucket at any moment of the current one
    now = T0 + fraction * 600
    room = POLICY.room(previous, limit, now)
    # Then a failure is admitted (current < room) exactly when it fits under the limit, which is
    # exactly when the caller is not locked
    for current in range(room + 3):
        fits = POLICY.estimate(Counts(current, previous), now) + 1 <= limit + 1e-9
        assert (current < room) == fits == (POLICY.retry_after(Counts(current, previous), limit, now) == 0)
    # And the failures admitted never take the estimate past the limit
    assert POLICY.estimate(Counts(room, previous), now) <= limit + 1e-9 or room == 0


def test_a_stored_window_as_seen_from_its_bucket_and_later_ones() -> None:
    window = Window(bucket=7, current=4, previous=9)
    assert window.counts_at(7) == Counts(4, 9)
    assert window.counts_at(8) == Counts(0, 4)  # its bucket is now the previous one
    assert window.counts_at(9) == Counts(0, 0)  # aged out
    assert window.counts_at(6) == Counts(4, 9)  # a request whose clock is behind reads it as it is
