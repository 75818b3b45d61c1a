"""The engineers' CLI against a running gateway and the real OIDC provider."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import stat
from pathlib import Path

import orjson
import pytest
from clifixture import cli_env, device_login, gateway_cli
from conftest import RunningGateway
from rich.console import Console
from streamfixture import stream_gateway

from gateway.cli.main import main
from gateway.client import tokencache
from gateway.client.render import CSVSink, consume, row_counter

__all__ = ["stream_gateway"]


@pytest.fixture(scope="module")
def logged_in(stream_gateway: RunningGateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config home where ``writer`` has logged in through the device flow."""
    home = tmp_path_factory.mktemp("cli-home")
    result = device_login(stream_gateway, home, "writer")
    assert result.returncode == 0, result.stderr
    return home


def test_device_login_caches_a_private_token_with_refresh(logged_in: Path) -> None:
    """The device flow, approved at the provider, leaves a 0600 token cache with a refresh token."""
    path = tokencache.cache_path({"XDG_CONFIG_HOME": str(logged_in)})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    cached = tokencache.load(path)
    assert cached is not None
    assert cached.client_id == "gateway-cli"
    assert cached.refresh_token


def test_whoami_and_targets_use_the_cached_token(stream_gateway: RunningGateway, logged_in: Path) -> None:
    """Whoami shows the signed-in user from /v1/me; targets lists shop with access and grant."""
    env = cli_env(stream_gateway, logged_in)
    me = gateway_cli(["whoami", "--json"], env)
    assert me.returncode == 0, me.stderr
    assert orjson.loads(me.stdout)["user"] == "writer@example.com"
    targets = gateway_cli(["targets"], env)
    assert targets.returncode == 0, targets.stderr
    assert "shop" in targets.stdout
    assert "write" in targets.stdout


def test_expired_token_is_refreshed_with_the_refresh_token(stream_gateway: RunningGateway, logged_in: Path) -> None:
    """An expired cached access token is replaced through the refresh token, and the call succeeds."""
    path = tokencache.cache_path({"XDG_CONFIG_HOME": str(logged_in)})
    cached = tokencache.load(path)
    assert cached is not None
    tokencache.save(dataclasses.replace(cached, access_token="expired", expires_at=0.0), path)
    result = gateway_cli(["whoami", "--json"], cli_env(stream_gateway, logged_in))
    assert result.returncode == 0, result.stderr
    refreshed = tokencache.load(path)
    assert refreshed is not None
    assert refreshed.access_token != "expired"
    assert not refreshed.expired()


def test_query_formats(stream_gateway: RunningGateway, logged_in: Path) -> None:
    """Query prints a table, JSON, NDJSON and CSV for the same statement, with params bound."""
    env = cli_env(stream_gateway, logged_in)
    sql = "SELECT id, name, price FROM items WHERE id <= ? ORDER BY id"
    table = gateway_cli(["query", "-t", "shop", sql, "-p", "2"], env)
    assert table.returncode == 0, table.stderr
    assert "pen" in table.stdout
    assert "2 rows" in table.stdout
    as_json = orjson.loads(gateway_cli(["query", "-t", "shop", sql, "-p", "2", "--format", "json"], env).stdout)
    assert as_json["rows"][0][:2] == [1, "pen"]
    assert as_json["row_count"] == 2
    assert [c["name"] for c in as_json["columns"]] == ["id", "name", "price"]
    lines = gateway_cli(["query", "-t", "shop", sql, "-p", "2", "--format", "ndjson"], env).stdout.splitlines()
    assert orjson.loads(lines[0])["type"] == "header"
    assert orjson.loads(lines[-1])["row_count"] == 2
    rows = list(
        csv.reader(io.StringIO(gateway_cli(["query", "-t", "shop", sql, "-p", "2", "--format", "csv"], env).stdout))
    )
    assert rows[0] == ["id", "name", "price"]
    assert rows[1][:2] == ["1", "pen"]
    assert len(rows) == 3


def test_large_export_streams_every_row(stream_gateway: RunningGateway, logged_in: Path) -> None:
    """A 100,000-row CSV export through the CLI has every row (streamed, not buffered at the gateway cap)."""
    env = cli_env(stream_gateway, logged_in)
    result = gateway_cli(["query", "-t", "shop", "SELECT seq FROM seq_1_to_100000", "--format", "csv"], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "seq"
    assert len(lines) == 100_001
    assert lines[-1] == "100000"


def test_errors_show_code_detail_and_request_id(stream_gateway: RunningGateway, logged_in: Path) -> None:
    """A refused statement prints the problem code, the detail and the request id, and exits 1."""
    result = gateway_cli(["query", "-t", "shop", "DROP TABLE items"], cli_env(stream_gateway, logged_in))
    assert result.returncode == 1
    assert "forbidden (403)" in result.stderr
    assert re.search(r"request id: \S+", result.stderr)


def test_shell_runs_multiline_statements_and_commands(stream_gateway: RunningGateway, logged_in: Path) -> None:
    """The shell joins lines up to ';', runs backslash commands, times statements and renders errors."""
    script = """\
\\targets
SELECT id, name
  FROM items WHERE id = 1;
\\format csv
SELECT COUNT(*) AS n FROM items;
SELECT * FROM nowhere;
\\q
"""
    result = gateway_cli(["shell", "-t", "shop"], cli_env(stream_gateway, logged_in), stdin=script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "shop" in out  # \targets
    assert "pen" in out  # the two-line statement ran
    assert "n\n" in out  # csv header after \format csv
    assert "round trip" in out
    assert "database_error (422)" in out
    assert "request id:" in out


def test_logout_forgets_the_token_and_commands_then_say_so(stream_gateway: RunningGateway, tmp_path: Path) -> None:
    """After logout there is no cache; a query explains how to log in and exits 2."""
    home = tmp_path / "home"
    env = cli_env(stream_gateway, home)
    token = stream_gateway.idp.token("writer")
    tokencache.save(
        tokencache.CachedToken(stream_gateway.idp.issuer, "gateway-cli", "unused", token, 4e9),
        tokencache.cache_path({"XDG_CONFIG_HOME": str(home)}),
    )
    assert gateway_cli(["whoami"], env).returncode == 0
    assert gateway_cli(["logout"], env).returncode == 0
    result = gateway_cli(["whoami"], env)
    assert result.returncode == 2
    assert "gateway login" in result.stderr


def test_gateway_token_env_and_in_process_main(
    stream_gateway: RunningGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """GATEWAY_TOKEN and --url work without any cache (in-process main, as scripts would)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("GATEWAY_TOKEN", stream_gateway.idp.token("reader"))
    code = main(
        ["query", "--url", stream_gateway.url, "-t", "shop", "SELECT seq FROM seq_1_to_3", "--format", "ndjson"]
    )
    # The gateway runs in this process too: keep only the CLI's NDJSON lines, not its log lines.
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("{", "["))]
    assert code == 0
    assert [orjson.loads(x) for x in out[1:-1]] == [[1], [2], [3]]


def test_csv_output_neutralises_formula_cells() -> None:
    """--format csv writes a database value or column alias starting with = + - @ tab CR with a leading '."""
    out = io.StringIO()
    header = {"type": "header", "columns": [{"name": "=cmd", "type": "VAR_STRING"}, {"name": "n", "type": "LONG"}]}
    lines = [header, ['=HYPERLINK("http://x")', -3], ["@SUM(A1)", 4], ["\t=1", 5], ["plain", None]]
    consume([*lines, {"type": "trailer", "row_count": 4}], CSVSink(out))
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows == [
        ["'=cmd", "n"],
        ['\'=HYPERLINK("http://x")', "-3"],
        ["'@SUM(A1)", "4"],
        ["'\t=1", "5"],
        ["plain", ""],
    ]


def test_row_counter_shows_on_a_terminal_only() -> None:
    """While a result streams, a terminal shows a live row count (rich); elsewhere there is no counter at all."""
    drawn_on = io.StringIO()
    with row_counter(Console(file=drawn_on, force_terminal=True, width=80)) as progress:
        assert progress is not None
        progress(20_000)
    assert "20,000 rows" in drawn_on.getvalue()
    with row_counter(Console(file=io.StringIO(), force_terminal=False)) as progress:
        assert progress is None
