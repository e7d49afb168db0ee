"""Generation jobs: `POST /campaigns/{campaign_id}/codes` asks for up to a million codes.

1. The API validates the template with the same model as `POST /coupons` (no `code`),
   runs the entropy guard (`codegen.check_pattern`) for the campaign's size, stores
   the job (`queued`, the resolved template on it) and sends one plan message.
2. The plan message fans out one message per batch (`GENERATION_BATCH_SIZE`, 1,000 by
   default: a million codes are 1,000 messages, sent ten per call).
3. A batch worker draws each code from the CSPRNG (`codegen.generate_code`), writes 50
   coupons per conditional transaction (a code that collides with an existing one is
   drawn again), writes the batch's `code,coupon_id` lines to a work object in the
   exports bucket (SSE-KMS), then commits its checkpoint and the job's progress in one
   transaction. Coupon ids are derived from (job, batch, position), so a redelivered
   batch finds what it wrote before (and reads those codes back) instead of writing twice.
4. The batch that sees every batch done assembles the work objects into
   `exports/<campaign_id>/<job_id>.csv` (SSE-KMS; at once, or part by part in parallel when
   large: coupons.bulk_assembly) and moves the job to succeeded with
   `{"export_bucket", "export_key", "created"}`; `GET /jobs/{id}` adds a presigned URL.
5. A job given up (a message failing on its last receive; the watchdog, when it made no
   progress) exports the codes it created all the same, then fails (its URL is presigned too).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from .adapters.bulk_store import (
    CODE_TAKEN,
    CREATED,
    REPLAYED,
    BulkObjects,
    CouponBatchWriter,
    JobTable,
    PendingCoupon,
    QueueSender,
)
from .admin import AdminService
from .bulk_assembly import Assembler, Assembly
from .bulk_import import build_record, result_lines
from .bulk_retry import is_transient
from .clock import iso, utcnow
from .codegen import DEFAULT_PATTERN, PatternError, check_pattern, generate_code
from .crypto import CodeCipher
from .errors import TryAgain, ValidationFailed
from .jobs import KIND_GENERATE, MAX_RECEIVES, TERMINAL, derived_coupon_id, new_generation_job_id, new_job
from .models import CouponCreate, CouponSpec, resolve_spec
from .settings import Settings

MAX_CODES_PER_JOB = 1_000_000
COLLISION_ATTEMPTS = 8
EXPORT_HEADER = b"code,coupon_id\r\n"
WORK_PREFIX = "work/"
ASSEMBLE = "generate-assemble"
GIVE_UP = "generate-give-up"
log = logging.getLogger(__name__)


class GenerationRequest(BaseModel):
    """`POST /campaigns/{campaign_id}/codes`."""

    model_config = ConfigDict(extra="forbid")

    count: Annotated[StrictInt, Field(ge=1, le=MAX_CODES_PER_JOB)]
    template: CouponCreate
    pattern: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None


class GenerationAccepted(BaseModel):
    job_id: str


def plan_batches(count: int, batch_size: int) -> list[int]:
    """The size of each batch: as many full batches as fit, the remainder last."""
    batches = math.ceil(count / batch_size)
    return [min(batch_size, count - i * batch_size) for i in range(batches)]


def _prefixed(details: list[Any] | None, prefix: str) -> list[Any]:
    return [{**d, "field": f"{prefix}.{d['field']}"} if isinstance(d, dict) and "field" in d else d
            for d in details or []]


class GenerationService:
    def __init__(self, *, admin: AdminService, cipher: Callable[[], CodeCipher], writer: CouponBatchWriter,
                 jobs: JobTable, objects: BulkObjects, queue: QueueSender, settings: Settings,
                 clock: Callable[[], datetime] = utcnow,
                 code_source: Callable[[str], str] | None = None) -> None:
        self._admin = admin
        self._cipher = cipher
        self._writer = writer
        self._jobs = jobs
        self._objects = objects
        self._queue = queue
        self._settings = settings
        self._clock = clock
        self._code = code_source or (lambda pattern: generate_code(pattern))
        self._assembler = Assembler(objects=objects, jobs=jobs, queue=queue, clock=clock)

    def _now(self) -> str:
        return iso(self._clock())

    # --- the API side ---

    def start(self, campaign_id: str, request: GenerationRequest, actor: str) -> str:
        fields = request.template.model_dump(exclude_unset=True)
        if "code" in fields:
            raise ValidationFailed(details=[{"field": "template.code",
                                             "message": "codes are generated; leave code out of the template"}])
        if fields.get("campaign_id") not in (None, campaign_id):
            raise ValidationFailed(details=[{"field": "template.campaign_id",
                                             "message": "must be the campaign in the path (or left out)"}])
        pattern = request.pattern or DEFAULT_PATTERN
        try:
            check_pattern(pattern, request.count)
        except PatternError as error:
            raise ValidationFailed(details=[{"field": "pattern", "message": str(error)}]) from None
        now = self._clock()
        try:
            spec = resolve_spec({**fields, "campaign_id": campaign_id}, self._settings, now)
        except ValidationFailed as error:
            raise ValidationFailed(details=_prefixed(error.details, "template")) from None
        batches = plan_batches(request.count, self._settings.generation_batch_size)
        job_id = new_generation_job_id()
        self._jobs.create(new_job(
            job_id, KIND_GENERATE, actor=actor, now=now, total=request.count, campaign_id=campaign_id,
            pattern=pattern, spec=spec.model_dump_json(), coupon_status=request.template.status or "active",
            batch_size=self._settings.generation_batch_size, batches_total=len(batches), batches_done=0,
        ))
        try:
            self._queue.send(self._settings.generation_queue_url, [{"type": "generate-plan", "job_id": job_id}])
        except Exception:
            self._jobs.finish(job_id, "failed", {"error": "the job could not be queued", "updated_at": self._now(),
                                                 "finished_at": self._now()})
            raise TryAgain(retry_after=1) from None
        return job_id

    # --- the worker side ---

    def handle(self, message: dict[str, Any], *, receive_count: int = 1) -> None:
        job_id = str(message.get("job_id", ""))
        try:
            if message.get("type") == "generate-plan":
                self.fan_out(job_id)
            elif message.get("type") == "generate-batch":
                self.run_batch(job_id, int(message["batch"]), int(message["count"]))
            elif message.get("type") == ASSEMBLE:
                self._run_part(message)
            elif message.get("type") == GIVE_UP:
                self.resume(job_id)
        except Exception as error:
            # The message goes to the DLQ next: the job cannot finish. Throttling is not a reason (it is
            # resent with a long back-off: coupons.bulk_retry). The codes created so far are exported.
            if receive_count >= MAX_RECEIVES and not is_transient(error):
                try:
                    self.give_up(job_id, f"a batch failed repeatedly ({type(error).__name__}); see the"
                                         " dead-letter queue")
                except Exception:
                    log.exception("giving up generation job %s failed; the watchdog will", job_id)
            raise

    def fan_out(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None or job["status"] in TERMINAL or job.get("failing"):
            return
        self._jobs.update(job_id, {"status": "running", "updated_at": self._now()})
        sizes = plan_batches(int(job["total"]), int(job["batch_size"]))
        self._queue.send(self._settings.generation_queue_url, (
            {"type": "generate-batch", "job_id": job_id, "batch": i, "count": n} for i, n in enumerate(sizes)))

    def run_batch(self, job_id: str, index: int, count: int) -> None:
        job = self._jobs.get(job_id)
        if job is None or job["status"] in TERMINAL or job.get("failing"):
            return  # finished, or given up: the codes created so far are being exported
        name = f"B{index:06d}"
        if self._jobs.get_checkpoint(job_id, name) is not None:
            self.maybe_finish(job_id)  # a redelivery after the commit
            return
        spec = CouponSpec.model_validate_json(job["spec"])
        pattern = str(job["pattern"])
        now = self._clock()
        pending: dict[int, PendingCoupon] = {}
        codes: dict[int, str] = {}
        for position in range(count):
            coupon_id = derived_coupon_id(self._settings.coupon_id_format, f"generate/{job_id}/{index}/{position}")
            codes[position] = self._code(pattern)
            pending[position] = PendingCoupon(position, build_record(
                self._admin, spec, code=codes[position], coupon_id=coupon_id, status=str(job["coupon_status"]),
                actor=str(job["created_by"]), now=now))
        done: dict[int, tuple[str, str]] = {}
        for _ in range(COLLISION_ATTEMPTS):
            if not pending:
                break
            outcomes = self._writer.write(list(pending.values()), job_id)
            retry: dict[int, PendingCoupon] = {}
            for position, item in pending.items():
                outcome = outcomes[position]
                coupon_id = item.record["coupon_id"]
                if outcome.outcome == CREATED:
                    done[position] = (codes[position], coupon_id)
                elif outcome.outcome == REPLAYED:
                    code = self._written_code(outcome.pointer or {})
                    if code is not None:
                        done[position] = (code, coupon_id)
                elif outcome.outcome == CODE_TAKEN:  # the rare collision: draw again, same id
                    codes[position] = self._code(pattern)
                    record = dict(item.record)
                    record.update(self._admin._sealed(coupon_id, codes[position]))
                    retry[position] = PendingCoupon(position, record)
            pending = retry
        part = result_lines(done[p] for p in sorted(done))  # type: ignore[misc]
        self._objects.put(self._settings.exports_bucket, f"{WORK_PREFIX}{job_id}/{name}.csv", part, encrypt=True)
        self._jobs.commit(job_id, name, seq=0, state={"done": True, "created": len(done)},
                          add={"processed": count, "created": len(done), "failed": count - len(done),
                               "batches_done": 1},
                          values={"updated_at": self._now()})
        self.maybe_finish(job_id)

    def _written_code(self, pointer: dict[str, Any]) -> str | None:
        """The code a previous delivery of this batch stored (it is only kept encrypted)."""
        item = self._writer.get_coupon_item(str(pointer.get("code_hash", "")))
        if item is None or item.get("coupon_id") != pointer.get("coupon_id"):
            return None  # deleted since: it cannot be exported any more
        return self._cipher().decrypt(item["code_ct"], item["coupon_id"], int(item["key_version"]))

    # --- the end: the export, assembled from the batches' work parts ---

    def _active(self, job_id: str) -> dict[str, Any] | None:
        job = self._jobs.get(job_id)
        return None if job is None or job["status"] in TERMINAL else job

    def _assembly(self, job: dict[str, Any]) -> Assembly:
        return Assembly(bucket=self._settings.exports_bucket, prefix=f"{WORK_PREFIX}{job['job_id']}/",
                        dest=f"exports/{job['campaign_id']}/{job['job_id']}.csv", head=EXPORT_HEADER,
                        encrypt=True, metadata={"job-id": str(job["job_id"])})

    def maybe_finish(self, job_id: str) -> None:
        job = self._active(job_id)
        if job is None or int(job.get("batches_done", 0)) < int(job.get("batches_total", 0)):
            return
        self._assemble(job)

    def give_up(self, job_id: str, reason: str) -> None:
        """Fail the job, exporting the codes it did create (they exist: only the export shows them)."""
        if self._jobs.mark_failing(job_id, reason, self._now()):
            self.resume(job_id)

    def resume(self, job_id: str) -> None:
        job = self._active(job_id)
        if job is not None and job.get("failing"):
            self._assemble(job)

    def _assemble(self, job: dict[str, Any]) -> None:
        if self._assembler.start(job, self._assembly(job), queue_url=self._settings.generation_queue_url,
                                 message_type=ASSEMBLE):
            self._complete(str(job["job_id"]))

    def _run_part(self, message: dict[str, Any]) -> None:
        job = self._active(str(message["job_id"]))
        if job is not None and self._assembler.run_part(job, self._assembly(job), message):
            self._complete(str(job["job_id"]))

    def _complete(self, job_id: str) -> None:
        job = self._active(job_id)
        if job is None:
            return
        assembly = self._assembly(job)
        created = int(job.get("created", 0))
        result = {"export_bucket": assembly.bucket, "export_key": assembly.dest, "created": created,
                  "campaign_id": job["campaign_id"]}
        values: dict[str, Any] = {"result": result, "finished_at": self._now(), "updated_at": self._now()}
        if job.get("failing"):
            values["error"] = str(job["failing"])
        elif created == 0:
            values["error"] = "no code could be created"
        if self._jobs.finish(job_id, "failed" if "error" in values else "succeeded", values):
            self._assembler.clean_up(assembly)
