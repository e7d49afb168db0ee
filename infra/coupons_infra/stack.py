"""The coupon service as one CloudFormation stack made of constructs, and the CDK app around it.

Everything is generated from coupons_infra.resources (the definitions the local stack also
uses): a Function, Route, Table, Bucket, Queue or Schedule added there is provisioned here
with no edit to this package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import CfnOutput, Stack, Tags, Validations
from constructs import Construct

from . import resources as r
from .constructs.api import Api
from .constructs.config import StackConfig
from .constructs.data import Data
from .constructs.functions import Functions
from .constructs.jobs import Jobs, Messaging
from .constructs.observability import Observability
from .constructs.storage import Storage

STACK_ID = "CouponsStack"
CDK_JSON = r.ROOT / "cdk.json"
# Feature flags the app relies on, whatever cdk.json says.
FEATURE_FLAGS = {
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,  # access logs via bucket policy, not ACLs
    "@aws-cdk/aws-iam:minimizePolicies": True,
    "@aws-cdk/core:checkSecretUsage": True,
}


class CouponsStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id,
                         description="Coupon service: API Gateway, Lambda, DynamoDB, KMS, S3, SQS, EventBridge",
                         termination_protection=config.termination_protection, **kwargs)
        self.config = config
        self.data = Data(self, "Data", config=config)
        self.messaging = Messaging(self, "Messaging", config=config)
        self.storage = Storage(self, "Storage", config=config, key=self.data.key, queues=self.messaging.queues)
        self.functions = Functions(
            self, "Functions", config=config, key=self.data.key, tables=self.data.tables,
            buckets=self.storage.buckets, queues=self.messaging.queues, bus=self.messaging.bus)
        self.data.reserve_code_context([self.functions.roles[f.name] for f in r.FUNCTIONS
                                        if any(kind == "key" for kind, _, _ in f.grants)])
        self.api = Api(self, "Api", config=config, functions=self.functions.functions)
        self.jobs = Jobs(self, "Jobs", data=self.data, messaging=self.messaging,
                         functions=self.functions.functions)
        self.observability = Observability(
            self, "Observability", config=config, api=self.api.api, functions=self.functions.functions,
            dead_letter_queues=self.messaging.dead_letter_queues,
            watched_queues={q.key: self.messaging.queues[q.key] for q in r.QUEUES
                            if getattr(q, "alarm_when_visible", False)})
        self._outputs()

    def _outputs(self) -> None:
        api = self.api
        CfnOutput(self, "ApiUrl", value=api.api.url, description="Base URL of the REST API stage")
        CfnOutput(self, "UserPoolId", value=api.user_pool.user_pool_id, description="Cognito user pool")
        for channel, client in api.clients.items():
            CfnOutput(self, f"{channel.title()}ClientId", value=client.user_pool_client_id,
                      description=f"Cognito app client of the {channel} channel")
        admins = api.admin_identity
        CfnOutput(self, "AdminUserPoolId", value=admins.user_pool.user_pool_id,
                  description="Cognito user pool of the admins (no self sign-up, TOTP MFA required)")
        CfnOutput(self, "AdminClientId", value=admins.client.user_pool_client_id,
                  description="The admin console's app client (managed login, code grant with PKCE)")
        CfnOutput(self, "AdminSignInUrl", value=admins.signin_url,
                  description="The admin pool's managed login domain")
        CfnOutput(self, "AdminConsoleUrl", value=api.console_url, description="The admin console")
        servers = api.server_clients  # issue 12: client credentials for shop backends, POS terminals, a CRM
        CfnOutput(self, "ServerTokenUrl", value=servers.token_url,
                  description="Token endpoint of the server clients (OAuth client-credentials grant)")
        for name, client in servers.clients.items():
            ident = "".join(part.title() for part in name.split("-"))
            CfnOutput(self, f"{ident}ServerClientId", value=client.user_pool_client_id,
                      description=f"App client of the {name} server (secret: aws cognito-idp "
                                  "describe-user-pool-client)")
        for channel, api_key in api.api_keys.items():
            CfnOutput(self, f"{channel.title()}ApiKeyId", value=api_key.key_id,
                      description=f"API key id of the {channel} usage plan (value: aws apigateway get-api-key)")
        for bucket_key, bucket in self.storage.buckets.items():
            CfnOutput(self, f"{bucket_key.title()}BucketName", value=bucket.bucket_name)
        CfnOutput(self, "EventBusName", value=self.messaging.bus.event_bus_name)
        CfnOutput(self, "UndeliveredEventsQueueUrl", value=self.messaging.queues["undelivered-events"].queue_url,
                  description="Events EventBridge refused, waiting for replay_events")
        CfnOutput(self, "ReplayEventsFunctionName", value=self.functions.functions["replay_events"].function_name,
                  description="aws lambda invoke --function-name <this> --cli-read-timeout 0 out.json")
        CfnOutput(self, "AlarmTopicArn", value=self.observability.topic.topic_arn)
        CfnOutput(self, "Region", value=self.region)


def load_cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """cdk.json's context: the CDK CLI passes it in, `python infra/app.py` (make synth) reads it here."""
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("context", {}))


def build_app(context: Mapping[str, Any] | None = None, outdir: str | None = None, nag: bool = True) -> cdk.App:
    """The app: cdk.json context (then `context`) merged under the CLI's, the stack, cdk-nag."""
    merged = {**load_cdk_json_context(), **FEATURE_FLAGS, **dict(context or {})}
    kwargs: dict[str, Any] = {"context": merged}
    if outdir and "CDK_OUTDIR" not in os.environ:
        kwargs["outdir"] = outdir
    app = cdk.App(**kwargs)
    config = StackConfig.from_context(app.node.try_get_context)
    env = None
    if os.environ.get("CDK_DEFAULT_ACCOUNT") and os.environ.get("CDK_DEFAULT_REGION"):
        env = cdk.Environment(account=os.environ["CDK_DEFAULT_ACCOUNT"], region=os.environ["CDK_DEFAULT_REGION"])
    stack = CouponsStack(app, STACK_ID, config=config, env=env)
    Tags.of(stack).add("service", "coupons")
    if nag:
        from cdk_nag import AwsSolutionsChecks

        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app
