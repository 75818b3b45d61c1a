"""One client: every command takes its URL and token by one rule and renders a failure one way.

The token rule (``--token``, then ``GATEWAY_TOKEN``, then the ``gateway login``
cache, refreshed when expired) is checked offline with an injected clock and
refresh, then end to end: an admin logs in through the device flow and
``gateway grant`` works from that cache alone, and from an expired one.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import orjson
import pytest
from clifixture import cli_env, device_login, gateway_cli
from conftest import RunningGateway, free_port
from streamfixture import stream_gateway

from gateway.cli.main import main
from gateway.client import tokencache
from gateway.client.errors import EXIT_REFUSED, EXIT_USAGE, UsageError
from gateway.client.session import Token, access_token, gateway_url

__all__ = ["stream_gateway"]

NOW = 1_800_000_000.0


def cached(access: str = "from-cache", expires_at: float = NOW + 3600) -> tokencache.CachedToken:
    """A cache entry as `gateway login` leaves it."""
    return tokencache.CachedToken("https://idp.test", "gateway-cli", "https://idp.test/token", access, expires_at, "rt")


def test_token_precedence_is_flag_then_env_then_cache(tmp_path: Path) -> None:
    """--token wins over GATEWAY_TOKEN, which wins over the cache; each token says where it came from."""
    path = tokencache.save(cached(), tmp_path / "token.json")
    env = {"GATEWAY_TOKEN": "from-env"}
    assert access_token("from-flag", env, cache=path) == Token("from-flag", "--token")
    assert access_token(None, env, cache=path) == Token("from-env", "GATEWAY_TOKEN")
    assert access_token(None, {}, cache=path, now=lambda: NOW) == Token("from-cache", f"the login cache {path}")


def test_an_expired_cached_token_is_refreshed_and_cached_again(tmp_path: Path) -> None:
    """An expired cached token goes through the refresh; the new one is used and replaces it in the cache."""
    path = tokencache.save(cached("old", expires_at=NOW - 1), tmp_path / "token.json")
    seen: list[str] = []

    def refresh(old: tokencache.CachedToken) -> tokencache.CachedToken:
        seen.append(old.access_token)
        return dataclasses.replace(old, access_token="new", expires_at=NOW + 300)

    assert access_token(None, {}, cache=path, refresh=refresh, now=lambda: NOW).value == "new"
    assert seen == ["old"]
    again = tokencache.load(path)
    assert again is not None
    assert again.access_token == "new"
    assert access_token(None, {}, cache=path, refresh=refresh, now=lambda: NOW).value == "new"
    assert seen == ["old"]  # still fresh: no second refresh


def test_no_token_or_url_is_a_usage_error(tmp_path: Path) -> None:
    """Without any token source, or any URL, the command stops before the network with exit 2."""
    with pytest.raises(UsageError, match=r"no token: run `gateway login") as caught:
        access_token(None, {}, cache=tmp_path / "none.json")
    assert caught.value.exit_code == EXIT_USAGE
    assert gateway_url("http://flag", {"GATEWAY_URL": "http://env"}) == "http://flag"
    assert gateway_url(None, {"GATEWAY_URL": "http://env"}) == "http://env"
    with pytest.raises(UsageError, match="no gateway URL"):
        gateway_url(None, {})


@pytest.fixture(scope="module")
def admin_home(stream_gateway: RunningGateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config home where ``admin`` logged in through the device flow (and nothing else)."""
    home = tmp_path_factory.mktemp("admin-home")
    result = device_login(stream_gateway, home, "admin")
    assert result.returncode == 0, result.stderr
    return home


def grant_argv(gateway: RunningGateway, name: str) -> list[str]:
    """`gateway grant NAME ...` for a user who does not exist (the grant changes nobody's access)."""
    db_user = gateway.db.accounts["reader"].user
    return ["grant", name, "--subject", "user:cli-cache@example.com", "-t", "shop", "--access", "read",
            "--db-user", db_user, "--expires", "2099-01-01T00:00:00Z"]  # fmt: skip


def managed(gateway: RunningGateway) -> str:
    """The API-edited policy file's text."""
    path = gateway.settings.policies_dir / "managed.yaml"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_grant_uses_the_token_gateway_login_cached(stream_gateway: RunningGateway, admin_home: Path) -> None:
    """`gateway grant` with no token but the login cache adds the grant; GATEWAY_TOKEN and --token override it."""
    env = cli_env(stream_gateway, admin_home)
    added = gateway_cli(grant_argv(stream_gateway, "cli-cached"), env)
    assert added.returncode == 0, added.stderr
    assert orjson.loads(added.stdout)["action"] == "grant_add"
    assert "cli-cached" in managed(stream_gateway)
    # A reader's token in the environment wins over the admin's cache: refused.
    as_reader = cli_env(stream_gateway, admin_home, GATEWAY_TOKEN=stream_gateway.idp.token("reader"))
    refused = gateway_cli(["grant", "--delete", "cli-cached"], as_reader)
    assert refused.returncode == EXIT_REFUSED
    assert refused.stderr.startswith("error: forbidden (403): ")
    # --token wins over the environment.
    deleted = gateway_cli(["grant", "--delete", "cli-cached", "--token", stream_gateway.idp.token("admin")], as_reader)
    assert deleted.returncode == 0, deleted.stderr
    assert orjson.loads(deleted.stdout)["action"] == "grant_delete"
    assert "cli-cached" not in managed(stream_gateway)


def test_grant_refreshes_an_expired_cached_token(stream_gateway: RunningGateway, admin_home: Path) -> None:
    """An expired cached token is refreshed at the provider before `gateway grant`, which then succeeds."""
    path = tokencache.cache_path({"XDG_CONFIG_HOME": str(admin_home)})
    login = tokencache.load(path)
    assert login is not None
    tokencache.save(dataclasses.replace(login, access_token="expired", expires_at=0.0), path)
    env = cli_env(stream_gateway, admin_home)
    added = gateway_cli(grant_argv(stream_gateway, "cli-refreshed"), env)
    assert added.returncode == 0, added.stderr
    refreshed = tokencache.load(path)
    assert refreshed is not None
    assert refreshed.access_token not in {"expired", login.access_token}
    assert not refreshed.expired()
    deleted = gateway_cli(["grant", "--delete", "cli-refreshed"], env)
    assert deleted.returncode == 0, deleted.stderr
    assert "cli-refreshed" not in managed(stream_gateway)


# Every client command that talks to the gateway, with arguments it would accept.
COMMANDS = [
    ["whoami"],
    ["targets"],
    ["query", "-t", "shop", "SELECT 1"],
    ["shell", "-t", "shop"],
    ["grant", "g", "--subject", "user:x@example.com", "-t", "shop", "--access", "read", "--db-user", "u"],
    ["grant", "--delete", "g"],
    ["revoke", "user:x@example.com"],
    ["request-access", "-t", "shop", "--for", "1h", "--reason", "r"],
    ["requests"],
    ["approve", "r-1"],
    ["deny", "r-1", "--reason", "r"],
]
CLI_LINE = re.compile(r"^(error: |request id: |the token came from )")


def run_all(argv_tail: list[str], capsys: pytest.CaptureFixture[str]) -> set[tuple[int, str]]:
    """Run every command in-process; return the distinct (exit status, error text) pairs, request ids masked."""
    seen = set()
    for command in COMMANDS:
        code = main([*command, *argv_tail])
        # The gateway runs in this process too: keep the CLI's own lines, not the server's log lines.
        lines = [line for line in capsys.readouterr().err.splitlines() if CLI_LINE.match(line)]
        seen.add((code, re.sub(r"request id: \S+", "request id: ID", "\n".join(lines))))
    return seen


@pytest.fixture
def no_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token in the environment and an empty config home."""
    monkeypatch.delenv("GATEWAY_TOKEN", raising=False)
    monkeypatch.delenv("GATEWAY_URL", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))


def test_every_command_renders_a_refused_token_alike(
    stream_gateway: RunningGateway, no_login: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token the gateway refuses: every command prints the problem's code, detail, request id and source; exit 1."""
    seen = run_all(["--url", stream_gateway.url, "--token", "not-a-token"], capsys)
    assert len(seen) == 1, seen
    code, text = seen.pop()
    assert code == EXIT_REFUSED
    first, request_id, source = text.splitlines()
    assert first.startswith("error: unauthenticated (401): ")
    assert request_id == "request id: ID (quote it to an admin)"
    assert source == "the token came from --token"


def test_every_command_renders_an_unreachable_gateway_alike(no_login: None, capsys: pytest.CaptureFixture[str]) -> None:
    """No gateway listening: every command prints the same gateway_unreachable problem and exits 1."""
    url = f"http://127.0.0.1:{free_port()}"
    seen = run_all(["--url", url, "--token", "t"], capsys)
    assert len(seen) == 1, seen
    code, text = seen.pop()
    assert code == EXIT_REFUSED
    assert text.startswith(f"error: gateway_unreachable: cannot reach the gateway at {url}: ")


def test_every_command_without_a_token_says_how_to_get_one(
    stream_gateway: RunningGateway, no_login: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not logged in and no token: every command names the three sources and exits 2 before any request."""
    seen = run_all(["--url", stream_gateway.url], capsys)
    assert seen == {
        (EXIT_USAGE, "error: no token: run `gateway login --issuer URL`, pass --token or set GATEWAY_TOKEN")
    }
