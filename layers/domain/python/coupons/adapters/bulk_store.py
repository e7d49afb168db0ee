"""Bulk storage: batched conditional coupon writes, job records and checkpoints, objects, queues.

Coupons
    `CouponBatchWriter.write` stores up to 50 coupons per `TransactWriteItems`
    (coupon item + id pointer = 2 items each, 100 items: the service limit), every
    item guarded by `attribute_not_exists(pk)`, so an existing code is never
    overwritten. After a key rotation each coupon adds one `ConditionCheck` per
    other live key version (its code's index there must be absent: one code never
    lives under two versions), so a transaction holds fewer coupons (33 with two
    versions). When a transaction is cancelled, DynamoDB's cancellation reasons
    name the offending items: those rows are classified and the rest is written
    again; without reasons (or for any other failure of the whole batch) each row
    is written on its own to find the offending ones.

    The id pointer carries the `job_id` that wrote it. Bulk ids are derived from
    the job's input (see `coupons.jobs.derived_coupon_id`), so a replayed batch
    (SQS redelivery, a resumed range, a second upload of the same object) finds
    its own pointers and reports those rows as already created instead of
    creating them again.

Jobs (the jobs table)
    job item      pk=JOB#<id>  sk=JOB            entity=job: kind, status, counters, result
    checkpoint    pk=JOB#<id>  sk=CP#<name>      entity=checkpoint: how far a range or batch got
    Progress is committed with the checkpoint in one transaction (checkpoint put
    guarded by its sequence number + `ADD` on the job's counters), so a replayed
    or concurrent duplicate never counts twice. Status moves to succeeded/failed
    exactly once (conditional update): that transition is what the events
    publisher turns into BulkImportCompleted / BulkGenerationCompleted.
    While a job is queued or running its item is in the sparse index gsi1
    (`gsi1pk=JOBS#ACTIVE`), which the watchdog reads; finishing removes it. A job
    given up (`failing`, the reason) takes no more progress: its results so far are
    assembled, then it fails.

Objects and queues: adapters/bulk_objects.py (re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from .bulk_objects import MULTIPART_PART_BYTES, BulkObjects, ObjectChanged, QueueSender
from .coupon_store import OTHER_HASHES, code_pk, coupon_item, free_checks, id_pk
from .dynamo import error_code, from_item, is_transient, key, to_item, to_value, translate

__all__ = ["MULTIPART_PART_BYTES", "BulkObjects", "CouponBatchWriter", "JobTable", "ObjectChanged",
           "PendingCoupon", "QueueSender", "WriteResult"]

MAX_COUPONS_PER_TRANSACTION = 50  # 2 items each: TransactWriteItems takes at most 100
MAX_TRANSACTION_ITEMS = 100
_CONFLICT_ATTEMPTS = 4

CREATED = "created"  # written now
REPLAYED = "replayed"  # written earlier by this same job (a redelivery or a resumed run)
CODE_TAKEN = "code_taken"  # the code belongs to another coupon
ID_TAKEN = "id_taken"  # the derived id was created by another job (same input uploaded before)
INVALID = "invalid"  # DynamoDB refused the item itself (e.g. too large)


CHECK_FAILED = "ConditionalCheckFailed"
Reason = tuple[str | None, dict[str, Any] | None]  # a cancellation reason code, and the item in the way


@dataclass
class PendingCoupon:
    ref: int  # the caller's reference: a row number or a position in a batch
    record: dict[str, Any]  # a coupon record as AdminService.create builds it


@dataclass
class WriteResult:
    outcome: str
    pointer: dict[str, Any] | None = None  # REPLAYED / ID_TAKEN: the stored pointer; CODE_TAKEN: its owner's
    message: str = ""


def pointer_item(record: Mapping[str, Any], job_id: str, ref: int) -> dict[str, Any]:
    """The id pointer CouponStore.create writes, plus the job (and its row or position) that wrote it."""
    return {"pk": id_pk(record["coupon_id"]), "sk": "COUPON", "entity": "pointer",
            "coupon_id": record["coupon_id"], "code_hash": record["code_hash"], "job_id": job_id,
            "job_ref": ref}


class CouponBatchWriter:
    def __init__(self, dynamodb: Any, table: str, *, sleep: Any = time.sleep) -> None:
        self._db = dynamodb
        self._table = table
        self._sleep = sleep
        self.transactions = 0  # calls made (for the benchmarks)

    def write(self, pending: list[PendingCoupon], job_id: str) -> dict[int, WriteResult]:
        """Store every pending coupon that can be stored; one result per ref."""
        results: dict[int, WriteResult] = {}
        for batch in self._batches(pending):
            self._write_batch(batch, job_id, results)
        return results

    def _batches(self, pending: list[PendingCoupon]) -> Iterator[list[PendingCoupon]]:
        """Runs of rows whose items fit one transaction (at most 50 coupons, 100 items)."""
        batch: list[PendingCoupon] = []
        size = 0
        for row in pending:
            n = 1 + len(self._code_hashes(row))  # coupon + pointer + one check per other version
            if batch and (size + n > MAX_TRANSACTION_ITEMS or len(batch) == MAX_COUPONS_PER_TRANSACTION):
                yield batch
                batch, size = [], 0
            batch.append(row)
            size += n
        if batch:
            yield batch

    def _items(self, row: PendingCoupon, job_id: str) -> list[dict[str, Any]]:
        # ALL_OLD: a cancelled transaction hands back the items in the way (no read to classify a row).
        # Coupon, pointer, then one check per other live key version (`_code_hashes` lists them alike).
        return [
            {"Put": {"TableName": self._table, "Item": to_item(coupon_item(row.record)),
                     "ConditionExpression": "attribute_not_exists(pk)",
                     "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
            {"Put": {"TableName": self._table, "Item": to_item(pointer_item(row.record, job_id, row.ref)),
                     "ConditionExpression": "attribute_not_exists(pk)",
                     "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
            *free_checks(self._table, row.record),
        ]

    @staticmethod
    def _code_hashes(row: PendingCoupon) -> list[str]:
        """The code's index under the active version, then under each other version checked."""
        others = [h for h in row.record.get(OTHER_HASHES) or () if h != row.record["code_hash"]]
        return [row.record["code_hash"], *others]

    def _write_batch(self, batch: list[PendingCoupon], job_id: str, results: dict[int, WriteResult]) -> None:
        remaining = list(batch)
        for attempt in range(_CONFLICT_ATTEMPTS):
            if not remaining:
                return
            items = [self._items(row, job_id) for row in remaining]
            try:
                reasons = self._transact([i for row_items in items for i in row_items])
            except ClientError as error:
                if error_code(error) != "ValidationException":
                    raise
                reasons = []  # e.g. one item too large: the row-by-row pass finds it
            if reasons is None:  # committed
                for row in remaining:
                    results[row.ref] = WriteResult(CREATED)
                return
            if not reasons or len(reasons) != sum(len(row_items) for row_items in items):
                break  # no usable reasons: find the offending rows one by one
            retry = []
            offset = 0
            for row, row_items in zip(remaining, items, strict=True):
                verdict = self._classify(row, reasons[offset:offset + len(row_items)], job_id)
                offset += len(row_items)
                if verdict is None:
                    retry.append(row)  # not at fault: cancelled because of another row
                else:
                    results[row.ref] = verdict
            if len(retry) == len(remaining):  # nobody at fault: a conflict with another writer
                self._sleep(0.05 * (2 ** attempt))
            remaining = retry
        for row in remaining:
            results[row.ref] = self._write_one(row, job_id)

    def _write_one(self, row: PendingCoupon, job_id: str) -> WriteResult:
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                reasons = self._transact(self._items(row, job_id))
            except ClientError as error:
                if error_code(error) == "ValidationException":
                    return WriteResult(INVALID, message="the coupon could not be stored (too large?)")
                raise
            if reasons is None:
                return WriteResult(CREATED)
            if not any(code for code, _ in reasons):  # cancelled without reasons: look at what is stored
                code_hash, *others = self._code_hashes(row)
                stored = [self.get_coupon_item(code_hash), self.get_pointer(row.record["coupon_id"]),
                          *(self.get_coupon_item(h) for h in others)]
                reasons = [(CHECK_FAILED, item) if item else (None, None) for item in stored]
            verdict = self._classify(row, reasons, job_id)
            if verdict is not None:
                return verdict
            self._sleep(0.05 * (2 ** attempt))
        from ..errors import TryAgain

        raise TryAgain(retry_after=1)

    def _classify(self, row: PendingCoupon, reasons: Sequence[Reason], job_id: str) -> WriteResult | None:
        """One row's verdict from its items' reasons (coupon, pointer, other versions' checks), or None
        when the row was not at fault."""
        hashes = self._code_hashes(row)
        padded: list[Reason] = [*reasons, *[(None, None)] * max(0, 1 + len(hashes) - len(reasons))]
        pointer_reason = padded[1]
        if pointer_reason[0] == CHECK_FAILED:
            pointer = pointer_reason[1] or self.get_pointer(row.record["coupon_id"])
            if pointer is not None and pointer.get("job_id") == job_id:
                return WriteResult(REPLAYED, pointer=pointer)
            return WriteResult(ID_TAKEN, pointer=pointer)
        code_reasons = [padded[0], *padded[2:]]
        for (reason, holder), code_hash in zip(code_reasons, hashes, strict=False):
            if reason == CHECK_FAILED:  # the code is live (under this or another key version)
                holder = holder or self.get_coupon_item(code_hash)
                owner = None if holder is None else self.get_pointer(str(holder["coupon_id"]))
                return WriteResult(CODE_TAKEN, pointer=owner)
        if "ValidationError" in (reason for reason, _ in padded):
            return WriteResult(INVALID, message="the coupon could not be stored (too large?)")
        return None

    def _transact(self, items: list[dict[str, Any]]) -> list[Reason] | None:
        """None when committed, else each item's cancellation reason and the item in the way
        ([] when DynamoDB gave no reasons)."""
        self.transactions += 1
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            code = error_code(error)
            if code == "TransactionCanceledException":
                raw = error.response.get("CancellationReasons") or []
                return [(None if r.get("Code") in (None, "None") else str(r.get("Code")), from_item(r.get("Item")))
                        for r in raw]
            if is_transient(error):
                raise translate(error) from error
            raise
        return None

    def get_pointer(self, coupon_id: str) -> dict[str, Any] | None:
        try:
            raw = self._db.get_item(TableName=self._table, Key=key(id_pk(coupon_id), "COUPON"),
                                    ConsistentRead=True)
        except ClientError as error:
            raise translate(error) from error
        return from_item(raw.get("Item"))

    def get_coupon_item(self, code_hash: str) -> dict[str, Any] | None:
        try:
            raw = self._db.get_item(TableName=self._table, Key=key(code_pk(code_hash), "COUPON"),
                                    ConsistentRead=True)
        except ClientError as error:
            raise translate(error) from error
        return from_item(raw.get("Item"))


# --- jobs -------------------------------------------------------------------------------------


def job_pk(job_id: str) -> str:
    return f"JOB#{job_id}"


ACTIVE = ("queued", "running")
ACTIVE_INDEX = "gsi1"  # sparse: only queued or running jobs carry its keys (coupons.jobs.new_job)
ACTIVE_PK = "JOBS#ACTIVE"  # = coupons.jobs.ACTIVE_JOBS
ACTIVE_KEYS = ("gsi1pk", "gsi1sk")


class JobTable:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self._get(job_pk(job_id), "JOB")

    def get_checkpoint(self, job_id: str, name: str) -> dict[str, Any] | None:
        return self._get(job_pk(job_id), f"CP#{name}")

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        try:
            raw = self._db.get_item(TableName=self._table, Key=key(pk, sk), ConsistentRead=True)
        except ClientError as error:
            raise translate(error) from error
        return from_item(raw.get("Item"))

    def create(self, job: Mapping[str, Any]) -> bool:
        """A new job item; False when a job with that id exists already."""
        item = {**job, "pk": job_pk(job["job_id"]), "sk": "JOB", "entity": "job"}
        try:
            self._db.put_item(TableName=self._table, Item=to_item(item),
                              ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise translate(error) from error
        return True

    def update(self, job_id: str, values: Mapping[str, Any], *, only_if_active: bool = True,
               remove: Sequence[str] = ()) -> bool:
        """SET (and REMOVE) attributes of a job; False when it has finished (or does not exist)."""
        names, exprs, attr_values = _set_clause(values)
        condition = "attribute_exists(pk)"
        if only_if_active:
            condition += " AND #status IN (:queued, :running)"
            names["#status"] = "status"
            attr_values.update({":queued": to_value("queued"), ":running": to_value("running")})
        expression = "SET " + ", ".join(exprs)
        if remove:
            names.update({f"#r{i}": name for i, name in enumerate(remove)})
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
        try:
            self._db.update_item(TableName=self._table, Key=key(job_pk(job_id), "JOB"),
                                 UpdateExpression=expression, ConditionExpression=condition,
                                 ExpressionAttributeNames=names, ExpressionAttributeValues=attr_values)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise translate(error) from error
        return True

    def finish(self, job_id: str, status: str, values: Mapping[str, Any]) -> bool:
        """The one transition to succeeded/failed (the job leaves the active index); False when another
        worker made it first."""
        return self.update(job_id, {**values, "status": status}, only_if_active=True, remove=ACTIVE_KEYS)

    def mark_failing(self, job_id: str, reason: str, now: str, *, updated_at: str | None = None) -> bool:
        """Give a job up: no more progress is taken (`commit` refuses) and its results so far are to be
        assembled. Keeps the first reason; False when the job has finished (or, with `updated_at`, moved)."""
        names = {"#f": "failing", "#u": "updated_at", "#status": "status"}
        values = {":r": to_value(reason), ":now": to_value(now), ":queued": to_value("queued"),
                  ":running": to_value("running")}
        condition = "#status IN (:queued, :running)"
        if updated_at is not None:
            condition += " AND #u = :seen"
            values[":seen"] = to_value(updated_at)
        try:
            self._db.update_item(TableName=self._table, Key=key(job_pk(job_id), "JOB"),
                                 UpdateExpression="SET #f = if_not_exists(#f, :r), #u = :now",
                                 ConditionExpression=condition, ExpressionAttributeNames=names,
                                 ExpressionAttributeValues=values)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise translate(error) from error
        return True

    def claim(self, job_id: str, field: str, value: str) -> str | None:
        """Set `field` unless it is set already; the value stored (ours or an earlier one), or None when
        the job has finished."""
        try:
            answer = self._db.update_item(
                TableName=self._table, Key=key(job_pk(job_id), "JOB"),
                UpdateExpression="SET #f = if_not_exists(#f, :v)",
                ConditionExpression="#status IN (:queued, :running)",
                ExpressionAttributeNames={"#f": field, "#status": "status"},
                ExpressionAttributeValues={":v": to_value(value), ":queued": to_value("queued"),
                                           ":running": to_value("running")},
                ReturnValues="ALL_NEW")  # (UPDATED_NEW may leave out a value the update did not change)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise translate(error) from error
        stored = from_item(answer.get("Attributes")) or {}
        return str(stored[field])

    def active(self) -> Iterator[dict[str, Any]]:
        """Every queued or running job, through the sparse active index (eventually consistent: read a
        job again before acting on it)."""
        request: dict[str, Any] = {
            "TableName": self._table, "IndexName": ACTIVE_INDEX, "KeyConditionExpression": "gsi1pk = :a",
            "ExpressionAttributeValues": {":a": to_value(ACTIVE_PK)}}
        while True:
            try:
                page = self._db.query(**request)
            except ClientError as error:
                raise translate(error) from error
            for item in page.get("Items", []):
                found = from_item(item)
                if found is not None:
                    yield found
            if not page.get("LastEvaluatedKey"):
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def put_checkpoint(self, job_id: str, name: str, state: Mapping[str, Any]) -> bool:
        """A checkpoint written once; False when it exists already (a twin wrote it)."""
        item = {**state, "pk": job_pk(job_id), "sk": f"CP#{name}", "entity": "checkpoint"}
        try:
            self._db.put_item(TableName=self._table, Item=to_item(item),
                              ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise translate(error) from error
        return True

    def checkpoints(self, job_id: str, prefix: str) -> list[dict[str, Any]]:
        """The job's checkpoints whose name starts with `prefix` (consistent reads), in name order."""
        request: dict[str, Any] = {
            "TableName": self._table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :sk)",
            "ExpressionAttributeValues": {":pk": to_value(job_pk(job_id)), ":sk": to_value(f"CP#{prefix}")}}
        found: list[dict[str, Any]] = []
        while True:
            try:
                page = self._db.query(**request)
            except ClientError as error:
                raise translate(error) from error
            found.extend(item for item in (from_item(i) for i in page.get("Items", [])) if item is not None)
            if not page.get("LastEvaluatedKey"):
                return found
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def commit(self, job_id: str, checkpoint: str, *, seq: int, state: Mapping[str, Any],
               add: Mapping[str, int], values: Mapping[str, Any]) -> bool:
        """Advance a checkpoint from `seq` to `seq + 1` and add its progress to the job, atomically.

        False when the checkpoint had moved on (a concurrent duplicate did this work) or the
        job has finished or was given up: nothing was counted.
        """
        cp_item = {**state, "pk": job_pk(job_id), "sk": f"CP#{checkpoint}", "entity": "checkpoint",
                   "seq": seq + 1}
        put: dict[str, Any] = {"TableName": self._table, "Item": to_item(cp_item)}
        if seq == 0:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put.update(ConditionExpression="seq = :seq", ExpressionAttributeValues={":seq": to_value(seq)})
        names, exprs, attr_values = _set_clause(values)
        adds = []
        for i, (field, amount) in enumerate(sorted(add.items())):
            names[f"#a{i}"] = field
            attr_values[f":a{i}"] = to_value(int(amount))
            adds.append(f"#a{i} :a{i}")
        names["#status"] = "status"
        attr_values.update({":queued": to_value("queued"), ":running": to_value("running")})
        expression = "SET " + ", ".join(exprs) + (" ADD " + ", ".join(adds) if adds else "")
        update = {"TableName": self._table, "Key": key(job_pk(job_id), "JOB"), "UpdateExpression": expression,
                  # a job given up takes no more progress: its results so far are being assembled
                  "ConditionExpression": "#status IN (:queued, :running) AND attribute_not_exists(failing)",
                  "ExpressionAttributeNames": names, "ExpressionAttributeValues": attr_values}
        try:
            self._db.transact_write_items(TransactItems=[{"Put": put}, {"Update": update}])
        except ClientError as error:
            if error_code(error) == "TransactionCanceledException":
                reasons = [r.get("Code") for r in error.response.get("CancellationReasons") or []]
                if "ConditionalCheckFailed" in reasons:
                    return False
            raise translate(error) from error
        return True


def _set_clause(values: Mapping[str, Any]) -> tuple[dict[str, str], list[str], dict[str, Any]]:
    names: dict[str, str] = {}
    exprs: list[str] = []
    attr_values: dict[str, Any] = {}
    for i, (field, value) in enumerate(sorted(values.items())):
        names[f"#s{i}"] = field
        attr_values[f":s{i}"] = to_value(value)
        exprs.append(f"#s{i} = :s{i}")
    return names, exprs, attr_values


