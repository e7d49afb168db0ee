"""Data: the customer-managed KMS key and one DynamoDB table per resources.TABLES entry."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from .. import resources as r
from .config import StackConfig

# Key administration (never use): the actions CDK's own key-admin grant lists, spelled out.
KEY_ADMIN_ACTIONS = [
    "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
    "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
    "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:RotateKeyOnDemand",
]
# Use of the key, delegated to IAM policies in this account (each function's role names what it may do).
KEY_USE_ACTIONS = [
    "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey",
]


# What the code keyring's context may be used for (coupons/crypto.py: {"purpose": "coupon-codes", ...}).
CODE_CONTEXT_ACTIONS = [
    "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
]
CODE_CONTEXT = {"kms:EncryptionContext:purpose": "coupon-codes"}


def least_privilege_key_policy(description: str) -> iam.PolicyDocument:
    """A key policy with no `kms:*`: the account administers the key, and IAM decides who uses it."""
    account = iam.AccountRootPrincipal()
    return iam.PolicyDocument(statements=[
        iam.PolicyStatement(
            sid="KeyAdministrationByAccountAdmins",
            principals=[account],
            actions=KEY_ADMIN_ACTIONS,
            resources=["*"],  # in a key policy, "*" means this key
        ),
        iam.PolicyStatement(
            sid=f"UseThroughIamPoliciesOfThisAccount{description}",
            principals=[account],
            actions=KEY_USE_ACTIONS,
            resources=["*"],
            conditions={"StringEquals": {"kms:CallerAccount": Aws.ACCOUNT_ID}},
        ),
    ])


class Data(Construct):
    """The KMS key (codes, tables, buckets) and the tables."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self, "Key",
            description="Coupon service data: code envelope keys, DynamoDB tables, S3 buckets",
            enable_key_rotation=True,
            rotation_period=None,
            policy=least_privilege_key_policy("ForData"),
            removal_policy=RemovalPolicy.RETAIN,
            pending_window=None,
        )
        alias = r.KMS_KEY_ALIAS if config.name_prefix == "coupons" else f"alias/{config.name_prefix}"
        self.alias = self.key.add_alias(alias)

        self.tables: dict[str, dynamodb.Table] = {}
        for table in r.TABLES:
            self.tables[table.key] = self._table(table)

    def _table(self, spec: r.Table) -> dynamodb.Table:
        table = dynamodb.Table(
            self, f"{spec.key.title()}Table",
            partition_key=dynamodb.Attribute(name=spec.partition_key, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=spec.sort_key, type=dynamodb.AttributeType.STRING)
            if spec.sort_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
            stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES if spec.stream else None,
            time_to_live_attribute=spec.ttl_attribute,
        )
        for index in spec.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=dynamodb.Attribute(name=index.partition_key, type=dynamodb.AttributeType.STRING),
                sort_key=dynamodb.Attribute(name=index.sort_key, type=dynamodb.AttributeType.STRING),
                projection_type=dynamodb.ProjectionType.ALL,
            )
        return table

    def reserve_code_context(self, roles: Sequence[iam.IRole]) -> None:
        """Issue 17, finding 4: under the code keyring's encryption context the key works only for
        these roles (the functions that handle codes). A key-policy deny outranks any IAM allow: not
        an administrator's, not a stream consumer's, not a future function's grant."""
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="CodeContextOnlyForCodeFunctions",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=CODE_CONTEXT_ACTIONS,
            resources=["*"],  # this key
            conditions={"StringEquals": CODE_CONTEXT,
                        "ArnNotEquals": {"aws:PrincipalArn": [role.role_arn for role in roles]}},
        ))
