"""Signed checkpoints over every chain head of the shared audit store.

A chain alone cannot show that its tail was cut or that a whole chain was
dropped: what is left is still a valid chain. Every few seconds a replica
therefore reads every chain's head and signs it::

    body = canonical({"v": 1, "time": ..., "writer": <replica id>, "key_id": <id>,
                      "heads": {<chain>: [seq, hash], ...}})
    signature = Ed25519(private key, body)

Verification (``gateway/audit/chains.py``) checks each signature with the
configured public key of its key id, then that every head a checkpoint names
is still in the log with that hash. The private key is read from an env var
or a file (a mounted Secret) at start-up; it never sits in the config file
and never appears in a log line or an error.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from gateway.audit.store import canonical
from gateway.db.credentials import read_plain_secret
from gateway.errors import ConfigError, DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.settings import CheckpointSettings

Heads = dict[str, tuple[int, str]]  # chain -> (seq, hash) of its last entry
BODY_VERSION = 1
_HEX64 = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stored checkpoint: its row id, the copies of its body's fields, the signed body and its signature."""

    id: int
    time: str
    writer: str
    key_id: str
    body: bytes
    signature: bytes


class Signer:
    """Signs checkpoint bodies with this replica's Ed25519 key; only the key id is ever shown."""

    def __init__(self, key_id: str, key: Ed25519PrivateKey) -> None:
        self.key_id = key_id
        self._key = key

    def sign(self, body: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``body``."""
        return self._key.sign(body)

    def public_key(self) -> Ed25519PublicKey:
        """The matching public key (for tests and ``gateway audit keygen``)."""
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"


def body(time: str, writer: str, key_id: str, heads: Mapping[str, tuple[int, str]]) -> bytes:
    """The canonical bytes a checkpoint signs."""
    return canonical(
        {
            "v": BODY_VERSION,
            "time": time,
            "writer": writer,
            "key_id": key_id,
            "heads": {chain: [seq, digest] for chain, (seq, digest) in sorted(heads.items())},
        }
    )


def load_signer(settings: CheckpointSettings) -> Signer | None:
    """The signer the settings name (``None``: this replica writes no checkpoints); ConfigError if unreadable."""
    if settings.signing_key is None or settings.key_id is None:
        return None
    try:
        pem = read_plain_secret(settings.signing_key)
    except DatabaseUnavailable as exc:
        raise ConfigError(f"audit checkpoint signing key: {exc.detail}") from None
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError("audit checkpoint signing key: not a PEM (PKCS#8) private key without a passphrase") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("audit checkpoint signing key: not an Ed25519 key")
    trusted = load_public_keys(settings).get(settings.key_id)
    raw = Encoding.Raw, PublicFormat.Raw
    if trusted is None or trusted.public_bytes(*raw) != key.public_key().public_bytes(*raw):
        # Every checkpoint it signed would read as forged: refuse to start instead.
        raise ConfigError(
            f"audit checkpoint signing key: its public half is not public_keys.{settings.key_id} "
            "(rotate by adding the new key id and its public key)"
        )
    return Signer(settings.key_id, key)


def public_key(text: str) -> Ed25519PublicKey:
    """Read a public key: base64 of its 32 raw bytes, or PEM; ValueError otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_keys(settings: CheckpointSettings) -> dict[str, Ed25519PublicKey]:
    """The public keys verification trusts, by key id (with the signer's own, when it has one)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for key_id, text in settings.public_keys.items():
        try:
            keys[key_id] = public_key(text)
        except ValueError as exc:
            raise ConfigError(f"audit.checkpoints.public_keys.{key_id}: {exc}") from None
    return keys


def parse_heads(raw: bytes) -> Heads | None:
    """The heads a checkpoint body names, or ``None`` when the body is not one this gateway wrote."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    heads = doc.get("heads") if isinstance(doc, dict) and doc.get("v") == BODY_VERSION else None
    if not isinstance(heads, dict):
        return None
    out: Heads = {}
    for chain, head in heads.items():
        if not (isinstance(head, list) and len(head) == 2 and type(head[0]) is int and isinstance(head[1], str)):  # noqa: PLR2004 - [seq, hash]
            return None
        if len(head[1]) != 64 or not set(head[1]) <= _HEX64:  # noqa: PLR2004 - a SHA-256 hex digest
            return None
        out[chain] = (head[0], head[1])
    return out


def check(checkpoint: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> tuple[Heads | None, str | None]:
    """Check one checkpoint's signature and body; return its heads (if trusted) and the problem (if any)."""
    name = f"checkpoint #{checkpoint.id} ({checkpoint.time}, by {checkpoint.writer})"
    key = keys.get(checkpoint.key_id)
    if key is None:
        return None, (
            f"{name}: signed with key id {checkpoint.key_id!r}, which is not among the configured public keys "
            "(forged, or a key missing from audit.checkpoints.public_keys)"
        )
    try:
        key.verify(checkpoint.signature, checkpoint.body)
    except InvalidSignature:
        return None, f"{name}: signature does not verify with key {checkpoint.key_id!r} (forged or altered)"
    heads = parse_heads(checkpoint.body)
    if heads is None:
        return None, f"{name}: signed, but its body is not a checkpoint this gateway can read"
    doc = orjson.loads(checkpoint.body)
    if (doc.get("time"), doc.get("writer"), doc.get("key_id")) != (
        checkpoint.time,
        checkpoint.writer,
        checkpoint.key_id,
    ):
        return heads, f"{name}: stored columns differ from the signed body (row edited)"
    return heads, None
