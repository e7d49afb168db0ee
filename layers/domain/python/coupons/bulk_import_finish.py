"""The end of an import job: `results/<name>` assembled from the ranges' work parts, then the job's
one move to succeeded or failed.

- Every range done: the results are assembled (at once, or part by part in parallel for a large
  file: coupons.bulk_assembly) and the job succeeds.
- Given up (a message that failed on its last receive, or the watchdog): the job is marked
  `failing`, which stops any further progress; the results of every row processed so far are
  assembled all the same, with a last `row 0` line saying the import stopped, and the job fails.
  Rows missing from that file were not imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .adapters.bulk_objects import BulkObjects, QueueSender
from .adapters.bulk_store import JobTable
from .bulk_assembly import Assembler, Assembly
from .clock import iso
from .jobs import TERMINAL
from .settings import Settings

log = logging.getLogger(__name__)

WORK_PREFIX = "work/"
ASSEMBLE = "import-assemble"
GIVE_UP = "import-give-up"


class ImportFinisher:
    def __init__(self, *, objects: BulkObjects, jobs: JobTable, queue: QueueSender, settings: Settings,
                 clock: Callable[[], datetime], head: bytes, lines: Callable[[list[tuple[int, str, str, str]]], bytes],
                 write_marker: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
        self._jobs = jobs
        self._settings = settings
        self._clock = clock
        self._head = head
        self._lines = lines
        self._write_marker = write_marker
        self.assembler = Assembler(objects=objects, jobs=jobs, queue=queue, clock=clock)

    def _now(self) -> str:
        return iso(self._clock())

    def _active(self, job_id: str) -> dict[str, Any] | None:
        job = self._jobs.get(job_id)
        return None if job is None or job["status"] in TERMINAL else job

    def assembly(self, job: dict[str, Any]) -> Assembly:
        tail = b""
        if job.get("failing"):
            tail = self._lines([(0, "rejected", "", f"the import stopped: {job['failing']}. Rows missing from"
                                                    " this file were not imported.")])
        return Assembly(bucket=job["result_bucket"], prefix=f"{WORK_PREFIX}{job['job_id']}/",
                        dest=job["result_key"], head=self._head, tail=tail, metadata={"job-id": job["job_id"]})

    def maybe_finish(self, job_id: str) -> None:
        """When every range is done: assemble results/<name> and finish the job."""
        job = self._active(job_id)
        if job is None:
            return
        total_ranges = int(job.get("ranges_total", 0))
        if total_ranges == 0 or int(job.get("ranges_done", 0)) < total_ranges:
            return
        self._assemble(job)

    def give_up(self, job_id: str, reason: str) -> None:
        """Fail the job, keeping the results of the rows it processed. `reason` is our own words, never
        text from the file (it reaches the job's event)."""
        if self._jobs.mark_failing(job_id, reason, self._now()):
            self.resume(job_id)

    def resume(self, job_id: str) -> None:
        """Assemble (again) a given-up job's partial results: the watchdog's give-up message."""
        job = self._active(job_id)
        if job is not None and job.get("failing"):
            self._assemble(job)

    def run_part(self, message: dict[str, Any]) -> None:
        job = self._active(str(message["job_id"]))
        if job is not None and self.assembler.run_part(job, self.assembly(job), message):
            self._complete(str(job["job_id"]))

    def _assemble(self, job: dict[str, Any]) -> None:
        if self.assembler.start(job, self.assembly(job), queue_url=self._settings.imports_queue_url,
                                message_type=ASSEMBLE):
            self._complete(str(job["job_id"]))

    def _complete(self, job_id: str) -> None:
        job = self._active(job_id)  # its final counters
        if job is None:
            return
        summary = {"created": int(job.get("created", 0)), "rejected": int(job.get("rejected", 0)),
                   "duplicates": int(job.get("duplicates", 0)), "result_key": job["result_key"]}
        status = "failed" if job.get("failing") else "succeeded"
        now = self._now()
        values: dict[str, Any] = {"result": summary, "finished_at": now, "updated_at": now}
        marker = {"job_id": job_id, "status": status, "source_key": job["source_key"],
                  "total": int(job.get("total", 0)), "processed": int(job.get("processed", 0)), **summary}
        if status == "failed":
            values["error"] = marker["error"] = str(job["failing"])
        self._write_marker(job, marker)
        if self._jobs.finish(job_id, status, values):
            self.assembler.clean_up(self.assembly(job))

    def give_up_safely(self, job_id: str, reason: str) -> None:
        """give_up from an error path: its own failure must not hide the error (the watchdog retries)."""
        try:
            self.give_up(job_id, reason)
        except Exception:
            log.exception("giving up import job %s failed; the watchdog will", job_id)
