"""Passwords from AWS Secrets Manager: a real boto3 client against moto's server on loopback.

The AWS endpoint cannot run here, so moto (in server mode, a real HTTP server
on 127.0.0.1) stands in for it; everything on the gateway's side, boto3
included, is the production code path. The database is the real shared
MariaDB, with an account of this test's own.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from conftest import DB_HOST, DB_PORT, ScratchDatabase, free_port, root_query
from iamfixture import aws_test_credentials
from moto.server import ThreadedMotoServer

from gateway.db.awssecrets import AwsSecretsManagerSecret
from gateway.db.connector import Connector
from gateway.db.credentials import provider_for
from gateway.errors import DatabaseUnavailable
from gateway.settings import AwsSecretSource, SecretSource, TargetSettings

__all__ = ["aws_test_credentials"]
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def secrets_endpoint() -> Iterator[str]:
    """Moto's Secrets Manager on a loopback port."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def sm(secrets_endpoint: str, aws_test_credentials: None) -> Any:  # boto3 ships no types
    """An admin client for the stand-in (creates and rotates secrets)."""
    return boto3.client("secretsmanager", region_name=REGION, endpoint_url=secrets_endpoint)


@pytest.fixture
def account(test_db: ScratchDatabase) -> Iterator[tuple[str, str]]:
    """A SELECT-only account of this test's own on the shared MariaDB: (user, password)."""
    user, password = f"gwsm{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    root_query(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
    root_query(f"GRANT SELECT ON `{test_db.name}`.* TO '{user}'@'%'")
    yield user, password
    root_query(f"DROP USER IF EXISTS '{user}'@'%'")


def _source(endpoint: str, secret_id: str, *, key: str | None = "password", ttl: float = 300.0) -> AwsSecretSource:
    return AwsSecretSource(secret_id=secret_id, region=REGION, endpoint_url=endpoint, key=key, ttl=ttl)


def _target(db: ScratchDatabase, user: str, source: AwsSecretSource) -> TargetSettings:
    return TargetSettings(host=DB_HOST, port=DB_PORT, database=db.name, secrets={user: SecretSource(aws_secret=source)})


async def _whoami(connect: Connector) -> str:
    conn = await connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT CURRENT_USER()")
            (who,) = await cur.fetchone()
        return str(who)
    finally:
        conn.close()


def test_password_from_secrets_manager(
    sm: Any, secrets_endpoint: str, test_db: ScratchDatabase, account: tuple[str, str]
) -> None:
    """A JSON secret's ``password`` logs the account in; the provider comes from the target's config."""
    user, password = account
    sm.create_secret(Name=f"gw/{user}", SecretString=json.dumps({"username": user, "password": password}))
    target = _target(test_db, user, _source(secrets_endpoint, f"gw/{user}"))
    provider = provider_for("shop", target, user)
    assert isinstance(provider, AwsSecretsManagerSecret)
    assert asyncio.run(_whoami(Connector(target, user, provider, "SELECT 1"))).startswith(f"{user}@")


def test_rotation_is_picked_up_after_one_refusal(
    sm: Any, secrets_endpoint: str, test_db: ScratchDatabase, account: tuple[str, str]
) -> None:
    """After rotation the cached password is refused once, refetched, and the login succeeds."""
    user, password = account
    sm.create_secret(Name=f"gw/{user}", SecretString=json.dumps({"password": password}))
    source = _source(secrets_endpoint, f"gw/{user}")
    provider = AwsSecretsManagerSecret(source)
    connect = Connector(_target(test_db, user, source), user, provider, "SELECT 1")

    async def scenario() -> None:
        await _whoami(connect)
        rotated = secrets.token_urlsafe(18)
        sm.put_secret_value(SecretId=f"gw/{user}", SecretString=json.dumps({"password": rotated}))
        await asyncio.to_thread(root_query, f"ALTER USER '{user}'@'%%' IDENTIFIED BY %s", (rotated,))
        await _whoami(connect)  # the cached (old) password is refused, then the new one works
        await _whoami(connect)  # and is cached again

    asyncio.run(scenario())
    assert provider.fetches == 2
    assert connect.stats.results == {"ok": 3}


def test_ttl_expiry_refetches_without_a_refusal(sm: Any, secrets_endpoint: str) -> None:
    """Within the TTL the cached value is used; after it, Secrets Manager is asked again."""
    sm.create_secret(Name="gw/ttl", SecretString="first")
    now = [0.0]
    provider = AwsSecretsManagerSecret(_source(secrets_endpoint, "gw/ttl", key=None, ttl=60), timer=lambda: now[0])

    async def scenario() -> list[str]:
        got = [await provider.password()]
        sm.put_secret_value(SecretId="gw/ttl", SecretString="second")
        got.append(await provider.password())
        now[0] = 61.0
        got.append(await provider.password())
        return got

    assert asyncio.run(scenario()) == ["first", "first", "second"]
    assert provider.fetches == 2


def test_failures_name_the_cause_never_the_secret(sm: Any, secrets_endpoint: str) -> None:
    """A missing secret names AWS's error code; a secret of the wrong shape is never echoed."""
    missing = AwsSecretsManagerSecret(_source(secrets_endpoint, "gw/missing"))
    with pytest.raises(DatabaseUnavailable) as err:
        asyncio.run(missing.password())
    assert "gw/missing" in err.value.detail
    assert "ResourceNotFoundException" in err.value.detail

    sm.create_secret(Name="gw/plain", SecretString="not-json-s3cr3t")
    plain = AwsSecretsManagerSecret(_source(secrets_endpoint, "gw/plain"))
    with pytest.raises(DatabaseUnavailable) as err:
        asyncio.run(plain.password())
    assert "not JSON" in err.value.detail
    assert "s3cr3t" not in err.value.detail
