"""Assembling a bulk job's output (an import's results file, a generation's export) from its work parts.

Workers write their output as small work objects under `work/<job_id>/` (one per checkpoint,
in key order). The job's output is those parts, in key order, between a head and a tail.

- Up to `part_bytes` (8 MiB) in all: concatenated at once, one PutObject.
- Larger: in parallel. The parts are cut into groups of consecutive keys of at least
  `part_bytes` each (S3 wants parts of 5 MiB but the last); one multipart upload is
  claimed on the job item (the first claim wins, a loser aborts its own); the plan
  (each group's key bounds) is stored once (`If-None-Match: *`) so that every
  planner, redelivered or concurrent, sends the same groups; one queue message per
  group then uploads that group as part n of the upload. Each part's ETag is
  checkpointed; the worker that finds every part checkpointed completes the upload.
  No invocation reads more than one group (about `part_bytes`): a 5 GB results file
  is ~640 groups, run ten or twenty at a time, instead of one invocation reading it all.

The service owns what happens after (the job's summary and status).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .adapters import bulk_objects
from .adapters.bulk_objects import BulkObjects, QueueSender
from .adapters.bulk_store import JobTable
from .clock import iso, utcnow

UPLOAD_FIELD = "assembly_upload"


@dataclass(frozen=True)
class Assembly:
    """What to build: dest = head + every object under prefix (in key order) + tail."""

    bucket: str
    prefix: str
    dest: str
    head: bytes
    tail: bytes = b""
    encrypt: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def plans(self) -> str:
        return self.prefix.rstrip("/") + ".assembly/"  # beside the parts, not among them


Group = tuple[str, str]  # (the key just before the group, or ""; the group's last key)


def plan_groups(listing: list[tuple[str, int]], part_bytes: int, head: int = 0) -> list[Group]:
    """Consecutive keys in groups of at least `part_bytes` (the head counts in the first); the last
    group takes what is left. Every key is in exactly one group, in order."""
    groups: list[Group] = []
    after, size = "", head
    for position, (key_name, object_size) in enumerate(listing):
        size += object_size
        if size >= part_bytes or position == len(listing) - 1:
            groups.append((after, key_name))
            after, size = key_name, 0
    return groups


def _digest(upload_id: str) -> str:
    return hashlib.sha256(upload_id.encode()).hexdigest()[:16]


class Assembler:
    def __init__(self, *, objects: BulkObjects, jobs: JobTable, queue: QueueSender,
                 clock: Callable[[], datetime] = utcnow, part_bytes: int | None = None) -> None:
        self._objects = objects
        self._jobs = jobs
        self._queue = queue
        self._clock = clock
        self.part_bytes = part_bytes or bulk_objects.MULTIPART_PART_BYTES  # 8 MiB (tests make it smaller)

    def start(self, job: Mapping[str, Any], assembly: Assembly, *, queue_url: str, message_type: str) -> bool:
        """Assemble now (True: done) or send one message per group (False: the last group completes it)."""
        job_id = str(job["job_id"])
        listing = self._objects.listing(assembly.bucket, assembly.prefix)
        total = len(assembly.head) + sum(size for _, size in listing) + len(assembly.tail)
        if total <= self.part_bytes:
            self._objects.concatenate(assembly.bucket, assembly.dest, assembly.head, [k for k, _ in listing],
                                      tail=assembly.tail, encrypt=assembly.encrypt, metadata=assembly.metadata)
            return True
        mine = self._objects.start_upload(assembly.bucket, assembly.dest, metadata=assembly.metadata,
                                          encrypt=assembly.encrypt)
        upload = self._jobs.claim(job_id, UPLOAD_FIELD, mine)
        if upload != mine:
            self._objects.abort_upload(assembly.bucket, assembly.dest, mine)
        if upload is None:
            return False  # the job has finished meanwhile
        plan_key = assembly.plans + _digest(upload) + ".json"
        plan = {"upload": upload, "groups": plan_groups(listing, self.part_bytes, len(assembly.head))}
        self._objects.put(assembly.bucket, plan_key, json.dumps(plan).encode(), content_type="application/json",
                          encrypt=assembly.encrypt, if_absent=True)
        stored = json.loads(self._objects.get_bytes(assembly.bucket, plan_key))  # the first plan stored
        groups = stored["groups"]
        self._jobs.update(job_id, {"updated_at": iso(self._clock()), "assembly_parts": len(groups)})
        self._queue.send(queue_url, ({"type": message_type, "job_id": job_id, "upload": upload, "part": n,
                                      "parts": len(groups), "after": after, "last": last}
                                     for n, (after, last) in enumerate(groups, start=1)))
        return False

    def run_part(self, job: Mapping[str, Any], assembly: Assembly, message: Mapping[str, Any]) -> bool:
        """Upload one group as its part; True when this completed the whole upload."""
        upload, number, parts = str(message["upload"]), int(message["part"]), int(message["parts"])
        if job.get(UPLOAD_FIELD) != upload:
            return False  # a message of an upload this job no longer uses
        job_id = str(job["job_id"])
        prefix = f"A{_digest(upload)}-"
        name = f"{prefix}{number:05d}"
        if self._jobs.get_checkpoint(job_id, name) is None:
            keys = self._objects.listing(assembly.bucket, assembly.prefix, after=str(message["after"]),
                                         last=str(message["last"]))
            data = bytearray(assembly.head if number == 1 else b"")
            for key_name, _ in keys:
                for chunk in self._objects.stream(assembly.bucket, key_name):
                    data += chunk
            if number == parts:
                data += assembly.tail
            etag = self._objects.upload_part(assembly.bucket, assembly.dest, upload, number, bytes(data))
            self._jobs.put_checkpoint(job_id, name, {"part": number, "etag": etag})
            self._jobs.update(job_id, {"updated_at": iso(self._clock())})  # progress, for the watchdog
        done = self._jobs.checkpoints(job_id, prefix)
        if len(done) < parts:
            return False
        # Every part is there: complete (a twin that got here too finds the upload gone, which is fine).
        self._objects.complete_upload(assembly.bucket, assembly.dest, upload,
                                      [(int(cp["part"]), str(cp["etag"])) for cp in done])
        return True

    def clean_up(self, assembly: Assembly) -> None:
        """Delete the work parts and plans once the job has finished."""
        self._objects.delete(assembly.bucket, [*self._objects.keys(assembly.bucket, assembly.prefix),
                                               *self._objects.keys(assembly.bucket, assembly.plans)])
