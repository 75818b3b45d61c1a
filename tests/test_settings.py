"""Gateway settings refuse insecure or broken configurations, all problems at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.identity.oidc import IssuerConfig
from gateway.settings import Settings, load_settings

TARGET = "targets:\n  shop: {host: 127.0.0.1, database: shop, secrets: {gw_reader: {env: PW}}}\n"
ISSUER = "issuers:\n  - {issuer: 'https://idp.example.com', audience: gw}\n"


def _load(tmp_path: Path, text: str, **overrides: Any) -> Settings:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, **overrides)


def test_minimal_config_loads(tmp_path: Path) -> None:
    """An issuer and a target are enough; limits and pools get safe defaults."""
    settings = _load(tmp_path, ISSUER + TARGET)
    assert settings.targets["shop"].pool.max_size == 10
    assert settings.issuers[0].algorithms == ("RS256", "ES256", "PS256")
    assert settings.dev_mode is False


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEWAY_* environment variables win over the file (nested with __)."""
    monkeypatch.setenv("GATEWAY_LISTEN__PORT", "9999")
    settings = _load(tmp_path, ISSUER + TARGET + "listen: {port: 8080}\n")
    assert settings.listen.port == 9999


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512"])
def test_symmetric_or_none_algorithms_refused(tmp_path: Path, alg: str) -> None:
    """An issuer may never allow none or HS* (SECURITY rule 2)."""
    text = f"issuers:\n  - {{issuer: 'https://idp.example.com', audience: gw, algorithms: [RS256, {alg}]}}\n"
    with pytest.raises(ConfigError, match="asymmetric"):
        _load(tmp_path, text + TARGET)


def test_password_in_file_refused(tmp_path: Path) -> None:
    """A target with an inline password is refused: secrets come from env or a file."""
    text = ISSUER + "targets:\n  shop: {host: h, database: d, password: hunter2}\n"
    with pytest.raises(ConfigError, match="passwords never sit in the config file") as err:
        _load(tmp_path, text)
    assert "hunter2" not in str(err.value)


def test_dev_mode_refused_off_loopback(tmp_path: Path) -> None:
    """Dev mode (the built-in issuer) is refused unless the gateway listens on loopback."""
    with pytest.raises(ConfigError, match="loopback"):
        _load(tmp_path, TARGET + "dev_mode: true\nlisten: {host: 0.0.0.0}\n")
    assert _load(tmp_path, TARGET + "dev_mode: true\nlisten: {host: 127.0.0.1}\n").dev_mode


def test_no_issuer_outside_dev_mode_refused(tmp_path: Path) -> None:
    """Without dev mode the gateway needs a real issuer."""
    with pytest.raises(ConfigError, match="no issuers"):
        _load(tmp_path, TARGET)


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes are listed together, each with its path."""
    text = ISSUER + "targets:\n  shop: {host: h, database: d, port: 0, pool: {max_size: 0}}\nlimits: {max_rows: -1}\n"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    message = str(err.value)
    assert "targets.shop.port" in message
    assert "targets.shop.pool.max_size" in message
    assert "limits.max_rows" in message


def test_missing_file(tmp_path: Path) -> None:
    """A config path that does not exist is a clear error."""
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("secret", "loads"),
    [("{env: AUDIT_PW}", True), ("{file: /run/secrets/audit}", True), ("{aws_secret: {secret_id: prod/audit}}", False)],
)
def test_audit_store_secret_sources(tmp_path: Path, secret: str, loads: bool) -> None:  # noqa: FBT001 - a parametrized expectation
    """The shared audit store reads its password from env or a file; Secrets Manager is refused when loading."""
    text = (
        ISSUER
        + TARGET
        + "audit:\n  store: mariadb\n  mariadb: {host: 127.0.0.1, database: gw_audit, user: gw_audit, secret: "
        + secret
        + "}\n"
    )
    if loads:
        assert _load(tmp_path, text).audit.mariadb is not None
    else:
        with pytest.raises(ConfigError, match=r"audit\.mariadb\.secret takes env or file"):
            _load(tmp_path, text)


def test_issuer_config_follows_the_settings_rules(tmp_path: Path) -> None:
    """The token validator's issuer config takes its defaults and bounds from the settings: one copy of each rule."""
    entry = _load(tmp_path, ISSUER + TARGET).issuers[0]
    built = IssuerConfig.from_settings(entry, jwks_cooldown=60)
    assert built == IssuerConfig(issuer="https://idp.example.com", audience="gw")
    week = 7 * 86400
    text = f"issuers:\n  - {{issuer: 'https://idp.example.com', audience: gw, max_token_lifetime: {week + 1}}}\n"
    with pytest.raises(ConfigError, match="max_token_lifetime"):
        _load(tmp_path, text + TARGET)
    with pytest.raises(ConfigError, match="max_token_lifetime"):
        IssuerConfig(issuer="https://idp.example.com", audience="gw", max_token_lifetime=week + 1)
    IssuerConfig(issuer="https://idp.example.com", audience="gw", max_token_lifetime=week)
