"""Bulk jobs that end (issue 17): the pure parts. How an output is cut into multipart groups, which
failures are transient and how long they back off. No AWS."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from coupons.bulk_assembly import plan_groups
from coupons.bulk_retry import MAX_TRANSIENT_RETRIES, is_transient, process_record, transient_delay
from coupons.errors import TryAgain, ValidationFailed
from hypothesis import given, settings
from hypothesis import strategies as st

sizes = st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=200)


class TestPlanGroups:
    @settings(max_examples=300, deadline=None)
    @given(sizes, st.integers(min_value=1, max_value=5000), st.integers(min_value=0, max_value=100))
    def test_every_key_once_in_order_and_every_group_but_the_last_big_enough(self, object_sizes: list[int],
                                                                              part: int, head: int) -> None:
        listing = [(f"work/j/R{i:05d}.csv", size) for i, size in enumerate(object_sizes)]
        groups = plan_groups(listing, part, head)
        keys = [key for key, _ in listing]
        size_of = dict(listing)
        covered: list[str] = []
        for number, (after, last) in enumerate(groups):
            members = [k for k in keys if after < k <= last]  # what a worker lists: after < key <= last
            assert members, "no empty group"
            assert after == (covered[-1] if covered else "")
            covered += members
            if number < len(groups) - 1:  # S3: every part but the last at least the part size
                assert sum(size_of[k] for k in members) + (head if number == 0 else 0) >= part
        assert covered == keys

    def test_a_5_gb_result_of_50_kb_parts_is_about_640_groups_of_8_mib(self) -> None:
        listing = [(f"work/j/R{i // 1000:05d}-{i % 1000:07d}.csv", 50_000) for i in range(100_000)]
        groups = plan_groups(listing, 8 * 1024 * 1024)
        assert 590 <= len(groups) <= 600 and len(groups) <= 10_000  # S3 takes 10,000 parts


class TestTransient:
    @pytest.mark.parametrize("error", [
        TryAgain(retry_after=1),
        ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "TransactWriteItems"),
        ClientError({"Error": {"Code": "ThrottlingException"}}, "PutEvents"),
        ClientError({"Error": {"Code": "SlowDown"}}, "PutObject"),
        EndpointConnectionError(endpoint_url="https://dynamodb"),
    ])
    def test_throttling_and_passing_failures_are_transient(self, error: Exception) -> None:
        assert is_transient(error)

    @pytest.mark.parametrize("error", [
        RuntimeError("a bug"), KeyError("job_id"), ValidationFailed(),
        ClientError({"Error": {"Code": "AccessDenied"}}, "GetObject"),
        ClientError({"Error": {"Code": "ValidationException"}}, "TransactWriteItems"),
    ])
    def test_anything_else_is_not(self, error: Exception) -> None:
        assert not is_transient(error)

    def test_a_translated_error_keeps_its_cause(self) -> None:
        try:
            try:
                raise ClientError({"Error": {"Code": "RequestLimitExceeded"}}, "Query")
            except ClientError as inner:
                raise ValueError("wrapped") from inner
        except ValueError as outer:
            assert is_transient(outer)

    @given(st.integers(min_value=0, max_value=100), st.floats(min_value=0, max_value=1))
    def test_delays_double_from_30_seconds_to_15_minutes_with_half_of_each_random(self, retry: int,
                                                                                   rand: float) -> None:
        base = min(900, 30 * 2 ** min(retry, 10))
        assert base // 2 <= transient_delay(retry, lambda: rand) <= base

    def test_five_back_offs_last_three_times_the_old_two_and_a_half_minutes(self) -> None:
        assert sum(transient_delay(n, lambda: 0.0) for n in range(5)) >= 3 * 150
        assert sum(transient_delay(n, lambda: 0.0) for n in range(MAX_TRANSIENT_RETRIES)) >= 2 * 3600


class FakeQueue:
    def __init__(self, *, broken: bool = False) -> None:
        self.sent: list[tuple[dict[str, Any], int]] = []
        self.retried: list[int] = []
        self.broken = broken

    def send(self, queue_url: str, messages: Any, *, delay_seconds: int = 0) -> int:
        if self.broken:
            raise TryAgain(retry_after=1)
        self.sent += [(dict(m), delay_seconds) for m in messages]
        return 1

    def retry_later(self, queue_url: str, receipt_handle: str, receive_count: int) -> None:
        self.retried.append(receive_count)


class TestProcessRecord:
    def run(self, body: str, error: Exception | None, queue: FakeQueue) -> None:
        def handle(message: dict[str, Any], receive_count: int) -> None:
            if error is not None:
                raise error

        process_record(body, handle, queue=queue, queue_url="q", receipt_handle="r",  # type: ignore[arg-type]
                       receive_count=3, rand=lambda: 1.0)

    def test_a_throttled_message_is_sent_again_later_and_this_delivery_succeeds(self) -> None:
        queue = FakeQueue()
        self.run('{"type": "import-range", "job_id": "j", "transient_retries": 2}', TryAgain(retry_after=1), queue)
        assert queue.sent == [({"type": "import-range", "job_id": "j", "transient_retries": 3}, 120)]
        assert queue.retried == []

    def test_any_other_failure_gets_the_short_back_off_and_is_raised(self) -> None:
        queue = FakeQueue()
        with pytest.raises(RuntimeError):
            self.run('{"type": "import-range"}', RuntimeError("bug"), queue)
        assert queue.sent == [] and queue.retried == [3]

    def test_after_about_five_hours_of_throttling_it_falls_back_to_the_short_back_off(self) -> None:
        queue = FakeQueue()
        with pytest.raises(TryAgain):
            self.run(f'{{"transient_retries": {MAX_TRANSIENT_RETRIES}}}', TryAgain(retry_after=1), queue)
        assert queue.sent == [] and queue.retried == [3]

    def test_when_the_queue_cannot_take_it_back_the_message_is_retried_as_usual(self) -> None:
        queue = FakeQueue(broken=True)
        with pytest.raises(TryAgain):
            self.run("{}", TryAgain(retry_after=1), queue)
        assert queue.retried == [3]
