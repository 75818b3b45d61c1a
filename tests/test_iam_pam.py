"""The iam mode end to end, against a private MariaDB that checks each RDS IAM token itself.

The database (``iamfixture.py``) accepts a login only when its PAM verifier
finds a SigV4 signature by the test key over ``connect`` for that very
``DBUser`` and ``host:port``, not expired. So a passing login proves the
gateway minted a real token and sent it over verified TLS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from conftest import ScratchDatabase, free_port, start_gateway, stop_gateway
from iamfixture import REGION, IamMariaDB, aws_test_credentials, iam_mariadb
from oidcfixture import GATEWAY_AUDIENCE, OidcProvider

from gateway.audit.sqlite import SQLiteAuditStore
from gateway.db.connector import Connector
from gateway.db.iamtokens import IamTokenProvider
from gateway.errors import DatabaseUnavailable
from gateway.settings import Settings, TargetSettings

__all__ = ["aws_test_credentials", "iam_mariadb"]


class FixedSecret:
    """A credential provider handing out one given password (a fake of the project's interface)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def describe(self) -> str:
        return "a fixed test token"

    async def password(self) -> str:
        return self.value

    def invalidate(self) -> None:
        return None


def _target(db: IamMariaDB, **pool: Any) -> TargetSettings:
    return TargetSettings.model_validate(
        {
            "host": db.host,
            "port": db.port,
            "database": db.database,
            "auth_mode": "iam",
            "iam": {"region": REGION, "db_users": [db.reader, db.writer], "token_ttl": 600},
            "tls": {"enabled": True, "ca_file": db.ca_file, "verify_hostname": True},
            "pool": pool,
        }
    )


def _token(db: IamMariaDB, user: str) -> str:
    """A token signed now by ``generate_db_auth_token`` (15 minutes)."""
    client = boto3.client("rds", region_name=REGION)
    return str(client.generate_db_auth_token(db.host, db.port, user, Region=REGION))


def _token_signed_at(db: IamMariaDB, user: str, signed_at: dt.datetime, monkeypatch: pytest.MonkeyPatch) -> str:
    """A 15-minute token as ``generate_db_auth_token`` signs it, dated ``signed_at`` instead of now.

    botocore's signer reads the time from ``botocore.auth.get_current_datetime``
    (the library's clock, not the gateway's): set only while this one token is signed.
    """
    with monkeypatch.context() as patch:
        patch.setattr(botocore.auth, "get_current_datetime", lambda **_: signed_at.replace(tzinfo=None))
        return _token(db, user)


async def _count_items(connect: Connector) -> tuple[int, str]:
    conn = await connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM items")
            (count,) = await cur.fetchone()
            await cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            (_, cipher) = await cur.fetchone()
        return count, cipher
    finally:
        conn.close()


def test_minted_token_logs_in_over_tls(iam_mariadb: IamMariaDB, aws_test_credentials: None) -> None:
    """A token minted by the gateway is accepted by the token-checking MariaDB, over TLS."""
    db = iam_mariadb
    target = _target(db)
    tokens = IamTokenProvider(db.host, db.port, db.reader, REGION, ttl=600)
    count, cipher = asyncio.run(_count_items(Connector(target, db.reader, tokens, "SELECT 1")))
    assert count == 3
    assert cipher  # the session is encrypted
    assert tokens.mints == 1
    assert any(line.startswith(f"accepted {db.reader} ") for line in db.verifier_lines())


@pytest.mark.parametrize("flaw", ["expired", "tampered", "wrong_user"])
def test_bad_tokens_are_refused_by_mariadb(
    iam_mariadb: IamMariaDB, aws_test_credentials: None, flaw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expired, tampered and other-user tokens are refused by the database: database_unavailable."""
    db = iam_mariadb
    if flaw == "expired":  # signed 20 minutes ago for 15: the verifier compares with its own clock
        token = _token_signed_at(db, db.reader, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20), monkeypatch)
        reason = "expired"
    elif flaw == "tampered":
        token = _token(db, db.reader)
        token = token[:-1] + ("0" if token[-1] != "0" else "1")
        reason = "bad signature"
    else:
        token = _token(db, db.writer)
        reason = "wrong action or user"
    before = len(db.verifier_lines())
    connect = Connector(_target(db), db.reader, FixedSecret(token), "SELECT 1")
    with pytest.raises(DatabaseUnavailable) as err:
        asyncio.run(_count_items(connect))
    assert "refused the credentials" in err.value.detail
    assert token not in err.value.detail
    assert db.verifier_lines()[before:] == [f"refused {db.reader}: {reason}"]
    assert connect.stats.results == {"auth_refused": 1}


def test_no_cleartext_without_hostname_verification(iam_mariadb: IamMariaDB, aws_test_credentials: None) -> None:
    """TLS without hostname verification is not enough: the token never reaches the database."""
    db = iam_mariadb
    # A secret-mode target may turn hostname checks off; the cleartext plugin is then refused.
    target = TargetSettings.model_validate(
        {
            "host": db.host,
            "port": db.port,
            "database": db.database,
            "tls": {"enabled": True, "ca_file": db.ca_file, "verify_hostname": False},
        }
    )
    before = len(db.verifier_lines())
    connect = Connector(target, db.reader, FixedSecret(_token(db, db.reader)), "SELECT 1")
    with pytest.raises(DatabaseUnavailable) as err:
        asyncio.run(_count_items(connect))
    assert "cleartext" in err.value.detail
    assert db.verifier_lines()[before:] == []


def _write_policy(directory: Path, db: IamMariaDB) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.yaml").write_text(
        "version: 1\n"
        'roles: {admin: ["group:db-admins"]}\n'  # /readyz shows its details to admins only
        "grants:\n"
        "  - name: analysts-read-iam\n"
        '    subjects: ["group:analysts"]\n'
        "    target: iamshop\n"
        "    access: read\n"
        f"    db_user: {db.reader}\n",
        encoding="utf-8",
    )
    return directory


def _iam_gateway_settings(tmp: Path, idp: OidcProvider, db: IamMariaDB, **iam: Any) -> Settings:
    return Settings.model_validate(
        {
            "listen": {"host": "127.0.0.1", "port": free_port()},
            "issuers": [{"issuer": idp.issuer, "audience": GATEWAY_AUDIENCE}],
            "policies_dir": _write_policy(tmp / "policies", db),
            "targets": {
                "iamshop": {
                    "host": db.host,
                    "port": db.port,
                    "database": db.database,
                    "auth_mode": "iam",
                    "iam": {"region": REGION, "db_users": [db.reader], **iam},
                    "tls": {"enabled": True, "ca_file": str(db.ca_file), "verify_hostname": True},
                    "pool": {"max_size": 2, "max_lifetime": 2, "acquire_timeout": 5},
                }
            },
            "audit": {"path": tmp / "audit.db"},
            "admin": {"state_dir": tmp / "state"},  # the alias registry, never the working tree
        }
    )


def _accepted_dates(db: IamMariaDB) -> set[str]:
    return {line.split()[-1] for line in db.verifier_lines() if line.startswith(f"accepted {db.reader} ")}


def test_tokens_refresh_and_connections_recycle_without_failures(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase, iam_mariadb: IamMariaDB, aws_test_credentials: None
) -> None:
    """With a 1 s token TTL and 2 s lifetime, new connections get fresh tokens and no request fails."""
    db = iam_mariadb
    settings = _iam_gateway_settings(tmp_path, idp, db, token_ttl=1)
    running = start_gateway(settings, idp, test_db)
    try:
        start = _accepted_dates(db)
        statuses: list[int] = []
        with running.client("reader") as http:
            for _ in range(150):  # bounded: about 15 s at most
                reply = http.post("/v1/query", json={"target": "iamshop", "sql": "SELECT id FROM items"})
                statuses.append(reply.status_code)
                assert reply.status_code == 200, reply.text
                if len(_accepted_dates(db) - start) >= 3:
                    break
                time.sleep(0.1)
        pools = running.services.pools.pools()
        stats = pools[("iamshop", db.reader)].connect_stats
    finally:
        stop_gateway(running)
    assert len(_accepted_dates(db) - start) >= 3, "expected three token refreshes"
    assert set(statuses) == {200}
    assert stats is not None
    assert stats.results.get("ok", 0) >= 3
    assert set(stats.results) == {"ok"}


def test_credential_failure_is_clear_audited_and_visible(
    tmp_path: Path,
    idp: OidcProvider,
    test_db: ScratchDatabase,
    iam_mariadb: IamMariaDB,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No AWS credentials: 503 database_unavailable naming the cause, audited, in /readyz and metrics."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    db = iam_mariadb
    running = start_gateway(_iam_gateway_settings(tmp_path, idp, db), idp, test_db)
    try:
        with running.client("reader") as http:
            reply = http.post(
                "/v1/query",
                json={"target": "iamshop", "sql": "SELECT id FROM items"},
            )
            metrics = http.get("/metrics").text
        with running.client("admin") as http:
            ready = http.get("/readyz").json()
    finally:
        stop_gateway(running)
    assert reply.status_code == 503
    problem = reply.json()
    assert problem["code"] == "database_unavailable"
    assert "Unable to locate credentials" in problem["detail"]
    assert "RDS IAM token" in problem["detail"]
    check = ready["checks"][f"pool:iamshop/{db.reader}"]
    assert check["ok"] is False
    assert "Unable to locate credentials" in check["detail"]
    assert f'gateway_db_connects_total{{pool="iamshop/{db.reader}",result="credential_error"}}' in metrics
    store = SQLiteAuditStore(tmp_path / "audit.db")
    try:
        records = [e for e in store.iter_entries() if e.get("request_id") == reply.headers["x-request-id"]]
    finally:
        store.close()
    # The grant's account reads the view catalogue before the decision (SECURITY rule 28): the refusal
    # is the decision record itself, and nothing ran.
    assert [(r["event"], r["decision"], r["code"]) for r in records] == [("decision", "deny", "database_unavailable")]
