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
        assert props["KeySchema"] == [{"AttributeName": spec.partition_key, "KeyType": "HASH"},
                                      *([{"AttributeName": spec.sort_key, "KeyType": "RANGE"}]
                                        if spec.sort_key else [])]
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
            if statement["Effect"] == "Deny":  # a deny may name everyone (issue 17: the code context)
                continue
            assert statement.get("Principal") != "*" and statement.get("Principal") != {"AWS": "*"}
            if statement["Effect"] == "Allow" and "Service" not in statement["Principal"]:
                assert not {"kms:Decrypt", "kms:Encrypt"} & set(actions) or statement.get("Condition"), statement
    alias = next(iter(synth.of_type("AWS::KMS::Alias").values()))["Properties"]
    assert alias["AliasName"] == r.KMS_KEY_ALIAS


# -- API and identity -------------------------------------------------------------------------

def test_every_route_is_a_method_with_the_token_authorizer_unless_public(synth: Synth) -> None:
    # Issue 12: the Cognito authorizer (COGNITO_USER_POOLS) became the token authorizer (CUSTOM).
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
            assert method["AuthorizationType"] == "CUSTOM", route
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


def test_customer_user_pool_with_three_channel_clients_and_no_admin_group(synth: Synth) -> None:
    # Issue 17, finding 7: the coupon-admins group moved to the admins' own pool (a shoppers' pool
    # token is never an admin); this test asserted it here before.
    pool_id = synth.logical_id(synth.stack.api.user_pool)
    pool = synth.resource(synth.stack.api.user_pool)["Properties"]
    assert pool["UsernameAttributes"] == ["email"]
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] >= 12
    assert pool["DeletionProtection"] == "ACTIVE"
    assert not [g for g in synth.of_type("AWS::Cognito::UserPoolGroup").values()
                if g["Properties"]["UserPoolId"] == {"Ref": pool_id}]
    clients = {c["Properties"]["ClientName"]: c["Properties"]
               for c in synth.of_type("AWS::Cognito::UserPoolClient").values()
               if c["Properties"]["UserPoolId"] == {"Ref": pool_id}}
    assert set(clients) == {"web", "mobile", "pos"}
    for props in clients.values():
        assert props["UserPoolId"] == {"Ref": pool_id}
        assert props.get("GenerateSecret", False) is False
        assert props["PreventUserExistenceErrors"] == "ENABLED"
        assert "AllowedOAuthFlows" not in props
        assert "ALLOW_USER_SRP_AUTH" in props["ExplicitAuthFlows"]
        assert "ALLOW_USER_PASSWORD_AUTH" not in props["ExplicitAuthFlows"]  # no plain-password flow
    assert "ALLOW_ADMIN_USER_PASSWORD_AUTH" in clients["web"]["ExplicitAuthFlows"]  # operators, with IAM creds
    # Issue 12: the token authorizer accepts this pool's ID tokens for exactly these clients
    env = synth.resource(synth.stack.functions.functions[r.AUTHORIZER])["Properties"]["Environment"]["Variables"]
    assert env["CUSTOMER_ISSUER"] == {"Fn::Join": ["", ["https://", {"Fn::GetAtt": [pool_id, "ProviderURL"]}]]}
    audiences = json.dumps(env["CUSTOMER_AUDIENCES"])
    for channel in ("Web", "Mobile", "Pos"):
        assert mentions(audiences, synth.logical_id(synth.stack.api.clients[channel.lower()]))


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
        assert "Idempotency-Key" in headers["method.response.header.Access-Control-Allow-Headers"]


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
        for prefix, days in synth.stack.config.expiry_days(spec).items():
            assert any(rule.get("ExpirationInDays") == days and rule.get("Prefix", "") == prefix
                       and rule.get("NoncurrentVersionExpiration") == {"NoncurrentDays": 1} for rule in rules)


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


def test_undelivered_events_have_a_queue_of_their_own_with_redrive_retention_and_an_alarm(synth: Synth) -> None:
    # Issue 17: events EventBridge refused are kept whole, for two weeks, and page a person.
    messaging, observability = synth.stack.messaging, synth.stack.observability
    spec = next(q for q in r.QUEUES if q.key == "undelivered-events")
    queue_id = synth.logical_id(messaging.queues["undelivered-events"])
    props = synth.template["Resources"][queue_id]["Properties"]
    assert props["MessageRetentionPeriod"] == 14 * 86400 == spec.retention_days * 86400
    assert props["SqsManagedSseEnabled"] is True
    dlq = messaging.dead_letter_queues["undelivered-events-queue"]
    assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [synth.logical_id(dlq), "Arn"]},
                                      "maxReceiveCount": spec.max_receive_count}
    waiting = synth.resource(observability.alarms["WaitingUndeliveredEvents"])["Properties"]
    assert waiting["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert waiting["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    assert (waiting["Threshold"], waiting["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert "DlqUndeliveredEventsQueue" in observability.alarms  # and its DLQ alarms too
    outputs = synth.template["Outputs"]
    assert outputs["UndeliveredEventsQueueUrl"]["Value"] == {"Ref": queue_id}
    replay_id = synth.logical_id(synth.stack.functions.functions["replay_events"])
    assert outputs["ReplayEventsFunctionName"]["Value"] == {"Ref": replay_id}


def test_stream_consumers_alarm_on_iterator_age(synth: Synth) -> None:
    observability = synth.stack.observability
    consumers = [f for f in r.FUNCTIONS if f.stream_of]
    for spec in consumers:
        name = "IteratorAge" + "".join(p.title() for p in spec.name.split("_"))
        alarm = synth.resource(observability.alarms[name])["Properties"]
        function_id = synth.logical_id(synth.stack.functions.functions[spec.name])
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("AWS/Lambda", "IteratorAge",
                                                                                  "Maximum")
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function_id}}]
        assert alarm["Threshold"] == r.STREAM_ITERATOR_AGE_ALARM_SECONDS * 1000
        assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (60, 5, 5)
    dashboard = json.dumps(next(iter(synth.of_type("AWS::CloudWatch::Dashboard").values()))["Properties"])
    assert "IteratorAge" in dashboard


def test_the_publisher_may_park_and_the_replay_may_only_drain_and_publish(synth: Synth) -> None:
    queue_id = synth.logical_id(synth.stack.messaging.queues["undelivered-events"])
    bus_id = synth.logical_id(synth.stack.messaging.bus)

    def grants(function: str) -> dict[str, set[str]]:
        role_id = synth.logical_id(synth.stack.functions.roles[function])
        found: dict[str, set[str]] = {}
        for statement in role_statements(synth, role_id):
            for action in as_list(statement["Action"]):
                found.setdefault(action, set()).add(json.dumps(statement["Resource"]))
        return found

    publisher = grants("publisher")
    stream_dlq_id = synth.logical_id(synth.stack.messaging.dead_letter_queues["publisher-stream"])
    # the queue, and the stream's on-failure destination (sent by the event source mapping, with this role)
    assert publisher["sqs:SendMessage"] == {json.dumps({"Fn::GetAtt": [queue_id, "Arn"]}),
                                            json.dumps({"Fn::GetAtt": [stream_dlq_id, "Arn"]})}
    assert "sqs:ReceiveMessage" not in publisher and "sqs:DeleteMessage" not in publisher
    assert publisher["events:PutEvents"] == {json.dumps({"Fn::GetAtt": [bus_id, "Arn"]})}
    replay = grants("replay_events")
    assert set(replay) == {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments",
                           "xray:PutTelemetryRecords", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                           "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "events:PutEvents"}
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
        assert replay[action] == {json.dumps({"Fn::GetAtt": [queue_id, "Arn"]})}
    assert replay["events:PutEvents"] == {json.dumps({"Fn::GetAtt": [bus_id, "Arn"]})}
    # No trigger: an operator runs it after the alarm
    mappings = synth.of_type("AWS::Lambda::EventSourceMapping").values()
    replay_id = synth.logical_id(synth.stack.functions.functions["replay_events"])
    assert not [m for m in mappings if m["Properties"]["FunctionName"] == {"Ref": replay_id}]


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
        assert props["EphemeralStorage"] == {"Size": spec.ephemeral_storage_mb}  # the local host enforces both
        assert props["LoggingConfig"]["LogGroup"] == {"Ref": synth.logical_id(synth.stack.functions.log_groups[spec.name])}
        assert props.get("ReservedConcurrentExecutions") == synth.stack.config.reserved_concurrency.get(spec.name)
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
                    and s["Effect"] == "Allow"  # (stream consumers carry a Deny of the same context)
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
    granted_tables = {key for kind, key, _ in spec.grants if kind in ("table", "index")}
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
            if mode == "write":  # (its index grants, if any, come with Query on the index ARNs only)
                on_table = {a for s in found if {"Fn::GetAtt": [table_id, "Arn"]} in as_list(s["Resource"])
                            for a in as_list(s["Action"])}
                assert not {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"} & on_table
        elif kind == "index":
            table_id = synth.logical_id(synth.stack.data.tables[target])
            index_arn = {"Fn::Join": ["", [{"Fn::GetAtt": [table_id, "Arn"]}, f"/index/{mode}"]]}
            assert any(as_list(s["Action"]) == ["dynamodb:Query"] and index_arn in as_list(s["Resource"])
                       for s in found), (spec.name, target, mode)
        elif kind == "key":
            key_id = synth.logical_id(synth.stack.data.key)
            direct = [s for s in found if mentions(s["Resource"], key_id)
                      and "kms:EncryptionContext:purpose" in json.dumps(s.get("Condition", {}))]
            assert any({"decrypt": "kms:Decrypt", "generate": "kms:GenerateDataKey", "encrypt": "kms:Encrypt"}[mode]
                       in as_list(s["Action"]) for s in direct), (spec.name, mode)
        elif kind == "bucket":
            access, _, prefix = mode.partition(":")
            bucket_id = synth.logical_id(synth.stack.storage.buckets[target])
            expected = {"read": "s3:GetObject", "readversions": "s3:GetObjectVersion", "put": "s3:PutObject",
                        "write": "s3:PutObject", "readwrite": "s3:PutObject", "delete": "s3:DeleteObject"}[access]
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


def test_indexes_are_queried_only_by_the_functions_that_name_them(synth: Synth) -> None:
    """Index ARNs get Query and nothing else, only for the indexes a function's grants name (issue 11:
    every table grant used to carry every index, with every table action)."""
    for spec in r.FUNCTIONS:
        named = {f"/index/{index}" for kind, _, index in spec.grants if kind == "index"}
        role_id = synth.logical_id(synth.stack.functions.roles[spec.name])
        for statement in role_statements(synth, role_id):
            # An index ARN is {"Fn::Join": ["", [<the table's Arn>, "/index/<name>"]]}.
            on_indexes = {res["Fn::Join"][1][-1] for res in as_list(statement["Resource"])
                          if isinstance(res, dict) and "/index/" in json.dumps(res)}
            if on_indexes:
                assert as_list(statement["Action"]) == ["dynamodb:Query"], (spec.name, statement)
                assert on_indexes <= named, (spec.name, on_indexes - named)
    reports_table = synth.logical_id(synth.stack.data.tables["reports"])
    for _, statement in all_policy_statements(synth):
        actions = set(as_list(statement["Action"]))
        assert "dynamodb:DescribeTable" not in actions
        if "dynamodb:BatchWriteItem" in actions:  # only the reports' kept days are written in batches
            assert reports_table in json.dumps(statement["Resource"]), statement


def test_role_policies_resolved_from_the_constructs_are_the_synthesised_ones(synth: Synth) -> None:
    """tests/infra/test_iam_calls.py reads each role's policies with Stack.resolve (seconds, not a full
    synthesis); here, where the app is synthesised anyway, they must be exactly the template's."""
    from iam_check import role_policy_documents  # type: ignore[import-not-found]

    resolved = role_policy_documents(synth.stack)
    for name, role in synth.stack.functions.roles.items():
        role_id = synth.logical_id(role)
        in_template = [p["Properties"]["PolicyDocument"] for p in synth.of_type("AWS::IAM::Policy").values()
                       if {"Ref": role_id} in p["Properties"].get("Roles", [])]
        assert in_template and resolved[name] == in_template, name


# -- issue 17: infrastructure security ----------------------------------------------------------

CODE_CONTEXT = {"kms:EncryptionContext:purpose": "coupon-codes"}  # coupons/crypto.py's keyring context
DYNAMODB_VIA = {"kms:ViaService": {"Fn::Join": ["", ["dynamodb.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}}


def data_key_statements(synth: Synth, role_logical_id: str) -> list[dict[str, Any]]:
    key_id = synth.logical_id(synth.stack.data.key)
    return [s for s in role_statements(synth, role_logical_id)
            if mentions(s["Resource"], key_id) and any(a.startswith("kms:") for a in as_list(s["Action"]))]


def test_the_publisher_may_decrypt_only_through_dynamodb(synth: Synth) -> None:
    # Finding 4: the stream event sources' grantStreamRead gave the publisher an unconditioned
    # kms:Decrypt on the data key, while its stream images hold every ciphertext and the wrapped keyring.
    publisher = synth.logical_id(synth.stack.functions.roles["publisher"])
    found = data_key_statements(synth, publisher)
    assert found, "reading an encrypted stream needs kms:Decrypt (through DynamoDB)"
    for statement in found:
        assert statement.get("Condition") == {"StringEquals": DYNAMODB_VIA}, statement
        assert set(as_list(statement["Action"])) <= {"kms:Decrypt", "kms:DescribeKey"}, statement


def test_no_role_uses_the_data_key_without_a_service_or_code_context_condition(synth: Synth) -> None:
    # Every statement on the data key is either "through DynamoDB/S3" or "with the code context".
    for spec in r.FUNCTIONS:
        role_id = synth.logical_id(synth.stack.functions.roles[spec.name])
        for statement in data_key_statements(synth, role_id):
            condition = statement.get("Condition", {}).get("StringEquals", {})
            assert "kms:ViaService" in condition or condition == CODE_CONTEXT, (spec.name, statement)


def test_only_the_code_handling_functions_may_use_the_key_under_the_code_context(synth: Synth) -> None:
    # Finding 4: the key policy itself denies the keyring's context to every other principal, so
    # no IAM policy (an admin's, the publisher's, a future function's) can unwrap the keyring.
    key = synth.resource(synth.stack.data.key)["Properties"]
    code_functions = {f.name for f in r.FUNCTIONS if any(kind == "key" for kind, _, _ in f.grants)}
    assert {"admin", "validate", "redeem", "csv_import", "generate_codes"} <= code_functions
    assert "publisher" not in code_functions
    expected = [{"Fn::GetAtt": [synth.logical_id(synth.stack.functions.roles[name]), "Arn"]}
                for name in sorted(code_functions)]
    [deny] = [s for s in statements(key["KeyPolicy"])
              if s["Effect"] == "Deny" and CODE_CONTEXT.items() <= s.get("Condition", {}).get("StringEquals", {}).items()]
    assert {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom",
            "kms:ReEncryptTo"} <= set(as_list(deny["Action"]))
    assert deny["Principal"] == {"AWS": "*"} and deny["Resource"] == "*"
    allowed = as_list(deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"])
    assert sorted(allowed, key=json.dumps) == sorted(expected, key=json.dumps)


def admin_identity(synth: Synth) -> Any:
    return synth.stack.api.admin_identity


def test_admins_have_their_own_pool_without_self_sign_up_with_mfa_and_threat_protection(synth: Synth) -> None:
    # Finding 7: admins signed in with a password only, in the shoppers' pool that allows self sign-up.
    admins = admin_identity(synth)
    pool = synth.resource(admins.user_pool)["Properties"]
    assert admins.user_pool is not synth.stack.api.user_pool
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert pool["MfaConfiguration"] == "ON"
    assert pool["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    assert pool["UserPoolAddOns"] == {"AdvancedSecurityMode": "ENFORCED"}
    assert pool["UserPoolTier"] == "PLUS"
    assert pool["DeletionProtection"] == "ACTIVE"
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] >= 14
    # The admin group lives in the admin pool only.
    admin_pool_id = synth.logical_id(admins.user_pool)
    groups = [g["Properties"] for g in synth.of_type("AWS::Cognito::UserPoolGroup").values()]
    assert [g["UserPoolId"] for g in groups if g["GroupName"] == "coupon-admins"] == [{"Ref": admin_pool_id}]


def test_the_admin_client_signs_in_through_managed_login_with_pkce_and_no_password_flow(synth: Synth) -> None:
    admins = admin_identity(synth)
    client = synth.resource(admins.client)["Properties"]
    assert client["UserPoolId"] == {"Ref": synth.logical_id(admins.user_pool)}
    assert client.get("GenerateSecret", False) is False
    assert client["AllowedOAuthFlows"] == ["code"]
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert set(client["AllowedOAuthScopes"]) == {"openid", "email", "profile"}
    assert client["SupportedIdentityProviders"] == ["COGNITO"]
    assert client["ExplicitAuthFlows"] == ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    assert client["PreventUserExistenceErrors"] == "ENABLED"
    # The console's own URL (API id + stage: no dependency on the deployment) is the redirect.
    [callback] = client["CallbackURLs"]
    assert mentions(callback, synth.logical_id(synth.stack.api.api))
    assert json.dumps(callback).endswith(f'/{synth.stack.config.stage_name}/console"]]}}')
    domain = next(iter(synth.of_type("AWS::Cognito::UserPoolDomain").values()))["Properties"]
    assert domain["UserPoolId"] == {"Ref": synth.logical_id(admins.user_pool)}
    # No client of any pool may trade an admin's password for tokens.
    for props in (c["Properties"] for c in synth.of_type("AWS::Cognito::UserPoolClient").values()):
        if props["UserPoolId"] == {"Ref": synth.logical_id(admins.user_pool)}:
            # (the server clients of issue 12 have no sign-in flow at all)
            assert not {"ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_USER_PASSWORD_AUTH"} & \
                set(props.get("ExplicitAuthFlows", []))


def test_one_authorizer_verifies_both_pools_and_functions_know_the_admin_issuer(synth: Synth) -> None:
    # Issue 12: one token authorizer (a Lambda function) verifies both pools' tokens: its environment names
    # them (it used to be a Cognito authorizer listing the two pools as providers).
    [authorizer] = [a["Properties"] for a in synth.of_type("AWS::ApiGateway::Authorizer").values()]
    assert authorizer["Type"] == "TOKEN"
    env = synth.resource(synth.stack.functions.functions[r.AUTHORIZER])["Properties"]["Environment"]["Variables"]
    assert mentions(env["CUSTOMER_ISSUER"], synth.logical_id(synth.stack.api.user_pool))
    assert mentions(env["ADMIN_AUDIENCES"], synth.logical_id(admin_identity(synth).client))
    admin_pool_id = synth.logical_id(admin_identity(synth).user_pool)
    for spec in r.FUNCTIONS:
        env = synth.resource(synth.stack.functions.functions[spec.name])["Properties"]["Environment"]["Variables"]
        # ProviderURL is cognito-idp.<region>.amazonaws.com/<pool id>: the issuer without its scheme.
        assert env["ADMIN_ISSUER"] == {"Fn::Join": ["", ["https://", {"Fn::GetAtt": [admin_pool_id, "ProviderURL"]}]]}
    console = synth.resource(synth.stack.functions.functions["console"])["Properties"]["Environment"]["Variables"]
    assert mentions(console["ADMIN_CLIENT_ID"], synth.logical_id(admin_identity(synth).client))
    assert "amazoncognito.com" in json.dumps(console["ADMIN_SIGNIN_URL"])


def test_outputs_name_the_admin_pool_its_client_and_sign_in_url(synth: Synth) -> None:
    outputs = synth.template["Outputs"]
    assert outputs["AdminUserPoolId"]["Value"] == {"Ref": synth.logical_id(admin_identity(synth).user_pool)}
    assert outputs["AdminClientId"]["Value"] == {"Ref": synth.logical_id(admin_identity(synth).client)}
    assert "AdminSignInUrl" in outputs and "AdminConsoleUrl" in outputs


def test_checkout_functions_have_reserved_concurrency(synth: Synth) -> None:
    # Finding 8c: a guessing flood or a bulk run could take every concurrent execution from redemptions.
    reserved = synth.stack.config.reserved_concurrency
    assert reserved == {"validate": 100, "redeem": 200}  # the defaults (CDK context reserved_concurrency)
    for spec in r.FUNCTIONS:
        props = synth.resource(synth.stack.functions.functions[spec.name])["Properties"]
        assert props.get("ReservedConcurrentExecutions") == reserved.get(spec.name), spec.name
    assert sum(reserved.values()) <= synth.stack.config.account_concurrency_limit - 100


def test_uploaded_plaintext_codes_expire_from_the_imports_bucket(synth: Synth) -> None:
    # Finding 8e: incoming/ uploads hold plaintext codes; they expire (current and noncurrent versions).
    props = synth.resource(synth.stack.storage.buckets["imports"])["Properties"]
    rules = {rule.get("Prefix"): rule for rule in props["LifecycleConfiguration"]["Rules"]}
    assert rules["incoming/"]["ExpirationInDays"] == 7
    assert rules["incoming/"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    assert rules["results/"]["ExpirationInDays"] == 30
    assert rules["incoming/"]["Status"] == "Enabled"


def test_usage_plans_warn_at_synth_time_that_they_are_not_enforced(synth: Synth) -> None:
    # Finding 8d: without require_api_keys no request carries a key, so no usage plan ever applies.
    assert synth.stack.config.require_api_keys is False
    warnings = [str(entry.data) for construct in synth.stack.node.find_all() for entry in construct.node.metadata
                if entry.type == "aws:cdk:warning"]
    assert any("usage plans" in w and "require_api_keys" in w for w in warnings), warnings


def test_report_aggregates_table_is_written_by_the_daily_job_and_read_and_filled_by_the_summary(
        synth: Synth) -> None:
    # Issue 17: kept per-day aggregates. No stream (nothing publishes from it), no TTL (kept days stay).
    table = synth.stack.data.tables["reports"]
    props = synth.resource(table)["Properties"]
    assert "StreamSpecification" not in props and "TimeToLiveSpecification" not in props
    table_id = synth.logical_id(table)

    def actions(function: str) -> set[str]:
        role_id = synth.logical_id(synth.stack.functions.roles[function])
        return {a for s in role_statements(synth, role_id) if mentions(s["Resource"], table_id)
                for a in as_list(s["Action"])}

    job, api = actions("daily_report"), actions("reports")
    assert {"dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteItem"} <= job
    assert not {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:Scan"} & job  # the job only writes
    assert {"dynamodb:Query", "dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteItem"} <= api
    assert "dynamodb:Scan" not in api
    for function in r.FUNCTIONS:
        if function.name not in ("daily_report", "reports"):
            assert not actions(function.name), function.name
    # The reports bucket grant covers multipart uploads (AbortMultipartUpload for a failed stream)
    bucket_id = synth.logical_id(synth.stack.storage.buckets["reports"])
    role_id = synth.logical_id(synth.stack.functions.roles["daily_report"])
    s3_actions = {a for s in role_statements(synth, role_id) if mentions(s["Resource"], bucket_id)
                  for a in as_list(s["Action"])}
    assert {"s3:PutObject", "s3:AbortMultipartUpload"} <= s3_actions and "s3:GetObject" not in s3_actions


# -- servers as callers (issue 12) -------------------------------------------------------------------

def server_clients(synth: Synth) -> Any:
    return synth.stack.api.server_clients


def test_the_resource_server_coupons_has_the_checkout_and_admin_scopes(synth: Synth) -> None:
    [server] = [s["Properties"] for s in synth.of_type("AWS::Cognito::UserPoolResourceServer").values()]
    assert server["Identifier"] == "coupons"
    assert {s["ScopeName"] for s in server["Scopes"]} == {"checkout", "admin"}
    # in the admins' pool, whose domain is the token endpoint
    assert server["UserPoolId"] == {"Ref": synth.logical_id(admin_identity(synth).user_pool)}
    [domain] = [d["Properties"] for d in synth.of_type("AWS::Cognito::UserPoolDomain").values()]
    assert domain["UserPoolId"] == server["UserPoolId"]


@pytest.mark.parametrize(("name", "scope"), [("shop-backend", "checkout"), ("pos", "checkout"), ("crm", "admin")])
def test_each_server_is_a_client_credentials_client_with_a_generated_secret_and_its_scope(
        synth: Synth, name: str, scope: str) -> None:
    clients = server_clients(synth).clients
    props = synth.resource(clients[name])["Properties"]
    server_id = synth.logical_id(server_clients(synth).resource_server)
    assert props["ClientName"] == f"server-{name}"
    assert props["UserPoolId"] == {"Ref": synth.logical_id(admin_identity(synth).user_pool)}
    assert props["GenerateSecret"] is True  # Cognito generates it: never in the template
    assert props["AllowedOAuthFlows"] == ["client_credentials"]
    assert props["AllowedOAuthFlowsUserPoolClient"] is True
    assert props["AllowedOAuthScopes"] == [{"Fn::Join": ["", [{"Ref": server_id}, f"/{scope}"]]}]
    # no way for a person to sign in through it
    assert not {"ALLOW_USER_SRP_AUTH", "ALLOW_USER_PASSWORD_AUTH", "ALLOW_ADMIN_USER_PASSWORD_AUTH",
                "ALLOW_CUSTOM_AUTH"} & set(props.get("ExplicitAuthFlows", []))
    assert "CallbackURLs" not in props and props["AccessTokenValidity"] == 60
    assert "ClientSecret" not in json.dumps(props)


def test_the_token_authorizer_is_wired_to_its_function_with_a_cache_and_a_header_check(synth: Synth) -> None:
    [(logical_id, resource)] = list(synth.of_type("AWS::ApiGateway::Authorizer").items())
    props = resource["Properties"]
    function_id = synth.logical_id(synth.stack.functions.functions[r.AUTHORIZER])
    assert logical_id == synth.logical_id(synth.stack.api.authorizer)
    assert props["Type"] == "TOKEN"
    assert props["IdentitySource"] == "method.request.header.Authorization"
    assert props["IdentityValidationExpression"] == r.AUTHORIZATION_HEADER_REGEX
    assert props["AuthorizerResultTtlInSeconds"] == r.AUTHORIZER_CACHE_SECONDS == 300
    assert mentions(props["AuthorizerUri"], function_id)
    assert props["RestApiId"] == {"Ref": synth.logical_id(synth.stack.api.api)}
    # API Gateway may invoke it, from this API's authorizers only
    permissions = [p["Properties"] for p in synth.of_type("AWS::Lambda::Permission").values()
                   if mentions(p["Properties"]["FunctionName"], function_id)]
    assert permissions and all(p["Principal"] == "apigateway.amazonaws.com" for p in permissions)
    assert all(mentions(p["SourceArn"], synth.logical_id(synth.stack.api.api)) and
               "/authorizers/" in json.dumps(p["SourceArn"]) for p in permissions)


def test_the_authorizer_knows_every_pool_client_and_server_and_touches_no_data(synth: Synth) -> None:
    resource = synth.resource(synth.stack.functions.functions[r.AUTHORIZER])["Properties"]
    env = resource["Environment"]["Variables"]
    admin_pool = synth.logical_id(admin_identity(synth).user_pool)
    assert env["SERVER_ISSUER"] == env["ADMIN_ISSUER"] == \
        {"Fn::Join": ["", ["https://", {"Fn::GetAtt": [admin_pool, "ProviderURL"]}]]}
    for client in server_clients(synth).clients.values():
        assert mentions(env["SERVER_CLIENT_IDS"], synth.logical_id(client))
    assert "*" not in json.dumps(env["SERVER_CLIENT_IDS"])  # "any client" is the local stack's only
    assert "TOKEN_JWKS_URL" not in env  # on AWS: each pool's own /.well-known/jwks.json
    assert not r.function(r.AUTHORIZER).grants and not r.function(r.AUTHORIZER).routes
    # The checkout functions are not told the server clients: the authorizer decides who is one
    for name in ("validate", "redeem", "admin"):
        variables = synth.resource(synth.stack.functions.functions[name])["Properties"]["Environment"]["Variables"]
        assert "SERVER_CLIENT_IDS" not in variables


def test_a_failing_authorizer_is_a_503_in_the_envelope(synth: Synth) -> None:
    responses = {g["Properties"]["ResponseType"]: g["Properties"]
                 for g in synth.of_type("AWS::ApiGateway::GatewayResponse").values()}
    failure = responses["AUTHORIZER_FAILURE"]
    assert failure["StatusCode"] == "503"
    assert json.loads(failure["ResponseTemplates"]["application/json"])["error"]["code"] == "TRY_AGAIN"
    assert failure["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


def test_outputs_name_the_token_endpoint_and_the_server_clients(synth: Synth) -> None:
    outputs = synth.template["Outputs"]
    assert "/oauth2/token" in json.dumps(outputs["ServerTokenUrl"]["Value"])
    for ident, name in (("ShopBackend", "shop-backend"), ("Pos", "pos"), ("Crm", "crm")):
        assert outputs[f"{ident}ServerClientId"]["Value"] == \
            {"Ref": synth.logical_id(server_clients(synth).clients[name])}


def test_access_logs_name_the_caller_the_authorizer_verified(synth: Synth) -> None:
    stage = synth.resource(synth.stack.api.stage)["Properties"]
    assert '"user":"$context.authorizer.principalId"' in stage["AccessLogSetting"]["Format"]


# -- issue 17: Idempotency-Key records ------------------------------------------------------------

def test_the_idempotency_table_has_powertools_keys_ttl_and_the_data_key(synth: Synth) -> None:
    spec = r.IDEMPOTENCY_TABLE
    props = synth.resource(synth.stack.data.tables[spec.key])["Properties"]
    # Powertools' DynamoDBPersistenceLayer defaults: partition key `id`, expiry `expiration` (TTL)
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert "StreamSpecification" not in props and "GlobalSecondaryIndexes" not in props
    assert props["SSESpecification"]["SSEType"] == "KMS"


def test_only_the_create_routes_functions_touch_the_idempotency_table_by_key(synth: Synth) -> None:
    table_id = synth.logical_id(synth.stack.data.tables["idempotency"])
    users = set()
    for spec in r.FUNCTIONS:
        role_id = synth.logical_id(synth.stack.functions.roles[spec.name])
        actions = {a for s in role_statements(synth, role_id) if mentions(s["Resource"], table_id)
                   for a in as_list(s["Action"])}
        if actions:
            users.add(spec.name)
            # exactly what the persistence layer calls: single items by key, no Query, Scan or batch
            assert actions == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                               "dynamodb:DeleteItem"}, (spec.name, actions)
    # POST /coupons (admin) and POST /campaigns/{id}/codes (jobs)
    assert users == {"admin", "jobs"}
    routes = {(rt.method, rt.path): f.name for f in r.FUNCTIONS for rt in f.routes}
    assert {routes[("POST", "/coupons")], routes[("POST", "/campaigns/{campaign_id}/codes")]} == users


def test_create_functions_get_the_idempotency_table_name(synth: Synth) -> None:
    table_id = synth.logical_id(synth.stack.data.tables["idempotency"])
    for name in ("admin", "jobs"):
        env = synth.resource(synth.stack.functions.functions[name])["Properties"]["Environment"]["Variables"]
        assert env["IDEMPOTENCY_TABLE"] == {"Ref": table_id}
