"""Server-side render time of the console's audit browser over a big log (`make bench-console`).

Generates an N-record log (default 1,000,000) in an embedded SQLite audit store
through the store's own ``append_batch`` (real chain hashes), starts the demo
gateway (``.run/gateway.yaml`` from ``make seed``) with the console on that
log, signs in through the dev issuer, and times each page **inside the
server** (an ASGI wrapper around the app, from the request's arrival to the
last byte of the reply: the ``audit_read`` record each read writes first
included), for the audit log page with typical filters, a page 20 deep, a
record's chain page, the charts (20,000 newest records counted) and, as the
baseline, ``GET /v1/audit`` with the same filters (JSON, no HTML).

    python bench/console_render.py [--rows N] [--repeat K]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import uvicorn

from gateway import console
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.http.app import create_app
from gateway.settings import load_settings

FIELDS = ("client_id", "redirect_uri", "response_type", "state", "code_challenge", "code_challenge_method", "scope")


def generate(path: Path, rows: int) -> None:
    """``rows`` decision records over ~30 days: 500 users, 6 targets, ~7 % denials."""
    store = SQLiteAuditStore(path)
    start = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=30) / rows
    batch: list[dict[str, Any]] = []
    tables = ("orders", "items", "customers", "payments", "shipments")
    for i in range(rows):
        deny = i % 14 == 0
        batch.append(
            {
                "event": "decision",
                "request_id": f"{i:032x}",
                "client": "10.0.0.1",
                "user_agent": "bench",
                "user": f"user{i % 500}@example.com",
                "user_verified": True,
                "groups": ["analysts"],
                "target": f"db{i % 6}",
                "statement": f"SELECT * FROM {tables[i % 5]} WHERE id = {i}",
                "transaction": False,
                "decision": "deny" if deny else "allow",
                "code": "forbidden" if deny else "ok",
                "reason": "no grant allows it" if deny else None,
                "time": (start + step * i).isoformat().replace("+00:00", "Z"),
            }
        )
        if len(batch) == 20_000:
            store.append_batch(batch)
            batch.clear()
    if batch:
        store.append_batch(batch)
    store.close()


class Timed:
    """ASGI wrapper: server-side seconds per request path (with query), first byte in to last byte out."""

    def __init__(self, app: Any) -> None:  # noqa: ANN401 - an ASGI app
        self.app = app
        self.times: dict[str, list[float]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: ANN401 - ASGI
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        await self.app(scope, receive, send)
        key = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        self.times.setdefault(key, []).append(time.perf_counter() - started)


def main() -> int:
    """Generate, serve, time, report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        audit = Path(tmp) / "audit.db"
        began = time.perf_counter()
        generate(audit, args.rows)
        print(f"generated {args.rows:,} records in {time.perf_counter() - began:.0f} s")
        settings = load_settings(
            Path(".run/gateway.yaml"),
            listen={"host": "127.0.0.1", "port": 18181},
            audit={"path": audit},
            admin={"state_dir": Path(tmp) / "state"},
        )
        timed = Timed(create_app(settings, pages=console.install))
        server = uvicorn.Server(uvicorn.Config(timed, host="127.0.0.1", port=18181, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = "http://127.0.0.1:18181"
        http = httpx.Client(base_url=base, follow_redirects=False, timeout=120)
        authorize = http.get("/console/login").headers["location"]
        params = dict(parse_qsl(urlsplit(authorize).query))
        form = {k: params.get(k, "") for k in FIELDS} | {"user": "carol@example.com", "groups": "security"}
        http.get(http.post("/dev-issuer/authorize", data=form).headers["location"])
        services = timed.app.state.services
        token = services.dev_issuer.mint("carol@example.com", ["security"], audience=settings.dev.audience)
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        page = http.get("/console/audit")
        cursor_link = None
        for _ in range(20):  # walk 20 pages deep for the deep-page case
            found = re.search(r'href="/console/audit\?cursor=([^"]+)"', page.text)
            assert found, "no next page"
            cursor_link = f"/console/audit?cursor={found.group(1)}"
            page = http.get(cursor_link)
        cases = [
            ("audit log, newest page", "/console/audit", "/v1/audit?limit=50"),
            ("filter user", "/console/audit?user=user7%40example.com", "/v1/audit?user=user7%40example.com&limit=50"),
            (
                "filter target + deny",
                "/console/audit?target=db3&decision=deny",
                "/v1/audit?target=db3&decision=deny&limit=50",
            ),
            ("page 21 (cursor)", cursor_link, None),
            ("text search q=orders", "/console/audit?q=orders", "/v1/audit?q=orders&limit=50"),
            ("record page (chain)", f"/console/audit/record/{args.rows // 2}", None),
            ("charts (20,000 newest)", "/console/audit/charts", None),
        ]
        print(f"{'page':28} {'console p50':>12} {'API p50':>10} {'ratio':>6}   (server-side, ms, {args.repeat} runs)")
        for name, path, api_path in cases:
            assert path is not None
            runs = args.repeat if "charts" not in name else max(args.repeat // 5, 3)
            for _ in range(runs):
                assert http.get(path).status_code == 200
            console_ms = statistics.median(timed.times[path][-runs:]) * 1000
            line = f"{name:28} {console_ms:12.1f}"
            if api_path:
                for _ in range(runs):
                    assert api.get(api_path).status_code == 200
                api_ms = statistics.median(timed.times[api_path][-runs:]) * 1000
                line += f" {api_ms:10.1f} {console_ms / api_ms:6.2f}"
            print(line)
        server.should_exit = True
        thread.join(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
