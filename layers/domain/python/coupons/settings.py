"""Configuration read once from the environment through one model.

The five seed options keep their names; the rest name the resources each
function is wired to (CDK sets them on AWS, the local stack sets the same).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_NAMES: dict[str, str] = {
    "coupon_id_format": "COUPON_ID_FORMAT",
    "default_expiration_days": "DEFAULT_EXPIRATION_DAYS",
    "max_discount_per_user": "MAX_DISCOUNT_PER_USER",
    "discount_type": "DEFAULT_DISCOUNT_TYPE",
    "allowed_domains": "ALLOWED_DOMAINS",
    "failed_attempts_per_user": "FAILED_ATTEMPTS_PER_USER",
    "failed_attempts_per_ip": "FAILED_ATTEMPTS_PER_IP",
    "failed_attempts_per_client": "FAILED_ATTEMPTS_PER_CLIENT",
    "failed_attempt_window_seconds": "FAILED_ATTEMPT_WINDOW_SECONDS",
    "fraud_distinct_users_per_ip": "FRAUD_DISTINCT_USERS_PER_IP",
    "hot_coupon_shards": "HOT_COUPON_SHARDS",
    "hot_coupon_threshold": "HOT_COUPON_THRESHOLD",
    "coupons_table": "COUPONS_TABLE",
    "guards_table": "GUARDS_TABLE",
    "jobs_table": "JOBS_TABLE",
    "reports_table": "REPORTS_TABLE",
    "idempotency_table": "IDEMPOTENCY_TABLE",
    "kms_key_id": "KMS_KEY_ID",
    "code_key_version": "CODE_KEY_VERSION",
    "event_bus_name": "EVENT_BUS_NAME",
    "undelivered_events_queue_url": "UNDELIVERED_EVENTS_QUEUE_URL",
    "publish_retry_seconds": "PUBLISH_RETRY_SECONDS",
    "imports_bucket": "IMPORTS_BUCKET",
    "exports_bucket": "EXPORTS_BUCKET",
    "reports_bucket": "REPORTS_BUCKET",
    "generation_queue_url": "GENERATION_QUEUE_URL",
    "imports_queue_url": "IMPORTS_QUEUE_URL",
    "import_range_bytes": "IMPORT_RANGE_BYTES",
    "import_checkpoint_rows": "IMPORT_CHECKPOINT_ROWS",
    "generation_batch_size": "GENERATION_BATCH_SIZE",
    "job_stall_seconds": "JOB_STALL_SECONDS",
    "admin_group": "ADMIN_GROUP",
    "admin_issuer": "ADMIN_ISSUER",
    "admin_signin_url": "ADMIN_SIGNIN_URL",
    "admin_client_id": "ADMIN_CLIENT_ID",
}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    # The seed's configuration options.
    coupon_id_format: Literal["uuid", "alphanumeric"] = "uuid"
    default_expiration_days: int = Field(default=30, ge=1, le=3650)
    max_discount_per_user: int | None = Field(default=1, ge=1)
    discount_type: Literal["PERCENT", "FIXED"] = "PERCENT"
    allowed_domains: tuple[str, ...] = ()

    # Abuse defences (contract defaults).
    failed_attempts_per_user: int = Field(default=10, ge=1)
    failed_attempts_per_ip: int = Field(default=100, ge=1)
    # A server client (issue 12) checks out for a whole shop: its own limit, far above one shopper's.
    failed_attempts_per_client: int = Field(default=10_000, ge=1)
    failed_attempt_window_seconds: int = Field(default=600, ge=1)
    fraud_distinct_users_per_ip: int = Field(default=20, ge=2)
    # Hot coupons (checkout): a coupon with max_uses >= the threshold splits its cap across this many
    # shard items on its first redemption; 32 keeps each under ~400 writes/s at 10,000 redemptions/s.
    hot_coupon_shards: int = Field(default=32, ge=1, le=64)
    hot_coupon_threshold: int = Field(default=1000, ge=1)

    # Resources.
    coupons_table: str = "coupons"
    guards_table: str = "coupons-guards"
    jobs_table: str = "coupons-jobs"
    reports_table: str = "coupons-reports"  # kept per-day report aggregates
    idempotency_table: str = "coupons-idempotency"  # Idempotency-Key records (issue 17)
    kms_key_id: str = "alias/coupons"
    code_key_version: int = Field(default=1, ge=1)
    event_bus_name: str = "coupons"
    # Events (issue 17): how long the publisher retries refused events before it parks them in the
    # undelivered-events queue (bounded by the Lambda's remaining time as well).
    undelivered_events_queue_url: str = ""
    publish_retry_seconds: float = Field(default=10.0, ge=0, le=300)
    imports_bucket: str = "coupons-imports"
    exports_bucket: str = "coupons-exports"
    reports_bucket: str = "coupons-reports"
    generation_queue_url: str = ""
    # Bulk (issue 5): files above import_range_bytes are split into ranges imported in parallel;
    # progress is checkpointed every import_checkpoint_rows rows; generation fans out in batches.
    imports_queue_url: str = ""
    import_range_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    import_checkpoint_rows: int = Field(default=1000, ge=1, le=100_000)
    generation_batch_size: int = Field(default=1000, ge=1, le=10_000)
    # The watchdog gives up a queued or running job whose progress stopped this long ago (issue 17).
    job_stall_seconds: int = Field(default=7200, ge=1)
    admin_group: str = "coupon-admins"
    # The admin pool's issuer URL: only its ID tokens can be admins (issue 17). Empty: nobody is.
    admin_issuer: str = ""
    # The console's sign-in: the admin pool's managed login domain and its public app client.
    admin_signin_url: str = ""
    admin_client_id: str = ""

    @field_validator("discount_type", mode="before")
    @classmethod
    def _discount_type_aliases(cls, value: object) -> object:
        # The seed writes "fixed"/"percentage"; the contract writes FIXED/PERCENT.
        if isinstance(value, str):
            return {"PERCENTAGE": "PERCENT"}.get(value.strip().upper(), value.strip().upper())
        return value

    @field_validator("allowed_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(d.strip().lower() for d in value.replace(";", ",").split(",") if d.strip())
        return value

    @field_validator("max_discount_per_user", mode="before")
    @classmethod
    def _unlimited(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "null", "unlimited"}:
            return None
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {field: env[name] for field, name in ENV_NAMES.items() if name in env}
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once per container)."""
    return Settings.from_env()
