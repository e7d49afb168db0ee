"""Key rotation (issue 11, hole 5) through the real services and adapters against moto.

A rotation is a new deployment with `CODE_KEY_VERSION` one higher (CDK context `code_key_version`).
Each test creates coupons under version 1, then switches the settings to version 2 the way a new
container sees them (a new environment, `wiring.reset()`), and checks that:

- codes of the old version still validate and redeem;
- no create path (POST /coupons, a re-code through PUT, the CSV import, generation) can store a
  code that is live under any other version, in any spelling;
- a function without `kms:GenerateDataKey` (validate, redeem) still finds every old code, and
  finds a new-version code created after it started;
- a keyring that cannot be unwrapped (KMS denied or down) answers 503 TRY_AGAIN and never counts a
  failed guess.

The local stack keeps its state in memory only (a restart starts empty), so a restart with another
`CODE_KEY_VERSION` on the same data cannot be driven over HTTP: these tests drive the services the
functions run, with their real adapters (tests/e2e/test_key_rotation_e2e.py covers HTTP with a
version-2 stack and version-1 data written by this process). IAM cannot be emulated either: a KMS
client wrapper plays the validate/redeem role (no kms:GenerateDataKey) and a failing KMS.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import CallCounter  # type: ignore[import-not-found]
from coupons import bulk_wiring, wiring
from coupons.adapters import aws
from coupons.adapters.checkout_store import CheckoutStore
from coupons.adapters.coupon_store import CouponStore, DynamoKeyringStore
from coupons.admin import AdminService
from coupons.codegen import generate_code
from coupons.crypto import CodeCipher, Keyring, unwrap_keyring
from coupons.errors import CodeAlreadyExists, CouponNotFound, TryAgain
from coupons.generation import GenerationRequest, GenerationService
from coupons.http import Identity
from coupons.models import CouponCreate, CouponUpdate, RedeemRequest, ValidateRequest
from coupons.settings import get_settings

ORDER = {"currency": "USD", "items": [{"product_id": "p1", "category": "shoes", "unit_price": 5000, "quantity": 2}]}


def spellings(code: str) -> list[str]:
    """The same code as an admin may type it (the contract ignores case and dashes)."""
    plain = code.replace("-", "")
    return [code, code.lower(), plain, "-".join(plain.lower())]


def lookups(code: str) -> list[str]:
    """The same code as a customer may type it: also with spaces, or full-width from a phone keyboard."""
    plain = code.replace("-", "")
    return [*spellings(code), " ".join(plain[:4]) + plain[4:], "".join(chr(ord(c) + 0xFEE0) for c in plain)]


def rotate(monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    """A new deployment: every function's CODE_KEY_VERSION changes and containers start afresh."""
    monkeypatch.setenv("CODE_KEY_VERSION", str(version))
    bulk_wiring.reset()  # also wiring.reset(): settings, keyring and clients are read again


def create(**fields: Any) -> dict[str, Any]:
    fields.setdefault("discount_value", 10)
    return wiring.admin_service().create(CouponCreate.model_validate(fields), "admin-1")


def caller(user: str = "u1", ip: str = "10.0.0.1") -> Identity:
    return Identity(user_id=user, email=None, groups=frozenset(), ip=ip, user_agent="pytest/1.0")


def checkout(cipher: Callable[[], CodeCipher] | None = None) -> Any:
    from coupons.checkout import CheckoutService

    s = get_settings()
    store = CheckoutStore(aws.client("dynamodb"), s.coupons_table, s.guards_table)
    return CheckoutService(store, cipher or wiring.cipher, s, sleep=lambda _: None)


def validate(service: Any, code: str, who: Identity | None = None) -> dict[str, Any]:
    request = ValidateRequest.model_validate({"code": code, "channel": "web", "order": ORDER})
    return dict(service.validate(request, who or caller()))


def redeem(service: Any, code: str, order_id: str, who: Identity | None = None) -> Any:
    request = RedeemRequest.model_validate({"code": code, "channel": "web", "order": ORDER, "order_id": order_id})
    return service.redeem(request, who or caller())


def failures_counted() -> list[dict[str, Any]]:
    """Every failed-guess counter in the guards table (a test may scan)."""
    items = boto3.client("dynamodb").scan(TableName=get_settings().guards_table)["Items"]
    return [i for i in items if i["pk"]["S"].startswith("FAIL#")]


def stored_versions() -> list[int]:
    page = boto3.client("dynamodb").query(
        TableName=get_settings().coupons_table, KeyConditionExpression="pk = :k",
        ExpressionAttributeValues={":k": {"S": "KEYRING"}}, ConsistentRead=True)
    return sorted(int(i["version"]["N"]) for i in page["Items"])


def live_coupons_with(code: str) -> list[str]:
    """Ids of the live coupons whose (decrypted) code is this one, in any spelling. Scans: a test's proof."""
    from coupons.codes import normalise

    wanted = normalise(code)
    cipher = wiring.cipher()
    found = []
    for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=get_settings().coupons_table):
        for item in page["Items"]:
            if item["sk"]["S"] != "COUPON" or not item["pk"]["S"].startswith("CODE#"):
                continue
            plain = cipher.decrypt(item["code_ct"]["S"], item["coupon_id"]["S"], int(item["key_version"]["N"]))
            if normalise(plain) == wanted:
                found.append(item["coupon_id"]["S"])
    return found


# --- KMS as the functions' IAM roles see it -----------------------------------------------------


def _kms_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{operation}: {code} (injected)"}}, operation)


class ReadOnlyKms:
    """KMS as validate and redeem see it: kms:Decrypt only, so GenerateDataKey is denied."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: list[str] = []

    def generate_data_key(self, **kwargs: Any) -> Any:
        self.calls.append("GenerateDataKey")
        raise _kms_error("AccessDeniedException", "GenerateDataKey")

    def decrypt(self, **kwargs: Any) -> Any:
        self.calls.append("Decrypt")
        return self._real.decrypt(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class FailingKms(ReadOnlyKms):
    """KMS that cannot decrypt: the key's grant was revoked, or KMS is down."""

    def __init__(self, real: Any, code: str) -> None:
        super().__init__(real)
        self.code = code
        self.failing = True

    def decrypt(self, **kwargs: Any) -> Any:
        self.calls.append("Decrypt")
        if self.failing:
            raise _kms_error(self.code, "Decrypt")
        return self._real.decrypt(**kwargs)


def use_kms(monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Any], Any]) -> Any:
    """This process's functions get KMS through `wrap` (what their IAM role lets them do)."""
    real_client = aws.client
    wrapped: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service != "kms":
            return real_client(service)
        if "kms" not in wrapped:
            wrapped["kms"] = wrap(real_client("kms"))
        return wrapped["kms"]

    def cache_clear() -> None:  # wiring.reset(): a new container gets new clients, with the same rights
        wrapped.clear()
        real_client.cache_clear()

    client.cache_clear = cache_clear  # type: ignore[attr-defined]
    monkeypatch.setattr(aws, "client", client)
    return client("kms")


def other_admin_container() -> AdminService:
    """An admin function in another container (with kms:GenerateDataKey), at the current settings."""
    settings = get_settings()
    db = boto3.client("dynamodb")
    kms = boto3.client("kms")
    keyring = DynamoKeyringStore(db, settings.coupons_table)
    cipher = Keyring(lambda known: unwrap_keyring(keyring, kms, settings.kms_key_id, settings.code_key_version,
                                                  known=known))
    return AdminService(CouponStore(db, settings.coupons_table), cipher, settings)


# --- old codes keep working ------------------------------------------------------------------------


def test_old_codes_validate_and_redeem_after_a_rotation(aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given coupons created under key version 1
    old = create(code="ROTATE-OLD-1", max_uses=5, uses_per_user=None)
    assert stored_versions() == [1]
    # When the deployment moves to version 2
    rotate(monkeypatch, 2)
    new = create(code="ROTATE-NEW-1")
    # Then new coupons use version 2, and the old code still validates and redeems, in any spelling
    assert stored_versions() == [1, 2]
    service = checkout()
    for spelling in lookups("ROTATE-OLD-1"):
        assert validate(service, spelling)["coupon_id"] == old["id"]
    assert redeem(service, "rotate-old-1", "o-1").view["coupon_id"] == old["id"]
    assert validate(service, "rotate-new-1")["coupon_id"] == new["id"]
    assert wiring.admin_service().get(old["id"])["redeemed_count"] == 1
    assert failures_counted() == []


# --- uniqueness across versions ------------------------------------------------------------------


def test_a_code_of_an_older_version_cannot_be_created_again(aws_env: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a code created under version 1
    original = create(code="SUMMER-25")
    # When the key rotates and an admin creates the same code, in any spelling
    rotate(monkeypatch, 2)
    for spelling in spellings("SUMMER-25"):
        with pytest.raises(CodeAlreadyExists):
            create(code=spelling)
    # Then it is refused every time, and exactly one live coupon holds the code
    assert live_coupons_with("SUMMER-25") == [original["id"]]
    found = wiring.admin_service().find_by_code("summer25")
    assert found is not None and found["id"] == original["id"]


def test_a_recode_to_a_code_of_an_older_version_is_refused(aws_env: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    original = create(code="TAKEN-V1")
    rotate(monkeypatch, 2)
    other = create(code="FREE-V2")
    admin = wiring.admin_service()
    for spelling in spellings("TAKEN-V1"):
        with pytest.raises(CodeAlreadyExists):
            admin.update(other["id"], CouponUpdate(code=spelling), "admin-1")
    assert admin.get(other["id"])["code"] == "FREE-V2"
    assert live_coupons_with("TAKEN-V1") == [original["id"]]
    # A coupon re-coded to its own code (under the new version) keeps working: it is not "taken" by itself
    moved = admin.update(original["id"], CouponUpdate(code="taken-v1"), "admin-1")
    assert moved["code"] == "TAKEN-V1" and live_coupons_with("TAKEN-V1") == [original["id"]]
    assert validate(checkout(), "TAKEN-V1")["coupon_id"] == original["id"]


def test_a_rotation_back_to_an_older_version_still_guards_the_newer_codes(
        aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rotate(monkeypatch, 2)
    newer = create(code="FROM-V2")
    rotate(monkeypatch, 1)  # an operator rolls the deployment back
    with pytest.raises(CodeAlreadyExists):
        create(code="from-v2")
    assert live_coupons_with("FROM-V2") == [newer["id"]]
    assert validate(checkout(), "from-v2")["coupon_id"] == newer["id"]


IMPORT_HEADER = "code,discount_type,discount_value,currency,campaign_id,channels"


def import_csv(provisioned: Any, key: str, rows: list[str]) -> list[list[str]]:
    """Upload a CSV under incoming/ and run the import the way the S3 notification and queue do."""
    bucket = provisioned.buckets["imports"]
    body = (IMPORT_HEADER + "\r\n" + "\r\n".join(rows) + "\r\n").encode()
    etag = aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag}}}]}
    service = bulk_wiring.import_service()
    service.handle(event)
    for message in drain(provisioned, "imports"):
        service.handle(message)
    result = aws.client("s3").get_object(Bucket=bucket, Key=key.replace("incoming/", "results/", 1))
    return list(csv.reader(io.StringIO(result["Body"].read().decode())))[1:]


def drain(provisioned: Any, queue: str) -> list[dict[str, Any]]:
    sqs = aws.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=provisioned.queues[queue], MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=provisioned.queues[queue], ReceiptHandle=message["ReceiptHandle"])


def test_the_csv_import_refuses_codes_of_an_older_version(aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    original = create(code="CSV-OLD-1")
    rotate(monkeypatch, 2)
    rows = import_csv(aws_env, "incoming/rotated.csv", [
        "csv-old-1,PERCENT,10,,rot,web",  # the v1 code, in lower case
        "CSV-NEW-1,PERCENT,10,,rot,web",
        "C-S-V-O-L-D-1,PERCENT,10,,rot,web",  # the v1 code again, with dashes
    ])
    assert [r[1] for r in rows] == ["duplicate", "created", "duplicate"]
    assert rows[0][3] == "code: a coupon with this code exists already"
    assert live_coupons_with("CSV-OLD-1") == [original["id"]]
    assert validate(checkout(), "csv-new-1")["coupon_id"] == rows[1][2]


def test_an_import_whose_ranges_straddle_the_rotation_names_the_row_holding_the_code(
        aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a file cut into two ranges, the first imported by a container still on version 1
    monkeypatch.setenv("IMPORT_RANGE_BYTES", "1024")
    bulk_wiring.reset()
    filler = [f"STRADDLE-{i:03d},PERCENT,10,,str,web" for i in range(2, 40)]
    rows_in = ["STRADDLE-HOLDER,PERCENT,10,,str,web", *filler, "straddle-holder,PERCENT,5,,str,web"]
    bucket = aws_env.buckets["imports"]
    body = (IMPORT_HEADER + "\r\n" + "\r\n".join(rows_in) + "\r\n").encode()
    assert len(body) > 1024
    etag = aws.client("s3").put_object(Bucket=bucket, Key="incoming/straddle.csv", Body=body)["ETag"].strip('"')
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": bucket}, "object": {"key": "incoming/straddle.csv",
                                                                        "eTag": etag}}}]}
    bulk_wiring.import_service().handle(event)
    ranges = drain(aws_env, "imports")
    assert len(ranges) >= 2
    first, *rest = sorted(ranges, key=lambda m: int(m["range"]))
    bulk_wiring.import_service().handle(first)
    # When the rest is imported after the rotation (the last row repeats row 1's code)
    rotate(monkeypatch, 2)
    monkeypatch.setenv("IMPORT_RANGE_BYTES", "1024")
    bulk_wiring.reset()
    for message in rest:
        bulk_wiring.import_service().handle(message)
    result = aws.client("s3").get_object(Bucket=bucket, Key="results/straddle.csv")
    rows = list(csv.reader(io.StringIO(result["Body"].read().decode())))[1:]
    # Then the repeat is a duplicate naming row 1, and one coupon holds the code
    assert rows[-1][1:] == ["duplicate", "", "code: the same code is on row 1 of this file"]
    assert [r[1] for r in rows[:-1]] == ["created"] * (len(rows) - 1)
    assert live_coupons_with("STRADDLE-HOLDER") == [rows[0][2]]


def test_generation_draws_again_when_a_code_is_taken_under_an_older_version(
        aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    original = create(code="GENV-AAAA-BBBB-CCCC")
    rotate(monkeypatch, 2)
    draws = iter(["genv-aaaa-bbbb-cccc"])
    base = bulk_wiring.generation_service()
    service = GenerationService(admin=wiring.admin_service(), cipher=wiring.cipher, writer=base._writer,
                                jobs=base._jobs, objects=base._objects, queue=base._queue, settings=get_settings(),
                                code_source=lambda pattern: next(draws, None) or generate_code(pattern))
    job_id = service.start("genrot", GenerationRequest.model_validate(
        {"count": 3, "template": {"discount_value": 5}}), "alice")
    for _ in range(3):
        for message in drain(aws_env, "generation"):
            service.handle(message)
    job = bulk_wiring.job_service().get(job_id)
    assert (job["status"], job["result"]["created"]) == ("succeeded", 3)
    export = aws.client("s3").get_object(Bucket=job["result"]["export_bucket"], Key=job["result"]["export_key"])
    codes = [row[0] for row in list(csv.reader(io.StringIO(export["Body"].read().decode())))[1:]]
    assert len(set(codes)) == 3 and "GENV-AAAA-BBBB-CCCC" not in [c.upper() for c in codes]
    assert live_coupons_with("GENV-AAAA-BBBB-CCCC") == [original["id"]]


# --- functions without kms:GenerateDataKey ----------------------------------------------------------


def test_a_read_only_function_finds_old_codes_before_the_new_version_exists(
        aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given coupons under version 1, and a rotation that no admin function has acted on yet
    old = create(code="READONLY-1", max_uses=5, uses_per_user=None)
    rotate(monkeypatch, 2)
    kms = use_kms(monkeypatch, ReadOnlyKms)  # validate and redeem: kms:Decrypt only
    service = checkout()
    # When a customer validates and redeems the old code
    assert validate(service, "readonly-1")["coupon_id"] == old["id"]
    assert redeem(service, "READONLY1", "o-ro").view["coupon_id"] == old["id"]
    # Then the old version was unwrapped (no throwaway key), nothing failed, no key was created
    assert "Decrypt" in kms.calls
    assert failures_counted() == []
    assert stored_versions() == [1]
    # And an unknown code is still a counted failed guess (every stored version was searched, and the
    # keyring re-read once in case the new version appeared), costing what a malformed code costs
    costs = []
    for guess in ("NO-SUCH-CODE-1", "not a code!"):
        counter = CallCounter().attach("dynamodb", "kms")
        with pytest.raises(CouponNotFound):
            validate(service, guess, caller("guesser"))
        costs.append(dict(counter.calls))
        for name in ("dynamodb", "kms"):
            aws.client(name).meta.events.unregister("before-call.*.*", counter)
    # (a failed guess is counted before it is answered: one conditional UpdateItem per subject
    # (user, IP) and one for the day's total; see coupons/lockouts.py)
    assert costs[0] == costs[1] == {"dynamodb:BatchGetItem": 1, "dynamodb:Query": 1,
                                    "dynamodb:UpdateItem": 3}
    assert len(failures_counted()) == 2  # the user's and the IP's counters


def test_a_read_only_function_finds_a_code_created_under_the_new_version_after_it_started(
        aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    old = create(code="LATER-OLD")
    rotate(monkeypatch, 2)
    use_kms(monkeypatch, ReadOnlyKms)
    service = checkout()
    assert validate(service, "later-old")["coupon_id"] == old["id"]  # warm, on version 1 only
    # When an admin function (another container) creates the first version-2 coupon
    admin = other_admin_container()
    new = admin.create(CouponCreate.model_validate({"code": "LATER-NEW", "discount_value": 5}), "admin-2")
    assert stored_versions() == [1, 2]
    # Then the warm read-only function finds it at once, and counts no failed guess for it
    assert validate(service, "later-new")["coupon_id"] == new["id"]
    assert failures_counted() == []
    # And from then on it is warm again: one DynamoDB call, no KMS call
    counter = CallCounter().attach("dynamodb", "kms")
    assert validate(service, "later-new")["coupon_id"] == new["id"]
    assert validate(service, "later-old")["coupon_id"] == old["id"]
    assert dict(counter.calls) == {"dynamodb:BatchGetItem": 2}


def test_warm_validate_after_a_rotation_is_one_dynamodb_call_and_no_kms_call(
        aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    old = create(code="WARM-ROT-1")
    rotate(monkeypatch, 2)
    use_kms(monkeypatch, ReadOnlyKms)
    service = checkout()
    validate(service, "warm-rot-1")  # cold: unwraps the keyring once
    counter = CallCounter().attach("dynamodb", "kms")
    assert validate(service, "warm-rot-1")["coupon_id"] == old["id"]
    assert dict(counter.calls) == {"dynamodb:BatchGetItem": 1}


# --- a keyring that cannot be built ----------------------------------------------------------------


@pytest.mark.parametrize("code", ["AccessDeniedException", "KMSInternalException", "DisabledException",
                                  "ThrottlingException"])
def test_kms_failing_to_decrypt_answers_503_and_counts_no_failed_guess(
        aws_env: Any, monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    # Given a coupon, then a cold container whose KMS cannot decrypt the keyring
    coupon = create(code="KMS-DOWN-1")
    wiring.reset()
    kms = use_kms(monkeypatch, lambda real: FailingKms(real, code))
    service = checkout()
    # When a customer validates or redeems a real code (or a wrong one)
    for attempt in ("kms-down-1", "NOT-A-CODE-9"):
        with pytest.raises(TryAgain) as raised:
            validate(service, attempt)
        # Then: 503 TRY_AGAIN with Retry-After, and nothing counted against the user or the IP
        assert raised.value.status == 503 and raised.value.code == "TRY_AGAIN"
        assert raised.value.retry_after and raised.value.retry_after >= 1
    with pytest.raises(TryAgain):
        redeem(service, "kms-down-1", "o-down")
    assert failures_counted() == []
    # And the failure was not cached: once KMS answers again, the same container works and stays warm
    kms.failing = False
    assert validate(service, "kms-down-1")["coupon_id"] == coupon["id"]
    kms.calls.clear()
    assert validate(service, "kms-down-1")["coupon_id"] == coupon["id"]
    assert kms.calls == []


def test_kms_unavailable_when_creating_the_new_version_answers_503(
        aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    create(code="GEN-DOWN-1")
    rotate(monkeypatch, 2)

    class Unavailable(ReadOnlyKms):
        def generate_data_key(self, **kwargs: Any) -> Any:
            raise _kms_error("KMSInternalException", "GenerateDataKey")

    use_kms(monkeypatch, Unavailable)
    with pytest.raises(TryAgain):
        create(code="GEN-DOWN-2")
    with pytest.raises(TryAgain):
        validate(checkout(), "gen-down-1")
    assert failures_counted() == [] and stored_versions() == [1]
