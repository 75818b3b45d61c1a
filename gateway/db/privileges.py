"""The least MariaDB privileges each ``db_user`` needs, from the policies; and what an account holds beyond them.

The database's own privileges are the second enforcer (SECURITY rule 32): if
something ever slipped past the gateway's table rules, MariaDB should still
refuse it. This module is pure (no I/O); ``dbaccounts`` reads the catalog and
``SHOW GRANTS`` and ``gateway db plan`` / ``db check`` print the results.

Which grants count: every unexpired grant naming the ``db_user`` on any target
whose config points at the same server (``host``, ``port``): an account lives
on a server, not on a target. An expired grant grants nothing, so its rights
become excess once it expires (prune them, or the account drifts).

What each access level needs, on each table its ``tables`` rules allow
(``policy.table_allowed``: the same fnmatch rules the gateway applies; views
and sequences count as tables):

- ``read``: ``SELECT, SHOW VIEW``;
- ``write``: ``SELECT, INSERT, UPDATE, DELETE, SHOW VIEW``;
- ``ddl``: those plus ``CREATE, ALTER, DROP, INDEX, CREATE VIEW`` (``ALTER
  TABLE`` needs ``CREATE`` and ``INSERT`` too; ``TRUNCATE`` needs ``DROP``;
  ``CREATE OR REPLACE`` and ``ALTER VIEW`` need ``DROP`` and ``CREATE VIEW``).
  ``SHOW VIEW`` lets the gateway read a view's definition with the grant's
  own account, to apply table rules to the tables behind it (rule 28).

Where the rights are granted:

- When a grant allows *every* table of a database (an allow pattern
  ``db.*``, ``*.*`` or ``*`` matching it, or no allow list, and no deny
  pattern that could match any ``db.<name>``), its rights are granted once
  on ``db.*``: exactly the same set of tables, including tables created
  later, as the policy means. (A database-level ``DROP`` also permits ``DROP
  DATABASE``; MariaDB has no narrower scope for tables not created yet.)
- Otherwise they are granted table by table on the tables that exist now;
  a ``ddl`` grant that may allow some table of that database also gets
  ``CREATE, CREATE VIEW`` on ``db.*``, to create new tables and views (the
  gateway still refuses names its deny patterns cover). Re-apply the plan
  after tables are created: until then MariaDB refuses them (drift check
  reports nothing: missing rights are never excess).

Never needed, so always excess: any global privilege but ``USAGE`` (``FILE``,
``PROCESS``, ``SUPER``, ``CREATE ROUTINE``, ...), ``ALL PRIVILEGES``, ``GRANT
OPTION``, routine and proxy grants, roles (the plan grants directly; a role
grant counts even when its rights would fit), a database-level grant whose
name is a ``LIKE`` pattern (unescaped ``_`` or ``%``: it covers other
databases too), and any line ``grantparse`` could not parse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase

from gateway.db.grants import GrantLine, Level, Privilege, quote_string
from gateway.policy.decide import table_allowed
from gateway.policy.types import SYSTEM_SCHEMAS, Access, Grant, PolicySet
from gateway.settings import TargetSettings

DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
# The gateway reads a view's definition with the grant's own account to resolve its base tables
# (SECURITY rule 28); without SHOW VIEW the definition is hidden and the view is refused.
SEE = ("SHOW VIEW",)
DDL_EXTRA = ("CREATE", "ALTER", "DROP", "INDEX", "CREATE VIEW")
CREATE_ONLY = frozenset({"CREATE", "CREATE VIEW"})
RIGHTS: dict[Access, frozenset[str]] = {
    Access.READ: frozenset({"SELECT", *SEE}),
    Access.WRITE: frozenset(DML + SEE),
    Access.DDL: frozenset(DML + SEE + DDL_EXTRA),
}
ORDER = {name: index for index, name in enumerate(DML + SEE + DDL_EXTRA)}
# MariaDB refuses grants on it; every account reads its own filtered view of it.
UNGRANTABLE = frozenset({"information_schema"})
_WILDCARDS = "*?["


@dataclass(frozen=True, slots=True)
class Catalog:
    """What exists on one server: databases and ``(database, table)`` pairs (views and sequences included)."""

    databases: tuple[str, ...]
    tables: tuple[tuple[str, str], ...]


@dataclass(frozen=True, order=True, slots=True)
class Excess:
    """A right an account holds beyond its plan; ``public`` when it comes from ``GRANT ... TO PUBLIC``."""

    privilege: Privilege
    public: bool = False

    def __str__(self) -> str:
        return self.privilege.sql() + (" (granted TO PUBLIC)" if self.public else "")


def server_of(target: TargetSettings) -> tuple[str, int]:
    """The server an account lives on (compared as written in the config)."""
    return (target.host.lower(), target.port)


def account_grants(
    policy: PolicySet, targets: Mapping[str, TargetSettings], target: str, db_user: str, now: datetime
) -> tuple[Grant, ...]:
    """The unexpired grants using ``db_user`` on ``target``'s server, whichever target on it they name."""
    server = server_of(targets[target])
    return tuple(
        g
        for g in policy.grants
        if g.db_user == db_user
        and g.target in targets
        and server_of(targets[g.target]) == server
        and not g.expired(now)
    )


def db_users_on(policy: PolicySet, targets: Mapping[str, TargetSettings], names: Iterable[str]) -> list[str]:
    """Every account the gateway may use on the targets ``names``: configured ones and those grants name."""
    chosen = set(names)
    users = {u for name in chosen for u in targets[name].db_users()}
    users |= {g.db_user for g in policy.grants if g.target in chosen}
    return sorted(users)


class Needs:
    """The rights one account needs, from its grants; answers by name, so no catalog is needed to judge."""

    def __init__(self, grants: Sequence[Grant]) -> None:
        self.grants = tuple(grants)
        self._tables: dict[tuple[str, str], frozenset[str]] = {}
        self._databases: dict[str, frozenset[str]] = {}

    def table(self, db: str, table: str) -> frozenset[str]:
        """Rights needed on ``db.table`` (whether granted there or on ``db.*``)."""
        key = (db, table)
        if key not in self._tables:
            name = f"{db}.{table}"
            rights: set[str] = set()
            if db.lower() not in UNGRANTABLE:
                for grant in self.grants:
                    if table_allowed(grant, name):
                        rights |= RIGHTS[grant.access]
            self._tables[key] = frozenset(rights)
        return self._tables[key]

    def database(self, db: str) -> frozenset[str]:
        """Rights needed on ``db.*`` itself."""
        if db not in self._databases:
            rights: set[str] = set()
            for grant in self.grants:
                if _whole_database(grant, db):
                    rights |= RIGHTS[grant.access]
                elif grant.access is Access.DDL and _some_table(grant, db):
                    rights |= CREATE_ONLY
            self._databases[db] = frozenset(rights)
        return self._databases[db]

    def covers(self, item: Privilege) -> bool:
        """Whether a held right is within what the grants need."""
        if item.level is Level.GLOBAL:
            return item.name == "USAGE"
        if item.level is Level.DATABASE:
            db = literal_database(item.db)
            return db is not None and item.name in self.database(db)
        if item.level in {Level.TABLE, Level.COLUMN}:
            return item.name in self.table(item.db, item.table)
        return False  # routines, proxies, roles, unparsed lines

    def excess(self, lines: Iterable[GrantLine]) -> tuple[Excess, ...]:
        """Every held right beyond the need, from ``SHOW GRANTS`` lines (in their order, no repeats).

        Lines listing a role's own rights are skipped: they appear only while a
        role is active, and the role grant itself already counts as excess.
        """
        found = {
            Excess(item, public=line.grantee == "PUBLIC"): None
            for line in lines
            if not line.role_grantee
            for item in line.privileges
            if not self.covers(item)
        }
        return tuple(found)


def plan(needs: Needs, catalog: Catalog) -> tuple[Privilege, ...]:
    """The rights to grant on what exists: ``db.*`` where a database is wholly allowed, else table by table."""
    items: list[Privilege] = []
    for db in sorted(set(catalog.databases)):
        items.extend(Privilege(Level.DATABASE, name, escape_database(db)) for name in _ordered(needs.database(db)))
    for db, table in sorted(set(catalog.tables)):
        rights = needs.table(db, table) - needs.database(db)
        items.extend(Privilege(Level.TABLE, name, db, table) for name in _ordered(rights))
    return tuple(items)


def missing(planned: Iterable[Privilege], lines: Iterable[GrantLine]) -> tuple[Privilege, ...]:
    """Planned rights the account does not hold yet (so MariaDB would refuse what the policy allows)."""
    held = [p for line in lines if not line.role_grantee for p in line.privileges]
    return tuple(p for p in planned if not any(_holds(h, p) for h in held))


def grant_statements(planned: Iterable[Privilege], account: str) -> list[str]:
    """One ``GRANT`` per object, privileges in a fixed order, backtick-quoted names."""
    by_object: dict[str, list[str]] = {}
    for item in planned:
        by_object.setdefault(item.on(), []).append(item.name)
    return [f"GRANT {', '.join(names)} ON {on} TO {account};" for on, names in by_object.items()]


def revoke_statements(excess: Iterable[Excess], account: str) -> list[str]:
    """``REVOKE`` statements taking the excess away (``FROM PUBLIC`` for rights every account gets)."""
    statements: list[str] = []
    for item in excess:
        privilege, grantee = item.privilege, "PUBLIC" if item.public else account
        if privilege.level is Level.UNPARSED:
            statement = f"-- not revoked automatically, review by hand: {privilege.name}"
        elif privilege.level is Level.ROLE:
            statement = f"REVOKE {privilege.sql().removeprefix('ROLE ')} FROM {grantee};"
        elif privilege.level is Level.PROXY:
            statement = f"REVOKE PROXY ON {privilege.name.removesuffix(' WITH GRANT OPTION')} FROM {grantee};"
        else:
            statement = f"REVOKE {privilege.sql()} FROM {grantee};"
        if statement not in statements:
            statements.append(statement)
    return statements


def account_name(user: str, host: str) -> str:
    """``'user'@'host'`` as SQL."""
    return f"{quote_string(user)}@{quote_string(host)}"


def escape_database(db: str) -> str:
    """A database name as a database-level grant names it: ``_``, ``%`` and backslash escaped (no wildcards)."""
    return re.sub(r"([\\_%])", r"\\\1", db)


def literal_database(pattern: str) -> str | None:
    """The one database a database-level grant names, or None when its name is a wildcard pattern."""
    out: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(next(chars, "\\"))
        elif char in "_%":
            return None
        else:
            out.append(char)
    return "".join(out)


def _like(pattern: str, name: str) -> bool:
    regex: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            regex.append(re.escape(next(chars, "\\")))
        else:
            regex.append({"%": ".*", "_": "."}.get(char, re.escape(char)))
    return re.fullmatch("".join(regex), name, re.DOTALL) is not None


def _holds(held: Privilege, wanted: Privilege) -> bool:
    if held.name not in {wanted.name, "ALL PRIVILEGES"}:
        return False
    if held.level is Level.GLOBAL:
        return True
    db = literal_database(wanted.db) if wanted.level is Level.DATABASE else wanted.db
    if held.level is Level.DATABASE:
        return db is not None and _like(held.db, db)
    return held.level is wanted.level is Level.TABLE and (held.db, held.table) == (wanted.db, wanted.table)


def _ordered(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda n: (ORDER.get(n, len(ORDER)), n))


def _prefix(pattern: str) -> str:
    """The literal start of an fnmatch pattern (up to its first wildcard)."""
    cut = min((pattern.find(c) for c in _WILDCARDS if c in pattern), default=len(pattern))
    return pattern[:cut]


def _may_match_in(pattern: str, db: str) -> bool:
    """Whether ``pattern`` could match some ``db.<name>`` (conservative: its literal start fits)."""
    start, head = _prefix(pattern), f"{db}."
    return head.startswith(start) or start.startswith(head)


def _whole_database(grant: Grant, db: str) -> bool:
    """Whether ``grant`` allows every table of ``db``, now and later (conservative: False when unsure)."""
    db = db.lower()
    system = db in SYSTEM_SCHEMAS
    if db in UNGRANTABLE or any(_may_match_in(d, db) for d in grant.tables_deny):
        return False
    if grant.tables_allow is None:
        return not system
    for pattern in grant.tables_allow:
        if pattern == "*" and not system:
            return True
        head = pattern.removesuffix(".*")
        if head != pattern and "." not in head and fnmatchcase(db, head) and (not system or head == db):
            return True
    return False


def _some_table(grant: Grant, db: str) -> bool:
    """Whether ``grant`` may allow some table of ``db`` (a ddl grant then needs to create tables there)."""
    db = db.lower()
    system = db in SYSTEM_SCHEMAS
    if db in UNGRANTABLE or any(_denies_whole(d, db) for d in grant.tables_deny):
        return False
    if grant.tables_allow is None:
        return not system
    return any(_may_match_in(p, db) and (not system or p.partition(".")[0] == db) for p in grant.tables_allow)


def _denies_whole(pattern: str, db: str) -> bool:
    head = pattern.removesuffix(".*")
    return pattern == "*" or (head != pattern and "." not in head and fnmatchcase(db, head))
