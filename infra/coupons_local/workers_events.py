"""The local stack's event wiring: stream pollers for the outbox publisher, and the schedules.

On AWS, Lambda's event source mappings read the tables' streams and EventBridge
Scheduler fires the cron rules. Here:

- one poller thread per streamed table reads moto's DynamoDB stream
  (describe_stream / get_shard_iterator / get_records, following child shards),
  and hands batches in the real DynamoDB stream event shape to
  `functions/publisher`'s `lambda_handler`. moto keeps one shard per table, where
  DynamoDB has one per partition and Lambda reads them independently: so the records
  are dealt into `COUPONS_LOCAL_STREAM_LANES` lanes (4; 1 = commit order) by a hash of
  their partition key, and the lanes are delivered in a random order. The order of one
  item's (one partition key's) records is kept, as DynamoDB Streams keeps it; across
  items it is not commit order, as on AWS. Records it reports in
  `batchItemFailures` (or the whole batch, if it raises) are retried from the
  lowest failed sequence number with backoff; after `stream_retry_attempts` the
  batch goes to a local DLQ queue (`coupons-publisher-dlq`), as the on-failure
  destination does on AWS;
- one scheduler thread per scheduled function fires its handler on the cron
  (hourly sweep at minute 0; the report at 01:00 UTC) with an EventBridge
  scheduled event. `COUPONS_LOCAL_SCHEDULE_EVERY_SECONDS` fires them that often
  instead (demos and tests): `30` for every schedule, or `expiry-sweep=2,daily-report=60`;
- `jobs["expiry-sweep"]` and `jobs["daily-report"]` run them now
  (`coupons-local run expiry-sweep|daily-report [--date]`);
- `jobs["replay-events"]` runs `functions/replay_events` (`coupons-local run replay-events`):
  the undelivered-events queue back onto the bus.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
from coupons_infra import resources as r

from . import calllog
from .emulator import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from .stack import LocalStack

log = logging.getLogger("coupons_local.events")
POLL_SECONDS = 0.1  # right after activity; an idle poller slows down to IDLE_POLL_SECONDS
IDLE_POLL_SECONDS = 5.0  # a function run wakes the poller sooner (LocalStack.nap)
DISCOVER_SECONDS = 10.0  # how often a poller looks for new (child) shards
BATCH_SIZE = 100
DLQ_NAME = "coupons-publisher-dlq"
SCHEDULE_EVERY_ENV = "COUPONS_LOCAL_SCHEDULE_EVERY_SECONDS"
LANES_ENV = "COUPONS_LOCAL_STREAM_LANES"
DEFAULT_LANES = 4


# --- stream -> publisher --------------------------------------------------------------------------


def lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A dynamodbstreams GetRecords record in the shape Lambda delivers it."""
    stream = dict(record["dynamodb"])
    created = stream.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        stream["ApproximateCreationDateTime"] = int(created.timestamp())
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion", REGION),
        "dynamodb": stream,
        "eventSourceARN": stream_arn,
    }


def lane_of(record: dict[str, Any], lanes: int) -> int:
    """The lane of a record: a stable hash of its partition key, so one item's records share a lane."""
    keys = record.get("dynamodb", {}).get("Keys", {})
    pk = json.dumps(keys.get("pk", keys), sort_keys=True)
    return zlib.crc32(pk.encode()) % max(1, lanes)


class StreamPoller:
    """Reads one table's stream and drives the publisher, as an event source mapping would."""

    def __init__(self, stack: LocalStack, function: r.Function, stream_arn: str, dlq_url: str, *,
                 lanes: int = DEFAULT_LANES, rng: random.Random | None = None, streams: Any = None,
                 sqs: Any = None) -> None:
        self.stack = stack
        self.function = function
        self.stream_arn = stream_arn
        self.dlq_url = dlq_url
        self.streams: Any = streams or boto3.client("dynamodbstreams")
        self.sqs: Any = sqs or boto3.client("sqs")
        self.lanes = max(1, lanes)
        self.rng = rng or random.Random()
        self.iterators: dict[str, str | None] = {}  # shard id -> next iterator (None: closed and drained)
        # (shard id, lane) -> records not yet delivered, in sequence order
        self.pending: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.delivered = 0
        self.discovered_at = 0.0

    def run(self) -> None:
        # growth 1.5: fewer calls into the emulator's lock while idle
        self.stack.poll_until_stopped(self.poll_once, what=f"stream {self.stream_arn}", busy_pause=POLL_SECONDS,
                                      idle_max=IDLE_POLL_SECONDS, growth=1.5)

    def _discover(self) -> None:
        if time.monotonic() - self.discovered_at < DISCOVER_SECONDS and \
                any(it is not None for it in self.iterators.values()):
            return
        self.discovered_at = time.monotonic()
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"].get("Shards", [])
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self.iterators:
                continue
            parent = shard.get("ParentShardId")
            if parent and parent in self.iterators and (self.iterators[parent] is not None or self.backlog(parent)):
                continue  # read and deliver the parent to its end first: order per item is kept
            self.iterators[shard_id] = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for lane in range(self.lanes):
                self.pending[(shard_id, lane)] = []

    def backlog(self, shard_id: str) -> int:
        return sum(len(self.pending[(shard_id, lane)]) for lane in range(self.lanes))

    def poll_once(self) -> bool:
        """Read and deliver what is new; True when there was something to do."""
        with calllog.acting_as(self.function.name):  # the event source mapping acts with the function's role
            return self._poll_once()

    def _poll_once(self) -> bool:
        self._discover()
        for shard_id in list(self.iterators):
            # Fill every lane up to a full batch if the stream has that much (as a mapping batches per shard).
            for _ in range(self.lanes):
                iterator = self.iterators[shard_id]
                if iterator is None or self.backlog(shard_id) >= BATCH_SIZE * self.lanes:
                    break
                page = self.streams.get_records(ShardIterator=iterator, Limit=BATCH_SIZE)
                for rec in page.get("Records", []):
                    record = lambda_record(rec, self.stream_arn)
                    self.pending[(shard_id, lane_of(record, self.lanes))].append(record)
                self.iterators[shard_id] = page.get("NextShardIterator")
                if not page.get("Records"):
                    break
        return self.deliver_lanes()

    def deliver_lanes(self) -> bool:
        """One batch from each lane that has records, the lanes in a random order; True if any."""
        ready = [key for key, records in self.pending.items() if records]
        self.rng.shuffle(ready)
        for key in ready:
            backlog = self.pending[key]
            batch = backlog[:BATCH_SIZE]
            delivered = self.deliver(batch)  # a tail it gave up on after the retries went to the DLQ
            del backlog[:delivered]
        return bool(ready)

    def deliver(self, batch: list[dict[str, Any]]) -> int:
        """Invoke the publisher until the batch is through; how many records were consumed."""
        records = batch
        for attempt in range(self.function.stream_retry_attempts + 1):
            if attempt and self.stack.stopping.wait(min(0.2 * 2 ** (attempt - 1), 5)):
                return 0
            try:
                result = self.stack.functions.invoke(self.function, {"Records": records})
                failures = [f.get("itemIdentifier") for f in (result or {}).get("batchItemFailures", [])]
            except Exception:
                log.exception("publisher raised; the whole batch is retried")
                failures = [records[0]["dynamodb"]["SequenceNumber"]]
            if not failures:
                self.delivered += len(records)
                return len(batch)
            sequences = [rec["dynamodb"]["SequenceNumber"] for rec in records]
            lowest = min((sequences.index(f) for f in failures if f in sequences), default=0)
            self.delivered += lowest
            records = records[lowest:]
        self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=json.dumps({
            "reason": "publisher kept failing", "stream_arn": self.stream_arn,
            "first_sequence_number": records[0]["dynamodb"]["SequenceNumber"],
            "last_sequence_number": records[-1]["dynamodb"]["SequenceNumber"], "records": len(records),
        }))
        log.error("stream records sent to %s after %d attempts", DLQ_NAME, self.function.stream_retry_attempts)
        return len(batch)


# --- schedules ------------------------------------------------------------------------------------


def _field_matches(spec: str, value: int) -> bool:
    if spec in ("*", "?"):
        return True
    for part in spec.split(","):
        if "/" in part:
            base, step = part.split("/", 1)
            start = 0 if base in ("*", "") else int(base)
            if value >= start and (value - start) % int(step) == 0:
                return True
        elif "-" in part:
            low, high = part.split("-", 1)
            if int(low) <= value <= int(high):
                return True
        elif part.isdigit() and int(part) == value:
            return True
    return False


def next_fire(cron: str, after: datetime) -> datetime:
    """The next minute after `after` that an EventBridge cron body (minutes and hours only) matches."""
    minute_spec, hour_spec, *_ = cron.split()
    moment = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(2 * 24 * 60):
        if _field_matches(minute_spec, moment.minute) and _field_matches(hour_spec, moment.hour):
            return moment
        moment += timedelta(minutes=1)
    raise ValueError(f"cron {cron!r} never fires")


def scheduled_event(schedule: r.Schedule, at: datetime, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{schedule.name}"],
        "detail": detail or {},
    }


class Scheduler:
    def __init__(self, stack: LocalStack, function: r.Function, every: float | None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        assert function.schedule is not None
        self.stack = stack
        self.function = function
        self.schedule = function.schedule
        self.every = every
        self.clock = clock
        self.fired = 0
        self.lock = threading.Lock()  # one run at a time per schedule (manual and timed)

    def fire(self, detail: dict[str, Any] | None = None) -> Any:
        with self.lock:
            self.fired += 1
            return self.stack.functions.invoke(self.function, scheduled_event(self.schedule, self.clock(), detail))

    def run(self) -> None:
        while not self.stack.stopping.is_set():
            now = self.clock()
            due = now + timedelta(seconds=self.every) if self.every else next_fire(self.schedule.cron, now)
            if self.stack.stopping.wait(max(0.0, (due - self.clock()).total_seconds())):
                return
            try:
                self.fire()
            except Exception:
                log.exception("scheduled %s failed", self.schedule.name)


def schedule_overrides(text: str) -> dict[str, float]:
    """`30` (every schedule every 30 s) or `expiry-sweep=2,daily-report=60` (per schedule)."""
    overrides: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.rpartition("=")
        overrides[name.strip() or "*"] = float(value)
    return overrides


# --- registration ---------------------------------------------------------------------------------


def start(stack: LocalStack) -> None:
    assert stack.provisioned is not None
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName=DLQ_NAME)["QueueUrl"]
    stack.provisioned.queues.setdefault("publisher-dlq", dlq_url)
    lanes = int(os.environ.get(LANES_ENV) or DEFAULT_LANES)
    for function in r.FUNCTIONS:
        for table in function.stream_tables:
            arn = stack.provisioned.stream_arns.get(table)
            if not arn:
                continue
            poller = StreamPoller(stack, function, arn, dlq_url, lanes=lanes)
            threading.Thread(target=poller.run, name=f"stream-{table}", daemon=True).start()
    every = schedule_overrides(os.environ.get(SCHEDULE_EVERY_ENV, ""))
    schedulers = {}
    for function in r.FUNCTIONS:
        if function.schedule is None:
            continue
        scheduler = Scheduler(stack, function, every.get(function.schedule.name, every.get("*")))
        schedulers[function.schedule.name] = scheduler
        threading.Thread(target=scheduler.run, name=f"schedule-{function.schedule.name}", daemon=True).start()

    def run_job(name: str) -> Callable[[dict[str, Any]], Any]:
        def job(payload: dict[str, Any]) -> Any:
            detail = {"date": payload["date"]} if payload.get("date") else None
            try:
                return schedulers[name].fire(detail)
            except Exception as error:  # e.g. a bad --date: say so instead of a bare 500
                body = getattr(error, "body", None)
                if callable(body):
                    return body()
                raise

        return job

    for name in schedulers:
        stack.jobs[name] = run_job(name)

    replay = r.function("replay_events")
    stack.jobs["replay-events"] = lambda payload: stack.functions.invoke(
        replay, {"max_seconds": payload["max_seconds"]} if payload.get("max_seconds") else {})
