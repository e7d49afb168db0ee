"""IAM as AWS would evaluate it, for the calls the local stack logged and the roles the CDK app writes.

Three parts, all plain data, no AWS:

- `needs(entry)`: the IAM authorisations one logged AWS call requires (action, resource, request
  context), with the local stack's resource names mapped to resources.py definitions
  ("arn:table/coupons", "arn:bucket/imports/incoming/a.csv", "arn:queue/imports", "arn:key/data",
  "arn:bus/events"). Operations that IAM authorises per item (TransactWriteItems, DeleteObjects,
  the SQS batch calls, multipart uploads) become the actions IAM checks; writes to and reads from
  the SSE-KMS buckets also need the KMS key through S3 (kms:ViaService).
- `role_statements(stack, function)`: the Allow statements of a function's role as the template
  holds them (`Stack.resolve` of each policy document: what synthesis writes; tests/infra/
  test_stack.py checks the two agree), their resources in the same symbolic form: CloudFormation
  references to the stack's tables, buckets, queues, key and bus become those names.
- `allowed(statements, need)`: some Allow and no Deny matches, by Action, Resource and Condition
  (StringEquals, StringLike) with IAM's wildcards; any other condition operator is refused, so the
  check cannot silently pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from coupons_infra import resources as r
from coupons_infra.constructs.functions import TABLE_READ, TABLE_WRITE

REGION, ACCOUNT = "REGION", "ACCOUNT"
TABLES = {t.name: t.key for t in r.TABLES}
BUCKETS = {b.name: b.key for b in r.BUCKETS}
QUEUES = {q.name: f"queue/{q.key}" for q in r.QUEUES} | {f"{q.name}-dlq": f"dlq/{q.key}-queue" for q in r.QUEUES}
# The local stack's own names for what CDK makes per function (coupons_local.workers_events).
QUEUES["coupons-publisher-dlq"] = "dlq/publisher-stream"
KMS_KEYS = {r.KMS_KEY_ALIAS}
KMS_BUCKETS = {b.key for b in r.BUCKETS}  # every bucket is SSE-KMS with the data key (constructs/storage.py)


@dataclass(frozen=True)
class Need:
    """One authorisation a call needs: IAM's action, the resource, and the request's condition keys."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    call: str = field(default="", compare=False)

    def ctx(self) -> dict[str, str]:
        return dict(self.context)

    def __str__(self) -> str:
        extra = "".join(f" [{k}={v}]" for k, v in self.context)
        return f"{self.action} on {self.resource}{extra} (from {self.call})"


# --- calls -> needs ---------------------------------------------------------------------------------


def _table(name: str) -> str:
    if name not in TABLES:
        raise ValueError(f"a call names table {name!r}, which resources.TABLES does not define")
    return f"arn:table/{TABLES[name]}"


def _bucket(name: str) -> str:
    if name not in BUCKETS:
        raise ValueError(f"a call names bucket {name!r}, which resources.BUCKETS does not define")
    return BUCKETS[name]


def _queue(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if name not in QUEUES:
        raise ValueError(f"a call names queue {name!r}, which resources.QUEUES does not define")
    return f"arn:{QUEUES[name]}"


def _via(service: str) -> tuple[str, str]:
    return ("kms:ViaService", f"{service}.{REGION}.amazonaws.com")


TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                    "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
S3_READS = {"GetObject": "s3:GetObject", "HeadObject": "s3:GetObject"}
S3_WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
SQS_ACTIONS = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
               "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}


def needs(entry: dict[str, Any]) -> list[Need]:
    service, op, params = entry["service"], entry["operation"], entry["params"]
    call = f"{service}.{op}{' (presigned)' if entry.get('presign') else ''}"
    found: list[Need] = []

    def need(action: str, resource: str, *context: tuple[str, str]) -> None:
        found.append(Need(action, resource, tuple(sorted(context)), call))

    if service == "dynamodb":
        if op in ("BatchGetItem", "BatchWriteItem"):
            for table in params["RequestItems"]:
                need(f"dynamodb:{op}", _table(table))
        elif op in ("TransactWriteItems", "TransactGetItems"):
            for kind, table in params["TransactItems"]:
                need(f"dynamodb:{TRANSACT_ACTIONS[kind]}", _table(table))
        else:
            resource = _table(params["TableName"])
            if params.get("IndexName"):
                resource += f"/index/{params['IndexName']}"
            need(f"dynamodb:{op}", resource)
    elif service == "dynamodbstreams":
        if op == "ListStreams":
            need("dynamodb:ListStreams", "*")
        else:  # DescribeStream, GetShardIterator, GetRecords on a table's stream
            table = params["StreamArn"].split(":table/", 1)[1].split("/stream/", 1)[0]
            need(f"dynamodb:{op}", f"{_table(table)}/stream/STREAM")
    elif service == "s3":
        bucket = _bucket(params["Bucket"])
        obj = f"arn:bucket/{bucket}/{params.get('Key', '')}"
        if op in S3_READS:
            need("s3:GetObjectVersion" if params.get("VersionId") else S3_READS[op], obj)
            if op == "GetObject" and bucket in KMS_BUCKETS:
                need("kms:Decrypt", "arn:key/data", _via("s3"))
        elif op in S3_WRITES:
            need("s3:PutObject", obj)
            if bucket in KMS_BUCKETS:  # multipart parts are decrypted to complete the upload
                need("kms:GenerateDataKey", "arn:key/data", _via("s3"))
                if op != "PutObject":
                    need("kms:Decrypt", "arn:key/data", _via("s3"))
        elif op == "AbortMultipartUpload":
            need("s3:AbortMultipartUpload", obj)
        elif op == "DeleteObject":
            need("s3:DeleteObject", obj)
        elif op == "DeleteObjects":
            for key in params["Keys"]:
                need("s3:DeleteObject", f"arn:bucket/{bucket}/{key}")
        elif op in ("ListObjectsV2", "ListObjects"):
            need("s3:ListBucket", f"arn:bucket/{bucket}", ("s3:prefix", params.get("Prefix", "")))
        else:
            raise ValueError(f"no IAM mapping for {call}: add one")
    elif service == "sqs":
        need(f"sqs:{SQS_ACTIONS.get(op, op)}", _queue(params["QueueUrl"]))
    elif service == "kms":
        if params.get("KeyId") not in KMS_KEYS:
            raise ValueError(f"{call} names KMS key {params.get('KeyId')!r}, not {sorted(KMS_KEYS)}")
        context = [(f"kms:EncryptionContext:{k}", str(v)) for k, v in (params.get("EncryptionContext") or {}).items()]
        need(f"kms:{op}", "arn:key/data", *context)
    elif service == "events":
        for bus in params.get("EventBusNames", ["default"]):
            if bus != r.EVENT_BUS_NAME:
                raise ValueError(f"{call} names bus {bus!r}, not {r.EVENT_BUS_NAME!r}")
            need("events:PutEvents", "arn:bus/events")
    else:
        raise ValueError(f"no IAM mapping for {call}: add one")
    return found


# --- the template -> statements ---------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: str  # JSON, with references resolved to symbols
    sid: str = ""
    effect: str = "Allow"

    @property
    def conditions(self) -> dict[str, dict[str, Any]]:
        return dict(json.loads(self.condition))


def resource_symbols(stack: Any) -> dict[str, str]:
    """Logical id -> symbol, for every resource a policy may name: from the stack's constructs,
    which are built from resources.py."""
    from aws_cdk import Stack

    def lid(construct: Any) -> str:
        cfn = construct if hasattr(construct, "logical_id") else construct.node.default_child
        return str(Stack.of(stack).resolve(cfn.logical_id))

    symbols = {lid(table): f"table/{key}" for key, table in stack.data.tables.items()}
    symbols |= {lid(bucket): f"bucket/{key}" for key, bucket in stack.storage.buckets.items()}
    symbols |= {lid(queue): f"queue/{key}" for key, queue in stack.messaging.queues.items()}
    symbols |= {lid(queue): f"dlq/{name}" for name, queue in stack.messaging.dead_letter_queues.items()}
    symbols |= {lid(group): f"logs/{name}" for name, group in stack.functions.log_groups.items()}
    symbols[lid(stack.data.key)] = "key/data"
    symbols[lid(stack.messaging.bus)] = "bus/events"
    return symbols


PSEUDO = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
          "AWS::URLSuffix": "amazonaws.com"}


def symbolic(value: Any, symbols: dict[str, str]) -> str:
    """A resolved CloudFormation value as a string, references replaced by symbols."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Fn::GetAtt":
            name, attribute = arg
            symbol = symbols.get(name, f"unknown/{name}")
            return {"Arn": f"arn:{symbol}", "StreamArn": f"arn:{symbol}/stream/STREAM"}.get(
                attribute, f"{symbol}.{attribute}")
        if fn == "Ref":
            return PSEUDO.get(arg, f"ref:{symbols.get(arg, arg)}")
        if fn == "Fn::Join":
            separator, parts = arg
            return str(separator).join(symbolic(part, symbols) for part in parts)
    raise ValueError(f"cannot read {value!r} in a policy")


def _symbolic_tree(value: Any, symbols: dict[str, str]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in ("Ref", "Fn::GetAtt", "Fn::Join"):
            return symbolic(value, symbols)
        return {k: _symbolic_tree(v, symbols) for k, v in value.items()}
    if isinstance(value, list):
        return [_symbolic_tree(v, symbols) for v in value]
    return value


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(stack: Any, function: str) -> list[Statement]:
    """The statements of a function's role, as synthesis writes them into the template."""
    documents = role_policy_documents(stack)[function]
    symbols = resource_symbols(stack)
    found = []
    for document in documents:
        for raw in _as_list(document.get("Statement", [])):
            if raw.get("Effect") not in ("Allow", "Deny") or {"NotAction", "NotResource", "Principal"} & set(raw):
                raise ValueError(f"{function}: a statement this check cannot read: {raw}")
            condition = _symbolic_tree(raw.get("Condition", {}), symbols)
            found.append(Statement(
                actions=tuple(_as_list(raw["Action"])),
                resources=tuple(symbolic(v, symbols) for v in _as_list(raw["Resource"])),
                condition=json.dumps(condition, sort_keys=True), sid=raw.get("Sid", ""), effect=raw["Effect"]))
    return found


def role_policy_documents(stack: Any) -> dict[str, list[dict[str, Any]]]:
    """Function name -> the resolved documents of every policy attached to its role."""
    from aws_cdk import aws_iam as iam

    documents: dict[str, list[dict[str, Any]]] = {}
    for name, role in stack.functions.roles.items():
        documents[name] = [stack.resolve(child.document) for child in role.node.find_all()
                           if isinstance(child, iam.Policy)]
    return documents


# --- evaluation -------------------------------------------------------------------------------------


def glob(pattern: str, value: str) -> bool:
    """IAM's wildcards: `*` any run of characters (slashes included), `?` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def conditions_hold(conditions: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            actual = context.get(key)
            values = [str(v) for v in _as_list(expected)]
            if operator == "StringEquals":
                ok = actual is not None and actual in values
            elif operator == "StringLike":
                ok = actual is not None and any(glob(v, actual) for v in values)
            else:
                raise ValueError(f"condition operator {operator} is not modelled here: add it")
            if not ok:
                return False
    return True


def matches(statement: Statement, need: Need) -> bool:
    return (any(glob(a, need.action) for a in statement.actions)
            and any(glob(res, need.resource) for res in statement.resources)
            and conditions_hold(statement.conditions, need.ctx()))


def allowed(statements: Iterable[Statement], need: Need) -> bool:
    """IAM's rule: some Allow matches and no Deny does."""
    listed = list(statements)
    return (any(s.effect == "Allow" and matches(s, need) for s in listed)
            and not any(s.effect == "Deny" and matches(s, need) for s in listed))


# A table grant is read or write as a whole (constructs/functions.py): the actions of one differ in
# the shape of the request, not in what they reach. So the unit checked for use is "read of table X"
# and "write to table X", not each action (a function granted a write must write, by any of them).
TABLE_FAMILIES = {"read": set(TABLE_READ), "write": set(TABLE_WRITE)}
_TABLE_ARN = re.compile(r"^arn:table/[^/]+$")


@dataclass(frozen=True)
class Grant:
    """One action (or one table grant's family of actions) on one resource pattern of one statement."""

    action: str
    resource: str
    statement: Statement

    @property
    def family(self) -> set[str]:
        if _TABLE_ARN.match(self.resource):
            for actions in TABLE_FAMILIES.values():
                if self.action in actions:
                    return actions
        return {self.action}

    @property
    def label(self) -> str:
        via = self.statement.conditions.get("StringEquals", {}).get("kms:ViaService")
        action = self.action
        if _TABLE_ARN.match(self.resource):
            action = next((f"dynamodb:{name}" for name, actions in TABLE_FAMILIES.items()
                           if self.action in actions), action)
        return f"{action} {self.resource}" + (f" via {str(via).split('.')[0]}" if via else "")

    def used_by(self, need: Need) -> bool:
        return (any(glob(action, need.action) for action in self.family) and glob(self.resource, need.resource)
                and conditions_hold(self.statement.conditions, need.ctx()))


def grants(statements: Iterable[Statement]) -> Iterator[Grant]:
    for statement in (s for s in statements if s.effect == "Allow"):
        for action in statement.actions:
            for resource in statement.resources:
                yield Grant(action, resource, statement)
