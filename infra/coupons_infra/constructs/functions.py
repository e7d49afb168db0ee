"""Functions: one Lambda per resources.FUNCTIONS entry, its role, log group, layers and grants.

Python 3.13 on arm64 (Graviton: 20% cheaper per GB-s than x86, same code). Two layers:
the domain package (layers/domain already has the `python/coupons` layout) and the
dependencies (Powertools, pydantic, cryptography) installed by pip for manylinux aarch64
wheels: local bundling, no Docker. Each function's role is written here, statement by
statement, from the function's `grants`: no managed policies, no `*` actions.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import Aws, Duration, Stack, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .. import resources as r
from .config import StackConfig

PYTHON_VERSION = "3.13"
# manylinux tags the Lambda python3.13 runtime (Amazon Linux 2023, glibc 2.34) can load.
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")  # the runtime ships these; keep the layer small
ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/*.egg-info", "**/*.egg-info/**", "tests", ".pytest_cache"]
CODE_KEY_CONTEXT = {"kms:EncryptionContext:purpose": "coupon-codes"}  # coupons/crypto.py's context

# What the code calls (tests/infra/test_iam_calls.py holds every grant to a call or a reason): no Scan
# (no request path scans), no DescribeTable, and BatchWriteItem only where a grant asks for it (the
# reports' kept days). Indexes: Query only, and only the indexes a function's grants name.
TABLE_READ = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"]
TABLE_WRITE = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"]
INDEX_READ = ["dynamodb:Query"]
TABLE_KEY_READ = ["kms:Decrypt", "kms:DescribeKey"]
TABLE_KEY_WRITE = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey",
                   "kms:ReEncryptFrom", "kms:ReEncryptTo"]
S3_READ = ["s3:GetObject"]
S3_READ_VERSIONS = ["s3:GetObject", "s3:GetObjectVersion"]  # objects named by a versioned bucket's notification
S3_PUT = ["s3:PutObject"]
S3_WRITE = ["s3:PutObject", "s3:AbortMultipartUpload"]
S3_DELETE = ["s3:DeleteObject"]
S3_KEY_READ = ["kms:Decrypt"]
S3_KEY_WRITE = ["kms:GenerateDataKey", "kms:Decrypt"]  # Decrypt: multipart uploads
QUEUE_SEND = ["sqs:SendMessage"]  # SendMessageBatch is authorised as SendMessage
QUEUE_CONSUME = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                 "sqs:GetQueueAttributes"]
CODE_KEY_ACTIONS = {"decrypt": "kms:Decrypt", "generate": "kms:GenerateDataKey", "encrypt": "kms:Encrypt"}
TABLE_ITEMS = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
TABLE_MODES = {"read": (TABLE_READ, TABLE_KEY_READ), "write": (TABLE_WRITE, TABLE_KEY_WRITE),
               "readwrite": (sorted({*TABLE_READ, *TABLE_WRITE}), TABLE_KEY_WRITE),
               "batchwrite": ([*TABLE_WRITE, "dynamodb:BatchWriteItem"], TABLE_KEY_WRITE),
               "readbatchwrite": (sorted({*TABLE_READ, *TABLE_WRITE, "dynamodb:BatchWriteItem"}), TABLE_KEY_WRITE),
               "items": (TABLE_ITEMS, TABLE_KEY_WRITE)}  # single items by key (the idempotency records)
BUCKET_MODES: dict[str, tuple[list[str], list[str], bool]] = {  # object actions, key actions, list?
    "read": (S3_READ, S3_KEY_READ, True),
    "readversions": (S3_READ_VERSIONS, S3_KEY_READ, True),
    "put": (S3_PUT, S3_KEY_WRITE, False),
    "write": (S3_WRITE, S3_KEY_WRITE, False),
    "readwrite": ([*S3_READ, *S3_WRITE], S3_KEY_WRITE, True),
    "delete": (S3_DELETE, [], False),
}


@jsii.implements(cdk.ILocalBundling)
class PipLayerBundling:
    """Builds the dependencies layer with the pip of this venv: manylinux aarch64 wheels for cp313."""

    def __init__(self, requirements: Path) -> None:
        self.requirements = requirements

    def command(self, target: Path) -> list[str]:
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        return [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--no-compile", "--only-binary=:all:", "--implementation", "cp",
                "--python-version", PYTHON_VERSION, *platforms,
                "-r", str(self.requirements), "-t", str(target)]

    def try_bundle(self, output_dir: str, options: Any = None, **_: Any) -> bool:
        target = Path(output_dir) / "python"
        print(f"building the dependencies layer from {self.requirements} (pip, {PLATFORMS[0]}, "
              f"cp{PYTHON_VERSION.replace('.', '')})", file=sys.stderr)
        done = subprocess.run(self.command(target), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                "pip could not build the dependencies layer (it needs PyPI or a local mirror); "
                "to synthesise without it pass -c aws:cdk:bundling-stacks=[] (the layer is then left "
                f"unbuilt).\n{done.stderr[-2000:]}")
        prune_runtime_packages(target)
        return True


def prune_runtime_packages(target: Path) -> list[str]:
    """Drop what the Lambda runtime already has (boto3, botocore, s3transfer) and pip's scripts."""
    removed = []
    for entry in sorted(target.iterdir()):
        if entry.name.split("-")[0] in RUNTIME_PROVIDED or entry.name in {"bin", "__pycache__"}:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
    return removed


def parse_bucket_mode(mode: str) -> tuple[str, str]:
    access, _, prefix = mode.partition(":")
    return access, prefix


class Functions(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, key: kms.IKey,
                 tables: dict[str, dynamodb.Table], buckets: dict[str, s3.Bucket],
                 queues: dict[str, sqs.Queue], bus: events.EventBus) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.key = key
        self.tables = tables
        self.buckets = buckets
        self.queues = queues
        self.bus = bus
        self.deps_layer = lambda_.LayerVersion(
            self, "DependenciesLayer",
            description="Powertools, pydantic, cryptography, PyJWT (manylinux aarch64, cp313)",
            code=lambda_.Code.from_asset(
                str(r.DEPS_REQUIREMENTS.parent),
                asset_hash_type=cdk.AssetHashType.SOURCE,  # the requirements decide; pip output varies
                exclude=["python", "python/**", *ASSET_EXCLUDES],
                bundling=cdk.BundlingOptions(
                    image=cdk.DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),
                    local=PipLayerBundling(r.DEPS_REQUIREMENTS),
                    command=["bash", "-c", "pip install -r requirements.txt -t /asset-output/python"],
                ),
            ),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_13],
            compatible_architectures=[lambda_.Architecture.ARM_64],
        )
        self.domain_layer = lambda_.LayerVersion(
            self, "DomainLayer",
            description="The coupons domain package (layers/domain/python/coupons)",
            code=lambda_.Code.from_asset(str(r.DOMAIN_LAYER_DIR), exclude=ASSET_EXCLUDES),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_13],
            compatible_architectures=[lambda_.Architecture.ARM_64],
        )
        self.environment = self._environment()
        self.functions: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        self.log_groups: dict[str, logs.LogGroup] = {}
        for spec in r.FUNCTIONS:
            self.functions[spec.name] = self._function(spec)

    def _environment(self) -> dict[str, str]:
        env = dict(r.base_environment(dict(self.config.seed_environment)))
        env.update({t.env: self.tables[t.key].table_name for t in r.TABLES})
        env.update({b.env: self.buckets[b.key].bucket_name for b in r.BUCKETS})
        env.update({q.env: self.queues[q.key].queue_url for q in r.QUEUES})
        env["KMS_KEY_ID"] = self.key.key_arn
        env["EVENT_BUS_NAME"] = self.bus.event_bus_name
        env.setdefault("POWERTOOLS_LOG_LEVEL", "INFO")
        return env

    def _function(self, spec: r.Function) -> lambda_.Function:
        ident = "".join(part.title() for part in spec.name.split("_"))
        if not (spec.directory / "handler.py").is_file():
            raise ValueError(f"function {spec.name}: {spec.directory}/handler.py does not exist")
        log_group = logs.LogGroup(
            self, f"{ident}Logs",
            retention=retention(self.config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        role = iam.Role(
            self, f"{ident}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"coupons {spec.name}: {spec.description}"[:1000],
        )
        role.add_to_policy(iam.PolicyStatement(
            sid="OwnLogGroup", actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn]))
        for grant in spec.grants:
            self._grant(spec, role, grant)
        function = lambda_.Function(
            self, f"{ident}Function",
            description=spec.description[:256],
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler="handler.lambda_handler",
            code=lambda_.Code.from_asset(str(spec.directory), exclude=ASSET_EXCLUDES),
            layers=[self.deps_layer, self.domain_layer],
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_seconds),
            ephemeral_storage_size=cdk.Size.mebibytes(spec.ephemeral_storage_mb),
            environment=self.environment,
            role=role,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=self.config.reserved_concurrency.get(spec.name),
        )
        Validations.of(function).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions-L1",
            reason="Python 3.13 is the runtime the issue pins and the one the code, its dependencies "
                   "layer (cp313 wheels) and the tests target; moving to 3.14 is a separate change."))
        Validations.of(role).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions-IAM5[Resource::*]",
            reason="Only actions AWS offers no resource-level permission for: xray:PutTraceSegments and "
                   "xray:PutTelemetryRecords (active tracing) and, for stream consumers, "
                   "dynamodb:ListStreams; tests/infra checks that nothing else uses Resource *."))
        self.roles[spec.name] = role
        self.log_groups[spec.name] = log_group
        return function

    def _grant(self, spec: r.Function, role: iam.Role, grant: tuple[str, str, str]) -> None:
        kind, target, mode = grant
        if kind == "table":
            self._grant_table(spec, role, target, mode)
        elif kind == "index":
            self._grant_index(spec, role, target, mode)
        elif kind == "key":
            if target != "kms" or mode not in CODE_KEY_ACTIONS:
                raise ValueError(f"function {spec.name}: unknown key grant {grant!r}")
            role.add_to_policy(iam.PolicyStatement(
                actions=[CODE_KEY_ACTIONS[mode]], resources=[self.key.key_arn],
                conditions={"StringEquals": CODE_KEY_CONTEXT}))
        elif kind == "bucket":
            self._grant_bucket(spec, role, target, mode)
        elif kind == "queue":
            queue = self.queues.get(target)
            if queue is None or mode not in {"send", "consume"}:
                raise ValueError(f"function {spec.name}: unknown queue grant {grant!r}")
            role.add_to_policy(iam.PolicyStatement(
                actions=QUEUE_SEND if mode == "send" else QUEUE_CONSUME, resources=[queue.queue_arn]))
        elif kind == "bus":
            if mode != "put":
                raise ValueError(f"function {spec.name}: unknown bus grant {grant!r}")
            role.add_to_policy(iam.PolicyStatement(actions=["events:PutEvents"],
                                                   resources=[self.bus.event_bus_arn]))
        else:
            raise ValueError(f"function {spec.name}: unknown grant {grant!r}")

    def _grant_table(self, spec: r.Function, role: iam.Role, key: str, mode: str) -> None:
        table = self.tables.get(key)
        table_spec = next((t for t in r.TABLES if t.key == key), None)
        if table is None or table_spec is None or mode not in TABLE_MODES:
            raise ValueError(f"function {spec.name}: unknown table grant {(key, mode)!r}")
        actions, key_actions = TABLE_MODES[mode]
        role.add_to_policy(iam.PolicyStatement(actions=list(actions), resources=[table.table_arn]))
        role.add_to_policy(iam.PolicyStatement(
            actions=key_actions, resources=[self.key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{Aws.REGION}.amazonaws.com"}}))

    def _grant_index(self, spec: r.Function, role: iam.Role, key: str, index: str) -> None:
        """Query on one index of a table, by name (no `index/*` wildcard)."""
        table = self.tables.get(key)
        table_spec = next((t for t in r.TABLES if t.key == key), None)
        if table is None or table_spec is None or index not in {i.name for i in table_spec.indexes}:
            raise ValueError(f"function {spec.name}: unknown index grant {(key, index)!r}")
        role.add_to_policy(iam.PolicyStatement(actions=INDEX_READ, resources=[f"{table.table_arn}/index/{index}"]))

    def _grant_bucket(self, spec: r.Function, role: iam.Role, key: str, mode: str) -> None:
        bucket = self.buckets.get(key)
        access, prefix = parse_bucket_mode(mode)
        if bucket is None or access not in BUCKET_MODES:
            raise ValueError(f"function {spec.name}: unknown bucket grant {(key, mode)!r}")
        object_actions, key_actions, may_list = BUCKET_MODES[access]
        objects = f"{bucket.bucket_arn}/{prefix}*"
        role.add_to_policy(iam.PolicyStatement(actions=object_actions, resources=[objects]))
        if may_list:
            role.add_to_policy(iam.PolicyStatement(
                actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}} if prefix else None))
        if key_actions:
            role.add_to_policy(iam.PolicyStatement(
                actions=key_actions, resources=[self.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"s3.{Aws.REGION}.amazonaws.com"}}))
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, cdk.CfnResource)
        logical_id = Stack.of(self).resolve(cfn_bucket.logical_id)
        Validations.of(role).acknowledge(cdk.Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{prefix}*]",
            reason=f"Objects of the {key} bucket{' under ' + prefix if prefix else ''}: object keys are "
                   "data (one per upload, export or report), so the grant names the bucket and prefix."))


RETENTION_DAYS = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
    60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
    365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS",
    1096: "THREE_YEARS", 1827: "FIVE_YEARS", 2192: "SIX_YEARS", 2557: "SEVEN_YEARS",
    2922: "EIGHT_YEARS", 3288: "NINE_YEARS", 3653: "TEN_YEARS",
}


def retention(days: int) -> logs.RetentionDays:
    """CloudWatch Logs offers a fixed set of retention periods; refuse anything else at synth time."""
    if days not in RETENTION_DAYS:
        raise ValueError(f"log_retention_days={days} is not one CloudWatch offers: {sorted(RETENTION_DAYS)}")
    return getattr(logs.RetentionDays, RETENTION_DAYS[days])
