"""Builds the bulk services (imports, generation, jobs) once per container, from the settings."""

from __future__ import annotations

from functools import lru_cache

from . import wiring
from .adapters import aws
from .adapters.bulk_store import BulkObjects, CouponBatchWriter, JobTable, QueueSender
from .bulk_import import ImportService
from .bulk_watchdog import JobWatchdog
from .generation import GenerationService
from .jobs import JobService
from .settings import get_settings


@lru_cache(maxsize=1)
def job_table() -> JobTable:
    return JobTable(aws.client("dynamodb"), get_settings().jobs_table)


@lru_cache(maxsize=1)
def bulk_objects() -> BulkObjects:
    return BulkObjects(aws.client("s3"), kms_key_id=get_settings().kms_key_id)


@lru_cache(maxsize=1)
def batch_writer() -> CouponBatchWriter:
    return CouponBatchWriter(aws.client("dynamodb"), get_settings().coupons_table)


@lru_cache(maxsize=1)
def queue_sender() -> QueueSender:
    return QueueSender(aws.client("sqs"))


@lru_cache(maxsize=1)
def import_service() -> ImportService:
    return ImportService(admin=wiring.admin_service(), writer=batch_writer(), jobs=job_table(),
                         objects=bulk_objects(), queue=queue_sender(), settings=get_settings())


@lru_cache(maxsize=1)
def generation_service() -> GenerationService:
    return GenerationService(admin=wiring.admin_service(), cipher=wiring.cipher, writer=batch_writer(),
                             jobs=job_table(), objects=bulk_objects(), queue=queue_sender(),
                             settings=get_settings())


@lru_cache(maxsize=1)
def job_watchdog() -> JobWatchdog:
    return JobWatchdog(jobs=job_table(), queue=queue_sender(), settings=get_settings())


@lru_cache(maxsize=1)
def presigner() -> BulkObjects:
    """S3 with Signature V4 for presigned URLs: objects under SSE-KMS refuse the older signature."""
    from botocore.config import Config

    return BulkObjects(aws._session().client("s3", config=Config(signature_version="s3v4")))


@lru_cache(maxsize=1)
def job_service() -> JobService:
    return JobService(job_table(), presign=lambda bucket, key: presigner().presign_get(bucket, key))


def reset() -> None:
    for cached in (job_table, bulk_objects, batch_writer, queue_sender, import_service, generation_service,
                   job_watchdog, presigner, job_service):
        cached.cache_clear()
    wiring.reset()
