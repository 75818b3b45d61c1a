"""Filtering the audit log: the filter, the opaque cursor, and the SQL both stores share.

Order is **newest first**: by record ``time``, then by the row key (``seq``,
the chain order, or the shared store's row ``id``) for records with the same
time; ``oldest_first`` reverses it (export). Every filter but the free text is
an exact match on an indexed column, and each index ends in ``time`` (and,
implicitly, the primary key), so one
index answers both the filter and the order and a page reads about ``limit``
rows however big the log is.

The cursor is the *key* of the last entry a page returned (``seq`` in a store
with one chain, the row ``id`` in the shared store with a chain per replica,
whose pages merge every chain by time), wrapped so that callers treat it as
opaque. The next page continues strictly after that entry's ``(time, key)``,
so records written meanwhile never shift a page.

Free text (``q``) is a case-insensitive substring match on the statement as
recorded (after literal redaction, if enabled). No index serves a substring,
so it is a **bounded scan**: one page examines at most ``scan_limit`` records
that pass the other filters. A page may therefore hold fewer than ``limit``
entries, or none, and still carry a ``next_cursor`` that resumes the scan
where it stopped; ``next_cursor`` is ``None`` only when the log is exhausted.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from gateway.audit.fields import COLUMNS
from gateway.errors import InvalidRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
TEXT_SCAN_LIMIT = 10_000
MAX_TEXT = 200
# Exact matches on the plain columns both stores keep (every one but the time, which is a range).
EQUALITY_FILTERS = tuple(name for name in COLUMNS if name != "time")
_CURSOR_PREFIX = "gwa1:"

Row = tuple[Any, ...]
Execute = Callable[[str, Sequence[object]], list[Row]]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What an auditor asks for; every field that is set must match.

    One field per plain column (:data:`EQUALITY_FILTERS`, from the record
    definitions in ``gateway/audit/records.py``); ``since`` is inclusive and
    ``until`` exclusive, both timezone-aware; ``q`` is the free text.
    """

    user: str | None = None
    target: str | None = None
    decision: str | None = None
    code: str | None = None
    event: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None

    def __post_init__(self) -> None:
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("audit filter times must be timezone-aware")
        if self.q is not None and len(self.q) > MAX_TEXT:
            raise InvalidRequest(f"q is at most {MAX_TEXT} characters")
        # SQLite's LIKE stops at a NUL: "a\0b" would match every statement.
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str) and "\x00" in value:
                raise InvalidRequest(f"{field.name} cannot contain a NUL character")

    def describe(self) -> dict[str, str]:
        """The filters that are set, as text (for logs and the audit of audit reads)."""
        out: dict[str, str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                out[field.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out


@dataclass(frozen=True, slots=True)
class PageRows:
    """Raw rows ``(key, record, prev_hash, hash)`` of one page and the cursor for the next."""

    rows: list[Row]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a store spells parameters and times."""

    table: str
    param: str
    time_value: Callable[[datetime], object]
    key: str = "seq"  # the row's place in the whole log: seq for one chain, the row id for several


def encode_cursor(seq: int) -> str:
    """Wrap a seq as an opaque cursor string."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Return the seq inside ``cursor``; raise ``InvalidRequest`` for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest("the cursor is not valid") from None
    digits = text.removeprefix(_CURSOR_PREFIX)
    if not text.startswith(_CURSOR_PREFIX) or not digits.isdigit() or len(digits) > 19:  # noqa: PLR2004 - int64
        raise InvalidRequest("the cursor is not valid")
    return int(digits)


def like_pattern(text: str) -> str:
    """A LIKE pattern (escape character ``!``) matching ``text`` anywhere."""
    escaped = text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


class _Where:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.clauses: list[str] = []
        self.params: list[object] = []

    def add(self, clause: str, *params: object) -> None:
        self.clauses.append(clause.replace("?", self.dialect.param))
        self.params.extend(params)

    def after(self, moment: object, key: int, *, newest_first: bool) -> None:
        """Keep rows strictly after ``(moment, seq)`` in page order.

        Written as a range on ``time`` plus a small residual, which both
        MariaDB and SQLite turn into an index range (a row-value comparison
        or an OR is not always).
        """
        k = self.dialect.key
        if newest_first:
            self.add(f"time <= ? AND NOT (time = ? AND {k} >= ?)", moment, moment, key)
        else:
            self.add(f"time >= ? AND NOT (time = ? AND {k} <= ?)", moment, moment, key)

    def until(self, moment: object, key: int, *, newest_first: bool) -> None:
        """Keep rows up to and including ``(moment, key)`` in page order."""
        k = self.dialect.key
        if newest_first:
            self.add(f"time >= ? AND NOT (time = ? AND {k} < ?)", moment, moment, key)
        else:
            self.add(f"time <= ? AND NOT (time = ? AND {k} > ?)", moment, moment, key)

    @property
    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


def _filtered(dialect: Dialect, filters: AuditFilter) -> _Where:
    where = _Where(dialect)
    for name in EQUALITY_FILTERS:
        value = getattr(filters, name)
        if value is not None:
            where.add(f"{name} = ?", value)
    if filters.since is not None:
        where.add("time >= ?", dialect.time_value(filters.since))
    if filters.until is not None:
        where.add("time < ?", dialect.time_value(filters.until))
    return where


def page(
    execute: Execute,
    dialect: Dialect,
    filters: AuditFilter,
    cursor: str | None,
    limit: int,
    *,
    oldest_first: bool = False,
    scan_limit: int = TEXT_SCAN_LIMIT,
) -> PageRows:
    """Run the filtered, keyset-paged query through ``execute``; see the module doc."""
    limit = max(1, min(limit, MAX_LIMIT))
    newest = not oldest_first
    table, p, key = dialect.table, dialect.param, dialect.key
    order = f" ORDER BY time DESC, {key} DESC" if newest else f" ORDER BY time, {key}"
    where = _filtered(dialect, filters)
    if cursor is not None:
        seq = decode_cursor(cursor)
        found = execute(f"SELECT time FROM {table} WHERE {key} = {p}", [seq])  # noqa: S608 - fixed names
        if not found:
            raise InvalidRequest("the cursor does not point at a record of this log")
        where.after(found[0][0], seq, newest_first=newest)
    boundary: Row | None = None
    if filters.q:
        # The scan window: the scan_limit-th row in page order bounds the work.
        rows = execute(
            f"SELECT time, {key} FROM {table}{where.sql}{order} LIMIT 1 OFFSET {int(scan_limit) - 1}",  # noqa: S608 - names are the store's constants; values are bound
            where.params,
        )
        boundary = rows[0] if rows else None
        if boundary is not None:
            where.until(boundary[0], boundary[1], newest_first=newest)
        where.add("statement LIKE ? ESCAPE '!'", like_pattern(filters.q))
    rows = execute(
        f"SELECT {key}, record, prev_hash, hash FROM {table}{where.sql}{order} LIMIT {limit + 1}",  # noqa: S608 - names are the store's constants; values are bound
        where.params,
    )
    if len(rows) > limit:
        return PageRows(rows[:limit], encode_cursor(int(rows[limit - 1][0])))
    if boundary is not None:
        return PageRows(rows, encode_cursor(int(boundary[1])))
    return PageRows(rows, None)
