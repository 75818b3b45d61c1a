"""`gateway grant/revoke/request-access/requests/approve/deny` against a running gateway."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from adminfixture import Replicas, replicas
from conftest import free_port

__all__ = ["replicas"]

REPO = Path(__file__).resolve().parent.parent


def _run(*argv: str, token: str | None, home: Path | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_TOKEN"}
    if token:
        env["GATEWAY_TOKEN"] = token
    if home is not None:  # a config home without a login cache
        env["XDG_CONFIG_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    return done.returncode, done.stdout, done.stderr


def _cli(replicas: Replicas, capsys: pytest.CaptureFixture[str], user: str, *argv: str) -> tuple[int, str, str]:
    """Run `gateway ARGV` as ``user`` (token from env GATEWAY_TOKEN) against replica 1."""
    return _run(*argv, "--url", replicas.first.url, token=replicas.first.idp.token(user))


def test_grant_and_delete_from_the_cli(replicas: Replicas, capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway grant` adds a grant (the printed revision is the new ETag); `--delete` removes it."""
    db_user = replicas.first.db.accounts["reader"].user
    code, out, err = _cli(
        replicas,
        capsys,
        "admin",
        "grant",
        "cli-read",
        "--subject",
        "user:nobody@example.com",
        "-t",
        "shop",
        "--access",
        "read",
        "--db-user",
        db_user,
        "--expires",
        "2099-01-01T00:00:00Z",
    )
    assert code == 0, err
    assert json.loads(out)["action"] == "grant_add"
    assert "cli-read" in (replicas.first.settings.policies_dir / "managed.yaml").read_text(encoding="utf-8")
    code, out, err = _cli(replicas, capsys, "admin", "grant", "--delete", "cli-read")
    assert code == 0, err
    assert json.loads(out)["action"] == "grant_delete"


def test_revoke_and_lift_from_the_cli(replicas: Replicas, capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway revoke SUBJECT -t shop` then `--lift`; a non-admin gets a clear problem+json error."""
    code, _, err = _cli(replicas, capsys, "reader", "revoke", "user:nobody@example.com")
    assert code == 1
    assert err.startswith("error: forbidden (403): ")
    assert re.search(r"^request id: \S+", err, re.MULTILINE)
    code, out, err = _cli(replicas, capsys, "admin", "revoke", "user:nobody@example.com", "-t", "shop", "--reason", "x")
    assert code == 0, err
    assert json.loads(out)["action"] == "revocation_add"
    code, out, err = _cli(replicas, capsys, "admin", "revoke", "--lift", "user:nobody@example.com", "-t", "shop")
    assert code == 0, err
    assert json.loads(out)["action"] == "revocation_lift"


def test_access_request_flow_from_the_cli(replicas: Replicas, capsys: pytest.CaptureFixture[str]) -> None:
    """request-access, requests, deny (with reason) and approve, as the engineer and the admin run them."""
    code, out, err = _cli(
        replicas, capsys, "nobody", "request-access", "-t", "shop", "--access", "read", "--for", "2h", "--reason", "why"
    )
    assert code == 0, err
    first = json.loads(out)["id"]
    code, out, err = _cli(replicas, capsys, "nobody", "request-access", "-t", "shop", "--for", "1h", "--reason", "b")
    second = json.loads(out)["id"]
    code, out, _ = _cli(replicas, capsys, "admin", "requests", "--state", "pending")
    assert code == 0
    assert first in out
    assert "nobody@example.com  shop:read  for 2h  why" in out
    code, out, err = _cli(replicas, capsys, "admin", "deny", first, "--reason", "not now")
    assert code == 0, err
    assert json.loads(out)["request"]["state"] == "denied"
    code, out, err = _cli(replicas, capsys, "admin", "approve", second)
    assert code == 0, err
    assert json.loads(out)["request"]["state"] == "approved"
    code, _, err = _cli(replicas, capsys, "admin", "approve", second)
    assert code == 1
    assert "conflict" in err
    code, _, err = _cli(replicas, capsys, "admin", "grant", "--delete", second)
    assert code == 0, err


def test_cli_without_token_or_server(replicas: Replicas, tmp_path: Path) -> None:
    """No token (and no login cache): a clear message, exit 2; no gateway listening: a clear message, exit 1."""
    code, _, err = _run("requests", "--url", replicas.first.url, token=None, home=tmp_path)
    assert (code, "no token" in err) == (2, True)
    code, _, err = _run("requests", "--url", f"http://127.0.0.1:{free_port()}", "--token", "t", token=None)
    assert (code, "cannot reach the gateway" in err) == (1, True)
