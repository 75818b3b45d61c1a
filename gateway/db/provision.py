"""Create a database and its gateway accounts the recommended way: for the demo and the tests.

Three accounts per database (``{prefix}_reader``, ``_writer``, ``_ddl``) are
created with no privileges at all; then ``gateway db plan``'s GRANT
statements for the given policy are applied, so each account holds exactly
what the grants naming it need (SECURITY rule 32) and nothing like FILE,
PROCESS, SUPER or CREATE ROUTINE (rule 15). Without a policy, a default one
gives each account its level on the whole database (``db.*``). Passwords are
random, handed back to the caller, never fixed in a file here.
``grant_extra`` gives an account more than its plan on purpose (a test
proving that the gateway alone stops something).
"""

from __future__ import annotations

import re
import secrets
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from gateway.db.accounts import survey
from gateway.db.grants import quote
from gateway.db.privileges import account_name, grant_statements
from gateway.policy.types import Access, Grant, PolicySet
from gateway.settings import TargetSettings

LEVELS: dict[str, Access] = {"reader": Access.READ, "writer": Access.WRITE, "ddl": Access.DDL}
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_PRIVILEGE = re.compile(r"^[A-Z]+( [A-Z]+)*$")

DEMO_SCHEMA = [
    """CREATE TABLE customers (
        id INT PRIMARY KEY AUTO_INCREMENT,
        name VARCHAR(100) NOT NULL,
        email VARCHAR(200) NOT NULL,
        created_at DATETIME(6) NOT NULL
    )""",
    """CREATE TABLE items (
        id INT PRIMARY KEY AUTO_INCREMENT,
        name VARCHAR(100) NOT NULL,
        price DECIMAL(10,2) NOT NULL,
        sku BINARY(4) NULL,
        added DATE NULL
    )""",
    """CREATE TABLE orders (
        id INT PRIMARY KEY AUTO_INCREMENT,
        customer_id INT NOT NULL,
        item_id INT NOT NULL,
        quantity INT NOT NULL,
        ordered_at DATETIME NOT NULL,
        note VARCHAR(200) NULL
    )""",
    """CREATE TABLE payment_cards (
        id INT PRIMARY KEY AUTO_INCREMENT,
        customer_id INT NOT NULL,
        card_number VARCHAR(32) NOT NULL
    )""",
]


@dataclass(frozen=True)
class Account:
    """A database account made for one access level, with the GRANT statements applied to it."""

    user: str
    password: str
    grants: tuple[str, ...] = ()


# Builds the policy whose plan is applied, from the database name and the new accounts.
PolicyFor = Callable[[str, dict[str, Account]], PolicySet]


def _check(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"unsafe identifier {name!r}")
    return name


def level_policy(database: str, accounts: dict[str, Account], target: str = "shop") -> PolicySet:
    """The default: each account its level (read, write, ddl) on every table of ``database``."""
    grants = tuple(
        Grant(
            name=f"provisioned-{level}",
            subjects=("group:provisioned",),
            target=target,
            access=LEVELS[level],
            db_user=account.user,
            tables_allow=(f"{database.lower()}.*",),
            tables_deny=(),
            max_rows=None,
            statement_timeout=None,
            expires=None,
            functions=frozenset(),
            source_file="(provision)",
            source_line=0,
        )
        for level, account in accounts.items()
    )
    return PolicySet(roles=MappingProxyType({}), grants=grants, revocations=(), revision="provisioned")


async def provision(
    root: Any,  # noqa: ANN401 - asyncmy is untyped
    database: str,
    prefix: str,
    *,
    demo_data: bool = True,
    policy: PolicyFor | None = None,
    target: str = "shop",
    now: datetime | None = None,
    sequence_tables: Sequence[str] = (),
) -> dict[str, Account]:
    """(Re)create ``database`` and its accounts with ``root``; grant what ``policy``'s plan says.

    ``target`` is the policy's name for the database; ``now`` decides which
    grants have expired (default: the current time); ``sequence_tables`` are
    Sequence engine tables (``seq_1_to_100``) of ``database`` to plan for too:
    MariaDB makes them on demand, so no catalog lists them.
    """
    db = _check(database)
    with warnings.catch_warnings():
        # "DROP ... IF EXISTS" of something absent is a note from MariaDB, not a problem.
        warnings.simplefilter("ignore")
        await _create(root, db, demo_data=demo_data)
        accounts = await _accounts(root, prefix)
    chosen = policy(db, accounts) if policy is not None else level_policy(db, accounts, target)
    targets = {target: TargetSettings(host="localhost", database=db)}
    extra = [(db, _check(table)) for table in sequence_tables]
    applied = await apply_plan(root, chosen, targets, now=now, extra_tables=extra)
    return {level: replace(a, grants=tuple(applied.get(a.user, ()))) for level, a in accounts.items()}


async def apply_plan(
    root: Any,  # noqa: ANN401 - asyncmy is untyped
    policy: PolicySet,
    targets: dict[str, TargetSettings],
    *,
    now: datetime | None = None,
    extra_tables: Sequence[tuple[str, str]] = (),
) -> dict[str, list[str]]:
    """Run ``gateway db plan``'s GRANT statements for ``targets`` (all on ``root``'s server); return them by user."""
    moment = now or datetime.now(UTC)
    report = await survey(root, policy, targets, list(targets), moment, extra_tables=extra_tables)
    applied: dict[str, list[str]] = {}
    async with root.cursor() as cur:
        for account in report.accounts:
            if account.host is None:
                continue  # an account the policy names but nobody created: nothing to grant to
            for statement in grant_statements(account.planned, account.account):
                await cur.execute(statement.removesuffix(";"))
                applied.setdefault(account.db_user, []).append(statement)
    return applied


async def grant_extra(
    root: Any,  # noqa: ANN401 - asyncmy is untyped
    user: str,
    privileges: Sequence[str],
    database: str,
    *,
    table: str | None = None,
    host: str = "%",
) -> str:
    """Grant ``privileges`` on ``database.*`` (or one table) beyond the plan, on purpose; return the statement.

    For tests that prove the gateway alone stops something (an account that
    can also read a second schema). ``gateway db check`` reports it as drift.
    """
    names = [p.strip().upper() for p in privileges]
    if not names or not all(_PRIVILEGE.match(n) for n in names):
        raise ValueError(f"not privilege names: {privileges!r}")
    on = f"{quote(database)}.{quote(table) if table is not None else '*'}"
    statement = f"GRANT {', '.join(names)} ON {on} TO {account_name(user, host)}"
    async with root.cursor() as cur:
        await cur.execute(statement)
    return statement


async def _create(root: Any, db: str, *, demo_data: bool) -> None:  # noqa: ANN401 - asyncmy is untyped
    async with root.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        await cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        if demo_data:
            await _seed(cur, db)


async def _accounts(root: Any, prefix: str) -> dict[str, Account]:  # noqa: ANN401 - asyncmy is untyped
    """Create the three accounts with no privileges (only USAGE: they may log in)."""
    accounts: dict[str, Account] = {}
    async with root.cursor() as cur:
        for level in LEVELS:
            user = _check(f"{prefix}_{level}")
            password = secrets.token_urlsafe(24)
            await cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            await cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
            accounts[level] = Account(user, password)
    return accounts


async def _seed(cur: Any, db: str) -> None:  # noqa: ANN401 - asyncmy is untyped
    for ddl in DEMO_SCHEMA:
        await cur.execute(ddl.replace("CREATE TABLE ", f"CREATE TABLE `{db}`.", 1))
    await cur.executemany(
        f"INSERT INTO `{db}`.customers (name, email, created_at) VALUES (%s, %s, %s)",  # noqa: S608 - checked identifier
        [
            ("Ada Lovelace", "ada@example.com", "2024-01-02 03:04:05.123456"),
            ("Grace Hopper", "grace@example.com", "2024-02-03 04:05:06"),
            ("Alan Turing", "alan@example.com", "2024-03-04 05:06:07"),
        ],
    )
    items = [
        (f"item {i}", f"{i * 1.25 + 0.99:.2f}", i.to_bytes(4, "big"), f"2024-01-{i % 28 + 1:02d}")
        for i in range(1, 1001)
    ]
    items[0] = ("pen", "1.50", b"\x00\xff\x10\x80", "2024-01-01")
    await cur.executemany(
        f"INSERT INTO `{db}`.items (name, price, sku, added) VALUES (%s, %s, %s, %s)",  # noqa: S608 - checked identifier
        items,
    )
    await cur.executemany(
        f"INSERT INTO `{db}`.orders (customer_id, item_id, quantity, ordered_at, note) VALUES (%s, %s, %s, %s, %s)",  # noqa: S608 - a checked identifier
        [
            (1, 1, 2, "2024-04-01 10:00:00", None),
            (2, 3, 1, "2024-04-02 11:30:00", "gift"),
            (3, 2, 5, "2024-04-03 12:45:00", None),
        ],
    )
    await cur.executemany(
        f"INSERT INTO `{db}`.payment_cards (customer_id, card_number) VALUES (%s, %s)",  # noqa: S608 - checked identifier
        [(1, "4111111111111111"), (2, "5500000000000004")],
    )


async def drop(root: Any, database: str, prefix: str) -> None:  # noqa: ANN401 - asyncmy is untyped
    """Drop ``database`` and its accounts (for test clean-up)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        await _drop(root, database, prefix)


async def _drop(root: Any, database: str, prefix: str) -> None:  # noqa: ANN401 - asyncmy is untyped
    async with root.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS `{_check(database)}`")
        for level in LEVELS:
            await cur.execute(f"DROP USER IF EXISTS '{_check(f'{prefix}_{level}')}'@'%'")
