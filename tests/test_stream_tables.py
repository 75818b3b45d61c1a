"""CSV and TSV streams (``Accept: text/csv`` / ``text/tab-separated-values``) and ``gateway query --format csv|tsv``.

Against the real MariaDB and a running gateway: the bodies, their formula
guard and escaping (TSV checked byte for byte against ``mariadb --batch``),
a stream cut short by the row cap or an error (the body ends without its last
chunk, so the client sees it broken, and the outcome record says why), a
disconnect, and the encoder on every value type the driver returns.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import shutil
import socket
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from clifixture import cli_env, gateway_cli
from conftest import DB_HOST, DB_PORT, RunningGateway
from streamfixture import audit_records, reader_pool, stream_gateway

from gateway.csvcells import original_cell, safe_cell, tsv_cell
from gateway.db import streaming
from gateway.db.encoding import dump_row_line, text_of
from gateway.db.tabular import CSV, TSV, TableEncoder

__all__ = ["stream_gateway"]

WAIT = 15.0  # seconds a test waits for the gateway to record an outcome, at most
# Strings that need the CSV formula guard, the TSV escapes, or CSV quoting, and a plain negative number.
AWKWARD = (
    "SELECT seq AS n, CONCAT('=HYPERLINK(', seq, ')') AS f, CONCAT('a\\tb\\nc\\\\d', seq) AS esc, "
    "IF(seq % 2 = 0, NULL, 'x,\"y\"') AS q, -seq AS neg FROM seq_1_to_5000 WHERE seq <= 3000 ORDER BY seq"
)


def post(gateway: RunningGateway, user: str, sql: str, media: str, **body: object) -> httpx.Response:
    """POST a streamed query whose body is read whole."""
    with gateway.client(user) as http:
        return http.post("/v1/query", json={"target": "shop", "sql": sql, **body}, headers={"Accept": media})


def read_until_cut(gateway: RunningGateway, user: str, sql: str, media: str) -> tuple[str, bytes]:
    """Stream ``sql``; the body must break (no last chunk): its request id and the bytes before the cut."""
    received = bytearray()
    with (
        gateway.client(user) as http,
        http.stream("POST", "/v1/query", json={"target": "shop", "sql": sql}, headers={"Accept": media}) as reply,
    ):
        assert reply.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            _drain(reply, received)
        return reply.headers["x-request-id"], bytes(received)


def _drain(reply: httpx.Response, into: bytearray) -> None:
    for chunk in reply.iter_bytes():
        into += chunk


def outcome_of(gateway: RunningGateway, request_id: str) -> dict[str, object]:
    """The request's outcome record, once the gateway has written it."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        records = audit_records(gateway, request_id)
        if records and records[-1]["event"] == "outcome":
            return records[-1]
        time.sleep(0.05)
    raise AssertionError(f"no outcome record for {request_id}")


def test_csv_stream_has_every_row_formula_safe_and_is_recorded(stream_gateway: RunningGateway) -> None:
    """3,000 rows as RFC 4180 CSV: a header row, formula cells guarded, NULL empty, quoting kept; outcome ok."""
    reply = post(stream_gateway, "writer", AWKWARD, CSV)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert rows[0] == ["n", "f", "esc", "q", "neg"]
    assert len(rows) == 3001
    assert rows[1] == ["1", "'=HYPERLINK(1)", "a\tb\nc\\d1", 'x,"y"', "-1"]
    assert rows[2][3] == ""  # NULL
    assert [original_cell(cell) for cell in rows[3000][1:3]] == ["=HYPERLINK(3000)", "a\tb\nc\\d3000"]
    outcome = outcome_of(stream_gateway, reply.headers["x-request-id"])
    assert (outcome["code"], outcome["rows"], outcome["truncated"]) == ("ok", 3000, False)


def _mariadb_batch(db: str, sql: str) -> bytes:
    client = shutil.which("mariadb") or shutil.which("mysql")
    assert client is not None, "the tests need the mariadb command-line client"
    argv = [client, "-h", DB_HOST, "-P", str(DB_PORT), "-u", "root", "--batch", "--quick", db, "-e", sql]
    return subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout


def test_tsv_stream_is_what_mariadb_batch_writes(stream_gateway: RunningGateway) -> None:
    """For numbers, DECIMAL, text with tabs, newlines and backslashes, and NULL: the same bytes as the client."""
    extra = "seq / 7 AS ratio, CONVERT(CONCAT(seq, CHAR(0)) USING utf8mb4) AS nul"
    sql = AWKWARD.replace("-seq AS neg", f"-seq AS neg, {extra}")
    reply = post(stream_gateway, "writer", sql, TSV)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/tab-separated-values; charset=utf-8"
    expected = _mariadb_batch(stream_gateway.db.name, sql)
    assert expected.count(b"\n") == 3001
    assert reply.content == expected


def test_row_cap_cuts_the_body_and_the_outcome_says_truncated(stream_gateway: RunningGateway) -> None:
    """The analysts' 500-row cap: 500 rows arrive, then the body breaks instead of ending as if complete."""
    request_id, received = read_until_cut(stream_gateway, "reader", "SELECT seq FROM seq_1_to_5000", CSV)
    assert received.decode().splitlines() == ["seq", *(str(n) for n in range(1, 501))]
    outcome = outcome_of(stream_gateway, request_id)
    assert (outcome["code"], outcome["rows"], outcome["truncated"]) == ("ok", 500, True)


def test_an_error_after_the_first_rows_cuts_the_body(stream_gateway: RunningGateway) -> None:
    """Rows flow, then the statement passes the grant's 3 s timeout: the body breaks after the rows sent."""
    # The first 4,999 rows come at once; each later row scans 100,000 rows first, so the 3 s timeout hits.
    sql = (
        "SELECT a.seq, 0 AS s FROM seq_1_to_100000 a WHERE a.seq < 5000 "
        "OR (SELECT COUNT(*) FROM seq_1_to_100000 b WHERE b.seq + a.seq = 0) > 0"
    )
    request_id, received = read_until_cut(stream_gateway, "writer", sql, TSV)
    lines = received.decode().splitlines()
    assert lines[0] == "seq\ts"
    assert len(lines) > 1
    outcome = outcome_of(stream_gateway, request_id)
    assert outcome["code"] == "statement_timeout"
    assert outcome["rows"] == len(lines) - 1 < 5000
    assert reader_pool(stream_gateway).in_use == 0


def test_disconnect_mid_csv_frees_the_connection_and_is_recorded(stream_gateway: RunningGateway) -> None:
    """A client that hangs up mid-CSV: the pool slot comes back and the outcome is client_disconnected."""
    pool = reader_pool(stream_gateway)
    sql = "SELECT a.seq, b.seq FROM seq_1_to_2000 a JOIN seq_1_to_1000 b"  # 2,000,000 rows
    with (
        stream_gateway.client("writer") as http,
        http.stream("POST", "/v1/query", json={"target": "shop", "sql": sql}, headers={"Accept": CSV}) as reply,
    ):
        assert reply.status_code == 200
        request_id = reply.headers["x-request-id"]
        lines = reply.iter_lines()
        assert next(lines) == "seq,seq"
        for _ in range(1000):
            next(lines)
    outcome = outcome_of(stream_gateway, request_id)
    assert outcome["code"] == "client_disconnected"
    assert 1000 <= int(str(outcome["rows"])) < 2_000_000
    deadline = time.monotonic() + WAIT
    while pool.in_use and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.in_use == 0


def test_refusals_come_before_any_table(stream_gateway: RunningGateway) -> None:
    """A refused CSV query gets the ordinary problem+json reply, from the policy (403 forbidden)."""
    reply = post(stream_gateway, "reader", "SELECT * FROM payment_cards", CSV)
    assert reply.status_code == 403
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == "forbidden"


def test_http_1_0_is_refused_for_tables(stream_gateway: RunningGateway) -> None:
    """Over HTTP/1.0 a cut body would look complete: the statement route refuses (422 invalid_request)."""
    body = b'{"target": "shop", "sql": "SELECT 1"}'
    token = stream_gateway.idp.token("writer")
    host, port = stream_gateway.url.removeprefix("http://").split(":")
    request = (
        f"POST /v1/query HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nAccept: {TSV}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=WAIT) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, text = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"422"
    assert b'"code":"invalid_request"' in text
    assert b"HTTP/1.1" in text


def test_cli_formats_stream_the_gateways_tables(stream_gateway: RunningGateway, tmp_path: Path) -> None:
    """``gateway query --format tsv|csv`` writes the gateway's own body; a cut one exits 1 as stream_cut."""
    env = cli_env(stream_gateway, tmp_path, GATEWAY_TOKEN=stream_gateway.idp.token("writer"))
    sql = "SELECT seq, CONCAT('=', seq) AS f FROM seq_1_to_50000 WHERE seq <= 20000"
    tsv = gateway_cli(["query", "-t", "shop", sql, "--format", "tsv"], env)
    assert tsv.returncode == 0, tsv.stderr
    assert tsv.stdout.encode() == _mariadb_batch(stream_gateway.db.name, sql)
    as_csv = gateway_cli(["query", "-t", "shop", sql, "--format", "csv"], env)
    assert as_csv.returncode == 0, as_csv.stderr
    assert as_csv.stdout.splitlines()[:2] == ["seq,f", "1,'=1"]
    cut = gateway_cli(["query", "-t", "shop", sql, "--format", "csv", "--max-rows", "10"], env)
    assert cut.returncode == 1
    assert "stream_cut" in cut.stderr
    assert len(cut.stdout.splitlines()) == 11


def test_encoder_writes_every_driver_type_as_its_json_text() -> None:
    """DECIMAL, dates, TIME, binary, SET, floats, NULL and mixed columns, in CSV and TSV."""
    when = dt.datetime(2024, 1, 2, 3, 4, 5)  # noqa: DTZ001 - MariaDB's DATETIME comes naive from the driver
    rows = [
        (1, Decimal("-1.50"), when, dt.timedelta(hours=-1), b"\x00\xff", {"b", "a"}),
        (None, None, dt.date(2024, 1, 2), dt.timedelta(seconds=1.5), None, None),
        (2.5, Decimal(7), None, None, bytearray(b"x"), "=1"),
    ]
    csv_text = TableEncoder(CSV).rows(rows).decode()
    assert list(csv.reader(io.StringIO(csv_text))) == [
        ["1", "-1.50", "2024-01-02T03:04:05", "'-01:00:00", "AP8=", "a,b"],
        ["", "", "2024-01-02", "00:00:01.500000", "", ""],
        ["2.5", "7", "", "", "eA==", "'=1"],
    ]
    tsv_text = TableEncoder(TSV).rows(rows).decode()
    assert tsv_text.splitlines() == [
        "1\t-1.50\t2024-01-02T03:04:05\t-01:00:00\tAP8=\ta,b",
        "NULL\tNULL\t2024-01-02\t00:00:01.500000\tNULL\tNULL",
        "2.5\t7\tNULL\tNULL\teA==\t=1",
    ]
    assert TableEncoder(TSV).header(["a\tb", "c"]) == b"a\\tb\tc\n"
    assert TableEncoder(CSV).header(["@x", "-y"]) == b"'@x,'-y\n"
    assert TableEncoder(CSV).header([]) == b""


def _writer_csv(rows: list[tuple[object, ...]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(
        [["" if v is None else safe_cell(v if isinstance(v, str) else text_of(v)) for v in r] for r in rows]
    )
    return out.getvalue().encode()


def _batch_tsv(rows: list[tuple[object, ...]]) -> bytes:
    return b"".join(
        (
            "\t".join("NULL" if v is None else tsv_cell(v if isinstance(v, str) else text_of(v)) for v in r) + "\n"
        ).encode()
        for r in rows
    )


def test_encoder_fast_paths_write_what_the_cell_rules_write() -> None:
    """Random batches of awkward text, numbers and NULLs: the column-at-a-time encoders equal the per-cell rules."""
    rng = random.Random(13)  # noqa: S311 - seeded test data, not a secret
    alphabet = ["a", ",", '"', "\n", "\r", "\t", "\\", "\0", "=", "-", "+", "@", "'", "1", " ", "é"]

    def cell(kind: int) -> object:
        if rng.random() < 0.2:
            return None
        if kind == 0:
            return rng.choice([rng.randint(-5, 5), Decimal(rng.randint(-500, 500)) / 100, rng.random()])
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))

    for _ in range(300):
        kinds = [rng.randint(0, 1) for _ in range(rng.randint(1, 4))]
        rows = [tuple(cell(kind) for kind in kinds) for _ in range(rng.randint(1, 6))]
        assert TableEncoder(CSV).rows(rows) == _writer_csv(rows), rows
        assert TableEncoder(TSV).rows(rows) == _batch_tsv(rows), rows


def test_ndjson_batches_equal_one_line_per_row() -> None:
    """The NDJSON batch (one dump split at row boundaries) equals one dump per row, even when text holds ``],[``."""
    rng = random.Random(7)  # noqa: S311 - seeded test data, not a secret
    alphabet = ["[", "]", ",", '"', "\\", "a", "\n"]
    for _ in range(500):
        width = rng.randint(1, 3)
        rows = [
            tuple("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5))) for _ in range(width))
            for _ in range(rng.randint(1, 5))
        ]
        assert streaming.ndjson_lines(rows) == b"".join(dump_row_line(row) for row in rows), rows
