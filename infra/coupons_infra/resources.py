"""The one definition of every resource, read by both the CDK app and the local stack.

Plain data, no CDK import: the local stack creates the same tables, keys, buckets,
queues and bus from it, and serves the same routes with the same environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from coupons.settings import ENV_NAMES

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "functions"
DOMAIN_LAYER_DIR = ROOT / "layers" / "domain"
DEPS_REQUIREMENTS = ROOT / "layers" / "deps" / "requirements.txt"


@dataclass(frozen=True)
class Index:
    name: str
    partition_key: str
    sort_key: str


@dataclass(frozen=True)
class Table:
    key: str  # how functions and `coupons-local info` name it
    env: str  # the variable that carries its name
    name: str  # the physical name in the local stack (CDK lets CloudFormation choose)
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None
    stream: bool = False
    partition_key: str = "pk"
    sort_key: str | None = "sk"  # None: a partition key only


@dataclass(frozen=True)
class Bucket:
    key: str
    env: str
    name: str
    purpose: str
    # S3 event notification: objects created under this prefix go to this queue (key in QUEUES).
    notify_prefix_to_queue: tuple[str, str] | None = None
    # Lifecycle on AWS: objects under each prefix expire after that many days ("" = the whole bucket),
    # and their noncurrent versions a day later. Every bucket also aborts incomplete multipart
    # uploads and expires other noncurrent versions after 30 days (CDK).
    expire_after_days: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Queue:
    key: str
    env: str
    name: str
    visibility_timeout_seconds: int = 60
    max_receive_count: int = 5
    retention_days: int = 4
    alarm_when_visible: bool = False  # a message waiting here needs a person (not only in its DLQ)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # API Gateway form: /coupons/{coupon_id}
    public: bool = False  # no authorizer (only the OpenAPI document and the console page)


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str  # EventBridge cron(...) body: minutes hours day-of-month month day-of-week year
    every_seconds: int  # how often the local stack fires it
    description: str


@dataclass(frozen=True)
class Function:
    name: str  # folder under functions/, and the construct id
    description: str
    routes: tuple[Route, ...] = ()
    memory_mb: int = 512
    timeout_seconds: int = 10
    ephemeral_storage_mb: int = 512  # /tmp (Lambda: 512-10240 MB); the local host enforces it too
    # What it may touch: ("table", key, "read"|"write"|"readwrite"|"batchwrite"|"readbatchwrite"|"items"),
    # ("index", table key, index name) (Query),
    # ("key", "kms", "encrypt"|"decrypt"|"generate") (on AWS only with EncryptionContext purpose=coupon-codes),
    # ("bucket", key, "read"|"readversions"|"write"|"put"|"readwrite"|"delete", optionally ":<prefix>",
    # e.g. "put:results/"),
    # ("queue", key, "send"|"consume"), ("bus", "events", "put"). The CDK app turns each into
    # least-privilege IAM statements (infra/coupons_infra/constructs/functions.py) and refuses unknown ones.
    grants: tuple[tuple[str, str, str], ...] = ()
    schedule: Schedule | None = None
    queue: str | None = None  # consumes this queue
    queue_batch_size: int = 10  # SQS event source: messages per invocation (ReportBatchItemFailures on)
    queue_max_concurrency: int | None = None  # SQS event source ScalingConfig.MaximumConcurrency
    stream_of: str | tuple[str, ...] | None = None  # consumes this table's (or these tables') stream
    # Stream event source (issue 6): records per invocation; on AWS also bisect-on-error,
    # ReportBatchItemFailures, these retries, then the record goes to an SQS on-failure DLQ.
    stream_batch_size: int = 100
    stream_retry_attempts: int = 10
    # AWS only: reserve (and so also cap) concurrent executions; the default of CDK context
    # reserved_concurrency, which may change it per function (config.StackConfig).
    reserved_concurrency: int | None = None

    @property
    def directory(self) -> Path:
        return FUNCTIONS_DIR / self.name

    @property
    def stream_tables(self) -> tuple[str, ...]:
        """The table keys whose streams this function consumes (stream_of as a tuple)."""
        if self.stream_of is None:
            return ()
        return (self.stream_of,) if isinstance(self.stream_of, str) else tuple(self.stream_of)


COUPONS_TABLE = Table(
    key="coupons",
    env="COUPONS_TABLE",
    name="coupons",
    indexes=(
        Index("gsi1", "gsi1pk", "gsi1sk"),  # coupons by status; redemptions by coupon
        Index("gsi2", "gsi2pk", "gsi2sk"),  # coupons by campaign; redemptions by user
        Index("gsi3", "gsi3pk", "gsi3sk"),  # coupons by expiry (sparse, sharded); redemptions by UTC day
        Index("gsi4", "gsi4pk", "gsi4sk"),  # rollbacks by UTC day
    ),
    stream=True,
)
GUARDS_TABLE = Table(key="guards", env="GUARDS_TABLE", name="coupons-guards", ttl_attribute="ttl", stream=True)
JOBS_TABLE = Table(
    key="jobs", env="JOBS_TABLE", name="coupons-jobs", ttl_attribute="ttl", stream=True,
    indexes=(Index("gsi1", "gsi1pk", "gsi1sk"),),  # queued and running jobs only (sparse): the job watchdog
)
# Issue 17: the finance reports' kept per-day aggregates (pk=DAYS#<month>, see adapters/report_days).
REPORTS_TABLE = Table(key="reports", env="REPORTS_TABLE", name="coupons-reports")
# Issue 17: `Idempotency-Key` records of admin creates, kept by Powertools' idempotency utility with
# its DynamoDB persistence layer and its own attribute names (key `id`, TTL `expiration`: 24 hours).
IDEMPOTENCY_TABLE = Table(key="idempotency", env="IDEMPOTENCY_TABLE", name="coupons-idempotency",
                          partition_key="id", sort_key=None, ttl_attribute="expiration")
TABLES = (COUPONS_TABLE, GUARDS_TABLE, JOBS_TABLE, REPORTS_TABLE, IDEMPOTENCY_TABLE)

BUCKETS = (
    Bucket("imports", "IMPORTS_BUCKET", "coupons-imports", "marketing's CSV uploads and their results",
           notify_prefix_to_queue=("incoming/", "imports"),
           # Uploads hold plaintext codes (issue 17, 8e): gone after a week, with their old versions; the
           # import has long finished by then. CDK context expire_after_days changes any of these.
           expire_after_days=(("work/", 7), ("incoming/", 7), ("results/", 30))),
    Bucket("exports", "EXPORTS_BUCKET", "coupons-exports", "generated codes (plaintext, SSE-KMS)",
           expire_after_days=(("work/", 7), ("exports/", 30))),
    Bucket("reports", "REPORTS_BUCKET", "coupons-reports", "finance's daily reports"),
)

QUEUES: tuple[Queue, ...] = (
    # Bulk (issue 5). Visibility = 6x the consumer's timeout (AWS's advice for SQS event sources).
    Queue("imports", "IMPORTS_QUEUE_URL", "coupons-imports", visibility_timeout_seconds=5400),
    Queue("generation", "GENERATION_QUEUE_URL", "coupons-generation", visibility_timeout_seconds=5400),
    # Events (issue 17): what EventBridge refused after the publisher's retries, with the full entry,
    # until `replay_events` puts it on the bus. 14 days (the SQS maximum); an alarm on any message.
    Queue("undelivered-events", "UNDELIVERED_EVENTS_QUEUE_URL", "coupons-undelivered-events",
          visibility_timeout_seconds=120, max_receive_count=5, retention_days=14, alarm_when_visible=True),
)

KMS_KEY_ALIAS = "alias/coupons"
EVENT_BUS_NAME = "coupons"
EVENT_SOURCE = "coupons"
EVENT_ARCHIVE_RETENTION_DAYS = 365  # the bus's archive (every event), for replay
# A stream consumer this far behind (Lambda's IteratorAge, maximum over a minute, 5 minutes running)
# pages a person: records leave a stream after 24 hours.
STREAM_ITERATOR_AGE_ALARM_SECONDS = 600

# Schedules (issue 6). The local stack fires them on the same cron.
EXPIRY_SWEEP_SCHEDULE = Schedule("expiry-sweep", "0 * * * ? *", 3600,
                                 "Hourly: coupons past expires_at get status expired")
DAILY_REPORT_SCHEDULE = Schedule("daily-report", "0 1 * * ? *", 86400,
                                 "01:00 UTC: the previous UTC day's finance report to the reports bucket")
# Issue 17: a timed-out run raises nothing, so a bulk job could stay running forever.
JOB_WATCHDOG_SCHEDULE = Schedule("job-watchdog", "0/10 * * * ? *", 600,
                                 "Every 10 minutes: bulk jobs with no progress for JOB_STALL_SECONDS are given up")

# The API's TOKEN authorizer (issue 12): the function below, the header API Gateway hands it (only if it
# matches this expression: a bearer JWT, else 401 at once), and how long its answer is cached per token.
AUTHORIZER = "authorizer"
AUTHORIZATION_HEADER_REGEX = r"^[Bb][Ee][Aa][Rr][Ee][Rr] [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
AUTHORIZATION_PATTERN = re.compile(AUTHORIZATION_HEADER_REGEX)
AUTHORIZER_CACHE_SECONDS = 300

READ, WRITE, READWRITE = "read", "write", "readwrite"
BATCHWRITE, READBATCHWRITE = "batchwrite", "readbatchwrite"  # writes that include BatchWriteItem
ITEMS = "items"  # GetItem, PutItem, UpdateItem, DeleteItem by key: what Powertools' idempotency layer calls
_CODES = (("table", "coupons", READWRITE), ("key", "kms", "decrypt"), ("key", "kms", "generate"))
_IDEMPOTENCY = ("table", "idempotency", ITEMS)

FUNCTIONS: tuple[Function, ...] = (
    Function(
        name="admin",
        description="Admin API: coupon CRUD and listing",
        routes=(
            Route("POST", "/coupons"),
            Route("GET", "/coupons"),
            Route("GET", "/coupons/{coupon_id}"),
            Route("PUT", "/coupons/{coupon_id}"),
            Route("DELETE", "/coupons/{coupon_id}"),
        ),
        grants=(*_CODES, ("index", "coupons", "gsi1"), ("index", "coupons", "gsi2"),  # by status, by campaign
                _IDEMPOTENCY),
    ),
    # Checkout (issue 3): validation and redemption, separate functions sharing the domain layer.
    # KMS decrypt only: the keyring is unwrapped once per container (created with the first coupon).
    Function(
        name="validate",
        description="Checkout: validate a code against an order (one read; failed guesses counted)",
        reserved_concurrency=100,  # issue 17, 8c: its own share (and cap): a guessing flood stops here
        routes=(Route("POST", "/coupons/validate"),),
        grants=(("table", "coupons", READ), ("table", "guards", READWRITE), ("key", "kms", "decrypt")),
    ),
    Function(
        name="redeem",
        description="Checkout: redeem, read and roll back redemptions; a customer's and a coupon's redemptions",
        reserved_concurrency=200,  # issue 17, 8c: redemptions keep this capacity whatever else runs
        routes=(
            Route("POST", "/redemptions"),
            Route("GET", "/redemptions/{redemption_id}"),
            Route("POST", "/redemptions/{redemption_id}/rollback"),
            Route("GET", "/coupons/{coupon_id}/redemptions"),
            Route("GET", "/me/redemptions"),  # issue 12: a customer's own history
        ),
        grants=(("table", "coupons", READWRITE), ("table", "guards", READWRITE), ("key", "kms", "decrypt"),
                ("index", "coupons", "gsi1"),  # a coupon's redemptions
                ("index", "coupons", "gsi2")),  # a customer's redemptions (GET /me/redemptions, issue 12)
    ),
    Function(
        name=AUTHORIZER,
        description="API Gateway TOKEN authorizer: Cognito ID tokens (people) and access tokens (servers)",
        memory_mb=256,
        timeout_seconds=10,  # a cold start fetches the pools' JWKS (a few hundred ms)
    ),
    Function(
        name="openapi",
        description="The OpenAPI document of the whole API",
        routes=(Route("GET", "/openapi.json", public=True),),
        memory_mb=256,
    ),
    # Admin console and checkout demo (issue 8): static pages, no data, no grants.
    Function(
        name="console",
        description="Admin console and checkout demo pages (static, strict CSP)",
        routes=(
            Route("GET", "/console", public=True),
            Route("GET", "/console/checkout", public=True),
            Route("GET", "/console/assets/{name}", public=True),
            Route("GET", "/console/signin", public=True),  # the admin pool's managed login (issue 17)
        ),
        memory_mb=256,
    ),
    # Events, expiry, reports (issue 6).
    Function(
        name="publisher",
        description="Outbox: table streams -> contract events on the EventBridge bus",
        memory_mb=256,
        timeout_seconds=60,
        # Stream reads come with the event source mappings; refused events are parked in the queue.
        grants=(("bus", "events", "put"), ("queue", "undelivered-events", "send")),
        stream_of=("coupons", "guards", "jobs"),
    ),
    Function(
        name="replay_events",
        description="Replays the undelivered-events queue onto the bus (invoked by hand after its alarm)",
        memory_mb=256,
        timeout_seconds=300,
        grants=(("queue", "undelivered-events", "consume"), ("bus", "events", "put")),
    ),
    Function(
        name="expiry_sweep",
        description="Marks coupons past expires_at expired (through the expiry index)",
        timeout_seconds=300,
        grants=(("table", "coupons", WRITE), ("index", "coupons", "gsi3")),  # reads only through the index
        schedule=EXPIRY_SWEEP_SCHEDULE,
    ),
    Function(
        name="daily_report",
        description="Daily finance report: CSVs, summary.json and chart to the reports bucket; keeps the day",
        memory_mb=1024,
        timeout_seconds=900,
        grants=(("table", "guards", READ), ("bucket", "reports", WRITE), ("table", "reports", BATCHWRITE),
                ("index", "coupons", "gsi3"), ("index", "coupons", "gsi4")),  # redemptions, rollbacks by day
        schedule=DAILY_REPORT_SCHEDULE,
    ),
    Function(
        name="reports",
        description="Finance API: redemption totals for a date range (kept days merged, the rest live)",
        routes=(Route("GET", "/reports/summary"),),
        memory_mb=2048,  # a year's range merges up to 2 million coupon-days: CPU-bound (2 GB = 1.15 vCPU)
        timeout_seconds=29,
        grants=(("table", "guards", READ), ("table", "reports", READBATCHWRITE),
                ("index", "coupons", "gsi3"), ("index", "coupons", "gsi4")),  # redemptions, rollbacks by day
    ),
    # Bulk (issue 5): generation jobs and job status (API), CSV imports and code generation (SQS workers).
    Function(
        name="jobs",
        description="Bulk API: start a generation job, follow any job",
        routes=(Route("POST", "/campaigns/{campaign_id}/codes"), Route("GET", "/jobs/{job_id}")),
        timeout_seconds=29,
        grants=(("table", "jobs", READWRITE), ("queue", "generation", "send"), _IDEMPOTENCY,
                ("bucket", "exports", "read:exports/")),  # the presigned export URL is signed with this role
    ),
    Function(
        name="csv_import",
        description="CSV import worker: S3 notifications and planned ranges from the imports queue",
        memory_mb=1024,
        timeout_seconds=900,
        grants=(*_CODES, ("table", "jobs", READWRITE), ("bucket", "imports", "readversions:incoming/"),
                ("bucket", "imports", "read:work/"), ("bucket", "imports", "put:work/"),
                ("bucket", "imports", "delete:work/"),
                ("bucket", "imports", "write:results/"), ("queue", "imports", "send"),
                ("queue", "imports", "consume")),
        queue="imports",
        queue_batch_size=1,  # one object (or range) per invocation: each may take minutes
        queue_max_concurrency=10,
    ),
    Function(
        name="generate_codes",
        description="Generation worker: fans a job out into batches, writes codes, assembles the export",
        memory_mb=1024,
        timeout_seconds=900,
        grants=(*_CODES, ("table", "jobs", READWRITE), ("bucket", "exports", "read:work/"),
                ("bucket", "exports", "put:work/"),
                ("bucket", "exports", "delete:work/"), ("bucket", "exports", "write:exports/"),
                ("queue", "generation", "send"), ("queue", "generation", "consume")),
        queue="generation",
        queue_batch_size=1,  # a batch is 1,000 codes: about a second of writes
        queue_max_concurrency=20,  # 20 writers stay within a new on-demand table's 4,000 WCU/s
    ),
    Function(
        name="job_watchdog",
        description="Gives up bulk jobs with no progress: the workers then keep their partial results",
        memory_mb=256,
        timeout_seconds=60,
        # Reads the active-jobs index, marks a stalled job failing (or fails it), tells its worker queue:
        # the workers, which hold the S3 grants, assemble what the job has.
        grants=(("table", "jobs", READWRITE), ("index", "jobs", "gsi1"),  # the active jobs (sparse)
                ("queue", "imports", "send"), ("queue", "generation", "send")),
        schedule=JOB_WATCHDOG_SCHEDULE,
    ),
)


def function(name: str) -> Function:
    return next(f for f in FUNCTIONS if f.name == name)


def base_environment(config: dict[str, str]) -> dict[str, str]:
    """The environment every function gets: seed options, resource names, Powertools."""
    env = {
        "POWERTOOLS_SERVICE_NAME": "coupons",
        "POWERTOOLS_METRICS_NAMESPACE": "Coupons",
        "KMS_KEY_ID": KMS_KEY_ALIAS,
        "EVENT_BUS_NAME": EVENT_BUS_NAME,
        "ADMIN_GROUP": "coupon-admins",
    }
    env.update(config)
    return env


# cdk.json context key -> environment variable: the settings model's own names, so they cannot drift.
SEED_OPTIONS = {
    key: ENV_NAMES[key]
    for key in (
        "coupon_id_format", "default_expiration_days", "max_discount_per_user", "discount_type",
        "allowed_domains", "failed_attempts_per_user", "failed_attempts_per_ip", "failed_attempt_window_seconds",
        "failed_attempts_per_client",  # issue 12: a server client's failed guesses
        # Key rotation: raise it (`cdk deploy -c code_key_version=2`) and every function seals new codes
        # under the new version while every older one stays live (coupons/crypto.py).
        "code_key_version",
    )
}
