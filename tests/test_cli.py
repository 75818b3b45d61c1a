"""The `gateway` command as a newcomer and an operator use it, in real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import DB_HOST, DB_PORT, ScratchDatabase, free_port, write_policies

REPO = Path(__file__).resolve().parent.parent
GATEWAY = [sys.executable, "-m", "gateway.cli.main"]


def gateway_cmd(*args: str, env: dict[str, str] | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `gateway ARGS` and capture its output (bounded in time)."""
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=60, env=env, cwd=REPO, check=check)


def test_policy_check_example_policies() -> None:
    """`gateway policy check policies/` passes on the shipped examples."""
    result = gateway_cmd("policy", "check", "policies")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


def test_policy_check_reports_file_and_line(tmp_path: Path) -> None:
    """A broken policy file fails the check with file:line: reason lines."""
    (tmp_path / "bad.yaml").write_text("version: 1\ngrants:\n  - name: x\n    access: admin\n", encoding="utf-8")
    result = gateway_cmd("policy", "check", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'bad.yaml'}:4:" in result.stderr


@pytest.fixture
def dev_config(tmp_path: Path, test_db: ScratchDatabase) -> tuple[Path, dict[str, str], int]:
    """A dev-mode config on the scratch database, as `gateway demo seed` writes for `shop`."""
    port = free_port()
    write_policies(tmp_path / "policies", test_db)
    env = dict(os.environ)
    secrets = []
    for level, account in test_db.accounts.items():
        env[f"GWDEV_{level.upper()}"] = account.password
        secrets.append(f"      {account.user}: {{env: GWDEV_{level.upper()}}}")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "\n".join(
            [
                "dev_mode: true",
                f"listen: {{host: 127.0.0.1, port: {port}}}",
                f"policies_dir: {tmp_path / 'policies'}",
                "targets:",
                "  shop:",
                f"    host: {DB_HOST}",
                f"    port: {DB_PORT}",
                f"    database: {test_db.name}",
                "    secrets:",
                *secrets,
                f"audit: {{path: {tmp_path / 'audit.db'}}}",
                f"dev: {{key_file: {tmp_path / 'dev-key.json'}}}",
                f"admin: {{state_dir: {tmp_path / 'state'}}}",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return config, env, port


def test_dev_mode_newcomer_path(dev_config: tuple[Path, dict[str, str], int]) -> None:
    """Serve + dev-token + query: a dev token from the CLI gets rows; shutdown is clean; audit verifies."""
    config, env, port = dev_config
    server = subprocess.Popen(
        [*GATEWAY, "serve", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)
        minted = gateway_cmd("dev-token", "reader@example.com", "--group", "analysts", "--config", str(config), env=env)
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        reply = httpx.post(
            f"{base}/v1/query",
            json={"target": "shop", "sql": "SELECT name FROM items WHERE id = ?", "params": [1]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["rows"] == [["pen"]]
        discovery = httpx.get(f"{base}/dev-issuer/.well-known/openid-configuration").json()
        assert discovery["issuer"] == f"{base}/dev-issuer"
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too.
    assert server.returncode in {0, -signal.SIGTERM}
    assert "gateway_stopped" in stderr
    verified = gateway_cmd("audit", "verify", "--config", str(config), env=env)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("ok:")


def test_dev_token_refused_outside_dev_mode(tmp_path: Path) -> None:
    """dev-token does nothing unless the config is in dev mode."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "issuers: [{issuer: 'https://idp.example.com', audience: gw}]\ntargets: {shop: {host: h, database: d}}\n",
        encoding="utf-8",
    )
    result = gateway_cmd("dev-token", "a@example.com", "--config", str(config))
    assert result.returncode == 2
    assert "dev_mode" in result.stderr


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    """An invalid config stops `serve` with exit code 2 and the problem, no traceback."""
    config = tmp_path / "gateway.yaml"
    config.write_text("dev_mode: true\nlisten: {host: 0.0.0.0}\ntargets: {shop: {host: h, database: d}}\n")
    result = gateway_cmd("serve", "--config", str(config))
    assert result.returncode == 2
    assert "loopback" in result.stderr
    assert "Traceback" not in result.stderr
