"""The REST API: Cognito user pools, the token authorizer, one method per resources.Route, WAF, usage plans.

Why a Lambda TOKEN authorizer (issue 12): API Gateway's Cognito authorizer takes ID tokens on
a method without OAuth scopes and only access tokens on a method with scopes, never both, while
checkout routes serve shoppers (ID tokens) and servers (client-credentials access tokens) alike.
The authorizer (coupons/authorizer.py) verifies both kinds against the pools' JWKS; the
functions decide per route with the verified claims (scopes, admin group). Its answer allows
the whole stage and is cached per token for resources.AUTHORIZER_CACHE_SECONDS, so most
requests never invoke it.

API Gateway answers some requests itself (no token, throttled, too large...). Its gateway
responses are rewritten here to the contract's error envelope, so a client sees the same
`{"error": {"code": ...}}` from AWS as from the local stack.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import Annotations, Aws, Duration, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from .. import resources as r
from .admin_identity import AdminIdentity
from .config import CHANNELS, StackConfig
from .functions import retention
from .server_clients import ServerClients

# (response type, HTTP status, contract error code, message, extra headers)
GATEWAY_RESPONSES: tuple[tuple[str, str | None, str, str, dict[str, str]], ...] = (
    ("UNAUTHORIZED", "401", "UNAUTHENTICATED", "A valid bearer token is required.", {}),
    ("EXPIRED_TOKEN", "401", "UNAUTHENTICATED", "A valid bearer token is required.", {}),
    ("INVALID_SIGNATURE", "401", "UNAUTHENTICATED", "A valid bearer token is required.", {}),
    ("ACCESS_DENIED", "403", "FORBIDDEN", "You are not allowed to do this.", {}),
    # The token authorizer failed (the pools' keys could not be fetched): nothing happened, try again.
    ("AUTHORIZER_FAILURE", "503", "TRY_AGAIN", "The service could not check the token; try again.",
     {"Retry-After": "1"}),
    ("WAF_FILTERED", "403", "FORBIDDEN", "The request was blocked.", {}),
    ("INVALID_API_KEY", "403", "FORBIDDEN", "A valid API key for this channel is required.", {}),
    # REST APIs answer an unknown path or method with "Missing Authentication Token".
    ("MISSING_AUTHENTICATION_TOKEN", "404", "NOT_FOUND", "No such route.", {}),
    ("RESOURCE_NOT_FOUND", "404", "NOT_FOUND", "No such route.", {}),
    ("BAD_REQUEST_BODY", "400", "VALIDATION_ERROR", "The request is not valid.", {}),
    ("BAD_REQUEST_PARAMETERS", "400", "VALIDATION_ERROR", "The request is not valid.", {}),
    ("UNSUPPORTED_MEDIA_TYPE", "400", "VALIDATION_ERROR", "The body must be JSON.", {}),
    ("REQUEST_TOO_LARGE", "413", "VALIDATION_ERROR", "The request body is larger than 10 MB.", {}),
    ("THROTTLED", "429", "RATE_LIMITED", "Too many requests; try again later.", {"Retry-After": "1"}),
    ("QUOTA_EXCEEDED", "429", "RATE_LIMITED", "This channel's daily quota is used up.", {"Retry-After": "3600"}),
    ("INTEGRATION_TIMEOUT", "503", "TRY_AGAIN", "The service took too long; try again.", {"Retry-After": "1"}),
    ("DEFAULT_4XX", None, "VALIDATION_ERROR", "The request is not valid.", {}),  # keeps the status
    ("DEFAULT_5XX", None, "INTERNAL_ERROR", "Something went wrong.", {}),  # as the handlers answer
)

ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "user": "$context.authorizer.principalId",  # a person's sub, or client:<id> for a server
    "requestTime": "$context.requestTime",
    "method": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",  # the template (/coupons/{coupon_id}): no query string
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "gatewayError": "$context.error.responseType",
    "wafResponse": "$context.wafResponseCode",
    "xrayTraceId": "$context.xrayTraceId",
}, separators=(",", ":"))


def envelope(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))


class Api(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig,
                 functions: dict[str, lambda_.Function]) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self._identity()
        self._rest_api(config)
        self._admins(config, functions)
        self.methods: dict[str, apigw.Method] = {}
        for spec in r.FUNCTIONS:
            for route in spec.routes:
                self._route(spec, route, functions[spec.name])
        self._gateway_responses(config)
        self._usage_plans(config)
        self._waf(config)

    # -- identity ---------------------------------------------------------------------------
    def _identity(self) -> None:
        threat = self.config.cognito_threat_protection
        self.user_pool = cognito.UserPool(
            self, "UserPool",
            user_pool_name=f"{self.config.name_prefix}-users",
            self_sign_up_enabled=True,  # shoppers register themselves; admins have their own pool
            sign_in_aliases=cognito.SignInAliases(email=True),
            sign_in_case_sensitive=False,
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            # A changed email takes effect only once confirmed: until then the token keeps the old,
            # verified one. The service ignores any unverified email (issue 11).
            keep_original=cognito.KeepOriginalAttrs(email=True),
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=True, mutable=True)),
            password_policy=cognito.PasswordPolicy(
                min_length=12, require_lowercase=True, require_uppercase=True, require_digits=True,
                require_symbols=True, temp_password_validity=Duration.days(3)),
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.PLUS if threat else cognito.FeaturePlan.ESSENTIALS,
            standard_threat_protection_mode=(
                cognito.StandardThreatProtectionMode.FULL_FUNCTION if threat else None),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        Validations.of(self.user_pool).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions-COG2",
            reason="The pool's users are shoppers at checkout; MFA (TOTP) is offered and optional. "
                   "Its tokens are never admins: admins sign in to their own pool, where MFA is required."))
        if not threat:
            Validations.of(self.user_pool).acknowledge(cdk.Acknowledgment(
                id="AwsSolutions-COG3",
                reason="Threat protection needs the Cognito Plus plan, billed per monthly active user, and "
                       "every shopper is a user here: it is opt-in (-c cognito_threat_protection=true). "
                       "The WAF rate rule and the service's own lockouts defend the API meanwhile."))
            Validations.of(self.user_pool).acknowledge(cdk.Acknowledgment(
                id="AwsSolutions-COG8",
                reason="The Plus plan is billed per monthly active user and every shopper is a user here; "
                       "it is opt-in with -c cognito_threat_protection=true (which also enforces threat "
                       "protection)."))
        self.clients: dict[str, cognito.UserPoolClient] = {}
        for channel in CHANNELS:
            self.clients[channel] = self.user_pool.add_client(
                f"{channel.title()}Client",
                user_pool_client_name=channel,
                generate_secret=False,  # public clients: a browser, an app, a till
                # SRP for people; on the web client also ADMIN_USER_PASSWORD_AUTH, which only a caller
                # with IAM credentials (an operator: README "Deploying") can use to get a token.
                auth_flows=cognito.AuthFlow(user_srp=True, admin_user_password=channel == "web"),
                disable_o_auth=True,
                prevent_user_existence_errors=True,
                enable_token_revocation=True,
                id_token_validity=Duration.hours(1),
                access_token_validity=Duration.hours(1),
                refresh_token_validity=Duration.days(7 if channel == "pos" else 30),
            )

    def _admins(self, config: StackConfig, functions: dict[str, lambda_.Function]) -> None:
        """Issue 17, finding 7: the admins' own pool, and the functions told which issuer makes an
        admin. Issue 12: the server clients in that pool, and one token authorizer for all callers."""
        # The console's URL from the API's id and the stage name (not api.url: that would make the
        # client, and through it the console function, depend on the deployment of its own route).
        self.console_url = (f"https://{self.api.rest_api_id}.execute-api.{Aws.REGION}.{Aws.URL_SUFFIX}/"
                            f"{config.stage_name}/console")
        self.admin_identity = AdminIdentity(self, "Admins", config=config, console_url=self.console_url)
        admins = self.admin_identity
        self.server_clients = ServerClients(self, "Servers", user_pool=admins.user_pool, domain=admins.domain)
        self.customer_issuer = f"https://{self.user_pool.user_pool_provider_url}"
        self.authorizer_function = functions[r.AUTHORIZER]
        for name, value in {
            "CUSTOMER_ISSUER": self.customer_issuer,
            "CUSTOMER_AUDIENCES": ",".join(c.user_pool_client_id for c in self.clients.values()),
            "ADMIN_AUDIENCES": admins.client.user_pool_client_id,
            "SERVER_ISSUER": admins.issuer,
            "SERVER_CLIENT_IDS": ",".join(self.server_clients.client_ids),
        }.items():
            self.authorizer_function.add_environment(name, value)
        self.authorizer = apigw.TokenAuthorizer(
            self, "Authorizer",
            authorizer_name="tokens",
            handler=self.authorizer_function,
            identity_source=apigw.IdentitySource.header("Authorization"),
            validation_regex=r.AUTHORIZATION_HEADER_REGEX,  # anything else is a 401 without an invocation
            results_cache_ttl=Duration.seconds(r.AUTHORIZER_CACHE_SECONDS),
        )
        for function in functions.values():
            function.add_environment("ADMIN_ISSUER", admins.issuer)
        if "console" in functions:
            for name, value in self.admin_identity.console_environment().items():
                functions["console"].add_environment(name, value)

    # -- the API and its stage --------------------------------------------------------------
    def _rest_api(self, config: StackConfig) -> None:
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=retention(config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.RETAIN)
        self.api = apigw.RestApi(
            self, "RestApi",
            rest_api_name=f"{config.name_prefix}-api",
            description="Coupon service: create, validate, redeem and account for discount codes",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,  # the account-level role below is scoped, not a managed policy
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            deploy_options=apigw.StageOptions(
                stage_name=config.stage_name,
                throttling_rate_limit=config.throttle_rate,
                throttling_burst_limit=config.throttle_burst,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # bodies carry plaintext codes: never log them
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(ACCESS_LOG_FORMAT),
            ),
            default_cors_preflight_options=apigw.CorsOptions(
                allow_origins=list(config.web_origins),
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Api-Key", "Idempotency-Key"],
                max_age=Duration.minutes(10),
            ),
        )
        self.stage = self.api.deployment_stage
        self.validator = self.api.add_request_validator(
            "Validator", request_validator_name="body-and-parameters",
            validate_request_body=True, validate_request_parameters=True)

        # API Gateway writes access and execution logs through one role per account and region.
        partition, region, account = Aws.PARTITION, Aws.REGION, Aws.ACCOUNT_ID
        execution_logs = f"arn:{partition}:logs:{region}:{account}:log-group:API-Gateway-Execution-Logs_*"
        self.cloudwatch_role = iam.Role(
            self, "CloudWatchRole",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="API Gateway: write execution and access logs to CloudWatch Logs",
        )
        self.cloudwatch_role.add_to_policy(iam.PolicyStatement(
            sid="WriteApiLogs",
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                     "logs:DescribeLogStreams", "logs:GetLogEvents", "logs:FilterLogEvents"],
            resources=[execution_logs, f"{execution_logs}:log-stream:*", self.access_logs.log_group_arn],
        ))
        self.cloudwatch_role.add_to_policy(iam.PolicyStatement(
            sid="FindLogGroups", actions=["logs:DescribeLogGroups"],
            resources=[f"arn:{partition}:logs:{region}:{account}:log-group:*"],
        ))
        for resource in (execution_logs, f"{execution_logs}:log-stream:*",
                         f"arn:{partition}:logs:{region}:{account}:log-group:*"):
            Validations.of(self.cloudwatch_role).acknowledge(cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{_nag_text(resource)}]",
                reason="API Gateway names its execution log groups API-Gateway-Execution-Logs_<api id>/<stage> "
                       "itself; the role is limited to those groups (and to listing groups) in this "
                       "account and region."))
        account_setting = apigw.CfnAccount(self, "AccountSettings",
                                           cloud_watch_role_arn=self.cloudwatch_role.role_arn)
        self.stage.node.add_dependency(account_setting)

    def _route(self, spec: r.Function, route: r.Route, function: lambda_.Function) -> None:
        resource = self.api.root.resource_for_path(route.path)
        path_params = [segment[1:-1] for segment in route.path.split("/")
                       if segment.startswith("{") and segment.endswith("}")]
        method = resource.add_method(
            route.method,
            apigw.LambdaIntegration(function, proxy=True, allow_test_invoke=False),
            authorization_type=apigw.AuthorizationType.NONE if route.public else apigw.AuthorizationType.CUSTOM,
            authorizer=None if route.public else self.authorizer,
            api_key_required=self.config.require_api_keys and not route.public,
            request_validator=self.validator,
            request_parameters={f"method.request.path.{name}": True for name in path_params} or None,
        )
        self.methods[f"{route.method} {route.path}"] = method
        if not route.public:
            Validations.of(method).acknowledge(cdk.Acknowledgment(
                id="AwsSolutions-COG4",
                reason="Authorized by the token authorizer, which verifies Cognito tokens of the user pools "
                       "(RS256 against their JWKS): the Cognito authorizer cannot take shoppers' ID tokens and "
                       "servers' client-credentials access tokens on one method (README: Integrating)."))
        if route.public:
            for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                Validations.of(method).acknowledge(cdk.Acknowledgment(
                    id=rule,
                    reason=f"{route.method} {route.path} is public by contract (resources.Route.public): "
                           "it serves no customer or coupon data."))

    # -- gateway responses in the contract's envelope ---------------------------------------
    def _gateway_responses(self, config: StackConfig) -> None:
        origin = config.web_origins[0] if len(config.web_origins) == 1 else "*"
        for response_type, status, code, message, headers in GATEWAY_RESPONSES:
            self.api.add_gateway_response(
                f"{_camel(response_type)}Response",
                type=apigw.ResponseType.of(response_type),
                status_code=status,
                response_headers={
                    "Access-Control-Allow-Origin": f"'{origin}'",
                    "Content-Type": "'application/json'",
                    **{name: f"'{value}'" for name, value in headers.items()},
                },
                templates={"application/json": envelope(code, message)},
            )
        # The preflight OPTIONS methods CDK adds for CORS are answered by API Gateway itself.
        for child in self.api.node.find_all():
            if isinstance(child, apigw.Method) and child.http_method == "OPTIONS":
                for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                    Validations.of(child).acknowledge(cdk.Acknowledgment(
                        id=rule,
                        reason="CORS preflight (OPTIONS) is answered by a mock integration with headers "
                               "only; browsers send it without credentials by design."))

    # -- usage plans per channel client -----------------------------------------------------
    def _usage_plans(self, config: StackConfig) -> None:
        if not config.require_api_keys:
            # Issue 17, 8d: API Gateway applies a usage plan only to requests carrying its API key.
            Annotations.of(self).add_warning_v2(
                "coupons:usage-plans-not-enforced",
                "The per-channel usage plans (throttle and daily quota) are NOT enforced: no method requires "
                "an API key (require_api_keys is false), and API Gateway applies a plan only to requests that "
                "carry its key. The stage throttle and the WAF per-IP rule still apply. Deploy with "
                "-c require_api_keys=true and give each channel client its key (X-Api-Key) to enforce them.")
        self.usage_plans: dict[str, apigw.UsagePlan] = {}
        self.api_keys: dict[str, apigw.IApiKey] = {}
        for channel in CHANNELS:
            rate, burst, per_day = config.channel_limits[channel]
            plan = self.api.add_usage_plan(
                f"{channel.title()}UsagePlan",
                name=f"{config.name_prefix}-{channel}",
                description=f"The {channel} channel client: throttle and daily quota",
                throttle=apigw.ThrottleSettings(rate_limit=rate, burst_limit=burst),
                quota=apigw.QuotaSettings(limit=per_day, period=apigw.Period.DAY),
            )
            plan.add_api_stage(stage=self.stage, api=self.api)
            key = self.api.add_api_key(
                f"{channel.title()}ApiKey", api_key_name=f"{config.name_prefix}-{channel}",
                description=f"API key of the {channel} channel client")
            plan.add_api_key(key)
            self.usage_plans[channel] = plan
            self.api_keys[channel] = key

    # -- WAF --------------------------------------------------------------------------------
    def _waf(self, config: StackConfig) -> None:
        def visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True)

        self.web_acl = wafv2.CfnWebACL(
            self, "WebAcl",
            name=f"{config.name_prefix}-api",
            description="Coupon API: per-IP rate limit and the AWS common rule set",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility(f"{config.name_prefix}-api"),
            custom_response_bodies={
                "rate_limited": wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=envelope("RATE_LIMITED", "Too many requests from this address; try again later.")),
            },
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name="RateLimitPerIp",
                    priority=0,
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            limit=config.waf_rate_limit, aggregate_key_type="IP", evaluation_window_sec=300)),
                    action=wafv2.CfnWebACL.RuleActionProperty(block=wafv2.CfnWebACL.BlockActionProperty(
                        custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                            response_code=429,
                            custom_response_body_key="rate_limited",
                            response_headers=[wafv2.CfnWebACL.CustomHTTPHeaderProperty(
                                name="Retry-After", value="300")]))),
                    visibility_config=visibility("RateLimitPerIp"),
                ),
                wafv2.CfnWebACL.RuleProperty(
                    name="AWSManagedRulesCommonRuleSet",
                    priority=1,
                    statement=wafv2.CfnWebACL.StatementProperty(
                        managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                            vendor_name="AWS", name="AWSManagedRulesCommonRuleSet",
                            # Bodies over 8 KB are legitimate (orders with many items, long product
                            # lists); the service bounds body size itself.
                            rule_action_overrides=[wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name="SizeRestrictions_BODY",
                                action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}))])),
                    override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                    visibility_config=visibility("AWSManagedRulesCommonRuleSet"),
                ),
            ],
        )
        stage_arn = (f"arn:{Aws.PARTITION}:apigateway:{Aws.REGION}::/restapis/"
                     f"{self.api.rest_api_id}/stages/{self.stage.stage_name}")
        self.web_acl_association = wafv2.CfnWebACLAssociation(
            self, "WebAclAssociation", resource_arn=stage_arn, web_acl_arn=self.web_acl.attr_arn)


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.lower().split("_"))


def _nag_text(arn: str) -> str:
    """How cdk-nag prints an ARN built from pseudo parameters (its finding ids name them so)."""
    return (arn.replace(Aws.PARTITION, "<AWS::Partition>").replace(Aws.REGION, "<AWS::Region>")
            .replace(Aws.ACCOUNT_ID, "<AWS::AccountId>"))
