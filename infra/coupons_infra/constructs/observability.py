"""Observability: one CloudWatch dashboard and the alarms that need a person, to an encrypted SNS topic.

Business metrics come from Powertools (namespace `Coupons`, dimension `service=coupons`,
emitted as EMF log lines): the metric names below are the ones the functions emit.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .. import resources as r
from .config import StackConfig
from .data import least_privilege_key_policy

NAMESPACE = "Coupons"
DIMENSIONS = {"service": "coupons"}
# Business metrics (Powertools metrics.add_metric names).
REDEMPTIONS = "Redemptions"
CONFLICTS = "RedemptionConflicts"  # TransactionConflict / idempotency conflicts on redeem
LOCKOUTS = "Lockouts"  # a user or IP crossed the failed-attempt limit
FAILED_ATTEMPTS = "FailedAttempts"
FIVE_MINUTES = Duration.minutes(5)


def business_metric(name: str, statistic: str = "Sum") -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace=NAMESPACE, metric_name=name, dimensions_map=DIMENSIONS,
                             statistic=statistic, period=FIVE_MINUTES)


class Observability(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, api: apigw.RestApi,
                 functions: dict[str, lambda_.Function], dead_letter_queues: dict[str, sqs.Queue],
                 watched_queues: dict[str, sqs.Queue] | None = None) -> None:
        super().__init__(scope, construct_id)
        # CloudWatch alarms may publish to an encrypted topic only with a customer-managed key whose
        # policy lets the CloudWatch service use it: a key of its own, so the data key trusts no service.
        policy = least_privilege_key_policy("ForAlarms")
        policy.add_statements(iam.PolicyStatement(
            sid="CloudWatchAlarmsPublish",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
        ))
        self.key = kms.Key(self, "AlarmTopicKey", description="Coupon service alarm notifications",
                           enable_key_rotation=True, policy=policy,
                           removal_policy=cdk.RemovalPolicy.DESTROY, pending_window=Duration.days(7))
        self.topic = sns.Topic(self, "AlarmTopic", display_name="Coupon service alarms",
                               master_key=self.key, enforce_ssl=True)
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        # API: the 5XX rate (API Gateway's 5XXError averaged is the fraction of requests).
        server_errors = api.metric_server_error(period=FIVE_MINUTES, statistic="Average")
        self._alarm("Api5xxRate", server_errors, threshold=config.api_5xx_alarm_rate, evaluation_periods=3,
                    datapoints=2, description="More than the allowed share of API requests answered 5XX")
        # Dead-letter queues: anything in one is work that failed for good.
        for name, queue in sorted(dead_letter_queues.items()):
            self._alarm(f"Dlq{_camel(name)}", queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"), threshold=0, evaluation_periods=1,
                description=f"Messages in the {name} dead-letter queue")
        # Queues where any waiting message needs a person (undelivered events: replay them).
        for name, queue in sorted((watched_queues or {}).items()):
            self._alarm(f"Waiting{_camel(name)}", queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"), threshold=0, evaluation_periods=1,
                description=f"Messages waiting in the {name} queue (for undelivered events: run replay_events)")
        # Stream consumers falling behind: records leave a stream after 24 hours.
        stream_consumers = {f.name: functions[f.name] for f in r.FUNCTIONS if f.stream_of and f.name in functions}
        for name, function in sorted(stream_consumers.items()):
            self._alarm(f"IteratorAge{_camel(name)}", iterator_age(function), evaluation_periods=5, datapoints=5,
                        threshold=r.STREAM_ITERATOR_AGE_ALARM_SECONDS * 1000,
                        description=f"The {name} function is more than {r.STREAM_ITERATOR_AGE_ALARM_SECONDS} s "
                                    "behind its streams")
        # Throttles: any function throttled is capacity a person must look at.
        for name, function in sorted(functions.items()):
            self._alarm(f"Throttles{_camel(name)}", function.metric_throttles(period=FIVE_MINUTES),
                        threshold=0, evaluation_periods=1, description=f"The {name} function was throttled")
        # Lockouts: a spike means someone is guessing codes.
        self._alarm("LockoutSpike", business_metric(LOCKOUTS), threshold=config.lockout_alarm_threshold,
                    evaluation_periods=1, description="Failed-guess lockouts above the usual level")

        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=f"{config.name_prefix}-service",
            default_interval=Duration.hours(6))
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Requests", left=[api.metric_count(period=FIVE_MINUTES, statistic="Sum")]),
            cloudwatch.GraphWidget(title="Errors", left=[
                api.metric_client_error(period=FIVE_MINUTES, statistic="Sum"),
                api.metric_server_error(period=FIVE_MINUTES, statistic="Sum")]),
            cloudwatch.GraphWidget(title="Latency p99 (ms)", left=[
                api.metric_latency(period=FIVE_MINUTES, statistic="p99"),
                api.metric_integration_latency(period=FIVE_MINUTES, statistic="p99")]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Redemptions", left=[business_metric(REDEMPTIONS)]),
            cloudwatch.GraphWidget(title="Conflicts", left=[business_metric(CONFLICTS)]),
            cloudwatch.GraphWidget(title="Lockouts and failed guesses", left=[
                business_metric(LOCKOUTS), business_metric(FAILED_ATTEMPTS)]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Throttles (Lambda)", left=[
                f.metric_throttles(period=FIVE_MINUTES, label=n) for n, f in sorted(functions.items())]),
            cloudwatch.GraphWidget(title="Function errors", left=[
                f.metric_errors(period=FIVE_MINUTES, label=n) for n, f in sorted(functions.items())]),
            cloudwatch.GraphWidget(title="DLQ depth", left=[
                q.metric_approximate_number_of_messages_visible(period=Duration.minutes(1), statistic="Maximum",
                                                                label=n)
                for n, q in sorted(dead_letter_queues.items())]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Stream iterator age (ms)", left=[
                iterator_age(f, label=n) for n, f in sorted(stream_consumers.items())]),
            cloudwatch.GraphWidget(title="Undelivered events waiting", left=[
                q.metric_approximate_number_of_messages_visible(period=Duration.minutes(1), statistic="Maximum",
                                                                label=n)
                for n, q in sorted((watched_queues or {}).items())]),
        )
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(
            title="Alarms", alarms=list(self.alarms.values()), width=24))

    def _alarm(self, name: str, metric: cloudwatch.IMetric, *, threshold: float, evaluation_periods: int,
               description: str, datapoints: int | None = None) -> None:
        alarm = cloudwatch.Alarm(
            self, f"{name}Alarm",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms[name] = alarm


def iterator_age(function: lambda_.Function, label: str | None = None) -> cloudwatch.Metric:
    """How old the last record a stream event source handed the function was (Lambda's IteratorAge)."""
    return function.metric("IteratorAge", period=Duration.minutes(1), statistic="Maximum", label=label)


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.replace("_", "-").split("-") if part)
