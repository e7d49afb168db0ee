"""The admins' own Cognito user pool (issue 17, finding 7).

Admins create discounts and download plaintext exports, so they do not share the shoppers' pool
(self sign-up, optional MFA, a password-only flow for operators): no self sign-up (an operator
creates each admin), TOTP MFA required, threat protection enforced (the Plus plan: billed per
monthly active user, and admins are few), and one public app client for the console that signs in
only through the pool's managed login with the authorization code grant and PKCE (no password
flow of any kind is enabled on it).

The API's one Cognito authorizer accepts both pools' ID tokens; the functions tell admins apart by
the token's issuer (ADMIN_ISSUER, this pool's URL) and then the `coupon-admins` group.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Aws, Duration
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from .. import resources as r
from .config import StackConfig

ADMIN_GROUP = r.base_environment({}).get("ADMIN_GROUP", "coupon-admins")
SCOPES = [cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE]


class AdminIdentity(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, console_url: str) -> None:
        super().__init__(scope, construct_id)
        self.console_url = console_url
        self.user_pool = cognito.UserPool(
            self, "Pool",
            user_pool_name=f"{config.name_prefix}-admins",
            self_sign_up_enabled=False,  # an operator creates each admin (README: the first admin)
            sign_in_aliases=cognito.SignInAliases(email=True),
            sign_in_case_sensitive=False,
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=True, mutable=False)),
            password_policy=cognito.PasswordPolicy(
                min_length=14, require_lowercase=True, require_uppercase=True, require_digits=True,
                require_symbols=True, temp_password_validity=Duration.days(1)),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),  # TOTP: no SIM swapping
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            user_invitation=cognito.UserInvitationConfig(
                email_subject="Coupon service: your admin account",
                email_body="Your coupon admin account is {username}, temporary password {####}. "
                           "Sign in through the admin console within a day; you will set a new password "
                           "and an authenticator app (TOTP)."),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.group = cognito.CfnUserPoolGroup(
            self, "AdminsGroup",
            user_pool_id=self.user_pool.user_pool_id,
            group_name=ADMIN_GROUP,
            description="May use the admin routes (coupon CRUD, bulk, exports, jobs, reports)",
            precedence=0,
        )
        # Managed login (the Cognito domain): sign-in, new password, TOTP set-up and challenge.
        self.domain = self.user_pool.add_domain("Domain", cognito_domain=cognito.CognitoDomainOptions(
            domain_prefix=config.admin_domain_prefix or f"{config.name_prefix}-admin-{Aws.ACCOUNT_ID}"))
        urls = [console_url, *config.admin_callback_urls]
        self.client = self.user_pool.add_client(
            "ConsoleClient",
            user_pool_client_name="admin-console",
            generate_secret=False,  # a browser page cannot keep a secret: PKCE instead
            # SRP only (the pool's own API); the console uses the OAuth code grant. No
            # ADMIN_USER_PASSWORD_AUTH, no USER_PASSWORD_AUTH: a password alone never yields a token.
            auth_flows=cognito.AuthFlow(user_srp=True),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=SCOPES, callback_urls=urls, logout_urls=urls),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.hours(12),
            auth_session_validity=Duration.minutes(5),
        )
        # The `iss` of this pool's tokens: https://cognito-idp.<region>.amazonaws.com/<pool id>.
        self.issuer = f"https://{self.user_pool.user_pool_provider_url}"
        self.signin_url = self.domain.base_url()

    def console_environment(self) -> dict[str, str]:
        """What the console page needs to start a sign-in (GET /console/signin serves it)."""
        return {"ADMIN_SIGNIN_URL": self.signin_url, "ADMIN_CLIENT_ID": self.client.user_pool_client_id}
