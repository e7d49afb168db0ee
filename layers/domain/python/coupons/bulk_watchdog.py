"""The job watchdog: bulk jobs that stopped making progress are given up, never left running.

A Lambda timeout is not an exception: a run cut off by it gives nothing up, and once its
message has gone to the dead-letter queue nothing would ever touch the job again (issue 17).
Every worker moves a job's `updated_at` with each checkpoint, hand-over and assembled part.
Every 10 minutes (`job-watchdog` schedule) this reads the queued and running jobs (the sparse
active-jobs index: no Scan) and, for each one whose `updated_at` is older than
`JOB_STALL_SECONDS` (default two hours: far longer than a healthy job waits between two
checkpoints, queue back-logs and throttling back-off included):

1. the first time: marks it `failing` (only if `updated_at` did not move meanwhile) and sends
   the job's queue a give-up message: a worker assembles the results or export it has and
   fails it (`failing` also stops any straggler from adding progress);
2. if a given-up job still makes no progress (that assembly never finished either): fails it
   at once, without its partial output.

So a job is terminal at most two stall periods after its last progress.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .adapters.bulk_objects import QueueSender
from .adapters.bulk_store import JobTable
from .clock import iso, parse_iso, utcnow
from .jobs import KIND_GENERATE, KIND_IMPORT, TERMINAL
from .settings import Settings

GIVE_UP = {KIND_IMPORT: "import-give-up", KIND_GENERATE: "generate-give-up"}


def stalled_for(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


class JobWatchdog:
    def __init__(self, *, jobs: JobTable, queue: QueueSender, settings: Settings,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._jobs = jobs
        self._queue = queue
        self._settings = settings
        self._clock = clock

    def _queue_url(self, kind: str) -> str:
        return self._settings.imports_queue_url if kind == KIND_IMPORT else self._settings.generation_queue_url

    def run(self) -> dict[str, Any]:
        now = self._clock()
        stall = self._settings.job_stall_seconds
        cutoff = now - timedelta(seconds=stall)
        active, given_up, failed = 0, [], []
        for listed in self._jobs.active():
            active += 1
            job = self._jobs.get(str(listed["job_id"]))  # the index is eventually consistent
            if job is None or job["status"] in TERMINAL or parse_iso(str(job["updated_at"])) > cutoff:
                continue
            job_id, kind = str(job["job_id"]), str(job["kind"])
            if job.get("failing"):
                if self._jobs.finish(job_id, "failed", {
                        "error": f"{job['failing']}; its partial results could not be assembled either",
                        "finished_at": iso(now), "updated_at": iso(now)}):
                    failed.append(job_id)
                continue
            reason = (f"no progress for {stalled_for(stall)} (a run timed out, or its messages went to the"
                      " dead-letter queue)")
            if kind in GIVE_UP and self._jobs.mark_failing(job_id, reason, iso(now),
                                                           updated_at=str(job["updated_at"])):
                self._queue.send(self._queue_url(kind), [{"type": GIVE_UP[kind], "job_id": job_id}])
                given_up.append(job_id)
        return {"active": active, "given_up": given_up, "failed": failed}
