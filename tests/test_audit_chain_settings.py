"""Settings and keys of the shared store's chains: the replica id, the checkpoint keys, ``gateway audit keygen``."""

from __future__ import annotations

from pathlib import Path

import pytest
from auditfixture import audit_db
from chainsfixture import key_file, new_key, public_text
from conftest import ScratchDatabase, gateway_settings
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from oidcfixture import OidcProvider
from pydantic import ValidationError

from gateway.audit.checkpoints import load_public_keys, load_signer
from gateway.cli.main import main
from gateway.errors import ConfigError
from gateway.http.app import create_app
from gateway.settings import AuditDatabaseSettings, AuditSettings, CheckpointSettings, SecretSource
from gateway.settings.auditchains import replica_id_from

__all__ = ["audit_db"]


@pytest.mark.parametrize(
    ("hostname", "replica_id"),
    [
        ("gateway-7d9f8b-x2x4q", "gateway-7d9f8b-x2x4q"),
        ("GW_Host.Example.COM", "gw-host.example.com"),
        ("__", "replica"),
        ("a" * 80, "a" * 64),
    ],
)
def test_default_replica_id_is_the_host_name_made_to_fit(hostname: str, replica_id: str) -> None:
    """Host names become valid replica ids: lower case, other characters as '-', at most 64 characters."""
    assert replica_id_from(hostname) == replica_id
    assert AuditSettings(replica_id=replica_id).replica_id == replica_id


@pytest.mark.parametrize("bad", ["", "_legacy", "Upper", "a b", "-lead", "x" * 65, "a/b"])
def test_invalid_replica_ids_are_refused(bad: str) -> None:
    """A replica id that is not a lower-case host-like name (or would collide with _legacy) stops the start."""
    with pytest.raises(ValidationError, match=r"audit\.replica_id is lower-case letters"):
        AuditSettings(replica_id=bad)


def test_signing_key_never_inline_and_never_a_private_key_among_public_ones() -> None:
    """The private key only from env or file; a PEM private key pasted into public_keys is refused."""
    with pytest.raises(ValidationError, match="never sits in the config file"):
        CheckpointSettings.model_validate({"key_id": "k1", "signing_key": "-----BEGIN PRIVATE KEY-----"})
    with pytest.raises(ValidationError, match="holds a private key"):
        CheckpointSettings.model_validate({"public_keys": {"k1": "-----BEGIN PRIVATE KEY-----\nabc"}})
    with pytest.raises(ValidationError, match="signing_key and key_id go together"):
        CheckpointSettings.model_validate({"signing_key": {"env": "X"}})
    with pytest.raises(ValidationError, match="needs the signing key's public half under 'k1'"):
        CheckpointSettings.model_validate({"key_id": "k1", "signing_key": {"env": "X"}})
    with pytest.raises(ValidationError, match=r"string_pattern_mismatch|should match pattern"):
        CheckpointSettings.model_validate({"key_id": "k 1", "signing_key": {"env": "X"}, "public_keys": {"k 1": "x"}})


def test_keys_load_from_file_and_env_and_unreadable_keys_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PEM Ed25519 key from a file or env signs; a missing file, another key type or a bad public key: ConfigError."""
    key = new_key()
    public = {"k1": public_text(key)}
    path = key_file(tmp_path, key)
    from_file = load_signer(CheckpointSettings(key_id="k1", signing_key=SecretSource(file=path), public_keys=public))
    assert from_file is not None
    assert from_file.key_id == "k1"
    assert "PRIVATE" not in repr(from_file)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    monkeypatch.setenv("GWTEST_CHECKPOINT_KEY", pem)
    from_env = load_signer(
        CheckpointSettings(key_id="k1", signing_key=SecretSource(env="GWTEST_CHECKPOINT_KEY"), public_keys=public)
    )
    assert from_env is not None
    keys = load_public_keys(CheckpointSettings(public_keys={"k1": public_text(key)}))
    keys["k1"].verify(from_env.sign(b"body"), b"body")  # raises if the halves do not match

    with pytest.raises(ConfigError, match="audit checkpoint signing key"):
        load_signer(
            CheckpointSettings(key_id="k1", signing_key=SecretSource(file=tmp_path / "missing.pem"), public_keys=public)
        )
    ec = tmp_path / "ec.pem"
    ec.write_bytes(generate_private_key(SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_signer(CheckpointSettings(key_id="k1", signing_key=SecretSource(file=ec), public_keys=public))
    other = {"k1": public_text(new_key())}
    with pytest.raises(ConfigError, match=r"its public half is not public_keys\.k1"):
        load_signer(CheckpointSettings(key_id="k1", signing_key=SecretSource(file=path), public_keys=other))
    with pytest.raises(ConfigError, match=r"public_keys\.k2"):
        load_public_keys(CheckpointSettings(public_keys={"k2": "not-base64!"}))


def test_keygen_writes_a_private_key_file_once_and_prints_the_public_half(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gateway audit keygen` makes a 0600 key file (never overwriting one) whose public half it prints."""
    out = tmp_path / "key.pem"
    assert main(["audit", "keygen", str(out), "--key-id", "audit-2026-12"]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    printed = capsys.readouterr().out
    public = printed.split("audit-2026-12: ")[-1].strip()
    settings = CheckpointSettings(
        key_id="audit-2026-12", signing_key=SecretSource(file=out), public_keys={"audit-2026-12": public}
    )
    signer = load_signer(settings)  # refuses a key whose public half is not the one printed
    assert signer is not None
    load_public_keys(settings)["audit-2026-12"].verify(signer.sign(b"x"), b"x")
    assert main(["audit", "keygen", str(out), "--key-id", "again"]) == 1
    assert "cannot create" in capsys.readouterr().err


@pytest.mark.anyio
async def test_a_gateway_with_a_signing_key_it_cannot_use_does_not_start(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase, audit_db: AuditDatabaseSettings
) -> None:
    """The lifespan stops with a ConfigError (never serving unsigned) when the key does not match its public key."""
    key = new_key()
    checkpoints = {
        "key_id": "k1",
        "signing_key": {"file": str(key_file(tmp_path, key))},
        "public_keys": {"k1": public_text(new_key())},  # another key's public half
    }
    settings = gateway_settings(
        tmp_path,
        idp,
        test_db,
        audit={"store": "mariadb", "mariadb": audit_db.model_dump(), "checkpoints": checkpoints},
    )
    app = create_app(settings)
    with pytest.raises(ConfigError, match=r"its public half is not public_keys\.k1"):
        async with app.router.lifespan_context(app):
            pytest.fail("the gateway started")
