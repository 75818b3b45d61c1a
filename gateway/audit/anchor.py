"""Checkpoints anchored outside the database: S3 objects under Object Lock.

A database administrator can delete checkpoints along with the records they
cover; a copy in an S3 bucket with Object Lock (COMPLIANCE mode) cannot be
deleted or overwritten by anyone until its retention ends. Each checkpoint
becomes one object, ``<prefix><id>-<sha256(body)[:16]>.json``, holding the
signed body and its signature exactly as stored. Verification
(``gateway/audit/chains.py``) checks every anchored copy's signature, trusts
its heads like a stored checkpoint's, and reports a stored checkpoint that
is missing or different from its anchored copy.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3
import orjson
from botocore.config import Config

from gateway.audit.checkpoints import Checkpoint

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from gateway.settings.auditchains import AnchorSettings

_CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
_MAX_OBJECT = 1024 * 1024  # a checkpoint of thousands of chains is still far below this


class S3Anchor:
    """Writes and reads anchored checkpoints in one bucket and prefix (blocking: call it from a thread)."""

    def __init__(self, settings: AnchorSettings, client: Any = None) -> None:  # noqa: ANN401 - a boto3 client
        self.settings = settings
        self._client = client or boto3.client(
            "s3", region_name=settings.region, endpoint_url=settings.endpoint_url, config=_CLIENT_CONFIG
        )

    def key(self, checkpoint: Checkpoint) -> str:
        """The object key of ``checkpoint``: its id (sortable) and a digest of its body."""
        digest = hashlib.sha256(checkpoint.body).hexdigest()[:16]
        return f"{self.settings.prefix}{checkpoint.id:020d}-{digest}.json"

    def put(self, checkpoint: Checkpoint, now: datetime) -> str:
        """Store ``checkpoint`` under Object Lock retention; return its key."""
        document = {
            "id": checkpoint.id,
            "time": checkpoint.time,
            "writer": checkpoint.writer,
            "key_id": checkpoint.key_id,
            "body": base64.b64encode(checkpoint.body).decode(),
            "signature": base64.b64encode(checkpoint.signature).decode(),
        }
        key = self.key(checkpoint)
        self._client.put_object(
            Bucket=self.settings.bucket,
            Key=key,
            Body=orjson.dumps(document),
            ContentType="application/json",
            ObjectLockMode=self.settings.mode,
            ObjectLockRetainUntilDate=now + timedelta(days=self.settings.retention_days),
        )
        return key

    def iter_anchored(self) -> Iterator[Checkpoint | str]:
        """Every anchored checkpoint, oldest first; a copy that cannot be read yields a problem text instead."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=self.settings.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if item.get("Size", 0) > _MAX_OBJECT:
                    yield f"anchored object {key}: too large to be a checkpoint"
                    continue
                raw = self._client.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read()
                yield _parse(key, raw)


def _parse(key: str, raw: bytes) -> Checkpoint | str:
    """An anchored copy as a checkpoint, or the problem with it."""
    try:
        doc = orjson.loads(raw)
        return Checkpoint(
            int(doc["id"]),
            str(doc["time"]),
            str(doc["writer"]),
            str(doc["key_id"]),
            base64.b64decode(doc["body"], validate=True),
            base64.b64decode(doc["signature"], validate=True),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return f"anchored object {key}: not a checkpoint this gateway wrote"


def open_anchor(settings: AnchorSettings | None) -> S3Anchor | None:
    """The anchor the settings name, if any."""
    return None if settings is None else S3Anchor(settings)
