"""Bulk jobs: ids, the job item's shape, derived coupon ids, and the `GET /jobs/{job_id}` view.

A job item (jobs table, `pk=JOB#<id>`, `sk=JOB`, `entity=job`) carries everything
the contract's job shape and the completion events need, and never a code:

    job_id, kind (import|generate), status (queued|running|succeeded|failed),
    total, processed, failed, created, rejected, duplicates,
    campaign_id, created_by (the actor), source_key / result_key (imports),
    result (a small summary map), error (when failed), created_at, updated_at,
    finished_at, ttl; while queued or running gsi1pk/gsi1sk (the active-jobs index the
    watchdog reads); `failing` (a reason) once given up, while its partial results are
    assembled; `assembly_upload` while a large result is assembled part by part.

Errors and reasons are worded by this code, never copied from a file (issue 17).

The events publisher turns the one transition to succeeded/failed into
`BulkImportCompleted` / `BulkGenerationCompleted` (coupons/events.py).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from .clock import epoch, iso, utcnow
from .errors import JobNotFound

KIND_IMPORT = "import"
KIND_GENERATE = "generate"
JobKind = Literal["import", "generate"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]
TERMINAL = ("succeeded", "failed")
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
JOB_RETENTION = timedelta(days=90)
# Attempts at one queue message before the job is given up as failed (the queue's maxReceiveCount).
MAX_RECEIVES = 5
ACTIVE_JOBS = "JOBS#ACTIVE"  # gsi1pk of every queued or running job (adapters.bulk_store.ACTIVE_PK)

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_ID_NAMESPACE = uuid.UUID("5b0e8a54-4c1f-4d55-9a53-7a3c0f1b2c61")


def import_job_id(bucket: str, key: str, content_sha256: str) -> str:
    """The import job of one object's content: the same bytes under the same key always map to the
    same job. Never the ETag: for SSE-KMS objects and multipart uploads it is not a hash of the
    content, so a re-upload of the same file would start a second job (issue 11, hole 8)."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{content_sha256}".encode()).hexdigest()
    return f"imp-{digest[:40]}"


def new_generation_job_id() -> str:
    return f"gen-{uuid.uuid4().hex}"


def derived_coupon_id(id_format: str, seed: str) -> str:
    """A coupon id that is a pure function of where the row came from (its checkpoint).

    Bulk writers derive ids instead of drawing them so that a replayed batch finds the
    coupons it already wrote (the id pointer exists) and creates nothing twice. Ids are
    not secrets; codes are, and those are always drawn from the CSPRNG.
    """
    if id_format == "uuid":
        return str(uuid.uuid5(_ID_NAMESPACE, seed))
    if id_format == "alphanumeric":
        number = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
        chars = []
        for _ in range(20):
            number, digit = divmod(number, 36)
            chars.append(_ID_ALPHABET[digit])
        return "".join(chars)
    raise ValueError(f"unknown coupon_id_format {id_format!r}")


def new_job(job_id: str, kind: str, *, actor: str, now: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "job_id": job_id, "kind": kind, "status": "queued", "total": 0, "processed": 0, "failed": 0,
        "created": 0, "created_by": actor, "created_at": iso(now), "updated_at": iso(now),
        "ttl": epoch(now + JOB_RETENTION),
        # In the sparse active-jobs index while queued or running (the watchdog's list; finish removes it).
        "gsi1pk": ACTIVE_JOBS, "gsi1sk": f"{iso(now)}#{job_id}",
        **fields,
    }


class JobView(BaseModel):
    """`GET /jobs/{job_id}`."""

    job_id: str
    kind: JobKind
    status: JobStatus
    total: int
    processed: int
    failed: int
    result: dict[str, Any]


class JobReader(Protocol):
    def get(self, job_id: str) -> dict[str, Any] | None: ...


def job_view(item: Mapping[str, Any], presign: Callable[[str, str], str] | None = None) -> dict[str, Any]:
    """The contract's job shape. A generation export's URL is presigned now, at read time.

    (The URL is never stored: the job item feeds the events, and a link to plaintext codes
    has no place on the bus; presigning on read also keeps it fresh.)
    """
    kind = item["kind"]
    result: dict[str, Any] = {"created": int(item.get("created", 0))}
    if kind == KIND_IMPORT:
        result.update(rejected=int(item.get("rejected", 0)), duplicates=int(item.get("duplicates", 0)),
                      source_bucket=item.get("source_bucket"), source_key=item.get("source_key"),
                      result_bucket=item.get("result_bucket"), result_key=item.get("result_key"))
    if item.get("campaign_id"):
        result["campaign_id"] = item["campaign_id"]
    stored = item.get("result")
    if isinstance(stored, Mapping):
        result.update(stored)
    if item.get("error"):
        result["error"] = item["error"]
    # A failed job's export holds the codes it did create (issue 17): it is presigned as well.
    if presign and item.get("status") in TERMINAL and result.get("export_key") and result.get("export_bucket"):
        result["export_url"] = presign(str(result["export_bucket"]), str(result["export_key"]))
    return {
        "job_id": item["job_id"], "kind": kind, "status": item["status"], "total": int(item.get("total", 0)),
        "processed": int(item.get("processed", 0)), "failed": int(item.get("failed", 0)), "result": result,
    }


class JobService:
    def __init__(self, jobs: JobReader, presign: Callable[[str, str], str] | None = None) -> None:
        self._jobs = jobs
        self._presign = presign

    def get(self, job_id: str) -> dict[str, Any]:
        if not JOB_ID.fullmatch(job_id or ""):
            raise JobNotFound()  # malformed and unknown ids get the same answer
        item = self._jobs.get(job_id)
        if item is None:
            raise JobNotFound()
        return job_view(item, self._presign)


def now_iso(clock: Callable[[], datetime] = utcnow) -> str:
    return iso(clock())
