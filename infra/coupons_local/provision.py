"""Creates the local stack's AWS resources from the same definitions the CDK app uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
from coupons_infra import resources as r

from .tokens import ADMIN_ISSUER, authorizer_environment


@dataclass
class Provisioned:
    tables: dict[str, str]
    buckets: dict[str, str]
    queues: dict[str, str]  # key -> url
    key_id: str
    bus_name: str
    event_queue_url: str
    stream_arns: dict[str, str]
    # The local stand-in for the bus's archive (AWS keeps every event 365 days): a queue nobody
    # consumes, so tests can look at every event ever published (tests/conftest.py audits it).
    event_archive_url: str = ""


def _create_table(dynamodb: Any, table: r.Table) -> str:
    keys = [(table.partition_key, "HASH"), *([(table.sort_key, "RANGE")] if table.sort_key else [])]
    attributes = {name for name, _ in keys}
    gsis = []
    for index in table.indexes:
        attributes.update({index.partition_key, index.sort_key})
        gsis.append({
            "IndexName": index.name,
            "KeySchema": [{"AttributeName": index.partition_key, "KeyType": "HASH"},
                          {"AttributeName": index.sort_key, "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        })
    request: dict[str, Any] = {
        "TableName": table.name,
        "KeySchema": [{"AttributeName": name, "KeyType": kind} for name, kind in keys],
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if gsis:
        request["GlobalSecondaryIndexes"] = gsis
    if table.stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    created = dynamodb.create_table(**request)["TableDescription"]
    if table.ttl_attribute:
        dynamodb.update_time_to_live(TableName=table.name, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": table.ttl_attribute})
    return str(created.get("LatestStreamArn", ""))


def provision() -> Provisioned:
    dynamodb = boto3.client("dynamodb")
    stream_arns = {}
    for table in r.TABLES:
        arn = _create_table(dynamodb, table)
        if arn:
            stream_arns[table.key] = arn

    kms = boto3.client("kms")
    key_id = kms.create_key(Description="coupon codes (local)", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=r.KMS_KEY_ALIAS, TargetKeyId=key_id)

    s3 = boto3.client("s3")
    for bucket in r.BUCKETS:
        s3.create_bucket(Bucket=bucket.name)

    sqs = boto3.client("sqs")
    queues = {}
    for queue in r.QUEUES:
        dlq = sqs.create_queue(QueueName=f"{queue.name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queues[queue.key] = sqs.create_queue(QueueName=queue.name, Attributes={
            "VisibilityTimeout": str(queue.visibility_timeout_seconds),
            "MessageRetentionPeriod": str(getattr(queue, "retention_days", 4) * 86400),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": str(queue.max_receive_count)}),
        })["QueueUrl"]

    # The bus, and a queue that receives every event on it (for tests and curious users).
    events = boto3.client("events")
    bus_arn = events.create_event_bus(Name=r.EVENT_BUS_NAME)["EventBusArn"]
    event_queue_url = sqs.create_queue(QueueName="coupons-events-tap")["QueueUrl"]
    event_queue_arn = sqs.get_queue_attributes(QueueUrl=event_queue_url,
                                               AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="tap-all", EventBusName=r.EVENT_BUS_NAME,
                    EventPattern=json.dumps({"source": [r.EVENT_SOURCE]}))
    events.put_targets(Rule="tap-all", EventBusName=r.EVENT_BUS_NAME,
                       Targets=[{"Id": "tap", "Arn": event_queue_arn}])
    archive_url = sqs.create_queue(QueueName="coupons-events-archive", Attributes={
        "MessageRetentionPeriod": str(14 * 86400)})["QueueUrl"]  # SQS keeps 14 days at most
    archive_arn = sqs.get_queue_attributes(QueueUrl=archive_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="archive-all", EventBusName=r.EVENT_BUS_NAME,
                    EventPattern=json.dumps({"source": [r.EVENT_SOURCE]}))  # the CDK archive's pattern
    events.put_targets(Rule="archive-all", EventBusName=r.EVENT_BUS_NAME,
                       Targets=[{"Id": "archive", "Arn": archive_arn}])
    del bus_arn
    return Provisioned(
        tables={t.key: t.name for t in r.TABLES},
        buckets={b.key: b.name for b in r.BUCKETS},
        queues=queues,
        key_id=key_id,
        bus_name=r.EVENT_BUS_NAME,
        event_queue_url=event_queue_url,
        stream_arns=stream_arns,
        event_archive_url=archive_url,
    )


def function_environment(provisioned: Provisioned, config: dict[str, str]) -> dict[str, str]:
    """The environment CDK gives the functions, with the local stack's names."""
    env = r.base_environment(config)
    env.update({t.env: provisioned.tables[t.key] for t in r.TABLES})
    env.update({b.env: provisioned.buckets[b.key] for b in r.BUCKETS})
    env.update({q.env: provisioned.queues[q.key] for q in r.QUEUES})
    env.update({
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": env.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        "ADMIN_ISSUER": ADMIN_ISSUER,  # on AWS: the admin pool's issuer URL
    })
    env.update(authorizer_environment())  # the token authorizer's pools, clients and (local) JWKS
    return env
