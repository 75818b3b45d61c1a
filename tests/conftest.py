"""Shared fixtures: a real MariaDB database, a real OIDC provider, a real gateway.

Everything the tests touch is made here and removed after: a database
``gwtest_<time>_<rand>`` with its own least-privilege accounts (leftovers of
an earlier, interrupted run are dropped after an hour), the node
``oidc-provider`` on a loopback port, and the gateway served by uvicorn on
another loopback port.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
import textwrap
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncmy
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from oidcfixture import GATEWAY_AUDIENCE, OidcProvider, oidc_provider, running_provider

from gateway.db.provision import Account, drop, provision
from gateway.http.app import create_app
from gateway.http.services import Services
from gateway.policy.files import load_policies
from gateway.policy.types import PolicySet
from gateway.settings import Settings

__all__ = ["oidc_provider"]
# The fault suite's fixtures (private MariaDB, measurements) and its terminal summary, for every module;
# the attack corpus's counts in the summary.
pytest_plugins = ["faultfixture", "corpusfixture"]

DB_HOST = os.environ.get("GATEWAY_TEST_DB_HOST", "127.0.0.1")
DB_PORT = int(os.environ.get("GATEWAY_TEST_DB_PORT", "3306"))
LEFTOVER_AGE = 3600

USERS: dict[str, dict[str, Any]] = {
    "reader": {"email": "reader@example.com", "groups": ["analysts"]},
    "writer": {"email": "writer@example.com", "groups": ["engineers"]},
    "admin": {"email": "admin@example.com", "groups": ["db-admins"]},
    "mallory": {"email": "mallory@example.com", "groups": ["analysts"]},
    "nobody": {"email": "nobody@example.com", "groups": []},
}


T = TypeVar("T")
UNLIMITED_FLOODS = {"per_client_burst": 10**9, "global_burst": 10**9, "per_client_rate": 1e6, "global_rate": 1e6}


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous test code."""
    return asyncio.run(coro)


async def root_connection() -> Any:
    """An administrator connection to the test MariaDB (root, as CI's local server has it)."""
    return await asyncmy.connect(
        host=DB_HOST,
        port=DB_PORT,
        user=os.environ.get("GATEWAY_TEST_DB_ROOT_USER", "root"),
        password=os.environ.get("GATEWAY_TEST_DB_ROOT_PASSWORD", ""),
        autocommit=True,
    )


async def aroot_query(sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement as the administrator and return its rows."""
    conn = await root_connection()
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, args)
            rows: list[tuple[Any, ...]] = list(await cur.fetchall())
            return rows
    finally:
        conn.close()


def root_query(sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement as the administrator (from synchronous test code) and return its rows."""
    return run(aroot_query(sql, args))


@dataclass(frozen=True)
class ScratchDatabase:
    """A throwaway database with reader/writer/ddl accounts."""

    name: str
    prefix: str
    accounts: dict[str, Account]


async def _drop_leftovers() -> None:
    conn = await root_connection()
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'gwtest\\_%'")
            for (name,) in await cur.fetchall():
                parts = name.split("_")
                if len(parts) == 3 and parts[1].isdigit() and time.time() - int(parts[1]) > LEFTOVER_AGE:
                    await drop(conn, name, f"gwt{parts[1][-4:]}{parts[2]}")
    finally:
        conn.close()


# Sequence engine tables the tests read. MariaDB makes them on demand, so no catalog lists them and the
# plan grants a table-level right (the reader's) only on these names: add one here when a test reads another.
SEQUENCE_TABLES = (
    "seq_1_to_3",
    "seq_1_to_10",
    "seq_1_to_1000",
    "seq_1_to_2000",
    "seq_1_to_2500",
    "seq_1_to_5000",
    "seq_1_to_50000",
    "seq_1_to_100000",
)


def integration_policy(database: str, accounts: dict[str, Account]) -> PolicySet:
    """The integration tests' policies (``write_policies``) for ``database`` and its accounts, loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        write_policies(Path(tmp), ScratchDatabase(database, "", accounts))
        return load_policies(Path(tmp), known_targets={"shop"})


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run every async test on asyncio, the gateway's event loop (one definition for the suite)."""
    return "asyncio"


@pytest.fixture(scope="session")
def test_db() -> Iterator[ScratchDatabase]:
    """A fresh demo-shaped database for this test session, dropped at the end.

    Its accounts are created with no privileges and given exactly what
    ``gateway db plan`` derives from the tests' own policies (``write_policies``).
    """
    stamp, rand = str(int(time.time())), secrets.token_hex(3)
    name, prefix = f"gwtest_{stamp}_{rand}", f"gwt{stamp[-4:]}{rand}"

    async def setup() -> dict[str, Account]:
        await _drop_leftovers()
        conn = await root_connection()
        try:
            return await provision(conn, name, prefix, policy=integration_policy, sequence_tables=SEQUENCE_TABLES)
        finally:
            conn.close()

    try:
        accounts = run(setup())
    except OSError as exc:
        pytest.fail(
            f"MariaDB is not reachable at {DB_HOST}:{DB_PORT} ({exc}); run `make test`",
            pytrace=False,
        )
    yield ScratchDatabase(name, prefix, accounts)

    async def teardown() -> None:
        conn = await root_connection()
        try:
            await drop(conn, name, prefix)
        finally:
            conn.close()

    run(teardown())


@pytest.fixture(scope="session")
def idp() -> Iterator[OidcProvider]:
    """The real OIDC provider with the integration tests' users."""
    with running_provider(users=USERS) as provider:
        yield provider


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_policies(directory: Path, db: ScratchDatabase) -> None:
    """The integration tests' policies for target ``shop`` (= the test database)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.yaml").write_text(
        textwrap.dedent(f"""\
        version: 1
        roles:
          admin: ["group:db-admins"]
          auditor: ["user:admin@example.com"]
        grants:
          - name: analysts-read
            subjects: ["group:analysts"]
            target: shop
            access: read
            db_user: {db.accounts["reader"].user}
            tables: {{allow: ["{db.name}.*"], deny: ["{db.name}.payment_*"]}}
            max_rows: 500
            statement_timeout: 2s
          - name: engineers-write
            subjects: ["group:engineers"]
            target: shop
            access: write
            db_user: {db.accounts["writer"].user}
            tables: {{allow: ["{db.name}.*"]}}
            max_rows: 100
            statement_timeout: 5s
          - name: admins-ddl
            subjects: ["group:db-admins"]
            target: shop
            access: ddl
            db_user: {db.accounts["ddl"].user}
            tables: {{allow: ["{db.name}.*"]}}
        revocations:
          - subject: "user:mallory@example.com"
            target: "*"
            reason: "left the team"
        """),
        encoding="utf-8",
    )


@dataclass
class RunningGateway:
    """A gateway served on loopback, with what tests need to talk to it."""

    url: str
    settings: Settings
    idp: OidcProvider
    db: ScratchDatabase
    server: uvicorn.Server
    thread: threading.Thread

    def audit_settled(self) -> None:
        """Wait until the audit writer has committed everything queued so far.

        Outcome records are queued, not awaited, before the reply; a test that
        reads the store straight after a reply calls this first.
        """
        assert self.audit_settled_within(10)

    def audit_settled_within(self, seconds: float) -> bool:
        """Whether the audit writer committed everything queued so far within ``seconds``."""
        return bool(self.services.audit.wait_committed(seconds))

    @property
    def services(self) -> Services:
        """The running app's services (pools, audit writer, ...), as its lifespan built them."""
        app = self.server.config.app
        assert isinstance(app, FastAPI)
        services = app.state.services
        assert isinstance(services, Services)
        return services

    def client(self, user: str | None = "reader", **kwargs: Any) -> httpx.Client:
        """An HTTP client carrying a real token of ``user`` from the provider."""
        headers = {"Authorization": f"Bearer {self.idp.token(user)}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)


def start_gateway(settings: Settings, idp: OidcProvider, db: ScratchDatabase, **app_args: Any) -> RunningGateway:
    """Serve ``create_app(settings)`` with uvicorn in a thread; wait until it listens."""
    config = uvicorn.Config(
        create_app(settings, **app_args),
        host=settings.listen.host,
        port=settings.listen.port,
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=75,  # a busy CI machine must not race the server's idle close
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the gateway did not start", pytrace=False)
        time.sleep(0.02)
    url = f"http://{settings.listen.host}:{settings.listen.port}"
    return RunningGateway(url, settings, idp, db, server, thread)


def stop_gateway(gateway: RunningGateway) -> None:
    """Ask uvicorn to exit (running the lifespan shutdown) and wait for it."""
    gateway.server.should_exit = True
    gateway.thread.join(timeout=20)


def gateway_settings(
    tmp: Path,
    idp: OidcProvider,
    db: ScratchDatabase,
    *,
    host: str = DB_HOST,
    port: int = DB_PORT,
    pool: dict[str, Any] | None = None,
    env_prefix: str = "GWTEST",
    **overrides: Any,
) -> Settings:
    """Settings for a test gateway: the provider as issuer, the test database as ``shop``.

    ``host``/``port`` point ``shop`` elsewhere (a private server, a proxy);
    the passwords go to owner-only files ``tmp/secrets/<env_prefix>_<LEVEL>``
    (files, not environment variables: nothing outlives the test's ``tmp``).
    """
    secrets_dir = tmp / "secrets"
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret_files: dict[str, Path] = {}
    for level, account in db.accounts.items():
        path = secrets_dir / f"{env_prefix}_{level.upper()}"
        path.touch(mode=0o600)
        path.write_text(account.password, encoding="utf-8")
        secret_files[account.user] = path
    write_policies(tmp / "policies", db)
    values: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "issuers": [{"issuer": idp.issuer, "audience": GATEWAY_AUDIENCE}],
        "policies_dir": tmp / "policies",
        "targets": {
            "shop": {
                "host": host,
                "port": port,
                "database": db.name,
                "pool": pool or {"max_size": 4, "acquire_timeout": 3},
                "secrets": {user: {"file": path} for user, path in secret_files.items()},
            }
        },
        # Every test request comes from 127.0.0.1: the shared gateways record every refused request
        # one by one, so tests can find theirs; test_audit_flood.py sets real limits.
        "audit": {"path": tmp / "audit.db", "unauthenticated": UNLIMITED_FLOODS},
        "admin": {"state_dir": tmp / "state"},  # access requests and the alias registry, never the working tree
    }
    if isinstance(overrides.get("audit"), dict):  # another store or option: still no flood limits in tests
        overrides["audit"] = {"unauthenticated": UNLIMITED_FLOODS, **overrides["audit"]}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider, test_db: ScratchDatabase
) -> Iterator[RunningGateway]:
    """One gateway for the session, on the real provider and the real database."""
    settings = gateway_settings(tmp_path_factory.mktemp("gateway"), idp, test_db)
    running = start_gateway(settings, idp, test_db)
    yield running
    stop_gateway(running)
