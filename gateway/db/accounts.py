"""What ``gateway db plan`` and ``db check`` read from a server, over an administrator's connection.

Per server (targets sharing ``host`` and ``port`` share accounts): the catalog
(``information_schema.SCHEMATA`` and ``TABLES``), every host of each account
(``mysql.user``), each account's ``SHOW GRANTS FOR`` and what ``PUBLIC`` holds
(MariaDB 10.11 grants ``PUBLIC``'s rights to every account). The rules are
``dbprivileges``'; the gateway's own start-up check reads ``SHOW GRANTS`` as
the account itself (``dbdrift``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncmy import errors as db_errors

from gateway.db.grants import GrantLine, Privilege, parse_grants
from gateway.db.pools import INIT_COMMAND
from gateway.db.privileges import (
    Catalog,
    Excess,
    Needs,
    account_grants,
    account_name,
    db_users_on,
    missing,
    plan,
    server_of,
)
from gateway.db.tlsguard import guarded_connection, ssl_context_for
from gateway.policy.types import PolicySet
from gateway.settings import TargetSettings

# MariaDB before 10.11 has no PUBLIC (a syntax error), or PUBLIC holds nothing (no such grant).
_NO_PUBLIC = frozenset({1064, 1141})


@dataclass(frozen=True)
class AccountReport:
    """One account (``user@host``) on one server: what it needs, and what it holds beyond or lacks.

    ``host`` is None when no such account exists on the server.
    """

    db_user: str
    host: str | None
    grants: tuple[str, ...]  # the policy grants that need it
    planned: tuple[Privilege, ...]
    excess: tuple[Excess, ...]
    missing: tuple[Privilege, ...]

    @property
    def account(self) -> str:
        """``'user'@'host'`` as SQL (``'%'`` for an account yet to be created)."""
        return account_name(self.db_user, self.host if self.host is not None else "%")


@dataclass(frozen=True)
class ServerReport:
    """Every account the gateway may use on one server."""

    host: str
    port: int
    targets: tuple[str, ...]
    accounts: tuple[AccountReport, ...]


def servers(targets: Mapping[str, TargetSettings], names: Sequence[str]) -> dict[tuple[str, int], list[str]]:
    """The chosen targets grouped by the server they live on."""
    grouped: dict[tuple[str, int], list[str]] = {}
    for name in names:
        grouped.setdefault(server_of(targets[name]), []).append(name)
    return grouped


async def admin_connect(target: TargetSettings, user: str, password: str) -> Any:  # noqa: ANN401 - asyncmy is untyped
    """An administrator connection to ``target``'s server: its TLS settings, one statement per call."""
    # sql_mode pinned: SHOW GRANTS quotes with backticks, never ANSI quotes.
    conn = guarded_connection(
        target, user, password, database=None, init_command=INIT_COMMAND, ssl=ssl_context_for(target.tls)
    )
    await conn.connect()
    return conn


async def rows(conn: Any, sql: str, args: Sequence[object] | None = None) -> list[tuple[Any, ...]]:  # noqa: ANN401 - asyncmy is untyped
    """Run one statement and return its rows."""
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


async def read_catalog(conn: Any) -> Catalog:  # noqa: ANN401 - asyncmy is untyped
    """Databases and tables (views and sequences too) that exist on the server."""
    databases = await rows(conn, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
    tables = await rows(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA <> 'information_schema' AND TABLE_TYPE <> 'SYSTEM VIEW'",
    )
    return Catalog(tuple(str(r[0]) for r in databases), tuple((str(r[0]), str(r[1])) for r in tables))


async def account_hosts(conn: Any, user: str) -> list[str]:  # noqa: ANN401 - asyncmy is untyped
    """Every host part under which ``user`` exists (roles left out)."""
    found = await rows(conn, "SELECT Host FROM mysql.user WHERE User = %s AND is_role = 'N' ORDER BY Host", [user])
    return [str(r[0]) for r in found]


async def grant_lines(conn: Any, user: str, host: str) -> tuple[GrantLine, ...]:  # noqa: ANN401 - asyncmy is untyped
    """``SHOW GRANTS FOR 'user'@'host'``, parsed."""
    found = await rows(conn, f"SHOW GRANTS FOR {account_name(user, host)}")
    return parse_grants([str(r[0]) for r in found])


async def public_lines(conn: Any) -> tuple[GrantLine, ...]:  # noqa: ANN401 - asyncmy is untyped
    """What ``PUBLIC`` holds: every account has it too."""
    try:
        found = await rows(conn, "SHOW GRANTS FOR PUBLIC")
    except db_errors.MySQLError as exc:
        if exc.args and exc.args[0] in _NO_PUBLIC:
            return ()
        raise
    return parse_grants([str(r[0]) for r in found])


async def survey(
    conn: Any,  # noqa: ANN401 - asyncmy is untyped
    policy: PolicySet,
    targets: Mapping[str, TargetSettings],
    names: Sequence[str],
    now: datetime,
    *,
    extra_tables: Sequence[tuple[str, str]] = (),
) -> ServerReport:
    """Plan and check every account of the targets ``names`` (all on ``conn``'s server).

    ``extra_tables`` are planned as if they existed: tables MariaDB makes on
    demand, which ``information_schema`` never lists (the Sequence engine's
    ``seq_1_to_100``), can be granted one by one but not found.
    """
    catalog = await read_catalog(conn)
    catalog = Catalog(catalog.databases, (*catalog.tables, *extra_tables))
    public = await public_lines(conn)
    reports: list[AccountReport] = []
    for db_user in db_users_on(policy, targets, names):
        # Every target in ``names`` is on this server, so any one of them gives the account's grants.
        needs = Needs(account_grants(policy, targets, names[0], db_user, now))
        grants = tuple(g.name for g in needs.grants)
        planned = plan(needs, catalog)
        hosts = await account_hosts(conn, db_user)
        if not hosts:
            reports.append(AccountReport(db_user, None, grants, planned, (), planned))
            continue
        for host in hosts:
            lines = (*await grant_lines(conn, db_user, host), *public)
            reports.append(AccountReport(db_user, host, grants, planned, needs.excess(lines), missing(planned, lines)))
    host, port = server_of(targets[names[0]])
    return ServerReport(host, port, tuple(names), tuple(reports))
