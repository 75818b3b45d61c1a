"""The attack corpus's world: two schemas, over-privileged accounts, a gateway, and MariaDB's general log.

For one test module (``tests/test_attack_corpus.py``):

* ``corpus_schemas``: a demo-shaped database (``shop``) whose accounts get
  ``gateway db plan``'s grants for the corpus policy (``POLICY``), then MORE
  on purpose (``gateway.db.provision.grant_extra``): the reader may read and
  write a second schema and the denied ``payment_cards``, and write and
  change the first schema; the writer and ddl accounts may do anything on
  both. So the database stands in the way of nothing: only the gateway does.
  In the second schema a table of secrets, a stored function and a
  procedure; in the first, views over denied objects (``SELECT, SHOW VIEW``
  granted to the reader, so the gateway alone must refuse them), a stored
  function and a sequence;
* ``corpus_gateway``: a gateway on the real OIDC provider with the corpus
  policy;
* ``GeneralLog``: MariaDB's general log written to ``mysql.general_log``
  while the corpus runs, under a server-wide named lock so two corpus runs
  never share it, put back as it was after.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncmy
import pytest
from conftest import (
    DB_HOST,
    DB_PORT,
    RunningGateway,
    ScratchDatabase,
    gateway_settings,
    root_connection,
    start_gateway,
    stop_gateway,
)
from oidcfixture import OidcProvider
from test_dbcheck import scratch_names

from gateway.db.provision import Account, drop, grant_extra, provision
from gateway.policy.files import load_policies
from gateway.policy.types import PolicySet

LOCK_NAME = "gw_attack_corpus_general_log"
LOCK_WAIT = 120  # seconds another corpus run may hold the general log
ALL_TABLE_RIGHTS = ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX"]
MORE_RIGHTS = ["CREATE VIEW", "SHOW VIEW", "EXECUTE", "LOCK TABLES", "CREATE TEMPORARY TABLES", "TRIGGER"]

POLICY = """\
version: 1
roles:
  admin: ["group:db-admins"]
  auditor: ["user:auditor@example.com"]
grants:
  - name: corpus-read
    subjects: ["group:analysts"]
    target: shop
    access: read
    db_user: {reader}
    tables: {{allow: ["{db}.*"], deny: ["{db}.payment_*"]}}
    max_rows: 100
    statement_timeout: 2s
  - name: corpus-write
    subjects: ["group:engineers"]
    target: shop
    access: write
    db_user: {writer}
    tables: {{allow: ["{db}.*"], deny: ["{db}.payment_*"]}}
  - name: corpus-ddl
    subjects: ["group:db-admins"]
    target: shop
    access: ddl
    db_user: {ddl}
    tables: {{allow: ["{db}.*"], deny: ["{db}.payment_*"]}}
revocations:
  - subject: "user:mallory@example.com"
    target: "*"
    reason: "left the team"
"""


def write_policy(directory: Path, db: str, accounts: dict[str, Account]) -> Path:
    """Write the corpus policy for ``db`` and its accounts into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    users = {level: account.user for level, account in accounts.items()}
    (directory / "policy.yaml").write_text(POLICY.format(db=db, **users), encoding="utf-8")
    return directory


def corpus_policy(db: str, accounts: dict[str, Account], directory: Path) -> PolicySet:
    """The corpus policy, loaded (for ``provision``: the plan the accounts start from)."""
    return load_policies(write_policy(directory, db, accounts), known_targets={"shop"})


T = TypeVar("T")


class RootSession:
    """One administrator connection on an event loop of its own, used from synchronous fixture code.

    The named lock that keeps corpus runs apart lives as long as this connection.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self.conn: Any = self.run(root_connection())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this session's loop."""
        return self._loop.run_until_complete(coro)

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement; return its rows."""

        async def go() -> list[tuple[Any, ...]]:
            async with self.conn.cursor() as cur:
                await cur.execute(sql, args)
                return list(await cur.fetchall())

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # notes such as "DROP ... IF EXISTS" of nothing
            return self.run(go())

    def close(self) -> None:
        """Close the connection (releasing its named locks), then the loop.

        The transport closes its socket in a callback of the loop: the loop runs once more before it is
        closed, or the socket would stay open until the garbage collector finds it.
        """
        self.conn.close()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()


@dataclass(frozen=True)
class Schemas:
    """The corpus databases: ``db`` (target ``shop``) and ``second`` (no grant names it)."""

    db: ScratchDatabase
    second: str


def _second_schema(root: RootSession, db: str, second: str) -> None:
    statements = [
        f"DROP DATABASE IF EXISTS `{second}`",
        f"CREATE DATABASE `{second}` CHARACTER SET utf8mb4",
        f"CREATE TABLE `{second}`.secrets (id INT PRIMARY KEY, secret VARCHAR(64) NOT NULL)",
        f"INSERT INTO `{second}`.secrets VALUES (1, 'second-schema-secret'), (2, 'another-secret')",
        f"CREATE TABLE `{second}`.payment_ledger (id INT PRIMARY KEY, amount INT NOT NULL)",
        (
            f"CREATE FUNCTION `{second}`.f_secret() RETURNS VARCHAR(64) READS SQL DATA "
            f"RETURN (SELECT secret FROM `{second}`.secrets WHERE id = 1)"
        ),
        f"CREATE PROCEDURE `{second}`.p_secret() READS SQL DATA SELECT secret FROM `{second}`.secrets",
        (
            f"CREATE FUNCTION `{db}`.f_card() RETURNS VARCHAR(32) READS SQL DATA "
            f"RETURN (SELECT card_number FROM `{db}`.payment_cards WHERE id = 1)"
        ),
        f"CREATE PROCEDURE `{db}`.p_items() READS SQL DATA SELECT COUNT(*) FROM `{db}`.items",
        f"CREATE SEQUENCE `{db}`.s_ids",
        # Views the reader may select and see the definition of, as a careless DBA might allow.
        f"CREATE VIEW `{db}`.v_items AS SELECT id, name FROM `{db}`.items",
        f"CREATE VIEW `{db}`.v_cards AS SELECT card_number FROM `{db}`.payment_cards",
        f"CREATE VIEW `{db}`.v_cards_nested AS SELECT * FROM `{db}`.v_cards",
        f"CREATE VIEW `{db}`.v_second AS SELECT secret FROM `{second}`.secrets",
        f"CREATE VIEW `{db}`.v_users AS SELECT user, host FROM mysql.user",
        (
            f"CREATE VIEW `{db}`.v_join AS SELECT i.id, s.secret FROM `{db}`.items AS i "
            f"JOIN `{second}`.secrets AS s ON s.id = i.id"
        ),
        (
            f"CREATE VIEW `{db}`.v_union AS SELECT name FROM `{db}`.items "
            f"UNION SELECT card_number FROM `{db}`.payment_cards"
        ),
        f"CREATE VIEW `{db}`.v_sub AS SELECT id FROM `{db}`.items WHERE id IN (SELECT id FROM `{second}`.secrets)",
        f"CREATE VIEW `{db}`.v_fn AS SELECT `{second}`.f_secret() AS s",
        f"CREATE VIEW `{second}`.v_there AS SELECT secret FROM `{second}`.secrets",
    ]
    for statement in statements:
        root.query(statement)


def _overgrant(root: RootSession, schemas: Schemas) -> None:
    """Give every account far more than its plan: only the gateway stands in the way."""
    db, second = schemas.db.name, schemas.second
    accounts = schemas.db.accounts

    async def give() -> None:
        for level in ("reader", "writer", "ddl"):
            user = accounts[level].user
            for schema in (db, second):
                await grant_extra(root.conn, user, ALL_TABLE_RIGHTS + MORE_RIGHTS, schema)
            await grant_extra(root.conn, user, ALL_TABLE_RIGHTS, db, table="payment_cards")

    root.run(give())


@contextlib.contextmanager
def corpus_schemas(tmp: Path) -> Iterator[Schemas]:
    """Both schemas and the over-privileged accounts; all dropped after."""
    name, prefix = scratch_names()
    second = f"{name}x"
    root = RootSession()
    try:
        accounts = root.run(
            provision(root.conn, name, prefix, policy=lambda db, acc: corpus_policy(db, acc, tmp / "plan"))
        )
        schemas = Schemas(ScratchDatabase(name, prefix, accounts), second)
        _second_schema(root, name, second)
        _overgrant(root, schemas)
        yield schemas
    finally:
        root.query(f"DROP DATABASE IF EXISTS `{second}`")
        root.run(drop(root.conn, name, prefix))
        root.close()


# What the reader's own account may do at the MariaDB level (the premise: only the gateway refuses these).
DIRECT_READS = (
    "SELECT secret FROM `{second}`.secrets WHERE id = 1",
    "SELECT card_number FROM `{db}`.payment_cards WHERE id = 1",
    "SELECT card_number FROM `{db}`.v_cards LIMIT 1",
    "SELECT secret FROM `{db}`.v_second LIMIT 1",
    "SELECT s FROM `{db}`.v_fn",
    "SELECT `{second}`.f_secret()",
    "SELECT `{db}`.f_card()",
)


def direct_reads(schemas: Schemas) -> dict[str, str]:
    """Run ``DIRECT_READS`` as the reader's account, straight to MariaDB: statement -> ``ok`` or the error."""
    reader = schemas.db.accounts["reader"]

    async def go() -> dict[str, str]:
        conn = await asyncmy.connect(host=DB_HOST, port=DB_PORT, user=reader.user, password=reader.password)
        found = {}
        try:
            for template in DIRECT_READS:
                sql = template.format(db=schemas.db.name, second=schemas.second)
                try:
                    async with conn.cursor() as cur:
                        await cur.execute(sql)
                        found[template] = "ok" if await cur.fetchall() else "no rows"
                except asyncmy.errors.MySQLError as error:
                    found[template] = str(error)
        finally:
            conn.close()
        return found

    return asyncio.run(go())


@contextlib.contextmanager
def corpus_gateway(tmp: Path, idp: OidcProvider, schemas: Schemas) -> Iterator[RunningGateway]:
    """A gateway on the real provider with the corpus policy (its own audit file and state)."""
    policies = write_policy(tmp / "policies", schemas.db.name, schemas.db.accounts)
    settings = gateway_settings(tmp / "gw", idp, schemas.db, env_prefix="GWCORPUS", policies_dir=policies)
    gateway = start_gateway(settings, idp, schemas.db)
    try:
        yield gateway
    finally:
        stop_gateway(gateway)


@dataclass(frozen=True)
class LogRow:
    """One row of ``mysql.general_log``."""

    user_host: str
    thread_id: int
    command: str
    argument: str


class GeneralLog:
    """MariaDB's general log as a table, switched on for the corpus and put back as it was.

    A server-wide named lock (``GET_LOCK``) keeps two corpus runs from sharing
    the log. The rows are truncated at the end only when the table was empty and
    the log off before: then every row in it was written while this run held it.
    """

    def __init__(self) -> None:
        self._root = RootSession()
        self._owned = False
        self.since: Any = None
        self._previous: tuple[str, str] | None = None

    def start(self) -> None:
        """Take the lock, note the settings, write the general log to the table."""
        (got,) = self._root.query("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, LOCK_WAIT))[0]
        if got != 1:
            raise RuntimeError(f"another attack corpus run held {LOCK_NAME} for {LOCK_WAIT} s")
        ((general, output),) = self._root.query("SELECT @@global.general_log, @@global.log_output")
        ((rows,),) = self._root.query("SELECT COUNT(*) FROM mysql.general_log")
        self._previous = (str(general), str(output))
        self._owned = str(general) == "0" and rows == 0
        outputs = {part.strip().upper() for part in str(output).split(",")} - {"NONE"}
        self._root.query("SET GLOBAL log_output = %s", (",".join(sorted(outputs | {"TABLE"})),))
        self._root.query("SET GLOBAL general_log = 1")
        ((self.since,),) = self._root.query("SELECT NOW(6)")

    def rows(self, account_prefix: str) -> list[LogRow]:
        """Every row written since ``start`` in a session of an account whose name starts with ``account_prefix``."""
        pattern = account_prefix.replace("_", "\\_") + "\\_%"
        found = self._root.query(
            "SELECT user_host, thread_id, command_type, CONVERT(argument USING utf8mb4) FROM mysql.general_log "
            "WHERE event_time >= %s AND (user_host LIKE %s OR thread_id IN (SELECT thread_id FROM mysql.general_log "
            "WHERE event_time >= %s AND user_host LIKE %s))",
            (self.since, pattern, self.since, pattern),
        )
        return [LogRow(str(u), int(t), str(c), _text(a)) for u, t, c, a in found]

    def stop(self) -> None:
        """Put the settings back, truncate what this run alone wrote, release the lock."""
        try:
            if self._previous is not None:
                general, output = self._previous
                self._root.query("SET GLOBAL general_log = %s", (int(general),))
                self._root.query("SET GLOBAL log_output = %s", (output,))
                if self._owned:
                    self._root.query("TRUNCATE TABLE mysql.general_log")
        finally:
            self._root.query("SELECT RELEASE_LOCK(%s)", (LOCK_NAME,))
            self._root.close()


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


CORPUS_COUNTS = pytest.StashKey[tuple[int, dict[str, int], dict[str, int]]]()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """After the run: the attack corpus's size, per class and per refusing layer."""
    counts = terminalreporter.config.stash.get(CORPUS_COUNTS, None)
    if counts is not None:
        total, per_class, per_layer = counts
        terminalreporter.section("attack corpus")
        terminalreporter.write_line(f"{total} cases; by class: {_counted(per_class)}")
        terminalreporter.write_line(f"refused by: {_counted(per_layer)}")


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
