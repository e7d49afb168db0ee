"""Bulk objects and queues: the S3 and SQS calls of imports and generation jobs.

S3: ranged streaming reads (never a whole object in memory), writes, listings, the
multipart uploads that assemble results files and exports part by part (each part
uploaded by its own worker: see `coupons.bulk_assembly`), presigned reads.
SQS: JSON messages ten per `SendMessageBatch`, optionally delayed, and the short
back-off of a failed message.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from botocore.exceptions import ClientError

from .dynamo import chunks, error_code

MULTIPART_PART_BYTES = 8 * 1024 * 1024  # S3 parts are at least 5 MB, but the last
READ_CHUNK_BYTES = 256 * 1024
MAX_DELAY_SECONDS = 900  # SQS's longest message delay


class ObjectChanged(Exception):
    """The object no longer has the ETag the job started from."""


class BulkObjects:
    """The S3 calls of the bulk features: ranged streaming reads, writes, concatenation, presigning."""

    def __init__(self, s3: Any, *, kms_key_id: str | None = None) -> None:
        self._s3 = s3
        self._kms_key_id = kms_key_id

    def _encryption(self, encrypt: bool) -> dict[str, str]:
        if not encrypt:
            return {}
        extra = {"ServerSideEncryption": "aws:kms"}
        if self._kms_key_id:
            extra["SSEKMSKeyId"] = self._kms_key_id
        return extra

    def stream(self, bucket: str, key_name: str, *, etag: str | None = None, version_id: str | None = None,
               start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The object's bytes [start, end) in chunks, never the whole object in memory."""
        if end is not None and end <= start:
            return
        request: dict[str, Any] = {"Bucket": bucket, "Key": key_name}
        if start or end is not None:
            request["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        if etag:
            request["IfMatch"] = f'"{etag.strip(chr(34))}"'
        if version_id:
            request["VersionId"] = version_id
        try:
            body = self._s3.get_object(**request)["Body"]
        except ClientError as error:
            if error_code(error) in ("PreconditionFailed", "412", "NoSuchKey", "NoSuchVersion"):
                raise ObjectChanged(key_name) from error
            raise
        try:
            yield from body.iter_chunks(READ_CHUNK_BYTES)
        finally:
            body.close()

    def put(self, bucket: str, key_name: str, body: bytes, *, content_type: str = "text/csv",
            metadata: Mapping[str, str] | None = None, encrypt: bool = False, if_absent: bool = False) -> bool:
        """Write an object; with `if_absent`, only if none exists under that key (False when one does)."""
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self._s3.put_object(Bucket=bucket, Key=key_name, Body=body, ContentType=content_type,
                                Metadata=dict(metadata or {}), **self._encryption(encrypt), **extra)
        except ClientError as error:
            if if_absent and error_code(error) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def get_bytes(self, bucket: str, key_name: str) -> bytes:
        return bytes(self._s3.get_object(Bucket=bucket, Key=key_name)["Body"].read())

    def listing(self, bucket: str, prefix: str, *, after: str = "", last: str | None = None) -> list[tuple[str, int]]:
        """(key, size) of every object under a prefix, in S3's (lexicographic) order; only the keys
        after `after` and up to `last` when given."""
        found: list[tuple[str, int]] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if after:
            request["StartAfter"] = after
        for page in paginator.paginate(**request):
            for obj in page.get("Contents", []):
                if last is not None and obj["Key"] > last:
                    return found
                found.append((obj["Key"], int(obj["Size"])))
        return found

    def keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under a prefix, in S3's (lexicographic) order."""
        return [key_name for key_name, _ in self.listing(bucket, prefix)]

    def delete(self, bucket: str, keys: Iterable[str]) -> None:
        for batch in chunks(keys, 1000):
            self._s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})

    def concatenate(self, bucket: str, dest: str, head: bytes, sources: Iterable[str], *,
                    source_bucket: str | None = None, content_type: str = "text/csv",
                    metadata: Mapping[str, str] | None = None, encrypt: bool = False, tail: bytes = b"") -> int:
        """Write head + every source object, in order, + tail to dest; streaming, at most ~2 parts in memory.

        Small results are one PutObject; larger ones a multipart upload of 8 MB parts. Returns
        the number of bytes written. (Results too large for one invocation are assembled part by
        part in parallel instead: coupons.bulk_assembly.)
        """
        buffer = bytearray(head)
        upload_id: str | None = None
        parts: list[tuple[int, str]] = []
        written = 0

        def pieces() -> Iterator[bytes]:
            for source in sources:
                yield from self.stream(source_bucket or bucket, source)
            yield tail

        try:
            for chunk in pieces():
                buffer += chunk
                if len(buffer) >= MULTIPART_PART_BYTES:
                    if upload_id is None:
                        upload_id = self.start_upload(bucket, dest, content_type=content_type, metadata=metadata,
                                                      encrypt=encrypt)
                    parts.append((len(parts) + 1, self.upload_part(bucket, dest, upload_id, len(parts) + 1,
                                                                   bytes(buffer))))
                    written += len(buffer)
                    buffer.clear()
            if upload_id is None:
                self.put(bucket, dest, bytes(buffer), content_type=content_type, metadata=metadata,
                         encrypt=encrypt)
                return len(buffer)
            if buffer:
                parts.append((len(parts) + 1, self.upload_part(bucket, dest, upload_id, len(parts) + 1,
                                                               bytes(buffer))))
                written += len(buffer)
            self.complete_upload(bucket, dest, upload_id, parts)
            return written
        except BaseException:
            if upload_id is not None:
                self.abort_upload(bucket, dest, upload_id)
            raise

    # --- multipart uploads: parts may come from different workers ---

    def start_upload(self, bucket: str, dest: str, *, content_type: str = "text/csv",
                     metadata: Mapping[str, str] | None = None, encrypt: bool = False) -> str:
        return str(self._s3.create_multipart_upload(Bucket=bucket, Key=dest, ContentType=content_type,
                                                    Metadata=dict(metadata or {}),
                                                    **self._encryption(encrypt))["UploadId"])

    def upload_part(self, bucket: str, dest: str, upload_id: str, number: int, data: bytes) -> str:
        """Upload (or upload again: the last one counts) part `number`; its ETag."""
        return str(self._s3.upload_part(Bucket=bucket, Key=dest, UploadId=upload_id, PartNumber=number,
                                        Body=data)["ETag"])

    def complete_upload(self, bucket: str, dest: str, upload_id: str, parts: list[tuple[int, str]]) -> bool:
        """Complete the upload from its parts' (number, ETag); False when it is gone (a twin completed it)."""
        try:
            self._s3.complete_multipart_upload(Bucket=bucket, Key=dest, UploadId=upload_id, MultipartUpload={
                "Parts": [{"PartNumber": number, "ETag": etag} for number, etag in sorted(parts)]})
        except ClientError as error:
            if error_code(error) == "NoSuchUpload":
                return False
            raise
        return True

    def abort_upload(self, bucket: str, dest: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError):  # gone already; the bucket's lifecycle aborts leftovers anyway
            self._s3.abort_multipart_upload(Bucket=bucket, Key=dest, UploadId=upload_id)

    def presign_get(self, bucket: str, key_name: str, *, expires_in: int = 3600) -> str:
        return str(self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key_name}, ExpiresIn=expires_in))


# --- queues -----------------------------------------------------------------------------------


class QueueSender:
    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs

    def retry_later(self, queue_url: str, receipt_handle: str, receive_count: int) -> None:
        """A failed message comes back after 10, 20, 40... seconds (at most 15 minutes), not after the
        queue's whole visibility timeout (sized for the longest run)."""
        delay = min(900, 10 * 2 ** max(0, receive_count - 1))
        with contextlib.suppress(ClientError):  # if not, it is back after the visibility timeout anyway
            self._sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=receipt_handle,
                                                VisibilityTimeout=delay)

    def send(self, queue_url: str, messages: Iterable[Mapping[str, Any]], *, delay_seconds: int = 0) -> int:
        """Send JSON messages, ten per SendMessageBatch, each delivered after `delay_seconds` (at most
        15 minutes); retries the entries SQS refused."""
        delay = max(0, min(MAX_DELAY_SECONDS, int(delay_seconds)))
        sent = 0
        for batch in chunks(messages, 10):
            entries = [{"Id": str(i), "MessageBody": json.dumps(m, separators=(",", ":")),
                        **({"DelaySeconds": delay} if delay else {})} for i, m in enumerate(batch)]
            for attempt in range(5):
                response = self._sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
                failed = {f["Id"] for f in response.get("Failed", [])}
                sent += len(entries) - len(failed)
                entries = [e for e in entries if e["Id"] in failed]
                if not entries:
                    break
                time.sleep(0.1 * (2 ** attempt))
            if entries:
                from ..errors import TryAgain

                raise TryAgain(retry_after=1)
        return sent
