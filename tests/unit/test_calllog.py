"""The local stack's call log keeps what names a resource, never what a call carries (codes!)."""

from __future__ import annotations

from coupons_local.calllog import naming_params


def test_bodies_items_and_codes_are_never_kept() -> None:
    put = naming_params({"Bucket": "coupons-exports", "Key": "exports/c/job.csv", "Body": b"SPR-AAAA-BBBB,id-1",
                         "Metadata": {"job-id": "gen-1"}, "ServerSideEncryption": "aws:kms"})
    assert put == {"Bucket": "coupons-exports", "Key": "exports/c/job.csv"}
    transaction = naming_params({"TransactItems": [
        {"Put": {"TableName": "coupons", "Item": {"pk": {"S": "CODE#abc"}, "code_ct": {"S": "secret"}}}},
        {"Update": {"TableName": "coupons-guards", "Key": {"pk": {"S": "FAIL#u"}}, "UpdateExpression": "ADD n :1"}},
        {"Put": {"TableName": "coupons", "Item": {"pk": {"S": "COUPON#1"}}}},
    ]})
    assert transaction == {"TransactItems": [("Put", "coupons"), ("Update", "coupons-guards")]}
    batch = naming_params({"RequestItems": {"coupons": {"Keys": [{"pk": {"S": "CODE#abc"}}]}, "coupons-guards": {}}})
    assert batch == {"RequestItems": ["coupons", "coupons-guards"]}
    kms = naming_params({"KeyId": "alias/coupons", "CiphertextBlob": b"wrapped",
                         "EncryptionContext": {"purpose": "coupon-codes", "key_version": "1"}})
    assert kms == {"KeyId": "alias/coupons", "EncryptionContext": {"purpose": "coupon-codes", "key_version": "1"}}


def test_batches_name_their_buses_keys_and_streams() -> None:
    events = naming_params({"Entries": [{"Source": "coupons", "EventBusName": "coupons", "Detail": "{\"code\":1}"}]})
    assert events == {"EventBusNames": ["coupons"]}
    assert naming_params({"QueueUrl": "http://x/1/q", "Entries": [{"Id": "0", "MessageBody": "{}"}]}) == \
        {"QueueUrl": "http://x/1/q"}
    deleted = naming_params({"Bucket": "b", "Delete": {"Objects": [{"Key": "work/b"}, {"Key": "work/a"}]}})
    assert deleted == {"Bucket": "b", "Keys": ["work/a", "work/b"]}
    arn = "arn:aws:dynamodb:us-east-1:1:table/coupons/stream/2026"
    assert naming_params({"ShardIterator": f"{arn}|1|opaque", "Limit": 100}) == {"StreamArn": arn}
