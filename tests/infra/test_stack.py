"""The CDK app, synthesised once (cdk-nag on, asset bundling skipped) and checked resource by resource.

Every expectation is derived from coupons_infra.resources, the definitions the local stack also
serves: when a Function, Route, Table, Bucket, Queue or Schedule is added there, these tests
check that the stack provisions it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import Stack
from aws_cdk.assertions import Match, Template
from coupons_infra import resources as r
from coupons_infra.constructs.observability import CONFLICTS, LOCKOUTS, REDEMPTIONS
from coupons_infra.stack import CouponsStack, build_app, load_cdk_json_context

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

ROOT = Path(__file__).resolve().parents[2]
# Context the test synthesis adds to cdk.json's: no bundling (no network), and two seed options
# changed so the test sees context reach the functions' environment.
TEST_CONTEXT = {
    "aws:cdk:bundling-stacks": [],
    "default_expiration_days": 45,
    "allowed_domains": ["example.com", "shop.test"],
    "failed_attempts_per_user": 7,
    "code_key_version": 3,  # a rotated code key (cdk.json says 1)
}
WILDCARD_RESOURCE_ACTIONS = {  # actions AWS offers no resource-level permissions for
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "dynamodb:ListStreams",
}


@dataclass
class Synth:
    stack: CouponsStack
    template: dict[str, Any]
    assertions: Template
    outdir: Path
    error: Exception | None

    def logical_id(self, construct: Any) -> str:
        cfn = construct if hasattr(construct, "logical_id") else construct.node.default_child
        return str(Stack.of(self.stack).resolve(cfn.logical_id))

    def resource(self, construct: Any) -> dict[str, Any]:
        return dict(self.template["Resources"][self.logical_id(construct)])

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == kind}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app(context=TEST_CONTEXT, outdir=str(outdir))
    stack = next(c for c in app.node.children if isinstance(c, CouponsStack))
    error: Exception | None = None
    try:
        app.synth()
    except Exception as exc:  # cdk-nag findings: reported by their own test, the template is written
        error = exc
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    yield Synth(stack, template, Template.from_json(template), outdir, error)


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = document.get("Statement", [])
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(synth: Synth, role_logical_id: str) -> list[dict[str, Any]]:
    """Every statement of a role: inline policies and the AWS::IAM::Policy resources attached to it."""
    found: list[dict[str, Any]] = []
    role = synth.template["Resources"][role_logical_id]
    for policy in role["Properties"].get("Policies", []):
        found += statements(policy["PolicyDocument"])
    for policy in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_logical_id} in policy["Properties"].get("Roles", []):
            found += statements(policy["Properties"]["PolicyDocument"])
    return found


def mentions(value: Any, logical_id: str) -> bool:
    return logical_id in json.dumps(value)


# -- checks -----------------------------------------------------------------------------------

def test_cdk_nag_aws_solutions_has_no_unacknowledged_findings(synth: Synth) -> None:
    # Given the app with AwsSolutionsChecks registered, When it is synthesised
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    violations = [
        f"{v['ruleName']} at {c['constructPath']}"
        for plugin in report.get("pluginReports", []) for v in plugin.get("violations", [])
        for c in v.get("violatingConstructs", [])
    ]
    # Then nothing is left unacknowledged and the synthesis succeeded
    assert violations == []
    assert synth.error is None


def test_every_acknowledgment_carries_a_real_reason(synth: Synth) -> None:
    from aws_cdk import Validations

    key = Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    reasons: dict[str, str] = {}
    for construct in synth.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == key:  # data: {"<kind>::<rule id>": reason}
                for rule, reason in dict(entry.data).items():
                    reasons[f"{construct.node.path}:{rule}"] = str(reason)
    assert reasons, "expected acknowledgments (e.g. the public OpenAPI route)"
    for where, reason in reasons.items():
        assert len(reason) >= 60, f"{where}: reason too thin: {reason!r}"
        assert not {"todo", "tbd", "placeholder"} & set(reason.lower().split()), where


def test_cfn_lint_finds_no_errors(synth: Synth) -> None:
    # Given the synthesised template, When cfn-lint checks it (parseable: file:line:col:line:col:RULE:text)
    template = synth.outdir / f"{synth.stack.stack_name}.template.json"
    done = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", str(template)],
                          capture_output=True, text=True, check=False)
    errors = [line for line in done.stdout.splitlines() if line.split(":")[5:6] and line.split(":")[5].startswith("E")]
    # Then no error (warnings and informational findings are allowed); exit code bit 2 means errors
    assert errors == [], "\n".join(errors)
    assert done.returncode & 2 == 0 and done.returncode in (0, 4, 8, 12), done.stdout + done.stderr


# -- data -------------------------------------------------------------------------------------

def test_one_table_per_definition_with_pitr_cmk_deletion_protection_stream_ttl_and_indexes(synth: Synth) -> None:
    key_id = synth.logical_id(synth.stack.data.key)
    assert len(synth.of_type("AWS::DynamoDB::Table")) == len(r.TABLES)
    for spec in r.TABLES:
        props = synth.resource(synth.stack.data.tables[spec.key])["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                      {"AttributeName": "sk", "KeyType": "RANGE"}]
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["DeletionProtectionEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["SSESpecification"]["SSEType"] == "KMS"
        assert mentions(props["SSESpecification"]["KMSMasterKeyId"], key_id)
        if spec.stream:
            assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
        else:
            assert "StreamSpecification" not in props
        if spec.ttl_attribute:
            assert props["TimeToLiveSpecification"] == {"AttributeName": spec.ttl_attribute, "Enabled": True}
        indexes = {g["IndexName"]: g for g in props.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {i.name for i in spec.indexes}
        for index in spec.indexes:
            assert indexes[index.name]["KeySchema"] == [
                {"AttributeName": index.partition_key, "KeyType": "HASH"},
                {"AttributeName": index.sort_key, "KeyType": "RANGE"}]
        attributes = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
        assert set(attributes.values()) == {"S"}


def test_keys_rotate_and_their_policies_grant_no_kms_star(synth: Synth) -> None:
    keys = synth.of_type("AWS::KMS::Key")
    assert len(keys) == 2  # data, alarm topic
    for logical_id, key in keys.items():
        props = key["Properties"]
        assert props["EnableKeyRotation"] is True, logical_id
        for statement in statements(props["KeyPolicy"]):
            actions = as_list(statement["Action"])
            assert "kms:*" not in actions and "*" not in actions, statement
            assert statement.get("Principal") != "*" and statement.get("Principal") != {"AWS": "*"}
            if statement["Effect"] == "Allow" and "Service" not in statement["Principal"]:
                assert not {"kms:Decrypt", "kms:Encrypt"} & set(actions) or statement.get("Condition"), statement
    alias = next(iter(synth.of_type("AWS::KMS::Alias").values()))["Properties"]
    assert alias["AliasName"] == r.KMS_KEY_ALIAS


# -- API and identity -------------------------------------------------------------------------

def test_every_route_is_a_method_with_the_cognito_authorizer_unless_public(synth: Synth) -> None:
    authorizer_id = synth.logical_id(synth.stack.api.authorizer)
    routes = [(spec, route) for spec in r.FUNCTIONS for route in spec.routes]
    assert routes
    for spec, route in routes:
        method = synth.resource(synth.stack.api.methods[f"{route.method} {route.path}"])["Properties"]
        assert method["HttpMethod"] == route.method
        assert mentions(method["Integration"]["Uri"], synth.logical_id(synth.stack.functions.functions[spec.name]))
        assert method["Integration"]["Type"] == "AWS_PROXY"
        assert "RequestValidatorId" in method
        if route.public:
            assert method["AuthorizationType"] == "NONE", route
            assert "AuthorizerId" not in method
        else:
            assert method["AuthorizationType"] == "COGNITO_USER_POOLS", route
            assert method["AuthorizerId"] == {"Ref": authorizer_id}, route
    # And no method exists that resources.py does not define, besides CORS preflights.
    methods = [m["Properties"] for m in synth.of_type("AWS::ApiGateway::Method").values()]
    assert len([m for m in methods if m["HttpMethod"] != "OPTIONS"]) == len(routes)
    for preflight in (m for m in methods if m["HttpMethod"] == "OPTIONS"):
        assert preflight["Integration"]["Type"] == "MOCK"


def test_openapi_document_is_public_and_admin_routes_are_not(synth: Synth) -> None:
    public = {f"{route.method} {route.path}" for spec in r.FUNCTIONS for route in spec.routes if route.public}
    assert "GET /openapi.json" in public
    assert "POST /coupons" not in public


def test_a_changed_email_is_kept_unverified_until_confirmed(synth: Synth) -> None:
    # Issue 11: a shopper who changes their email to x@partner.com keeps the old, verified one (and
    # email_verified true for it) until they confirm the new address; the service trusts only verified emails.
    pool = synth.resource(synth.stack.api.user_pool)["Properties"]
    assert pool["UserAttributeUpdateSettings"] == {"AttributesRequireVerificationBeforeUpdate": ["email"]}
    assert pool["AutoVerifiedAttributes"] == ["email"]


def test_user_pool_with_admin_group_and_three_channel_clients(synth: Synth) -> None:
    pool_id = synth.logical_id(synth.stack.api.user_pool)
    pool = synth.resource(synth.stack.api.user_pool)["Properties"]
    assert pool["UsernameAttributes"] == ["email"]
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] >= 12
    assert pool["DeletionProtection"] == "ACTIVE"
    synth.assertions.has_resource_properties("AWS::Cognito::UserPoolGroup", {
        "GroupName": "coupon-admins", "UserPoolId": {"Ref": pool_id}})
    clients = {c["Properties"]["ClientName"]: c["Properties"]
               for c in synth.of_type("AWS::Cognito::UserPoolClient").values()}
    assert set(clients) == {"web", "mobile", "pos"}
    for props in clients.values():
        assert props["UserPoolId"] == {"Ref": pool_id}
        assert props.get("GenerateSecret", False) is False
        assert props["PreventUserExistenceErrors"] == "ENABLED"
        assert "AllowedOAuthFlows" not in props
        assert "ALLOW_USER_SRP_AUTH" in props["ExplicitAuthFlows"]
        assert "ALLOW_USER_PASSWORD_AUTH" not in props["ExplicitAuthFlows"]  # no plain-password flow
    assert "ALLOW_ADMIN_USER_PASSWORD_AUTH" in clients["web"]["ExplicitAuthFlows"]  # operators, with IAM creds
    authorizer = next(iter(synth.of_type("AWS::ApiGateway::Authorizer").values()))["Properties"]
    assert authorizer["Type"] == "COGNITO_USER_POOLS"
    assert authorizer["IdentitySource"] == "method.request.header.Authorization"
    assert mentions(authorizer["ProviderARNs"], pool_id)


def test_stage_throttles_traces_logs_access_and_never_logs_bodies(synth: Synth) -> None:
    stage = synth.resource(synth.stack.api.stage)["Properties"]
    assert stage["TracingEnabled"] is True
    assert mentions(stage["AccessLogSetting"]["DestinationArn"], synth.logical_id(synth.stack.api.access_logs))
    access_format = json.loads(stage["AccessLogSetting"]["Format"])
    assert {"requestId", "ip", "status", "user"} <= set(access_format)
    settings = stage["MethodSettings"][0]
    assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
    assert settings["DataTraceEnabled"] is False
    assert settings["LoggingLevel"] == "ERROR"
    synth.assertions.has_resource_properties("AWS::ApiGateway::Account", {
        "CloudWatchRoleArn": Match.object_like({"Fn::GetAtt": Match.array_with(["Arn"])})})


def test_usage_plan_per_channel_client_with_throttle_quota_and_key(synth: Synth) -> None:
    plans = {p["Properties"]["UsagePlanName"]: p["Properties"] for p in synth.of_type("AWS::ApiGateway::UsagePlan").values()}
    assert set(plans) == {"coupons-web", "coupons-mobile", "coupons-pos"}
    for props in plans.values():
        assert props["Throttle"]["RateLimit"] > 0 and props["Throttle"]["BurstLimit"] > 0
        assert props["Quota"]["Period"] == "DAY"
        assert props["ApiStages"][0]["Stage"] == {"Ref": synth.logical_id(synth.stack.api.stage)}
    assert len(synth.of_type("AWS::ApiGateway::UsagePlanKey")) == 3
    assert len(synth.of_type("AWS::ApiGateway::ApiKey")) == 3


def test_cors_preflight_allows_the_web_origin(synth: Synth) -> None:
    origin = synth.stack.config.web_origins[0]
    preflights = [m["Properties"] for m in synth.of_type("AWS::ApiGateway::Method").values()
                  if m["Properties"]["HttpMethod"] == "OPTIONS"]
    assert preflights
    for preflight in preflights:
        headers = preflight["Integration"]["IntegrationResponses"][0]["ResponseParameters"]
        assert headers["method.response.header.Access-Control-Allow-Origin"] == f"'{origin}'"
        assert "Authorization" in headers["method.response.header.Access-Control-Allow-Headers"]


@pytest.mark.parametrize(("response_type", "status", "code"), [
    ("UNAUTHORIZED", "401", "UNAUTHENTICATED"),
    ("ACCESS_DENIED", "403", "FORBIDDEN"),
    ("MISSING_AUTHENTICATION_TOKEN", "404", "NOT_FOUND"),
    ("DEFAULT_4XX", None, "VALIDATION_ERROR"),
    ("DEFAULT_5XX", None, "INTERNAL_ERROR"),
    ("THROTTLED", "429", "RATE_LIMITED"),
    ("REQUEST_TOO_LARGE", "413", "VALIDATION_ERROR"),
])
def test_gateway_responses_use_the_contract_envelope(synth: Synth, response_type: str, status: str | None,
                                                     code: str) -> None:
    responses = {g["Properties"]["ResponseType"]: g["Properties"]
                 for g in synth.of_type("AWS::ApiGateway::GatewayResponse").values()}
    response = responses[response_type]
    assert response.get("StatusCode") == status
    body = json.loads(response["ResponseTemplates"]["application/json"])
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    assert response["ResponseParameters"]["gatewayresponse.header.Content-Type"] == "'application/json'"
    if response_type == "THROTTLED":
        assert response["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


def test_waf_web_acl_rate_limits_per_ip_runs_common_rules_and_guards_the_stage(synth: Synth) -> None:
    acl_id = synth.logical_id(synth.stack.api.web_acl)
    acl = synth.template["Resources"][acl_id]["Properties"]
    assert acl["Scope"] == "REGIONAL" and acl["DefaultAction"] == {"Allow": {}}
    rules = {rule["Name"]: rule for rule in acl["Rules"]}
    rate = rules["RateLimitPerIp"]
    assert rate["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"
    assert rate["Statement"]["RateBasedStatement"]["Limit"] > 0
    assert rate["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    managed = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    assert (managed["VendorName"], managed["Name"]) == ("AWS", "AWSManagedRulesCommonRuleSet")
    assert rules["AWSManagedRulesCommonRuleSet"]["OverrideAction"] == {"None": {}}
    body = json.loads(acl["CustomResponseBodies"]["rate_limited"]["Content"])
    assert body["error"]["code"] == "RATE_LIMITED"
    association = next(iter(synth.of_type("AWS::WAFv2::WebACLAssociation").values()))["Properties"]
    assert association["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    assert mentions(association["ResourceArn"], synth.logical_id(synth.stack.api.api))
    assert mentions(association["ResourceArn"], synth.logical_id(synth.stack.api.stage))


def test_outputs_name_the_api_url_user_pool_and_client_ids(synth: Synth) -> None:
    outputs = synth.template["Outputs"]
    for name in ("ApiUrl", "UserPoolId", "WebClientId", "MobileClientId", "PosClientId", "Region"):
        assert name in outputs, name


# -- storage ----------------------------------------------------------------------------------

def test_buckets_block_public_access_use_sse_kms_tls_only_lifecycle_versioning_and_access_logs(synth: Synth) -> None:
    storage = synth.stack.storage
    logs_id = synth.logical_id(storage.access_logs)
    key_id = synth.logical_id(synth.stack.data.key)
    policies = {json.dumps(p["Properties"]["Bucket"]): p["Properties"]["PolicyDocument"]
                for p in synth.of_type("AWS::S3::BucketPolicy").values()}
    assert set(storage.buckets) == {b.key for b in r.BUCKETS}
    for bucket in [*storage.buckets.values(), storage.access_logs]:
        logical_id = synth.logical_id(bucket)
        props = synth.template["Resources"][logical_id]["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True}
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert props["LifecycleConfiguration"]["Rules"]
        tls_only = [s for s in statements(policies[json.dumps({"Ref": logical_id})])
                    if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
        assert tls_only, logical_id
        encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        if bucket is storage.access_logs:  # S3 delivers access logs only to SSE-S3 buckets
            assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        else:
            assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
            assert mentions(encryption["ServerSideEncryptionByDefault"]["KMSMasterKeyID"], key_id)
            assert encryption["BucketKeyEnabled"] is True
            assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}


def test_bucket_lifecycle_follows_the_definitions(synth: Synth) -> None:
    for spec in r.BUCKETS:
        props = synth.resource(synth.stack.storage.buckets[spec.key])["Properties"]
        rules = props["LifecycleConfiguration"]["Rules"]
        assert any(rule.get("AbortIncompleteMultipartUpload") for rule in rules)
        for prefix, days in getattr(spec, "expire_after_days", ()):
            assert any(rule.get("ExpirationInDays") == days and rule.get("Prefix", "") == prefix for rule in rules)


def test_s3_notifications_reach_their_queues_natively(synth: Synth) -> None:
    notifying = [b for b in r.BUCKETS if getattr(b, "notify_prefix_to_queue", None)]
    assert notifying, "the imports bucket notifies the imports queue"
    assert not synth.of_type("Custom::S3BucketNotifications")  # no custom-resource Lambda
    for spec in notifying:
        prefix, queue_key = spec.notify_prefix_to_queue  # type: ignore[misc]
        bucket = synth.resource(synth.stack.storage.buckets[spec.key])
        queue_id = synth.logical_id(synth.stack.messaging.queues[queue_key])
        [config] = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
        assert config["Event"] == "s3:ObjectCreated:*"
        assert config["Queue"] == {"Fn::GetAtt": [queue_id, "Arn"]}
        assert config["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": prefix}]
        policy_id = next(k for k, p in synth.of_type("AWS::SQS::QueuePolicy").items()
                         if {"Ref": queue_id} in p["Properties"]["Queues"])
        assert policy_id in as_list(bucket.get("DependsOn", []))
        policy = synth.template["Resources"][policy_id]["Properties"]["PolicyDocument"]
        [allow] = [s for s in statements(policy) if s.get("Principal") == {"Service": "s3.amazonaws.com"}]
        assert allow["Action"] == "sqs:SendMessage" and "aws:SourceArn" in allow["Condition"]["ArnEquals"]


# -- queues, events, schedules ----------------------------------------------------------------

def test_every_queue_has_a_dlq_sse_and_tls_only_policy(synth: Synth) -> None:
    messaging = synth.stack.messaging
    queues = synth.of_type("AWS::SQS::Queue")
    assert len(queues) == len(r.QUEUES) + len(messaging.dead_letter_queues)
    for spec in r.QUEUES:
        props = synth.resource(messaging.queues[spec.key])["Properties"]
        assert props["RedrivePolicy"]["maxReceiveCount"] == spec.max_receive_count
        assert props["VisibilityTimeout"] >= spec.visibility_timeout_seconds
    policies = synth.of_type("AWS::SQS::QueuePolicy").values()
    for logical_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True, logical_id
        tls = [s for p in policies if {"Ref": logical_id} in p["Properties"]["Queues"]
               for s in statements(p["Properties"]["PolicyDocument"])
               if s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false"]
        assert tls, logical_id


def test_queue_consumers_report_batch_item_failures(synth: Synth) -> None:
    mappings = list(synth.of_type("AWS::Lambda::EventSourceMapping").values())
    consumers = [f for f in r.FUNCTIONS if f.queue]
    for spec in consumers:
        function_id = synth.logical_id(synth.stack.functions.functions[spec.name])
        queue_id = synth.logical_id(synth.stack.messaging.queues[spec.queue])  # type: ignore[index]
        [mapping] = [m["Properties"] for m in mappings if m["Properties"]["FunctionName"] == {"Ref": function_id}
                     and mentions(m["Properties"]["EventSourceArn"], queue_id)]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["BatchSize"] == spec.queue_batch_size


def test_stream_consumers_bisect_retry_age_out_and_fail_to_a_dlq(synth: Synth) -> None:
    mappings = list(synth.of_type("AWS::Lambda::EventSourceMapping").values())
    consumers = [(f, t) for f in r.FUNCTIONS if f.stream_of
                 for t in ((f.stream_of,) if isinstance(f.stream_of, str) else f.stream_of)]
    assert consumers, "the publisher reads the table streams"
    for spec, table_key in consumers:
        function_id = synth.logical_id(synth.stack.functions.functions[spec.name])
        table_id = synth.logical_id(synth.stack.data.tables[table_key])
        [mapping] = [m["Properties"] for m in mappings if m["Properties"]["FunctionName"] == {"Ref": function_id}
                     and m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [table_id, "StreamArn"]}]
        assert mapping["BisectBatchOnFunctionError"] is True
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["MaximumRetryAttempts"] == getattr(spec, "stream_retry_attempts", 10)
        assert 60 <= mapping["MaximumRecordAgeInSeconds"] <= 86400
        assert mapping["StartingPosition"] == "TRIM_HORIZON"
        destination = mapping["DestinationConfig"]["OnFailure"]["Destination"]
        dlq = synth.stack.messaging.dead_letter_queues[f"{spec.name}-stream"]
        assert destination == {"Fn::GetAtt": [synth.logical_id(dlq), "Arn"]}


def test_schedules_are_cron_rules_with_dlqs_and_failure_destinations(synth: Synth) -> None:
    scheduled = [f for f in r.FUNCTIONS if f.schedule]
    assert scheduled, "expiry sweep and daily report run on schedules"
    rules = list(synth.of_type("AWS::Events::Rule").values())
    configs = list(synth.of_type("AWS::Lambda::EventInvokeConfig").values())
    for spec in scheduled:
        assert spec.schedule is not None
        function_id = synth.logical_id(synth.stack.functions.functions[spec.name])
        dlq_id = synth.logical_id(synth.stack.messaging.dead_letter_queues[f"{spec.name}-schedule"])
        [rule] = [x["Properties"] for x in rules if x["Properties"].get("ScheduleExpression") == f"cron({spec.schedule.cron})"
                  and mentions(x["Properties"]["Targets"], function_id)]
        [target] = rule["Targets"]
        assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
        assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2
        [config] = [c["Properties"] for c in configs if c["Properties"]["FunctionName"] == {"Ref": function_id}]
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [dlq_id, "Arn"]}


def test_the_job_watchdog_runs_every_ten_minutes_on_the_active_jobs_index_without_s3_or_code_keys(
        synth: Synth) -> None:
    """Issue 17: bulk jobs that stop making progress are given up. The watchdog reads the jobs table's
    sparse active-jobs index (no Scan), updates jobs and messages the worker queues; the workers, which
    hold the S3 grants, assemble what a given-up job has."""
    jobs_table = synth.resource(synth.stack.data.tables["jobs"])["Properties"]
    [index] = jobs_table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "gsi1" and index["KeySchema"][0] == {"AttributeName": "gsi1pk", "KeyType": "HASH"}
    function_id = synth.logical_id(synth.stack.functions.functions["job_watchdog"])
    assert any(x["Properties"].get("ScheduleExpression") == "cron(0/10 * * * ? *)"
               and mentions(x["Properties"]["Targets"], function_id) for x in synth.of_type("AWS::Events::Rule").values())
    role_id = synth.logical_id(synth.stack.functions.roles["job_watchdog"])
    found = role_statements(synth, role_id)
    actions = {a for s in found for a in as_list(s["Action"])}
    assert "dynamodb:Query" in actions and "dynamodb:UpdateItem" in actions and "dynamodb:Scan" not in actions
    assert not {a for a in actions if a.startswith("s3:")}
    for statement in found:  # the key only through DynamoDB (the table's encryption), never a code key
        if any(a.startswith("kms:") for a in as_list(statement["Action"])):
            assert "dynamodb." in json.dumps(statement.get("Condition", {})), statement
    table_arns = [s["Resource"] for s in found if "dynamodb:Query" in as_list(s["Action"])]
    assert any("/index/gsi1" in json.dumps(resources) for resources in table_arns)
    sends = {synth.logical_id(synth.stack.messaging.queues[q]) for q in ("imports", "generation")}
    assert all(any(mentions(s["Resource"], q) and "sqs:SendMessage" in as_list(s["Action"]) for s in found)
               for q in sends)
    assert not any("sqs:ReceiveMessage" in as_list(s["Action"]) for s in found)


def test_event_bus_has_an_archive_of_every_coupon_event(synth: Synth) -> None:
    bus_id = synth.logical_id(synth.stack.messaging.bus)
    synth.assertions.has_resource_properties("AWS::Events::EventBus", {"Name": r.EVENT_BUS_NAME})
    archive = next(iter(synth.of_type("AWS::Events::Archive").values()))["Properties"]
    assert archive["SourceArn"] == {"Fn::GetAtt": [bus_id, "Arn"]}
    assert archive["EventPattern"] == {"source": [r.EVENT_SOURCE]}
    assert archive["RetentionDays"] == getattr(r, "EVENT_ARCHIVE_RETENTION_DAYS", 365)


# -- observability ----------------------------------------------------------------------------

def test_dashboard_shows_requests_errors_latency_business_metrics_throttles_and_dlqs(synth: Synth) -> None:
    dashboard = next(iter(synth.of_type("AWS::CloudWatch::Dashboard").values()))["Properties"]
    body = json.dumps(dashboard["DashboardBody"])
    for needle in ("Count", "5XXError", "4XXError", "Latency", "p99", REDEMPTIONS, CONFLICTS, LOCKOUTS,
                   "Throttles", "ApproximateNumberOfMessagesVisible"):
        assert needle in body, needle


def test_alarms_page_the_encrypted_topic(synth: Synth) -> None:
    observability = synth.stack.observability
    topic_id = synth.logical_id(observability.topic)
    topic = synth.resource(observability.topic)["Properties"]
    assert mentions(topic["KmsMasterKeyId"], synth.logical_id(observability.key))
    topic_policy = next(iter(synth.of_type("AWS::SNS::TopicPolicy").values()))["Properties"]["PolicyDocument"]
    assert any(s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s) for s in statements(topic_policy))
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]
    names = set(observability.alarms)
    assert "Api5xxRate" in names and "LockoutSpike" in names
    assert {n for n in names if n.startswith("Dlq")} and len([n for n in names if n.startswith("Dlq")]) == len(
        synth.stack.messaging.dead_letter_queues)
    assert len([n for n in names if n.startswith("Throttles")]) == len(r.FUNCTIONS)
    five_xx = synth.resource(observability.alarms["Api5xxRate"])["Properties"]
    assert five_xx["MetricName"] == "5XXError" and five_xx["Statistic"] == "Average"
    dlq = synth.resource(observability.alarms[next(n for n in names if n.startswith("Dlq"))])["Properties"]
    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible" and dlq["Threshold"] == 0
    assert dlq["ComparisonOperator"] == "GreaterThanThreshold"


# -- functions --------------------------------------------------------------------------------

def test_one_lambda_per_definition_python313_arm64_layers_tracing_logs(synth: Synth) -> None:
    functions = synth.of_type("AWS::Lambda::Function")
    assert len(functions) == len(r.FUNCTIONS)
    layer_ids = {synth.logical_id(synth.stack.functions.deps_layer), synth.logical_id(synth.stack.functions.domain_layer)}
    for spec in r.FUNCTIONS:
        props = synth.resource(synth.stack.functions.functions[spec.name])["Properties"]
        assert props["Runtime"] == "python3.13"
        assert props["Architectures"] == ["arm64"]
        assert props["Handler"] == "handler.lambda_handler"
        assert {layer["Ref"] for layer in props["Layers"]} == layer_ids
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["MemorySize"] == spec.memory_mb
        assert props["Timeout"] == spec.timeout_seconds
        assert props["LoggingConfig"]["LogGroup"] == {"Ref": synth.logical_id(synth.stack.functions.log_groups[spec.name])}
        if getattr(spec, "reserved_concurrency", None):
            assert props["ReservedConcurrentExecutions"] == spec.reserved_concurrency
    for group in synth.of_type("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == synth.stack.config.log_retention_days


def test_functions_get_the_seed_options_from_context_and_every_resource_name(synth: Synth) -> None:
    base = load_cdk_json_context()
    for spec in r.FUNCTIONS:
        env = synth.resource(synth.stack.functions.functions[spec.name])["Properties"]["Environment"]["Variables"]
        # From this test's context (over cdk.json's)...
        assert env["DEFAULT_EXPIRATION_DAYS"] == "45"
        assert env["ALLOWED_DOMAINS"] == "example.com,shop.test"
        assert env["FAILED_ATTEMPTS_PER_USER"] == "7"
        assert env["CODE_KEY_VERSION"] == "3"  # rotation: every function seals/looks up with the same version
        # ...and from cdk.json's.
        assert env["COUPON_ID_FORMAT"] == str(base["coupon_id_format"])
        assert env["DEFAULT_DISCOUNT_TYPE"] == str(base["discount_type"])
        assert env["MAX_DISCOUNT_PER_USER"] == str(base["max_discount_per_user"])
        assert base["code_key_version"] == 1
        for table in r.TABLES:
            assert env[table.env] == {"Ref": synth.logical_id(synth.stack.data.tables[table.key])}
        for bucket in r.BUCKETS:
            assert env[bucket.env] == {"Ref": synth.logical_id(synth.stack.storage.buckets[bucket.key])}
        for queue in r.QUEUES:
            assert env[queue.env] == {"Ref": synth.logical_id(synth.stack.messaging.queues[queue.key])}
        assert env["KMS_KEY_ID"] == {"Fn::GetAtt": [synth.logical_id(synth.stack.data.key), "Arn"]}
        assert env["EVENT_BUS_NAME"] == {"Ref": synth.logical_id(synth.stack.messaging.bus)}
        assert env["ADMIN_GROUP"] == "coupon-admins"
        assert env["POWERTOOLS_SERVICE_NAME"] == "coupons"


# -- IAM --------------------------------------------------------------------------------------

def all_policy_statements(synth: Synth) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for logical_id, resource in synth.template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy":
            found += [(logical_id, s) for s in statements(props["PolicyDocument"])]
        if resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                found += [(logical_id, s) for s in statements(policy["PolicyDocument"])]
    return found


def test_no_iam_statement_allows_star_actions_or_star_resources(synth: Synth) -> None:
    found = all_policy_statements(synth)
    assert found
    for where, statement in found:
        actions = as_list(statement["Action"])
        for action in actions:
            assert action != "*" and not action.endswith(":*"), (where, action)
            assert action not in {"dynamodb:*", "kms:*", "s3:*"}
            assert action != "dynamodb:Scan", (where, "no request path scans")
        if "*" in as_list(statement.get("Resource", [])):
            assert set(actions) <= WILDCARD_RESOURCE_ACTIONS, (where, actions)
    for role in synth.of_type("AWS::IAM::Role").values():
        assert not role["Properties"].get("ManagedPolicyArns"), "no managed policies: each role is written out"


def test_a_function_without_grants_touches_only_its_logs_and_xray(synth: Synth) -> None:
    bare = [f for f in r.FUNCTIONS if not f.grants and not f.queue and not f.stream_of and not f.schedule]
    assert bare, "the OpenAPI function needs nothing"
    for spec in bare:
        role_id = synth.logical_id(synth.stack.functions.roles[spec.name])
        actions = {a for s in role_statements(synth, role_id) for a in as_list(s["Action"])}
        assert actions == {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments",
                           "xray:PutTelemetryRecords"}


def test_only_the_functions_that_create_codes_may_create_a_code_key_version(synth: Synth) -> None:
    # validate and redeem get kms:Decrypt only: after a rotation they unwrap every stored version and
    # never create one (coupons/crypto.py); the admin and bulk functions create the new version.
    key_id = synth.logical_id(synth.stack.data.key)
    creators = set()
    for spec in r.FUNCTIONS:
        role_id = synth.logical_id(synth.stack.functions.roles[spec.name])
        code_key = [s for s in role_statements(synth, role_id) if mentions(s["Resource"], key_id)
                    and "kms:EncryptionContext:purpose" in json.dumps(s.get("Condition", {}))]
        if any("kms:GenerateDataKey" in as_list(s["Action"]) for s in code_key):
            creators.add(spec.name)
    assert creators == {f.name for f in r.FUNCTIONS if ("key", "kms", "generate") in f.grants}
    assert {"admin", "csv_import", "generate_codes"} <= creators
    assert not {"validate", "redeem"} & creators


@pytest.mark.parametrize("spec", [f for f in r.FUNCTIONS if f.grants], ids=lambda f: f.name)
def test_grants_become_least_privilege_statements(synth: Synth, spec: r.Function) -> None:
    role_id = synth.logical_id(synth.stack.functions.roles[spec.name])
    found = role_statements(synth, role_id)
    granted_tables = {key for kind, key, _ in spec.grants if kind == "table"}
    for table_key, table in synth.stack.data.tables.items():
        table_id = synth.logical_id(table)
        touching = [s for s in found if mentions(s["Resource"], table_id) and
                    any(a.startswith("dynamodb:") and a != "dynamodb:ListStreams" and "Stream" not in a
                        and a not in {"dynamodb:GetRecords", "dynamodb:GetShardIterator"}
                        for a in as_list(s["Action"]))]
        assert bool(touching) == (table_key in granted_tables), (spec.name, table_key)
    for kind, target, mode in spec.grants:
        if kind == "table":
            table_id = synth.logical_id(synth.stack.data.tables[target])
            actions = {a for s in found if mentions(s["Resource"], table_id) for a in as_list(s["Action"])}
            if "read" in mode:
                assert {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"} <= actions
            if "write" in mode:
                assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} <= actions
            if mode == "read":
                assert not {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} & actions
        elif kind == "key":
            key_id = synth.logical_id(synth.stack.data.key)
            direct = [s for s in found if mentions(s["Resource"], key_id)
                      and "kms:EncryptionContext:purpose" in json.dumps(s.get("Condition", {}))]
            assert any({"decrypt": "kms:Decrypt", "generate": "kms:GenerateDataKey", "encrypt": "kms:Encrypt"}[mode]
                       in as_list(s["Action"]) for s in direct), (spec.name, mode)
        elif kind == "bucket":
            access, _, prefix = mode.partition(":")
            bucket_id = synth.logical_id(synth.stack.storage.buckets[target])
            expected = {"read": "s3:GetObject", "put": "s3:PutObject", "write": "s3:PutObject",
                        "readwrite": "s3:PutObject", "delete": "s3:DeleteObject"}[access]
            # The object statement names the bucket and the prefix, nothing wider.
            assert any(expected in as_list(s["Action"]) and mentions(s["Resource"], bucket_id)
                       and json.dumps(s["Resource"]).endswith(f'/{prefix}*"]]}}') for s in found), (spec.name, mode)
        elif kind == "queue":
            queue_id = synth.logical_id(synth.stack.messaging.queues[target])
            actions = {a for s in found if mentions(s["Resource"], queue_id) for a in as_list(s["Action"])}
            assert ("sqs:SendMessage" if mode == "send" else "sqs:ReceiveMessage") in actions
        elif kind == "bus":
            bus_id = synth.logical_id(synth.stack.messaging.bus)
            assert any(s["Action"] == "events:PutEvents" and mentions(s["Resource"], bus_id) for s in found)
