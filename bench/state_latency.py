"""Edit-to-enforced and revocation-to-cancel latency with three replicas on one state store (issue 14).

Starts three gateways in this process (uvicorn threads; dev mode, each
replica minting its own dev tokens from one shared key), sharing one MariaDB
state store (``state.store: mariadb``, default ``poll_interval`` 0.5 s) and one
read-only base policy directory, on the local MariaDB (``127.0.0.1:3306``,
root; a scratch target database, state database and accounts, dropped after).

* **edit-to-enforced**: an admin adds a grant for a new user through replica
  ``i % 3``; the time from sending the edit until that user's query succeeds,
  on each of the three replicas (probed every 10 ms).
* **revocation-to-cancel**: a user's long query runs on replica ``k``; an admin
  revokes the user's group through replica ``k + 1``; the time from sending the
  revocation until the running query's reply (403 ``revoked``) arrives.

    python bench/state_latency.py [--edits 30] [--revocations 10] [--poll-interval 0.5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pymysql
import uvicorn

from gateway.http.app import create_app
from gateway.identity.devissuer import DevIssuer, dev_issuer_url
from gateway.settings import Settings

HEAVY = "SELECT COUNT(*) FROM items a, items b, items c, items d WHERE a.price + b.price + c.price > d.price"


def root(sql: str, args: Any = None) -> list[tuple[Any, ...]]:  # noqa: ANN401 - DB-API parameters
    """One statement as the local MariaDB's root."""
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


@contextmanager
def scratch() -> Iterator[dict[str, str]]:
    """A target database with ``items`` and a SELECT account, and an empty state database with its account."""
    tag = secrets.token_hex(3)
    names = {"db": f"gwbench_t_{tag}", "reader": f"gwbr_{tag}", "state": f"gwbench_s_{tag}", "stater": f"gwbs_{tag}"}
    passwords = {"reader": secrets.token_urlsafe(12), "stater": secrets.token_urlsafe(12)}
    root(f"CREATE DATABASE `{names['db']}`")
    root(f"CREATE TABLE `{names['db']}`.items (id INT PRIMARY KEY, price INT NOT NULL)")
    root(f"INSERT INTO `{names['db']}`.items SELECT seq, seq % 97 FROM `{names['db']}`.seq_1_to_2000")  # noqa: S608 - generated names
    root(f"CREATE USER '{names['reader']}'@'%%' IDENTIFIED BY %s", (passwords["reader"],))
    root(f"GRANT SELECT ON `{names['db']}`.* TO '{names['reader']}'@'%'")
    root(f"CREATE USER '{names['stater']}'@'%%' IDENTIFIED BY %s", (passwords["stater"],))
    root(f"GRANT ALL ON `{names['state']}`.* TO '{names['stater']}'@'%'")
    os.environ["BENCH_STATE_READER_PW"] = passwords["reader"]
    os.environ["BENCH_STATE_STATE_PW"] = passwords["stater"]
    try:
        yield names
    finally:
        for db in (names["db"], names["state"]):
            root(f"DROP DATABASE IF EXISTS `{db}`")
        for user in (names["reader"], names["stater"]):
            root(f"DROP USER IF EXISTS '{user}'@'%'")


def base_policy(directory: Path, names: dict[str, str]) -> None:
    """The read-only base: admins, and the analysts' read grant (a 120 s timeout: revocations end the query)."""
    directory.mkdir()
    (directory / "base.yaml").write_text(
        f"""version: 1
roles:
  admin: ["group:db-admins"]
grants:
  - name: analysts-read
    subjects: ["group:analysts"]
    target: shop
    access: read
    db_user: {names["reader"]}
    tables: {{allow: ["{names["db"]}.*"]}}
    statement_timeout: 120s
""",
        encoding="utf-8",
    )
    directory.chmod(0o555)


class Replica:
    """One gateway served by uvicorn in a thread, with its own dev issuer for tokens."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.listen.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.listen.port, log_level="error")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.issuer = DevIssuer.from_key_file(dev_issuer_url(settings.listen.port), settings.dev.key_file)

    def start(self) -> None:
        """Serve and wait until listening."""
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def client(self, user: str, groups: list[str]) -> httpx.Client:
        """A client with a fresh token of ``user``."""
        token = self.issuer.mint(user, groups=groups, audience="db-gateway", lifetime=3600)
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=180)

    def stop(self) -> None:
        """Stop serving."""
        self.server.should_exit = True
        self.thread.join(timeout=30)


def settings_for(tmp: Path, port: int, index: int, names: dict[str, str], poll: float) -> Settings:
    """A dev-mode replica's settings: shared base directory and state store, its own audit file."""
    return Settings.model_validate(
        {
            "dev_mode": True,
            "listen": {"host": "127.0.0.1", "port": port},
            "policies_dir": tmp / "base",
            "targets": {
                "shop": {
                    "host": "127.0.0.1",
                    "database": names["db"],
                    "secrets": {names["reader"]: {"env": "BENCH_STATE_READER_PW"}},
                }
            },
            "audit": {"path": tmp / f"audit-{index}.db"},
            "admin": {"state_dir": tmp / f"state-{index}"},
            "dev": {"key_file": tmp / "dev-key.json"},
            "state": {
                "store": "mariadb",
                "poll_interval": poll,
                "mariadb": {
                    "host": "127.0.0.1",
                    "database": names["state"],
                    "user": names["stater"],
                    "secret": {"env": "BENCH_STATE_STATE_PW"},
                },
            },
            "console": {"enabled": False},
        }
    )


def until(check: Callable[[], bool], within: float = 30.0) -> float:
    """Poll ``check`` every 10 ms; the monotonic time it first held."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)
    return time.monotonic()


def expect(reply: httpx.Response, status: int) -> None:
    """Stop the run on an unexpected reply."""
    if reply.status_code != status:
        raise RuntimeError(f"{reply.request.method} {reply.request.url.path}: {reply.status_code} {reply.text}")


def etag(http: httpx.Client) -> str:
    """The current ETag."""
    return http.get("/v1/policy").headers["etag"]


def edit_to_enforced(replicas: list[Replica], edits: int, db_user: str) -> tuple[list[list[float]], list[float]]:
    """Per edit, the seconds until the new grant works on each replica; and each edit's own reply time."""
    results: list[list[float]] = []
    replies: list[float] = []
    for i in range(edits):
        user = f"bench{i}-{secrets.token_hex(2)}@example.com"
        admin = replicas[i % 3].client("admin@example.com", ["db-admins"])
        probes = [r.client(user, []) for r in replicas]
        body = {"name": f"bench-{i}-{secrets.token_hex(2)}", "subjects": [f"user:{user}"], "target": "shop"}
        body |= {"access": "read", "db_user": db_user}
        tag = etag(admin)
        start = time.monotonic()
        reply = admin.post("/v1/grants", json=body, headers={"If-Match": tag})
        replies.append(time.monotonic() - start)
        expect(reply, 201)
        results.append(first_success(probes, start))
        for client in (admin, *probes):
            client.close()
    return results, replies


def first_success(probes: list[httpx.Client], start: float, within: float = 30.0) -> list[float]:
    """Probe every replica in turn (about every 10 ms each) until each has allowed the query once."""
    done: dict[int, float] = {}
    while len(done) < len(probes):
        if time.monotonic() - start > within:
            raise TimeoutError("a replica never enforced the edit")
        for index, probe in enumerate(probes):
            if index not in done and works(probe):
                done[index] = time.monotonic() - start
        time.sleep(0.01)
    return [done[index] for index in range(len(probes))]


def works(http: httpx.Client) -> bool:
    """Whether this client's query is allowed now."""
    return http.post("/v1/query", json={"target": "shop", "sql": "SELECT id FROM items WHERE id = 1"}).is_success


def busy(http: httpx.Client) -> bool:
    """Whether a pool of this replica has a connection in use."""
    return any(
        line.startswith("gateway_pool_in_use{") and not line.endswith(" 0.0")
        for line in http.get("/metrics").text.splitlines()
    )


def idle(http: httpx.Client) -> bool:
    """Whether no pool of this replica has a connection in use."""
    return not busy(http)


def revocation_to_cancel(replicas: list[Replica], rounds: int) -> list[float]:
    """Per round, the seconds from sending a revocation on one replica to the running query's reply on another."""
    results: list[float] = []
    for i in range(rounds):
        runner, editor = replicas[i % 3], replicas[(i + 1) % 3]
        ended: dict[str, Any] = {}

        def heavy(
            runner: Replica = runner, ended: dict[str, Any] = ended, user: str = f"analyst{i}@example.com"
        ) -> None:
            with runner.client(user, ["analysts"]) as http:
                reply = http.post("/v1/query", json={"target": "shop", "sql": HEAVY})
                ended["at"], ended["code"] = time.monotonic(), reply.json().get("code")

        worker = threading.Thread(target=heavy)
        worker.start()
        with runner.client("admin@example.com", ["db-admins"]) as watcher:
            until(partial(busy, watcher))
        with editor.client("admin@example.com", ["db-admins"]) as admin:
            tag = etag(admin)
            start = time.monotonic()
            reply = admin.post("/v1/revocations", json={"subject": "group:analysts"}, headers={"If-Match": tag})
            expect(reply, 201)
            worker.join(timeout=60)
            if ended.get("code") != "revoked":
                raise RuntimeError(f"the query was not revoked: {ended}")
            results.append(ended["at"] - start)
            expect(admin.delete("/v1/revocations/group:analysts", headers={"If-Match": etag(admin)}), 200)
        with runner.client("admin@example.com", ["db-admins"]) as watcher:
            until(partial(idle, watcher))
    return results


def describe(name: str, values: list[float]) -> None:
    """Median and max, in milliseconds."""
    print(f"{name}: n={len(values)} median={statistics.median(values) * 1000:.0f} ms max={max(values) * 1000:.0f} ms")


def main() -> None:
    """Run both measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--revocations", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args()
    with scratch() as names, tempfile.TemporaryDirectory(prefix="bench-state-") as tmp_name:
        tmp = Path(tmp_name)
        base_policy(tmp / "base", names)
        replicas: list[Replica] = []
        try:
            for index in range(3):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                replicas.append(Replica(settings_for(tmp, port, index, names, args.poll_interval)))
                replicas[-1].start()
            edits, replies = edit_to_enforced(replicas, args.edits, names["reader"])
            print(f"poll_interval {args.poll_interval} s, 3 replicas, one MariaDB state store")
            describe("edit reply (the admin's POST /v1/grants)", replies)
            describe("edit-to-enforced, the editing replica", [e[i % 3] for i, e in enumerate(edits)])
            describe(
                "edit-to-enforced, the other replicas",
                [x for i, e in enumerate(edits) for j, x in enumerate(e) if j != i % 3],
            )
            describe("edit-to-enforced, all replicas (the last one per edit)", [max(e) for e in edits])
            describe("revocation-to-cancel, on another replica", revocation_to_cancel(replicas, args.revocations))
        finally:
            for replica in replicas:
                replica.stop()
            (tmp / "base").chmod(0o755)


if __name__ == "__main__":
    main()
