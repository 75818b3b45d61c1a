"""What a reviewed write would change, bounded (issue 16): sample rows before and after, inside the dry run.

``Sampler`` is the dry run's ``execution.Probe``. Around each single-table
UPDATE or DELETE of the held work, inside the dry-run transaction, on the
grant's account and with the grant's timeout, it

1. looks up the table's primary key (none: counts only);
2. reads at most ``rows`` of the rows the write would touch (plus one, to know
   whether there are more) with the read ``gateway.sql.sample.derive`` builds
   from the statement's own tree: the same table, WHERE, ORDER BY and LIMIT;
3. after an UPDATE, reads the same rows again by primary key.

Each read is analysed, decided and durably recorded by the gateway's
authorizer exactly as a read the caller sent would be (``authorize``: a
decision record naming the review); a read the policy refuses, one it gives
to a grant on another database account (the reads run on the dry run's own
connection), or one that reads anything but the write's own table, is not run
and the sample says why.
Values are encoded as query results are (``gateway.db.encoding``); all the
samples of one review together stay under ``max_bytes`` (rows past it are
dropped and ``more`` set).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from gateway.db.encoding import JSONValue, dump_rows, json_default
from gateway.db.execution import Limits
from gateway.db.pools import Pooled
from gateway.db.sampling import primary_key, read_rows
from gateway.errors import DatabaseError, GatewayError
from gateway.policy.decide import Decision
from gateway.sql.sample import SampleRead, by_primary_key, derive
from gateway.sql.statements import Kind, Statement

AuthorizeRead = Callable[[str, Sequence[JSONValue]], Awaitable[tuple[Decision, Statement]]]


class Sampler:
    """Sample rows of each write of a dry run (an ``execution.Probe``); ``samples()`` once it ran."""

    def __init__(
        self,
        statements: Sequence[Statement],
        params: Sequence[Sequence[JSONValue]],
        limits: Limits,
        comment: str,
        authorize: AuthorizeRead,
        *,
        account: str | None,
        rows: int,
        max_bytes: int,
    ) -> None:
        self._statements = statements
        self._plans: list[SampleRead | str] = [derive(s, p, rows) for s, p in zip(statements, params, strict=True)]
        self._limits = Limits(timeout=limits.timeout, max_rows=rows, max_bytes=max_bytes, read_only=False)
        self._comment = comment
        self._authorize = authorize
        self._account = account
        self._rows = rows
        self._max_bytes = max_bytes
        self._found: dict[int, dict[str, Any]] = {}
        self._raw: dict[int, tuple[list[str], list[tuple[Any, ...]], list[int]]] = {}
        self._notes: dict[int, str] = {}

    async def before(self, conn: Pooled, index: int) -> None:
        """Read the rows statement ``index`` would touch (or note why not)."""
        plan = self._plans[index]
        if isinstance(plan, str):
            self._notes[index] = plan
            return
        try:
            key = await primary_key(conn, plan.written, self._limits, self._comment)
        except DatabaseError as exc:  # MariaDB refused the look-up (a view, say); the transaction goes on
            self._notes[index] = f"the table's primary key could not be read ({exc.detail}): counts only"
            return
        if not key:
            self._notes[index] = f"{plan.table} has no primary key: counts only"
            return
        read = await self._read(conn, plan.sql, plan.params, plan.table, index)
        if read is None:
            return
        columns, rows = read
        lowered = [c.lower() for c in columns]
        if any(k.lower() not in lowered for k in key):
            self._notes[index] = "the sample read does not show the primary key: counts only"
            return
        positions = [lowered.index(k.lower()) for k in key]
        more = len(rows) > self._rows
        rows = rows[: self._rows]
        self._raw[index] = (columns, rows, positions)
        self._found[index] = {
            "columns": columns,
            "primary_key": key,
            "before": _encode(rows),
            "after": None,
            "more": more,
        }

    async def after(self, conn: Pooled, index: int) -> None:
        """After an UPDATE: read the same rows again, by primary key."""
        raw = self._raw.get(index)
        plan = self._plans[index]
        if raw is None or isinstance(plan, str) or self._statements[index].command != "UPDATE":
            return
        columns, rows, positions = raw
        keys = [tuple(row[p] for p in positions) for row in rows]
        if not keys:
            self._found[index]["after"] = []
            return
        if any(isinstance(v, bytes | bytearray) for k in keys for v in k):
            self._notes[index] = "a binary primary key: the rows before only"
            return
        key = self._found[index]["primary_key"]
        values = [v for k in keys for v in k]
        read = await self._read(conn, by_primary_key(plan.written, key, len(keys)), values, plan.table, index)
        if read is None:
            return
        after_columns, after_rows = read
        if after_columns != columns:
            self._notes[index] = "the table's columns changed between the reads: the rows before only"
            return
        by_key = {tuple(row[p] for p in positions): row for row in after_rows}
        self._found[index]["after"] = _encode([by_key.get(k) for k in keys])

    def samples(self) -> list[tuple[dict[str, Any] | None, str | None]]:
        """Per statement (sample, note): all samples together under ``max_bytes``."""
        found = [(self._found.get(i), self._notes.get(i)) for i in range(len(self._statements))]
        return bounded(found, self._max_bytes)

    async def _read(
        self, conn: Pooled, sql: str, params: Sequence[Any], table: str, index: int
    ) -> tuple[list[str], list[tuple[Any, ...]]] | None:
        try:
            decision, statement = await self._authorize(sql, _json(params))
        except GatewayError as exc:  # refused and recorded by the authorizer: no sample
            self._notes[index] = f"the sample read was refused ({exc.code}): counts only"
            return None
        if decision.db_user != self._account:  # it would run as another account than the dry run's: not here
            self._notes[index] = f"the sample read is decided by grant {decision.grant} on another account: counts only"
            return None
        if statement.kind is not Kind.READ or statement.tables != frozenset({table}):
            self._notes[index] = "the sample read would read more than the statement's table: counts only"
            return None
        try:
            return await read_rows(conn, statement, params, self._limits, self._comment)
        except DatabaseError as exc:  # MariaDB refused this read; the transaction goes on
            self._notes[index] = f"the sample read failed ({exc.detail}): counts only"
            return None


def _json(values: Sequence[Any]) -> list[JSONValue]:
    """Values as query results show them (what the decision record may name); the raw values are bound."""
    decoded: list[JSONValue] = orjson.loads(dump_rows([list(values)]))[0]
    return decoded


def _encode(rows: Sequence[Sequence[Any] | None]) -> list[Any]:
    """Rows (None for a row the read after did not find) encoded as query results are."""
    encoded: list[Any] = orjson.loads(
        orjson.dumps([None if r is None else list(r) for r in rows], default=json_default)
    )
    return encoded


def bounded(
    found: Sequence[tuple[dict[str, Any] | None, str | None]], max_bytes: int
) -> list[tuple[dict[str, Any] | None, str | None]]:
    """The samples, in order, within ``max_bytes`` of JSON together: rows past it dropped (in place) from the end."""
    budget = max_bytes
    out: list[tuple[dict[str, Any] | None, str | None]] = []
    for sample, given in found:
        note = given
        if sample is None:
            out.append((None, note))
            continue
        size = len(orjson.dumps(sample))
        if size > budget:
            before, after = sample["before"], sample["after"]
            while before and size > budget:
                before.pop()
                if after:
                    after.pop()
                size = len(orjson.dumps(sample))
            sample["more"] = True
            note = note or "rows past the samples' byte cap (admin.review_sample_bytes) are left out"
        budget = max(budget - size, 0)
        out.append((sample, note))
    return out
