"""Checkpoints anchored in S3 with Object Lock: a real boto3 client against moto's server on loopback.

The records, chains and checkpoints are in the real shared MariaDB store;
only S3 is stood in for (moto in server mode, a real HTTP server on
127.0.0.1), as tests/test_awssecrets.py does for Secrets Manager.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from auditfixture import audit_db, audit_root_query
from botocore.exceptions import ClientError
from chainsfixture import new_key, public_text, record, signer
from conftest import free_port
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from iamfixture import aws_test_credentials
from moto.server import ThreadedMotoServer

from gateway.audit.anchor import S3Anchor
from gateway.audit.checkpointer import Checkpointer
from gateway.audit.checkpoints import load_public_keys
from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.verify import verify
from gateway.audit.walk import VerifyResult
from gateway.settings import AuditDatabaseSettings, CheckpointSettings
from gateway.settings.auditchains import AnchorSettings

__all__ = ["audit_db", "aws_test_credentials"]
REGION = "eu-west-1"
NOW = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """Moto's S3 on a loopback port."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, aws_test_credentials: None) -> Any:
    """An admin client for the stand-in (creates buckets, inspects retention)."""
    return boto3.client("s3", region_name=REGION, endpoint_url=s3_endpoint)


def _anchor_settings(endpoint: str, bucket: str) -> AnchorSettings:
    return AnchorSettings(bucket=bucket, region=REGION, endpoint_url=endpoint, prefix="gw/checkpoints/")


def _locked_bucket(s3: Any) -> str:
    bucket = f"gw-audit-{secrets.token_hex(4)}"
    s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}, ObjectLockEnabledForBucket=True
    )
    return bucket


def _check(store: MariaDBAuditStore, key: Ed25519PrivateKey, anchor: S3Anchor) -> VerifyResult:
    keys = load_public_keys(CheckpointSettings(public_keys={"k1": public_text(key)}))
    return verify(store, keys=keys, anchored=anchor.iter_anchored(), batch=5)


def test_anchored_checkpoints_catch_a_rewrite_of_records_head_rows_and_checkpoints_together(
    audit_db: AuditDatabaseSettings, s3: Any, s3_endpoint: str
) -> None:
    """With every stored checkpoint deleted and a tail cut with its head row, the S3 copies still show both."""
    key = new_key()
    anchor = S3Anchor(_anchor_settings(s3_endpoint, _locked_bucket(s3)))
    stores = [MariaDBAuditStore(audit_db, chain=name) for name in ("r1", "r2")]
    try:
        for store in stores:
            store.append_batch([record(i, store.chain) for i in range(1, 13)])
        checkpointers = [Checkpointer(store, signer(key), anchor) for store in stores]
        for checkpointer in checkpointers:
            assert checkpointer.round(NOW) is not None
            assert checkpointer.unanchored == []
        result = _check(stores[0], key, anchor)
        assert result.ok, result.problems
        assert not any("S3 anchor" in note for note in result.notes)

        (first,) = [o["Key"] for o in s3.list_objects_v2(Bucket=anchor.settings.bucket)["Contents"]][:1]
        # (moto answers GetObjectRetention with a 500; HEAD carries the same lock fields.)
        head = s3.head_object(Bucket=anchor.settings.bucket, Key=first)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] >= NOW + timedelta(days=399)
        # Whoever holds the bucket cannot delete the copy (S3 itself refuses, before retention ends).
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.delete_object(Bucket=anchor.settings.bucket, Key=first, VersionId=head["VersionId"])

        db = audit_db.database
        audit_root_query(f"DELETE FROM `{db}`.audit_checkpoints")
        audit_root_query(f"DELETE FROM `{db}`.audit_log WHERE chain = 'r2' AND seq > 10")
        (digest,) = audit_root_query(f"SELECT hash FROM `{db}`.audit_log WHERE chain = 'r2' AND seq = 10")[0]
        audit_root_query(f"UPDATE `{db}`.audit_chains SET seq = 10, hash = %s WHERE chain = 'r2'", (digest,))
        assert verify(stores[0], keys={}).ok  # the database alone now looks consistent
        problems = _check(stores[0], key, anchor).problems
        assert (
            "checkpoint #1 (2026-12-02T11:00:00.000000Z, by r1): in the S3 anchor but not in the database (deleted)"
            in problems
        )
        assert (
            "chain 'r2': seq 11-12: missing, the chain ends at seq 10 but anchored checkpoint #1 "
            "(2026-12-02T11:00:00.000000Z) names seq 12 (tail truncated)"
        ) in problems
    finally:
        for store in stores:
            store.close()


def test_a_checkpoint_that_could_not_be_anchored_is_anchored_by_a_later_round(
    audit_db: AuditDatabaseSettings, s3: Any, s3_endpoint: str
) -> None:
    """S3 refusing a copy fails the round and keeps the checkpoint queued; a later round anchors it.

    Until then verify notes that a stored checkpoint is not yet anchored.
    """
    key = new_key()
    bucket = f"gw-audit-{secrets.token_hex(4)}"  # not created yet: every put fails
    anchor = S3Anchor(_anchor_settings(s3_endpoint, bucket))
    store = MariaDBAuditStore(audit_db, chain="r1")
    try:
        store.append_batch([record(1, "r1")])
        checkpointer = Checkpointer(store, signer(key), anchor)
        with pytest.raises(ClientError, match="NoSuchBucket"):
            checkpointer.round(NOW)
        assert [c.id for c in checkpointer.unanchored] == [1]
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}, ObjectLockEnabledForBucket=True
        )
        assert "1 stored checkpoints are not (yet) in the S3 anchor" in _check(store, key, anchor).notes
        assert checkpointer.round(NOW) is None  # no head moved: nothing new, but the queued one goes out
        assert checkpointer.unanchored == []
        result = _check(store, key, anchor)
        assert result.ok, result.problems
        assert not any("S3 anchor" in note for note in result.notes)
    finally:
        store.close()
