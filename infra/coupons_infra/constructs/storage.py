"""Storage: one S3 bucket per resources.BUCKETS entry, plus the bucket their access logs go to.

Bucket names are deterministic (`<prefix>-<key>-<account>-<region>`): people upload to the
imports bucket by name, and S3 -> SQS notifications are declared natively on the bucket (no
custom-resource Lambda) with a queue policy that names the bucket before it exists.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .. import resources as r
from .config import StackConfig


def bucket_name(config: StackConfig, key: str) -> str:
    return f"{config.name_prefix}-{key}-{Aws.ACCOUNT_ID}-{Aws.REGION}"


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, key: kms.IKey,
                 queues: dict[str, sqs.Queue]) -> None:
        super().__init__(scope, construct_id)
        # Server access logs: S3 delivers them only to SSE-S3 buckets; they hold no object data.
        self.access_logs = s3.Bucket(
            self, "AccessLogsBucket",
            bucket_name=bucket_name(config, "access-logs"),
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365),
                                 noncurrent_version_expiration=Duration.days(30),
                                 abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
        )
        self.buckets: dict[str, s3.Bucket] = {}
        for spec in r.BUCKETS:
            self.buckets[spec.key] = self._bucket(config, spec, key, queues)

    def _bucket(self, config: StackConfig, spec: r.Bucket, key: kms.IKey, queues: dict[str, sqs.Queue]) -> s3.Bucket:
        name = bucket_name(config, spec.key)
        lifecycle = [s3.LifecycleRule(
            id="housekeeping",
            abort_incomplete_multipart_upload_after=Duration.days(7),
            noncurrent_version_expiration=Duration.days(30),
        )]
        for prefix, days in config.expiry_days(spec).items():
            lifecycle.append(s3.LifecycleRule(
                id=f"expire-{prefix.strip('/') or 'all'}-after-{days}-days",
                prefix=prefix or None,
                expiration=Duration.days(days),
                # The buckets are versioned: expiry only hides the object behind a delete marker. Its
                # content (plaintext codes, for uploads and exports) goes a day later, not in 30.
                noncurrent_version_expiration=Duration.days(1),
            ))
        bucket = s3.Bucket(
            self, f"{spec.key.title()}Bucket",
            bucket_name=name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,  # one KMS call per bucket key, not per object
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            removal_policy=RemovalPolicy.RETAIN,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{spec.key}/",
            lifecycle_rules=lifecycle,
        )
        notify = getattr(spec, "notify_prefix_to_queue", None)
        if notify:
            prefix, queue_key = notify
            if queue_key not in queues:
                raise ValueError(f"bucket {spec.key} notifies unknown queue {queue_key!r}")
            self._notify(bucket, name, prefix, queues[queue_key])
        return bucket

    @staticmethod
    def _notify(bucket: s3.Bucket, name: str, prefix: str, queue: sqs.Queue) -> None:
        queue.add_to_resource_policy(iam.PolicyStatement(
            sid="S3ObjectCreatedNotifications",
            principals=[iam.ServicePrincipal("s3.amazonaws.com")],
            actions=["sqs:SendMessage"],
            resources=[queue.queue_arn],
            conditions={
                "ArnEquals": {"aws:SourceArn": f"arn:{Aws.PARTITION}:s3:::{name}"},
                "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
            },
        ))
        cfn = bucket.node.default_child
        assert isinstance(cfn, s3.CfnBucket)
        cfn.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            queue_configurations=[s3.CfnBucket.QueueConfigurationProperty(
                event="s3:ObjectCreated:*",
                queue=queue.queue_arn,
                filter=s3.CfnBucket.NotificationFilterProperty(
                    s3_key=s3.CfnBucket.S3KeyFilterProperty(
                        rules=[s3.CfnBucket.FilterRuleProperty(name="prefix", value=prefix)])),
            )],
        )
        # S3 checks it may send to the queue when the configuration is set: the policy comes first.
        policy = queue.node.try_find_child("Policy")
        assert policy is not None, "the queue policy exists once a statement was added"
        cfn.node.add_dependency(policy)
