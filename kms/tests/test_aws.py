"""AWS specifics beyond the contract: boto3's standard configuration, the key reference format."""

from __future__ import annotations

import os

import pytest

from kms.providers.aws import AwsKmsKeyProvider


def test_aws_endpoint_url_kms_from_the_environment_is_honoured(aws, moto_server, monkeypatch):
    # No endpoint_url option: botocore's own service-specific endpoint variable decides, as documented.
    server, _proxy = moto_server
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.url)
    options = {k: v for k, v in aws.options.items() if k != "endpoint_url"}
    provider = AwsKmsKeyProvider(alias="aws", **options)
    try:
        context = {"blob_id": "b"}
        data_key = os.urandom(32)
        wrapped = provider.wrap(data_key, context=context)
        assert wrapped.key_ref.startswith("arn:aws:kms:eu-west-1:")
        assert provider.unwrap(wrapped, context=context) == data_key
    finally:
        provider.close()


def test_botocore_retries_are_off(aws):
    provider = aws.provider()
    config = provider._client.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert (config.connect_timeout, config.read_timeout) == (1.0, 2.0)


def test_a_row_that_is_not_an_aws_wrap_is_refused_without_a_call(aws):
    from kms.base import WrappedKey
    from kms.exceptions import UnwrapFailed
    from kms.tests.conftest import calls

    provider = aws.provider()
    before = calls("aws", "unwrap")
    with pytest.raises(UnwrapFailed):
        provider.unwrap(WrappedKey(b"x" * 40, "mk-local-1", "AES-256-GCM"), context={"blob_id": "b"})
    assert calls("aws", "unwrap") == before


def test_the_shipped_iam_policy_grants_what_the_provider_calls_bound_to_the_blob_context():
    # moto does not evaluate IAM Resource/Condition, so the policy is checked against the code it serves:
    # the operations the provider calls, and the encryption-context keys blobs and the health probe send.
    import json
    import uuid
    from pathlib import Path

    from blobs.models import Blob

    policy = json.loads((Path(__file__).resolve().parents[2] / "deploy/kms/aws/iam-policy.json").read_text())
    wrap_statement, describe_statement = policy["Statement"]
    assert set(wrap_statement["Action"]) == {
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
    }
    allowed_keys = set(wrap_statement["Condition"]["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"])
    assert set(Blob(id=uuid.uuid4()).key_context) <= allowed_keys
    assert "purpose" in allowed_keys  # kms.health.round_trip's context
    assert wrap_statement["Condition"]["Null"] == {"kms:EncryptionContextKeys": "false"}
    assert describe_statement["Action"] == "kms:DescribeKey"
    assert "*" not in wrap_statement["Resource"]
