"""Asynchronous plumbing: queues with DLQs, the event bus with its archive, schedules, event sources.

`Messaging` is built before the functions (they get the queue URLs and the bus name);
`Jobs` wires the functions to their triggers afterwards. Both read resources.py only.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Aws, Duration, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .. import resources as r
from .config import StackConfig
from .data import Data

DLQ_RETENTION = Duration.days(14)  # the SQS maximum: two weeks for a person to look and redrive
STREAM_MAX_RECORD_AGE = Duration.hours(24)  # a stream keeps records 24 h; older ones go to the DLQ


def secure_queue(scope: Construct, construct_id: str, *, visibility: Duration | None = None,
                 retention: Duration | None = None, dead_letter: sqs.DeadLetterQueue | None = None) -> sqs.Queue:
    """An SQS queue encrypted at rest (SSE-SQS) that refuses requests without TLS."""
    return sqs.Queue(
        scope, construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        visibility_timeout=visibility,
        retention_period=retention,
        dead_letter_queue=dead_letter,
    )


class Messaging(Construct):
    """Every resources.QUEUES entry (each with its DLQ) and the custom event bus with an archive."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}  # every DLQ in the stack, for alarms
        for spec in r.QUEUES:
            consumers = [f for f in r.FUNCTIONS if f.queue == spec.key]
            # Lambda refuses an SQS event source whose visibility timeout is below the function's timeout.
            visibility = max([spec.visibility_timeout_seconds, *(f.timeout_seconds for f in consumers)])
            dlq = self.dead_letter_queue(f"{spec.key}-queue", redrive_target=True)
            self.queues[spec.key] = secure_queue(
                self, f"{_camel(spec.key)}Queue",
                visibility=Duration.seconds(visibility),
                retention=Duration.days(getattr(spec, "retention_days", 4)),
                dead_letter=sqs.DeadLetterQueue(queue=dlq, max_receive_count=spec.max_receive_count),
            )

        self.bus = events.EventBus(self, "Bus", event_bus_name=_bus_name(config))
        self.archive = self.bus.archive(
            "Archive",
            description="Every coupon event, for replay",
            event_pattern=events.EventPattern(source=[r.EVENT_SOURCE]),
            retention=Duration.days(getattr(r, "EVENT_ARCHIVE_RETENTION_DAYS", 365)),
        )

    def dead_letter_queue(self, name: str, redrive_target: bool = False) -> sqs.Queue:
        """A DLQ: the redrive target of a queue, or the on-failure destination of a Lambda trigger."""
        queue = secure_queue(self, f"{_camel(name)}Dlq", retention=DLQ_RETENTION)
        if not redrive_target:
            Validations.of(queue).acknowledge(cdk.Acknowledgment(
                id="AwsSolutions-SQS3",
                reason="This queue is itself a dead-letter queue: the on-failure destination of a Lambda "
                       "event source or schedule (cdk-nag only recognises SQS redrive targets). It has an "
                       "alarm on its depth."))
        self.dead_letter_queues[name] = queue
        return queue


class Jobs(Construct):
    """Schedules (EventBridge cron rules), SQS and DynamoDB-stream event sources, from resources.FUNCTIONS."""

    def __init__(self, scope: Construct, construct_id: str, *, data: Data, messaging: Messaging,
                 functions: dict[str, lambda_.Function]) -> None:
        super().__init__(scope, construct_id)
        self.rules: dict[str, events.Rule] = {}
        for spec in r.FUNCTIONS:
            function = functions[spec.name]
            if spec.schedule is not None:
                self._schedule(spec, spec.schedule, function, messaging)
            if spec.queue is not None:
                if spec.queue not in messaging.queues:
                    raise ValueError(f"function {spec.name} consumes unknown queue {spec.queue!r}")
                function.add_event_source(sources.SqsEventSource(
                    messaging.queues[spec.queue],
                    batch_size=spec.queue_batch_size,
                    report_batch_item_failures=True,
                    max_concurrency=spec.queue_max_concurrency,
                ))
            stream_tables = _stream_tables(spec)
            if stream_tables:
                dlq = messaging.dead_letter_queue(f"{spec.name}-stream")
                for table_key in stream_tables:
                    table = data.tables.get(table_key)
                    if table is None or table.table_stream_arn is None:
                        raise ValueError(f"function {spec.name} reads the stream of {table_key!r}, "
                                         "which is not a table with stream=True")
                    function.add_event_source(sources.DynamoEventSource(
                        _stream_only(self, f"{spec.name}-{table_key}", table),
                        starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                        batch_size=spec.stream_batch_size,
                        bisect_batch_on_error=True,
                        retry_attempts=getattr(spec, "stream_retry_attempts", 10),
                        max_record_age=STREAM_MAX_RECORD_AGE,
                        on_failure=sources.SqsDlq(dlq),
                        report_batch_item_failures=True,
                        parallelization_factor=1,  # keep per-item order: events follow commits
                    ))
                # Issue 17, finding 4: the stream images hold every ciphertext and the wrapped keyring,
                # so the consumer may decrypt only what DynamoDB decrypts for it (the stream records),
                # never call kms:Decrypt on the key itself.
                function.add_to_role_policy(iam.PolicyStatement(
                    actions=["kms:Decrypt"], resources=[data.key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{Aws.REGION}.amazonaws.com"}}))

    def _schedule(self, spec: r.Function, schedule: r.Schedule, function: lambda_.Function,
                  messaging: Messaging) -> None:
        dlq = messaging.dead_letter_queue(f"{spec.name}-schedule")
        # A failed scheduled run (after Lambda's own retries) lands in the DLQ, and so does an
        # event EventBridge could not deliver.
        function.configure_async_invoke(
            on_failure=destinations.SqsDestination(dlq),
            retry_attempts=2,
            max_event_age=Duration.hours(1),
        )
        self.rules[schedule.name] = events.Rule(
            self, f"{_camel(schedule.name)}Schedule",
            description=schedule.description[:512],
            schedule=events.Schedule.expression(f"cron({schedule.cron})"),
            targets=[targets.LambdaFunction(
                function,
                dead_letter_queue=dlq,
                retry_attempts=2,
                max_event_age=Duration.hours(1),
            )],
        )


def _stream_only(scope: Construct, name: str, table: dynamodb.Table) -> dynamodb.ITable:
    """The table as its stream consumer sees it: the same ARNs but no encryption key, so that the
    event source's grantStreamRead adds no unconditioned kms:Decrypt (the caller adds its own)."""
    return dynamodb.Table.from_table_attributes(
        scope, f"{_camel(name)}Stream", table_arn=table.table_arn, table_stream_arn=table.table_stream_arn)


def _stream_tables(spec: r.Function) -> tuple[str, ...]:
    stream_of = spec.stream_of
    if stream_of is None:
        return ()
    return (stream_of,) if isinstance(stream_of, str) else tuple(stream_of)


def _bus_name(config: StackConfig) -> str:
    return r.EVENT_BUS_NAME if config.name_prefix == "coupons" else config.name_prefix


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.replace("_", "-").split("-") if part)
