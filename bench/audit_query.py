"""How fast the shared audit store answers filters over a big log (`make bench-audit`).

Generates an N-record log (default 10,000,000) in a scratch MariaDB database
with the gateway's own schema (``gateway/audit/schema.py``), then times
typical auditor filters through the real store code
(``MariaDBAuditStore.query``, the path behind ``GET /v1/audit``), and drops
the scratch database and its account.

Rows come from MariaDB's sequence engine (``INSERT ... SELECT FROM
seq_1_to_N``) in chunks, with the secondary indexes built after the load
(as a bulk import would); chain hashes are placeholders (only timings
matter here). Data: 2,000 users, 8 targets, ~30 days, ~7 % denials, a few
rare codes, statements over 50 tables.

    python bench/audit_query.py [--rows N] [--repeat K] [--keep]

Environment: ``GATEWAY_BENCH_DB_HOST``/``_PORT``, root as
``GATEWAY_BENCH_DB_ROOT_USER``/``_PASSWORD`` (defaults 127.0.0.1:3306, root,
empty), the same server the tests use.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pymysql

from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.query import AuditFilter
from gateway.audit.schema import INDEXES, LOG_TABLE, migrate
from gateway.settings import AuditDatabaseSettings, SecretSource

HOST = os.environ.get("GATEWAY_BENCH_DB_HOST", "127.0.0.1")
PORT = int(os.environ.get("GATEWAY_BENCH_DB_PORT", "3306"))
CHUNK = 1_000_000
START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=30)

# One INSERT ... SELECT per chunk; {off} is the chunk's first seq - 1, {step} microseconds per record.
_LOAD = """
INSERT INTO {table} (seq, time, request_id, event, user, target, decision, code, statement, record, prev_hash, hash)
SELECT g.n, g.t, g.rid, g.ev, g.usr, g.tgt, g.dcs, g.code, g.stmt,
       CONCAT('{{"code":"', g.code, '","decision":"', g.dcs, '","event":"', g.ev, '","request_id":"', g.rid,
              '","seq":', g.n, ',"statement":"', g.stmt, '","target":"', g.tgt, '","time":"',
              DATE_FORMAT(g.t, '%Y-%m-%dT%H:%i:%s.%fZ'), '","user":"', g.usr, '","user_verified":true}}'),
       LPAD(HEX(g.n - 1), 64, '0'), LPAD(HEX(g.n), 64, '0')
FROM (
  SELECT s.seq + {off} AS n,
         TIMESTAMPADD(MICROSECOND, (s.seq + {off}) * {step}, '2026-01-01 00:00:00') AS t,
         CONCAT('req-', s.seq + {off}) AS rid,
         ELT(1 + ((s.seq + {off}) % 20 > 0) + ((s.seq + {off}) % 20 > 10), 'auth', 'decision', 'outcome') AS ev,
         CONCAT('user', ((s.seq + {off}) * 7919) % 2000, '@example.com') AS usr,
         ELT(1 + ((s.seq + {off}) DIV 3) % 8,
             'shop', 'billing', 'crm', 'hr', 'analytics', 'search', 'ledger', 'inventory') AS tgt,
         IF((s.seq + {off}) % 14 = 0, 'deny', 'allow') AS dcs,
         CASE WHEN (s.seq + {off}) % 14 <> 0 THEN 'ok'
              WHEN (s.seq + {off}) % 1000 = 0 THEN 'revoked'
              WHEN (s.seq + {off}) % 3 = 0 THEN 'statement_rejected'
              ELSE 'forbidden' END AS code,
         CONCAT('SELECT id, name, price FROM shop.table', (s.seq + {off}) % 50,
                ' WHERE id = ', (s.seq + {off}) % 100000) AS stmt
  FROM seq_1_to_{chunk} s
) g
"""


def _root() -> Any:  # noqa: ANN401 - a PyMySQL connection
    return pymysql.connect(
        host=HOST,
        port=PORT,
        user=os.environ.get("GATEWAY_BENCH_DB_ROOT_USER", "root"),
        password=os.environ.get("GATEWAY_BENCH_DB_ROOT_PASSWORD", ""),
        autocommit=True,
        read_timeout=3600,
    )


def _timed(label: str, func: Any, *args: Any) -> Any:  # noqa: ANN401 - timing any callable
    started = time.perf_counter()
    result = func(*args)
    print(f"  {label}: {time.perf_counter() - started:.1f} s", flush=True)
    return result


def generate(cur: Any, database: str, rows: int) -> None:  # noqa: ANN401 - a PyMySQL cursor (untyped)
    """Create the gateway's schema, bulk-load ``rows`` records, then build the filter indexes."""
    cur.execute(f"USE `{database}`")
    migrate(cur, database)
    for name, _ in INDEXES:
        cur.execute(f"DROP INDEX {name} ON {LOG_TABLE}")
    step = int(SPAN.total_seconds() * 1_000_000 // rows)
    started = time.perf_counter()
    for off in range(0, rows, CHUNK):
        chunk = min(CHUNK, rows - off)
        cur.execute(_LOAD.format(table=LOG_TABLE, off=off, step=step, chunk=chunk))
        done = off + chunk
        rate = done / (time.perf_counter() - started)
        print(f"\r  loaded {done:,}/{rows:,} rows ({rate:,.0f} rows/s)", end="", flush=True)
    print(f"\n  load: {time.perf_counter() - started:.1f} s", flush=True)
    for name, columns in INDEXES:
        _timed(f"index {name}", cur.execute, f"CREATE INDEX {name} ON {LOG_TABLE} ({columns})")
    _timed("analyze", cur.execute, f"ANALYZE TABLE {LOG_TABLE}")
    cur.fetchall()


def cases(rows: int) -> list[tuple[str, AuditFilter, int]]:
    """(name, filter, pages) for the typical auditor questions."""
    mid = START + SPAN / 2
    day = timedelta(days=1)
    return [
        ("newest page, no filter", AuditFilter(), 1),
        ("user", AuditFilter(user="user42@example.com"), 1),
        ("user, 10 pages deep", AuditFilter(user="user42@example.com"), 10),
        ("user + one day", AuditFilter(user="user42@example.com", since=mid, until=mid + day), 1),
        ("target + decision=deny", AuditFilter(target="billing", decision="deny"), 1),
        ("user + decision=deny", AuditFilter(user="user42@example.com", decision="deny"), 1),
        ("code=revoked (rare)", AuditFilter(code="revoked"), 1),
        ("event=auth + one hour", AuditFilter(event="auth", since=mid, until=mid + timedelta(hours=1)), 1),
        ("request_id", AuditFilter(request_id=f"req-{rows // 3}"), 1),
        ("q: table7 (common)", AuditFilter(q="table7 WHERE"), 1),
        ("q: rare text (bounded scan)", AuditFilter(q="WHERE id = 99999"), 1),
        ("q + user", AuditFilter(user="user42@example.com", q="table7 "), 1),
        ("q + target", AuditFilter(target="crm", q="WHERE id = 99999"), 1),
    ]


def measure(store: MariaDBAuditStore, repeat: int, rows: int) -> None:
    """Time each case ``repeat`` times (first run cold-ish); print median and max."""
    print(f"\n{'filter':34} {'entries':>8} {'median ms':>10} {'max ms':>8}")
    for name, filters, pages in cases(rows):
        timings, count = [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            cursor, count = None, 0
            for _ in range(pages):
                page = store.query(filters, cursor, 50)
                count, cursor = len(page.entries), page.next_cursor
                if cursor is None:
                    break
            timings.append((time.perf_counter() - started) * 1000 / pages)
        print(f"{name:34} {count:8} {statistics.median(timings):10.1f} {max(timings):8.1f}", flush=True)


def main() -> int:
    """Generate, measure, drop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", help="reuse this existing scratch database instead of generating one")
    args = parser.parse_args()
    stamp, rand = str(int(time.time())), secrets.token_hex(3)
    database = args.keep or f"gwbench_{stamp}_{rand}"
    account, password = f"gwb{stamp[-4:]}{rand}", secrets.token_urlsafe(18)
    os.environ["GATEWAY_BENCH_AUDIT_PASSWORD"] = password
    root = _root()
    try:
        with root.cursor() as cur:
            cur.execute(f"CREATE USER '{account}'@'%%' IDENTIFIED BY %s", (password,))
            if not args.keep:
                print(f"generating {args.rows:,} audit records in {database} (MariaDB {HOST}:{PORT})", flush=True)
                cur.execute(f"CREATE DATABASE `{database}`")
                generate(cur, database, args.rows)
            cur.execute(f"GRANT SELECT ON `{database}`.* TO '{account}'@'%'")
        settings = AuditDatabaseSettings(
            host=HOST,
            port=PORT,
            database=database,
            user=account,
            secret=SecretSource(env="GATEWAY_BENCH_AUDIT_PASSWORD"),
        )
        store = MariaDBAuditStore(settings, readonly=True)
        try:
            measure(store, args.repeat, args.rows)
        finally:
            store.close()
    finally:
        with root.cursor() as cur:
            if not args.keep:
                cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cur.execute(f"DROP USER IF EXISTS '{account}'@'%'")
        root.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
