"""Configuration and building blocks of short-lived credentials: refusals, token cache, connect rate."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from iamfixture import aws_test_credentials

from gateway.cli.main import main
from gateway.db.connector import Connector
from gateway.db.connectrate import ConnectRate
from gateway.db.credentials import provider_for
from gateway.db.iamtokens import IamTokenProvider
from gateway.db.pools import PoolRegistry
from gateway.errors import ConfigError, DatabaseUnavailable
from gateway.http.app import create_app
from gateway.settings import Settings, TargetSettings, load_settings

__all__ = ["aws_test_credentials"]

IAM_TARGET: dict[str, Any] = {
    "host": "db.example.internal",
    "port": 3306,
    "database": "shop",
    "auth_mode": "iam",
    "iam": {"region": "eu-west-1", "db_users": ["gw_reader"]},
    "tls": {"enabled": True, "verify_hostname": True},
}


def _config(tmp_path: Path, target: dict[str, Any]) -> Path:
    path: Path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"dev_mode": True, "targets": {"shop": target}}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tls": {"enabled": False}}, "requires TLS with certificate and hostname verification"),
        ({"tls": {"enabled": True, "verify_hostname": False}}, "requires TLS"),
        ({"pool": {"max_lifetime": 900}}, "caps pool.max_lifetime"),
        ({"iam": None}, "needs iam"),
    ],
)
def test_iam_target_refused_without_its_safeguards(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    """An iam target without verified TLS, with long-lived connections or no iam block stops start-up."""
    target = {**IAM_TARGET, **change}
    if target["iam"] is None:
        del target["iam"]
    with pytest.raises(ConfigError) as err:
        load_settings(_config(tmp_path, target))
    assert message in str(err.value)


def test_serve_refuses_to_start_with_iam_and_tls_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway serve` exits with a clear message instead of starting with an iam target and no TLS."""
    path = _config(tmp_path, {**IAM_TARGET, "tls": {"enabled": False}})
    assert main(["serve", "--config", str(path)]) == 2
    assert "auth_mode iam requires TLS" in capsys.readouterr().err


def test_secret_sources_are_exactly_one() -> None:
    """A secret source names exactly one of env, file or aws_secret."""
    with pytest.raises(ValueError, match="exactly one"):
        TargetSettings.model_validate(
            {"host": "h", "database": "d", "secrets": {"u": {"env": "X", "aws_secret": {"secret_id": "s"}}}}
        )


def test_iam_pools_come_from_db_users() -> None:
    """An iam target opens pools for its iam.db_users, each with a token provider."""
    target = TargetSettings(**IAM_TARGET)
    assert target.db_users() == ("gw_reader",)
    provider = provider_for("shop", target, "gw_reader")
    assert isinstance(provider, IamTokenProvider)
    assert "gw_reader@db.example.internal:3306" in provider.describe()
    with pytest.raises(ConfigError):
        provider_for("shop", target, "gw_writer")


def test_token_is_reused_until_its_ttl(aws_test_credentials: None) -> None:
    """A minted token is reused within its TTL (no new mint) and replaced after it."""
    now = [0.0]
    provider = IamTokenProvider("db.example.internal", 3306, "gw_reader", "eu-west-1", ttl=600, timer=lambda: now[0])

    async def scenario() -> list[str]:
        first = await provider.password()
        again = await provider.password()
        now[0] = 601.0
        await asyncio.sleep(1.05)  # a new X-Amz-Date second, so the next token differs
        later = await provider.password()
        return [first, again, later]

    first, again, later = asyncio.run(scenario())
    assert first == again
    assert later != first
    assert provider.mints == 2
    assert first.startswith("db.example.internal:3306/?Action=connect&DBUser=gw_reader&")


def test_concurrent_connects_share_one_mint(aws_test_credentials: None) -> None:
    """Many connections opening at once wait for a single mint instead of minting each."""
    provider = IamTokenProvider("db.example.internal", 3306, "gw_reader", "eu-west-1", ttl=600)

    async def scenario() -> set[str]:
        return set(await asyncio.gather(*(provider.password() for _ in range(20))))

    assert len(asyncio.run(scenario())) == 1
    assert provider.mints == 1


def test_connect_rate_spaces_and_refuses() -> None:
    """Bursts pass, then connects are spaced at the rate; a wait longer than allowed is refused."""
    now = [100.0]
    rate = ConnectRate("shop", per_second=10, burst=2, clock=lambda: now[0])
    assert rate.reserve(max_wait=1) == 0
    assert rate.reserve(max_wait=1) == 0
    assert rate.reserve(max_wait=1) == pytest.approx(0.1)
    assert rate.reserve(max_wait=1) == pytest.approx(0.2)
    with pytest.raises(DatabaseUnavailable, match="too many new connections to shop"):
        rate.reserve(max_wait=0.25)
    now[0] += 10
    assert rate.reserve(max_wait=0) == 0
    assert (rate.delayed, rate.refused) == (2, 1)


def test_botocore_debug_logs_never_carry_a_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, aws_test_credentials: None
) -> None:
    """Even with DEBUG logging, the app keeps botocore from logging a token's signature."""
    config: dict[str, Any] = {
        "dev_mode": True,
        "dev": {"key_file": tmp_path / "dev.json"},
        "targets": {"shop": IAM_TARGET},
        "audit": {"path": tmp_path / "audit.db"},
    }
    create_app(Settings(**config))
    provider = IamTokenProvider("db.example.internal", 3306, "gw_reader", "eu-west-1", ttl=600)
    with caplog.at_level(logging.DEBUG):
        token = asyncio.run(provider.password())
    signature = token.rsplit("=", 1)[1]
    assert signature not in caplog.text


def test_pools_of_a_target_share_its_connect_rate() -> None:
    """One new-connection budget per target (RDS throttles per instance), shared by its db_user pools."""
    target = TargetSettings(**{**IAM_TARGET, "iam": {"region": "eu-west-1", "db_users": ["gw_reader", "gw_writer"]}})

    async def scenario() -> list[object]:
        registry = PoolRegistry({"shop": target})
        await registry.open()  # min_size 0: nothing connects
        try:
            connectors = [pool._connect for pool in registry.pools().values()]
            return [connect.rate for connect in connectors if isinstance(connect, Connector)]
        finally:
            await registry.close()

    reader_rate, writer_rate = asyncio.run(scenario())
    assert isinstance(reader_rate, ConnectRate)
    assert reader_rate is writer_rate
