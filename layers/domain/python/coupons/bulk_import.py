"""Bulk CSV import: marketing uploads a CSV under `incoming/`, each row becomes a coupon or is rejected.

Flow (each step is one SQS message to the import function):

1. Planning streams the whole object once without writing anything: header checks,
   UTF-8, record length, balanced quotes, and the SHA-256 of its bytes. Records are
   cut into byte ranges aligned on record boundaries (`IMPORT_RANGE_BYTES`).
2. The import job's id is derived from bucket + key + that SHA-256
   (`jobs.import_job_id`), never from the ETag (SSE-KMS objects and multipart uploads
   have ETags that are not content hashes): a redelivered event or a second upload of
   the same bytes lands on the same job, which does nothing once finished. A
   `results/<name>.json` marker names the job id. A file-level problem fails the job
   with a results file of error rows and creates nothing ("no partial garbage"); a
   small file is one range processed in the same invocation, a large one becomes one
   SQS message per range, processed in parallel. Ranges read the content hash from the
   job item, so every range derives the same coupon ids.
3. A range streams its bytes (`Range` GET with `If-Match` on the ETag), validates
   each row with the same model as `POST /coupons` (`CouponCreate` then
   `resolve_spec`), builds the record the way `AdminService.create` does, and
   writes 50 coupons per transaction (`adapters.bulk_store`). Every
   `IMPORT_CHECKPOINT_ROWS` rows it stores the rows' results as a work object and
   commits a checkpoint (offset, row, counters) together with the job's progress.
   A timed-out or crashed run resumes from the last checkpoint; rows redone after
   it find their own coupons (derived ids) and are reported as created again.
4. The last range to finish assembles `results/<name>` (`row,status,coupon_id,error`,
   rows in file order) from the work objects and moves the job to succeeded: at once, or
   part by part in parallel for a large file (coupons.bulk_import_finish, bulk_assembly).
   A job given up (a message failing on its last receive; the watchdog, when it made no
   progress) still gets the results of the rows it processed, then fails.

Rows are numbered from 1 (the first record after the header); blank lines are
skipped and not numbered; row 0 stands for the file itself (header, encoding).

A code repeated in the file is created once; the other rows with it are
`duplicate`, naming the row that holds it. Within one range (every file below
`IMPORT_RANGE_BYTES`) that is the first row in file order; across ranges running
in parallel it is the row whose range wrote it first.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote_plus

from pydantic import ValidationError

from .adapters.bulk_store import (
    CODE_TAKEN,
    CREATED,
    ID_TAKEN,
    INVALID,
    REPLAYED,
    BulkObjects,
    CouponBatchWriter,
    JobTable,
    ObjectChanged,
    PendingCoupon,
    QueueSender,
)
from .admin import GENERATION_ATTEMPTS, AdminService
from .bulk_import_finish import ASSEMBLE, GIVE_UP, ImportFinisher
from .bulk_retry import is_transient
from .clock import iso, utcnow
from .codegen import generate_code
from .codes import normalise
from .errors import DomainError
from .jobs import KIND_IMPORT, MAX_RECEIVES, TERMINAL, derived_coupon_id, import_job_id, new_job
from .models import CouponCreate, CouponSpec, resolve_spec, validation_details
from .settings import Settings

INCOMING_PREFIX = "incoming/"
RESULTS_PREFIX = "results/"
WORK_PREFIX = "work/"
MAX_RECORD_BYTES = 256 * 1024  # far above any valid row; a 1 MB line is a broken file
WRITE_BATCH = 50  # coupons per transaction
TIME_MARGIN_MS = 60_000  # stop and hand over to a continuation message this long before the timeout
BOM = b"\xef\xbb\xbf"
RESULT_COLUMNS = ("row", "status", "coupon_id", "error")
log = logging.getLogger(__name__)

# --- reading records --------------------------------------------------------------------------


class RecordError(Exception):
    """A record the CSV cannot contain: too long, or a quote never closed."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


@dataclass(frozen=True)
class RawRecord:
    start: int  # absolute offset of its first byte
    end: int  # absolute offset just past its line terminator
    data: bytes  # the record without its line terminator (quoted newlines kept)


def iter_records(chunks: Iterable[bytes], *, offset: int = 0,
                 max_bytes: int = MAX_RECORD_BYTES) -> Iterator[RawRecord]:
    """Split a byte stream into CSV records, streaming; blank lines are skipped.

    A newline ends a record only outside quotes (an even number of `"` so far: RFC 4180
    escapes a quote by doubling it, so the parity rule holds). CRLF and LF both end
    records. A UTF-8 BOM at offset 0 is dropped. Memory stays within one chunk plus
    one record (at most `max_bytes`, else RecordError).
    """
    buf = b""
    base = offset  # absolute offset of buf[0]
    at_start = offset == 0
    for chunk in chunks:
        if not chunk:
            continue
        buf = buf + chunk if buf else chunk
        if at_start:
            if len(buf) < len(BOM) and BOM.startswith(buf):
                continue  # not enough bytes yet to tell
            if buf.startswith(BOM):
                buf = buf[len(BOM):]
                base += len(BOM)
            at_start = False
        start = 0  # where the current record starts in buf
        scan = 0  # where to look for the next newline
        quotes = 0
        while True:
            newline = buf.find(b"\n", scan)
            if newline < 0:
                quotes += buf.count(b'"', scan)
                break
            quotes += buf.count(b'"', scan, newline)
            scan = newline + 1
            if quotes % 2:
                if scan - start > max_bytes:
                    raise RecordError("too_long", base + start)
                continue  # a newline inside a quoted field
            data = buf[start:newline]
            if data.endswith(b"\r"):
                data = data[:-1]
            if len(data) > max_bytes:
                raise RecordError("too_long", base + start)
            if data.strip(b" \t\r"):
                yield RawRecord(base + start, base + scan, data)
            start = scan
            quotes = 0
        buf = buf[start:]
        base += start
        if len(buf) > max_bytes:
            raise RecordError("too_long", base)
    if at_start and buf.startswith(BOM):
        buf, base = buf[len(BOM):], base + len(BOM)
    if buf.count(b'"') % 2:
        raise RecordError("open_quote", base)
    data = buf[:-1] if buf.endswith(b"\r") else buf
    if data.strip(b" \t\r"):
        yield RawRecord(base, base + len(buf), data)


def parse_record(data: bytes) -> list[str]:
    """One record's fields. ValueError when it is not UTF-8 or not one well-formed CSV row."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not valid UTF-8 (save the file as \"CSV UTF-8\")") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as error:
        raise ValueError(f"malformed CSV ({error})") from None
    if len(rows) != 1:
        raise ValueError("malformed CSV (a line break outside quotes)")
    return rows[0]


# --- the header and the rows ------------------------------------------------------------------

COLUMNS = tuple(CouponCreate.model_fields)  # exactly what POST /coupons takes
REQUIRED_COLUMNS = ("discount_value",)
LIST_COLUMNS = frozenset({"applicable_products", "applicable_categories", "excluded_products",
                          "excluded_categories", "channels", "allowed_domains"})
INT_COLUMNS = frozenset({"max_discount_amount", "min_order_amount", "max_uses", "uses_per_user"})
NULLABLE_COLUMNS = frozenset({"max_uses", "uses_per_user"})  # "unlimited" / "null" = no limit
_INT = re.compile(r"^[+-]?\d{1,19}$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$")


class Problem(str):
    """A file problem as the results file words it, and `public`: the same said without any text read
    from the file, for the job item, its BulkImportCompleted event (kept 365 days in the bus's archive)
    and logs. A file without its header row has codes where the column names go (issue 17): names from
    the file are quoted in the results file only."""

    public: str

    def __new__(cls, text: str, *, public: str) -> Problem:
        problem = super().__new__(cls, text)
        problem.public = public
        return problem


def _safe(text: str) -> Problem:
    """A problem worded from constants and numbers only: the same text everywhere."""
    return Problem(text, public=text)


PUBLIC_FALLBACK = "file rejected, nothing imported (the results file says why)"


def public_text(message: str) -> str:
    """What a job, an event or a log may say about a problem: never a plain message (it may quote the file)."""
    return message.public if isinstance(message, Problem) else PUBLIC_FALLBACK


def public_error(problems: Iterable[tuple[int, str]]) -> str:
    return "; ".join(dict.fromkeys(public_text(message) for _, message in problems))[:2000]


class FileProblems(Exception):
    """The file cannot be imported at all; nothing is written. Each problem is a row (0: the file or its
    header) and a `Problem` (its results-file text, and its public text)."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__(public_error(problems))  # the exception's text may be logged: the public one
        self.problems = problems


def _shown(name: str) -> str:
    return json.dumps(name[:64], ensure_ascii=False)


def parse_header(data: bytes) -> list[str]:
    try:
        names = [n.strip().lower() for n in parse_record(data)]
    except ValueError as error:
        public = "not valid UTF-8" if "UTF-8" in str(error) else "not one well-formed CSV row"
        raise FileProblems([(0, Problem(f"the header row is {error}", public=f"the header row is {public}"))]) \
            from None
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name:
            problems.append((0, _safe(f"column {position} has no name")))
        elif name not in COLUMNS:
            problems.append((0, Problem(
                f"unknown column {_shown(name)} (columns are the fields of POST /coupons: {', '.join(COLUMNS)})",
                public=f"unknown column in position {position}: not a field of POST /coupons"
                       " (the results file names it; is the header row missing?)")))
        elif name in seen:
            problems.append((0, Problem(f"column {_shown(name)} appears twice",
                                        public=f"the columns in positions {seen[name]} and {position} have"
                                               " the same name")))
        seen.setdefault(name, position)
    for required in REQUIRED_COLUMNS:
        if required not in seen:
            problems.append((0, _safe(f"missing required column {required}")))
    if problems:
        raise FileProblems(problems)
    return names


class RowRejected(Exception):
    pass


def _cell(column: str, raw: str) -> Any:
    """A CSV cell as the JSON value POST /coupons would receive; the model judges it."""
    value = raw.strip()
    if column in LIST_COLUMNS:
        return [item.strip() for item in value.split("|") if item.strip()]
    if column in NULLABLE_COLUMNS and value.lower() in ("unlimited", "null", "none"):
        return None
    if column in INT_COLUMNS:
        return int(value) if _INT.fullmatch(value) else value
    if column == "discount_value":
        if _INT.fullmatch(value):
            return int(value)
        if _DECIMAL.fullmatch(value):
            try:
                return Decimal(value)
            except InvalidOperation:
                return value
        return value
    if column == "metadata":
        try:
            return json.loads(value)
        except ValueError:
            return value  # the model says it must be an object
    return value


def row_request(header: list[str], values: list[str]) -> dict[str, Any]:
    """The row as a POST /coupons body; empty cells are left out (defaults apply)."""
    if len(values) != len(header):
        raise RowRejected(f"the row has {len(values)} values but the header names {len(header)} columns")
    body: dict[str, Any] = {}
    for column, raw in zip(header, values, strict=True):
        if raw.strip() == "":
            continue
        body[column] = _cell(column, raw)
    return body


def _details_text(details: list[dict[str, str]] | list[Any] | None) -> str:
    parts = []
    for detail in details or []:
        if isinstance(detail, dict):
            parts.append(f"{detail.get('field', 'row')}: {detail.get('message', 'invalid')}")
        else:
            parts.append(str(detail))
    return "; ".join(parts) or "invalid row"


def validate_row(header: list[str], data: bytes, settings: Settings,
                 now: datetime) -> tuple[CouponCreate, CouponSpec]:
    """The same checks as POST /coupons: the CouponCreate model, then the configured defaults."""
    try:
        values = parse_record(data)
    except ValueError as error:
        raise RowRejected(str(error)) from None
    body = row_request(header, values)
    try:
        request = CouponCreate.model_validate(body)
    except ValidationError as error:
        raise RowRejected(_details_text(validation_details(error))) from None
    try:
        spec = resolve_spec(request.model_dump(exclude_unset=True), settings, now)
    except DomainError as error:
        raise RowRejected(_details_text(error.details) if error.details else error.message) from None
    return request, spec


# --- records as AdminService.create builds them -------------------------------------------------


def build_record(admin: AdminService, spec: CouponSpec, *, code: str, coupon_id: str, status: str,
                 actor: str, now: datetime) -> dict[str, Any]:
    """The coupon record `AdminService.create` stores (tests/unit/test_bulk_import.py checks
    they stay the same), sealed with the same cipher."""
    return {
        **spec.model_dump(),
        "coupon_id": coupon_id,
        **admin._sealed(coupon_id, code),
        "status": status,
        "redeemed_count": 0,
        "created_at": now,
        "updated_at": now,
        "created_by": actor,
        "updated_by": actor,
    }


# --- results ----------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(value: object) -> str:
    """A cell a spreadsheet will show as text, never run as a formula (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def result_lines(rows: Iterable[tuple[int, str, str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([neutralise(cell) for cell in row])
    return out.getvalue().encode("utf-8")


RESULT_HEADER = result_lines([RESULT_COLUMNS])  # type: ignore[list-item]


def results_key(source_key: str) -> str:
    return RESULTS_PREFIX + source_key[len(INCOMING_PREFIX):]


# --- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRange:
    index: int
    start: int  # offset of its first record
    end: int  # offset just past its last record
    first_row: int
    rows: int

    def message(self, job_id: str) -> dict[str, Any]:
        return {"type": "import-range", "job_id": job_id, "range": self.index, "start": self.start,
                "end": self.end, "first_row": self.first_row, "rows": self.rows}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ImportRange:
        return cls(int(message["range"]), int(message["start"]), int(message["end"]),
                   int(message["first_row"]), int(message["rows"]))


@dataclass
class ImportPlan:
    header: list[str]
    ranges: list[ImportRange] = field(default_factory=list)
    rows: int = 0


def _record_problem(error: RecordError, row: int) -> FileProblems:
    where = "the header row" if row == 0 else f"row {row}"
    if error.reason == "too_long":
        text = f"{where} is longer than {MAX_RECORD_BYTES // 1024} KiB (is a quote left open?)"
    else:
        text = f"{where} opens a quoted field that is never closed"
    return FileProblems([(row, _safe(f"file rejected, nothing imported: {text}"))])


class ContentHash:
    """Passes a byte stream through while hashing it: the planning pass also yields the content's
    SHA-256, with no second read and nothing held (an S3 checksum is no substitute: a multipart
    upload's is a checksum of part checksums, and the upload may carry none)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._sha256 = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._sha256.update(chunk)
            yield chunk

    def hexdigest(self) -> str:
        """The SHA-256 of the whole stream: what the reader left unread is read (and hashed) now."""
        for chunk in self._chunks:
            self._sha256.update(chunk)
        return self._sha256.hexdigest()


def plan_and_hash(chunks: Iterable[bytes], range_bytes: int) -> tuple[str, ImportPlan | FileProblems]:
    """One pass over the object: its plan (or why it cannot be imported) and its content's SHA-256."""
    hashing = ContentHash(chunks)
    try:
        outcome: ImportPlan | FileProblems = plan_import(hashing, range_bytes)
    except FileProblems as problems:
        outcome = problems
    return hashing.hexdigest(), outcome


def plan_import(chunks: Iterable[bytes], range_bytes: int) -> ImportPlan:
    """Check the whole file without writing anything and cut it into ranges of records."""
    records = iter_records(chunks)
    row = 0
    in_header = True
    try:
        first = next(records, None)
        if first is None:
            raise FileProblems([(0, _safe("file rejected: the file is empty (expected a header row naming"
                                          " coupon fields, e.g. code,discount_type,discount_value)"))])
        try:
            plan = ImportPlan(parse_header(first.data))
        except FileProblems as problems:
            prefix = "file rejected, nothing imported: "
            raise FileProblems([(r, Problem(prefix + m, public=prefix + public_text(m)))
                                for r, m in problems.problems]) from None
        in_header = False
        start = first_row = end = 0
        open_range = False
        for record in records:
            row += 1
            try:
                record.data.decode("utf-8")
            except UnicodeDecodeError:
                raise FileProblems([(row, _safe(f"file rejected, nothing imported: row {row} is not valid UTF-8"
                                                " (save the file as \"CSV UTF-8\")"))]) from None
            if not open_range:
                start, first_row, open_range = record.start, row, True
            end = record.end
            if end - start >= range_bytes:
                plan.ranges.append(ImportRange(len(plan.ranges), start, end, first_row, row - first_row + 1))
                open_range = False
        if open_range:
            plan.ranges.append(ImportRange(len(plan.ranges), start, end, first_row, row - first_row + 1))
    except RecordError as error:
        raise _record_problem(error, 0 if in_header else row + 1) from None
    plan.rows = row
    if row == 0:
        raise FileProblems([(0, _safe("file rejected: the file has a header but no data rows"))])
    return plan


# --- the service ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceObject:
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    actor: str = "s3-import"


def s3_sources(message: dict[str, Any]) -> list[SourceObject]:
    """The created objects an S3 event notification names (a TestEvent names none)."""
    sources = []
    for record in message.get("Records") or []:
        if record.get("eventSource") != "aws:s3" or not str(record.get("eventName", "")).startswith(
                "ObjectCreated"):
            continue
        s3 = record["s3"]
        principal = (record.get("userIdentity") or {}).get("principalId")
        sources.append(SourceObject(
            bucket=s3["bucket"]["name"], key=unquote_plus(s3["object"]["key"]),
            etag=str(s3["object"].get("eTag", "")).strip('"'), version_id=s3["object"].get("versionId"),
            actor=f"s3:{principal}" if principal else "s3-import",
        ))
    return sources


Remaining = Callable[[], int]


class ImportService:
    def __init__(self, *, admin: AdminService, writer: CouponBatchWriter, jobs: JobTable, objects: BulkObjects,
                 queue: QueueSender, settings: Settings, clock: Callable[[], datetime] = utcnow,
                 code_source: Callable[[], str] = generate_code) -> None:
        self._admin = admin
        self._writer = writer
        self._jobs = jobs
        self._objects = objects
        self._queue = queue
        self._settings = settings
        self._clock = clock
        self._code = code_source
        self.finisher = ImportFinisher(objects=objects, jobs=jobs, queue=queue, settings=settings, clock=clock,
                                       head=RESULT_HEADER, lines=result_lines, write_marker=self._write_marker)

    # --- messages ---

    def handle(self, message: dict[str, Any], *, remaining_ms: Remaining = lambda: 900_000,
               receive_count: int = 1) -> None:
        """One SQS message: an S3 event notification, a range of a planned import, a part of its results
        to assemble, or the watchdog's give-up."""
        if message.get("type") in (ASSEMBLE, GIVE_UP):
            job_id = str(message["job_id"])
            try:
                if message["type"] == ASSEMBLE:
                    self.finisher.run_part(message)
                else:
                    self.finisher.resume(job_id)
            except Exception as error:
                self._give_up_if_last(job_id, receive_count, error)
                raise
            return
        if message.get("type") == "import-range":
            job_id = str(message["job_id"])
            try:
                self.run_range(job_id, ImportRange.from_message(message), remaining_ms)
            except Exception as error:
                self._give_up_if_last(job_id, receive_count, error)
                raise
            return
        for source in s3_sources(message):  # s3:TestEvent and other events name none
            self.start(source, remaining_ms, receive_count)

    def _give_up_if_last(self, job_id: str, receive_count: int, error: Exception) -> None:
        # This message goes to the DLQ next: the job cannot finish. Throttling is not a reason (it is
        # resent with a long back-off: coupons.bulk_retry). The results so far are kept.
        if receive_count >= MAX_RECEIVES and not is_transient(error):
            self.finisher.give_up_safely(
                job_id, f"the import failed repeatedly ({type(error).__name__}); see the dead-letter queue")

    def _now(self) -> str:
        return iso(self._clock())

    # --- start and plan ---

    def start(self, source: SourceObject, remaining_ms: Remaining, receive_count: int = 1) -> str | None:
        if not source.key.startswith(INCOMING_PREFIX) or source.key.endswith("/"):
            return None  # a "folder" or an object outside incoming/
        try:
            content_sha256, outcome = plan_and_hash(
                self._objects.stream(source.bucket, source.key, etag=source.etag, version_id=source.version_id),
                self._settings.import_range_bytes)
        except ObjectChanged:
            # This version is gone (replaced or deleted before it was read): nothing to import. The
            # version that replaced it has its own event.
            log.warning("import of %s skipped: the object changed before it could be read", source.key)
            return None
        job_id = import_job_id(source.bucket, source.key, content_sha256)
        try:
            self._start_job(job_id, source, content_sha256, outcome, remaining_ms)
        except Exception as error:
            self._give_up_if_last(job_id, receive_count, error)
            raise
        return job_id

    def _start_job(self, job_id: str, source: SourceObject, content_sha256: str,
                   outcome: ImportPlan | FileProblems, remaining_ms: Remaining) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job["status"] in TERMINAL:
            return  # a redelivery or a second upload of the same bytes: done already
        if job is None:
            now = self._clock()
            item = new_job(
                job_id, KIND_IMPORT, actor=source.actor, now=now, status="running", rejected=0, duplicates=0,
                source_bucket=source.bucket, source_key=source.key, source_etag=source.etag,
                source_sha256=content_sha256, source_version=source.version_id, result_bucket=source.bucket,
                result_key=results_key(source.key), ranges_total=0, ranges_done=0,
            )
            if self._jobs.create(item):
                self._write_marker(item)
            job = self._jobs.get(job_id)
            assert job is not None
        if isinstance(outcome, FileProblems):
            self._fail_file(job, outcome.problems)
            return
        plan = outcome
        if not self._jobs.update(job_id, {"total": plan.rows, "ranges_total": len(plan.ranges),
                                          "header": plan.header, "updated_at": self._now()}):
            return
        if len(plan.ranges) == 1:
            self.run_range(job_id, plan.ranges[0], remaining_ms)
        else:
            self._queue.send(self._settings.imports_queue_url, [r.message(job_id) for r in plan.ranges])

    def _stream(self, job: dict[str, Any], start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self._objects.stream(job["source_bucket"], job["source_key"], etag=job.get("source_etag"),
                                    version_id=job.get("source_version"), start=start, end=end)

    def _write_marker(self, job: dict[str, Any], summary: dict[str, Any] | None = None) -> None:
        body = summary or {"job_id": job["job_id"], "status": job["status"], "source_key": job["source_key"],
                           "result_key": job["result_key"], "job_url": f"/jobs/{job['job_id']}"}
        self._objects.put(job["result_bucket"], job["result_key"] + ".json",
                          json.dumps(body, indent=2).encode(), content_type="application/json",
                          metadata={"job-id": job["job_id"]})

    def _fail_file(self, job: dict[str, Any], problems: list[tuple[int, str]]) -> None:
        body = RESULT_HEADER + result_lines((row, "rejected", "", message) for row, message in problems)
        self._objects.put(job["result_bucket"], job["result_key"], body, metadata={"job-id": job["job_id"]})
        error = public_error(problems)  # the results file quotes the file; the job and its event never do
        summary = {"job_id": job["job_id"], "status": "failed", "error": error, "source_key": job["source_key"],
                   "result_key": job["result_key"], "created": 0, "rejected": 0, "duplicates": 0}
        self._write_marker(job, summary)
        self._jobs.finish(job["job_id"], "failed", {
            "error": error, "result": {"error": error, "result_key": job["result_key"], "created": 0},
            "finished_at": self._now(), "updated_at": self._now()})

    # --- ranges ---

    def run_range(self, job_id: str, rng: ImportRange, remaining_ms: Remaining) -> None:
        job = self._jobs.get(job_id)
        if job is None or job["status"] in TERMINAL or job.get("failing"):
            return  # finished, or given up: its results so far are being assembled
        name = f"R{rng.index:05d}"
        checkpoint = self._jobs.get_checkpoint(job_id, name) or {}
        if checkpoint.get("done"):
            self.maybe_finish(job_id)
            return
        seq = int(checkpoint.get("seq", 0))
        offset = int(checkpoint.get("next_offset", rng.start))
        row = int(checkpoint.get("next_row", rng.first_row))
        header = list(job["header"])
        per_chunk = self._settings.import_checkpoint_rows
        records = iter_records(self._stream(job, offset, rng.end), offset=offset)
        chunk: list[tuple[int, bytes]] = []
        last_end = offset
        for record in records:
            chunk.append((row, record.data))
            row += 1
            last_end = record.end
            done = last_end >= rng.end
            if len(chunk) < per_chunk and not done:
                continue
            results = self.import_rows(job, header, chunk)
            self._objects.put(job["result_bucket"], f"{WORK_PREFIX}{job_id}/{name}-{seq:07d}.csv",
                              result_lines(results))
            counts = {"created": 0, "rejected": 0, "duplicate": 0}
            for _, status, _, _ in results:
                counts[status] += 1
            committed = self._jobs.commit(
                job_id, name, seq=seq, state={"next_offset": last_end, "next_row": row, "done": done},
                add={"processed": len(results), "created": counts["created"], "rejected": counts["rejected"],
                     "duplicates": counts["duplicate"], "failed": counts["rejected"] + counts["duplicate"],
                     "ranges_done": 1 if done else 0},
                values={"updated_at": self._now()},
            )
            if not committed and not self._landed(job_id, name, seq, last_end):
                return  # a concurrent duplicate is ahead of us, or the job has finished
            seq += 1
            chunk = []
            if done:
                break
            if remaining_ms() < TIME_MARGIN_MS:  # hand over before Lambda's timeout cuts us off
                self._queue.send(self._settings.imports_queue_url, [rng.message(job_id)])
                return
        if chunk:  # the stream ended before the planned range did
            raise ObjectChanged(job["source_key"])
        self.maybe_finish(job_id)

    def _landed(self, job_id: str, name: str, seq: int, end: int) -> bool:
        """Whether a commit reported as refused was our own, retried after a lost answer."""
        checkpoint = self._jobs.get_checkpoint(job_id, name) or {}
        return int(checkpoint.get("seq", 0)) == seq + 1 and int(checkpoint.get("next_offset", -1)) == end

    def import_rows(self, job: dict[str, Any], header: list[str],
                    rows: list[tuple[int, bytes]]) -> list[tuple[int, str, str, str]]:
        """Validate and store a run of rows; their results in row order."""
        now = self._clock()
        results: dict[int, tuple[str, str, str]] = {}
        candidates: list[tuple[int, CouponCreate, CouponSpec]] = []
        for row, data in rows:
            try:
                request, spec = validate_row(header, data, self._settings, now)
            except RowRejected as error:
                results[row] = ("rejected", "", str(error))
                continue
            candidates.append((row, request, spec))
        for start in range(0, len(candidates), WRITE_BATCH):
            self._store(job, candidates[start:start + WRITE_BATCH], now, results)
        return [(row, *results[row]) for row, _ in rows]

    def _store(self, job: dict[str, Any], batch: list[tuple[int, CouponCreate, CouponSpec]], now: datetime,
               results: dict[int, tuple[str, str, str]]) -> None:
        first_seen: dict[str, int] = {}
        pending: dict[int, tuple[CouponCreate, PendingCoupon]] = {}
        for row, request, spec in batch:
            if request.code:
                normalised = normalise(request.code) or request.code
                if normalised in first_seen:
                    results[row] = ("duplicate", "",
                                    f"code: the same code is on row {first_seen[normalised]} of this file")
                    continue
                first_seen[normalised] = row
            # From the content's hash (a job started before it was recorded falls back to its ETag).
            coupon_id = derived_coupon_id(self._settings.coupon_id_format, f"import/{job['source_bucket']}/"
                                          f"{job.get('source_sha256') or job['source_etag']}/{row}")
            record = build_record(self._admin, spec, code=request.code or self._code(), coupon_id=coupon_id,
                                  status=request.status or "active", actor=str(job["created_by"]), now=now)
            pending[row] = (request, PendingCoupon(row, record))
        for _ in range(GENERATION_ATTEMPTS):
            if not pending:
                return
            outcomes = self._writer.write([p for _, p in pending.values()], job["job_id"])
            retry: dict[int, tuple[CouponCreate, PendingCoupon]] = {}
            for row, (request, item) in pending.items():
                outcome = outcomes[row]
                coupon_id = item.record["coupon_id"]
                if outcome.outcome in (CREATED, REPLAYED):
                    results[row] = ("created", coupon_id, "")
                elif outcome.outcome == ID_TAKEN:
                    results[row] = ("duplicate", coupon_id,
                                    "this row was imported from an identical upload before")
                elif outcome.outcome == CODE_TAKEN and request.code:
                    owner = outcome.pointer or {}
                    results[row] = ("duplicate", "", (
                        f"code: the same code is on row {owner.get('job_ref')} of this file"
                        if owner.get("job_id") == job["job_id"] else "code: a coupon with this code exists already"))
                elif outcome.outcome == CODE_TAKEN:  # a generated code collided: draw another
                    spec_record = dict(item.record)
                    spec_record.update(self._admin._sealed(coupon_id, self._code()))
                    retry[row] = (request, PendingCoupon(row, spec_record))
                elif outcome.outcome == INVALID:
                    results[row] = ("rejected", "", outcome.message)
            pending = retry
        for row in pending:
            results[row] = ("rejected", "", "no free code could be generated; try again")

    # --- the end: coupons.bulk_import_finish ---

    def maybe_finish(self, job_id: str) -> None:
        self.finisher.maybe_finish(job_id)
