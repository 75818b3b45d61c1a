"""Views resolved to the tables they read, from the server's own catalogue (SECURITY rule 28).

A view runs with its definer's rights, so a grant that allows ``shop.v`` would
otherwise read whatever ``shop.v`` selects from, a denied table included, and
the database's own privileges would not stop it. Table rules therefore apply
to every view a statement names and, recursively, to the base tables behind
it: ``expand`` returns a statement's tables plus those. For the same reason
the functions a view's definition calls count as the statement's own (a view
of ``SELECT other_db.f()`` runs a stored function, which reads what it likes,
with the definer's rights; a view of ``SELECT LOAD_FILE(...)`` too): ``expand``
returns them as well, and the function rules apply to them.

The catalogue is read on the decision's own ``(target, db_user)`` connection
from ``information_schema.VIEWS``; each definition is parsed with the same
dialect as statements. A view whose definition the account cannot see (it
lacks ``SHOW VIEW``; ``gateway db plan`` grants it) or that does not parse is
unresolvable, and the statement is refused. Answers are cached per
``(target, db_user, name)`` for ``ttl`` seconds (names that are not views
too); ``forget`` drops a target's entries when the gateway itself ran DDL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from asyncmy import errors as db_errors
from cachetools import TTLCache
from sqlglot.errors import SqlglotError

from gateway.db.pools import PoolRegistry
from gateway.errors import DatabaseUnavailable, StatementRejected
from gateway.policy.decide import Decision
from gateway.sql.dialect import MariaDB
from gateway.sql.functions import regenerate
from gateway.sql.statements import Statement
from gateway.sql.tables import tables_of

MAX_DEPTH = 16
_NOT_A_VIEW: Final[tuple[frozenset[str], frozenset[str]]] = (frozenset(), frozenset())
_DIALECT = MariaDB()
_QUERY = (
    "SELECT LOWER(TABLE_SCHEMA), LOWER(TABLE_NAME), VIEW_DEFINITION FROM information_schema.VIEWS "
    "WHERE (LOWER(TABLE_SCHEMA), LOWER(TABLE_NAME)) IN ({})"
)


# What the catalogue says of one name: the tables it reads and the functions it calls (both empty:
# not a view, or a view of no table and no call), or why they cannot be known.
Known = tuple[frozenset[str], frozenset[str]] | str


class ViewCatalog:
    """Which of a statement's tables are views, and what they read; cached per account."""

    def __init__(self, pools: PoolRegistry, *, ttl: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._pools = pools
        self._cache: TTLCache[tuple[str, str, str], Known] = TTLCache(maxsize=100_000, ttl=ttl, timer=clock)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def expand(self, decision: Decision, tables: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
        """``tables`` plus every table the views among them read, and the functions they call, recursively.

        Refuses unresolvable views.
        """
        found = set(tables)
        calls: set[str] = set()
        pending = set(found)
        for _ in range(MAX_DEPTH):
            if not pending:
                return frozenset(found), frozenset(calls)
            answers = await self._lookup(decision, pending)
            pending = set()
            for name, known in answers.items():
                if isinstance(known, str):
                    raise StatementRejected(f"view {name} cannot be resolved to its tables: {known}")
                bases, functions = known
                pending |= bases - found
                found |= bases
                calls |= functions
        raise StatementRejected(f"views are nested deeper than {MAX_DEPTH} levels")

    async def expand_statement(self, decision: Decision, statement: Statement) -> Statement:
        """``statement`` with its views' base tables added, and the functions their definitions call."""
        tables, functions = await self.expand(decision, statement.tables)
        if tables == statement.tables and functions <= statement.functions:
            return statement  # no view among its tables: the very same statement (the caller relies on it)
        return dataclasses.replace(statement, tables=tables, functions=statement.functions | functions)

    def forget(self, target: str) -> None:
        """Drop what is known of ``target``'s views (after DDL through the gateway)."""
        for key in [key for key in self._cache if key[0] == target]:
            self._cache.pop(key, None)

    async def _lookup(self, decision: Decision, names: set[str]) -> dict[str, Known]:
        account = (decision.target, decision.db_user or "")
        answers = {name: self._cache.get((*account, name)) for name in names}
        missing = sorted(name for name, known in answers.items() if known is None)
        if missing:
            # One catalogue read per account at a time: concurrent misses (a burst on a cold cache)
            # wait for it instead of each taking a pooled connection.
            async with self._locks.setdefault(account, asyncio.Lock()):
                answers |= {name: self._cache.get((*account, name)) for name in missing}
                still = sorted(name for name in missing if answers[name] is None)
                if still:
                    loaded = await self._load(decision, still)
                    for name in still:
                        answers[name] = self._cache[(*account, name)] = loaded.get(name, _NOT_A_VIEW)
        return {name: known for name, known in answers.items() if known is not None}

    async def _load(self, decision: Decision, names: list[str]) -> dict[str, Known]:
        pairs = [name.split(".", 1) for name in names]
        sql = _QUERY.format(", ".join(["(%s, %s)"] * len(pairs)))
        try:
            async with self._pools.connection(decision) as conn, conn.raw.cursor() as cursor:
                await cursor.execute(sql, [part for pair in pairs for part in pair])
                rows: list[Any] = list(await cursor.fetchall())
        except db_errors.MySQLError as exc:
            raise DatabaseUnavailable(f"cannot read the view catalogue ({exc.args[-1] if exc.args else exc})") from None
        return {f"{schema}.{name}": _bases(schema, definition) for schema, name, definition in rows}


def _bases(schema: str, definition: str | None) -> Known:
    if not definition:
        return "the database account cannot see its definition (it needs SHOW VIEW on it)"
    try:
        trees = [tree for tree in _DIALECT.parse(definition) if tree is not None]
        if len(trees) != 1:
            return "its definition is not one statement"
        tables = tables_of(trees[0], schema)
        _, functions = regenerate(trees[0], definition)  # last: the generator may rewrite the tree
    except (SqlglotError, StatementRejected, RecursionError, ValueError):
        return "its definition cannot be analysed"
    return tables, functions
