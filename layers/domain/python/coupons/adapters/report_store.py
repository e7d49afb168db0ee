"""What the finance reports read and write: the day indexes, the guards table, the reports bucket.

(The kept per-day aggregates are in `report_days`.)

Redemptions are found through write-sharded day indexes on the coupons table
(written by the checkout store):

- redemptions made on a UTC day: gsi3, `gsi3pk=DAY#<YYYY-MM-DD>#<shard>`;
- rollbacks made on a UTC day:   gsi4, `gsi4pk=RBDAY#<YYYY-MM-DD>#<shard>`;

(sort keys `<at iso>#<redemption id>`). Failed guesses are day counters split over
shard items (`pk=FAILED#<day>`, `count`), fraud flags are items under `pk=FRAUD#<day>`
in the guards table (see checkout_store).

Every shard is read and the shards are merged on the index sort key (each
shard comes back sorted by it), so a day streams through in order with only a
page per shard in memory. No Scan anywhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date
from typing import Any

from botocore.exceptions import ClientError

from .checkout_store import DAY_SHARDS  # the checkout store writes the day index and owns its shard count
from .dynamo import Item, from_item, translate
from .report_days import DynamoAggregateStore

__all__ = ["DynamoAggregateStore", "DynamoReportSource", "MultipartStream", "S3ReportSink", "default_aggregates",
           "default_sink", "default_source"]

PAGE_LIMIT: int | None = None  # None: DynamoDB's own 1 MB pages (the fewest round trips)
PART_BYTES = 8 * 1024 * 1024  # multipart part size (S3: at least 5 MB but the last); the memory a stream holds
REDEMPTION_FIELDS = (
    "redemption_id", "coupon_id", "campaign_id", "user_id", "order_id", "channel", "currency",
    "discount_amount", "status", "redeemed_at", "rolled_back_at",
    "order_subtotal", "total_after_discount",  # the daily CSV's order columns (issue 12)
)


def _plain(value: dict[str, Any]) -> Any:
    """One attribute the report reads (strings and numbers), without a full deserialiser per item."""
    if "S" in value:
        return value["S"]
    if "N" in value:
        number = str(value["N"])
        return int(number) if number.lstrip("-").isdigit() else float(number)
    if "NULL" in value:
        return None
    return (from_item({"v": value}) or {}).get("v")


class DynamoReportSource:
    """Reads one UTC day's redemptions, rollbacks, failed attempts and suspicious activity."""

    def __init__(self, dynamodb: Any, coupons_table: str, guards_table: str, *, shards: int = DAY_SHARDS,
                 page_limit: int | None = PAGE_LIMIT) -> None:
        self._db = dynamodb
        self._coupons = coupons_table
        self._guards = guards_table
        self._shards = shards
        self._page_limit = page_limit

    # --- the day indexes ------------------------------------------------------------------------

    def redemptions(self, day: date) -> Iterator[Item]:
        """Every redemption made on this day (whatever its status now), in index order."""
        return self._merged("gsi3", "gsi3pk", "gsi3sk", f"DAY#{day.isoformat()}")

    def rollbacks(self, day: date) -> Iterator[Item]:
        """Every rollback made on this day, in index order."""
        return self._merged("gsi4", "gsi4pk", "gsi4sk", f"RBDAY#{day.isoformat()}")

    def _merged(self, index: str, pk_name: str, sk_name: str, prefix: str) -> Iterator[Item]:
        streams = [self._partition(index, pk_name, f"{prefix}#{shard}") for shard in range(self._shards)]
        return heapq.merge(*streams, key=lambda item: str(item.get(sk_name, "")))

    def _partition(self, index: str, pk_name: str, value: str) -> Iterator[Item]:
        # No ProjectionExpression: it would not lower the read units (those count whole items),
        # and moto re-serialises the whole item once per projected attribute.
        wanted = (*REDEMPTION_FIELDS, f"{index}sk")
        request: dict[str, Any] = {
            "TableName": self._coupons,
            "IndexName": index,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": pk_name},
            "ExpressionAttributeValues": {":pk": {"S": value}},
        }
        if self._page_limit:
            request["Limit"] = self._page_limit
        while True:
            try:
                page = self._db.query(**request)
            except ClientError as error:
                raise translate(error) from error
            for raw in page.get("Items", []):
                yield {name: _plain(raw[name]) for name in wanted if name in raw}
            start = page.get("LastEvaluatedKey")
            if not start:
                return
            request["ExclusiveStartKey"] = start

    def last_redemption_at(self, coupon_id: str) -> str | None:
        """When the latest redemption of this coupon was made (one item read through gsi1)."""
        try:
            page = self._db.query(
                TableName=self._coupons, IndexName="gsi1", KeyConditionExpression="gsi1pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"CREDEEM#{coupon_id}"}},
                ProjectionExpression="redeemed_at", ScanIndexForward=False, Limit=1)
        except ClientError as error:
            raise translate(error) from error
        items = [from_item(raw) for raw in page.get("Items", [])]
        return str(items[0]["redeemed_at"]) if items and items[0] and items[0].get("redeemed_at") else None

    # --- the guards table -----------------------------------------------------------------------

    def _guards_partition(self, pk: str) -> Iterator[Item]:
        request: dict[str, Any] = {
            "TableName": self._guards,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
        }
        while True:
            try:
                page = self._db.query(**request)
            except ClientError as error:
                raise translate(error) from error
            for raw in page.get("Items", []):
                item = from_item(raw)
                if item is not None:
                    yield item
            start = page.get("LastEvaluatedKey")
            if not start:
                return
            request["ExclusiveStartKey"] = start

    def failed_attempts(self, day: date) -> int:
        """Failed guesses (validate/redeem answered COUPON_NOT_FOUND) counted on this day."""
        return sum(int(item.get("count", 0) or 0) for item in self._guards_partition(f"FAILED#{day.isoformat()}"))

    def suspicious(self, day: date) -> Iterator[Item]:
        """Fraud flags and lockouts raised on this day, page by page (storage keys left out)."""
        for item in self._guards_partition(f"FRAUD#{day.isoformat()}"):
            yield {k: v for k, v in item.items()
                   if k not in ("pk", "sk", "ttl", "entity") and not k.startswith("gsi")
                   and not isinstance(v, bytes | bytearray)}


class S3ReportSink:
    """The reports bucket: one folder per day, overwritten when the day is re-run."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        try:
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)
        except ClientError as error:
            raise translate(error) from error

    @contextmanager
    def open_stream(self, key: str, content_type: str) -> Iterator[MultipartStream]:
        """An object written part by part: it appears whole when the block ends, or not at all."""
        stream = MultipartStream(self._s3, self._bucket, key, content_type)
        try:
            yield stream
            stream.finish()
        except BaseException:
            stream.abort()
            raise


class MultipartStream:
    """Bytes to one S3 object with constant memory: one part (PART_BYTES) buffered at a time.

    Up to PART_BYTES it is a single PutObject; beyond, a multipart upload whose parts are all
    exactly PART_BYTES (S3 wants at least 5 MB) but the last. No local file.
    """

    def __init__(self, s3: Any, bucket: str, key: str, content_type: str) -> None:
        self._s3, self._bucket, self._key, self._type = s3, bucket, key, content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= PART_BYTES:
            self._part(bytes(self._buffer[:PART_BYTES]))
            del self._buffer[:PART_BYTES]

    def _part(self, body: bytes) -> None:
        try:
            if self._upload_id is None:
                self._upload_id = str(self._s3.create_multipart_upload(
                    Bucket=self._bucket, Key=self._key, ContentType=self._type)["UploadId"])
            number = len(self._parts) + 1
            answer = self._s3.upload_part(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                          PartNumber=number, Body=body)
        except ClientError as error:
            raise translate(error) from error
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def finish(self) -> None:
        if self._upload_id is None:
            body, self._buffer = bytes(self._buffer), bytearray()
            try:
                self._s3.put_object(Bucket=self._bucket, Key=self._key, Body=body, ContentType=self._type)
            except ClientError as error:
                raise translate(error) from error
            return
        if self._buffer:
            self._part(bytes(self._buffer))
            self._buffer = bytearray()
        try:
            self._s3.complete_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                               MultipartUpload={"Parts": self._parts})
        except ClientError as error:
            raise translate(error) from error
        self._upload_id = None

    def abort(self) -> None:
        """Drop the parts sent so far (the bucket's lifecycle rule also aborts forgotten uploads)."""
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with suppress(ClientError):  # the original error matters more; the lifecycle rule cleans up
                self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=upload_id)


def default_source() -> DynamoReportSource:
    """The source this process's settings name (clients are created lazily, on first call)."""
    from ..settings import get_settings
    from . import aws

    settings = get_settings()
    return DynamoReportSource(aws.client("dynamodb"), settings.coupons_table, settings.guards_table)


def default_sink() -> S3ReportSink:
    from ..settings import get_settings
    from . import aws

    return S3ReportSink(aws.client("s3"), get_settings().reports_bucket)


def default_aggregates() -> DynamoAggregateStore:
    from ..settings import get_settings
    from . import aws

    return DynamoAggregateStore(aws.client("dynamodb"), get_settings().reports_table)
