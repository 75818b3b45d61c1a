"""What both SQL audit stores share: the row layout, and reading entries back.

A row holds ``seq``, the plain columns (:data:`~gateway.audit.fields.COLUMNS`,
copied out of the record for filters, and the statement text for the free-text
search), the hashed record bytes and the chain columns. :class:`SQLAuditStore`
implements every read of :class:`~gateway.audit.store.AuditStore` once, over
one method a store provides (:meth:`SQLAuditStore._rows`: run a query, return
its rows); the SQLite and MariaDB stores differ only in how they connect,
write and spell a time.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from gateway.audit.fields import COLUMNS
from gateway.audit.query import DEFAULT_LIMIT, TEXT_SCAN_LIMIT, AuditFilter, Dialect, Row, page
from gateway.audit.store import AuditPage, Entry, column_mismatches, decode_entry, statement_text

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

# Every column a row holds besides record, prev_hash and hash (which the chain check covers).
CHECKED = ("seq", *COLUMNS, "statement")


def insert_sql(dialect: Dialect, rows: int = 1) -> str:
    """The INSERT of ``rows`` rows: ``seq``, the plain columns, the statement, the record and its chain columns."""
    names = (*CHECKED, "record", "prev_hash", "hash")
    values = ", ".join([f"({', '.join([dialect.param] * len(names))})"] * rows)
    return f"INSERT INTO {dialect.table} ({', '.join(names)}) VALUES {values}"  # noqa: S608 - fixed names


def text_column(value: object) -> str | None:
    """A plain column's text: strings as they are, anything else as ``str()``."""
    return value if value is None or isinstance(value, str) else str(value)


class SQLAuditStore(abc.ABC):
    """The reads of an SQL audit store (``iter_entries``, ``iter_checked``, ``last``, ``query``), done once."""

    dialect: Dialect
    text_scan_limit: int = TEXT_SCAN_LIMIT  # records one free-text page may examine

    @abc.abstractmethod
    def _rows(self, sql: str, params: Sequence[object]) -> list[Row]:
        """Run ``sql`` (its parameters in the dialect's style) and return every row."""

    def _time_column(self, value: object) -> object:
        """The time column's value for a record's ``time``."""
        return text_column(value)

    def _text_column(self, name: str, value: object) -> str | None:
        """The plain column ``name``'s value for the record's field."""
        del name
        return text_column(value)

    def row_columns(self, record: Mapping[str, object]) -> tuple[object, ...]:
        """The plain columns copied out of ``record``, in :data:`CHECKED` order after ``seq``."""
        return (
            self._time_column(record.get("time")),
            *(self._text_column(name, record.get(name)) for name in COLUMNS[1:]),
            statement_text(record),
        )

    def _mismatches(self, stored: Sequence[object], entry: Entry) -> tuple[str, ...]:
        """The names of the row's stored columns that disagree with its hashed record."""
        return column_mismatches(CHECKED, stored, (entry.get("seq"), *self.row_columns(entry)))

    def _select(self, *columns: str) -> str:
        extra = "".join(f", {c}" for c in columns)
        return f"SELECT {self.dialect.key}, record, prev_hash, hash{extra} FROM {self.dialect.table}"  # noqa: S608 - fixed names

    def iter_entries(self, after_seq: int = 0, batch: int = 1000) -> Iterator[Entry]:
        """Yield entries with ``seq > after_seq`` in seq order, ``batch`` rows per read.

        In the shared store (a chain per replica) the order, and ``after_seq``,
        are the row ``id``'s: every chain's entries as they were committed.

        Each batch is its own short query (keyset pagination), so no cursor or
        lock is held while the caller works and writers are never blocked.
        Entries are decoded from the stored record bytes (``seq`` included),
        not from the plain columns, so verification sees what was hashed.
        """
        for row in self._rows_after(self._select(), after_seq, batch):
            yield decode_entry(row[1], row[2], row[3])

    def iter_checked(self, after_seq: int = 0, batch: int = 1000) -> Iterator[tuple[Entry, tuple[str, ...]]]:
        """Entries in seq order, each with the names of its plain columns that disagree with its record."""
        for row in self._rows_after(self._select(*CHECKED), after_seq, batch):
            entry = decode_entry(row[1], row[2], row[3])
            yield entry, self._mismatches(row[4:], entry)

    def _rows_after(self, select: str, after_seq: int, batch: int) -> Iterator[Row]:
        p, key = self.dialect.param, self.dialect.key
        while True:
            rows = self._rows(f"{select} WHERE {key} > {p} ORDER BY {key} LIMIT {p}", (after_seq, batch))
            yield from rows
            if rows:
                after_seq = int(rows[-1][0])
            if len(rows) < batch:
                return

    def last(self) -> Entry | None:
        """Return the entry with the highest seq, or ``None`` for an empty log."""
        rows = self._rows(f"{self._select()} ORDER BY {self.dialect.key} DESC LIMIT 1", ())
        return decode_entry(rows[0][1], rows[0][2], rows[0][3]) if rows else None

    def query(
        self,
        filters: AuditFilter,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
        *,
        oldest_first: bool = False,
    ) -> AuditPage:
        """One page of entries matching ``filters``, newest first; see ``gateway/audit/query.py``."""
        result = page(
            self._rows, self.dialect, filters, cursor, limit, oldest_first=oldest_first, scan_limit=self.text_scan_limit
        )
        return AuditPage([decode_entry(r[1], r[2], r[3]) for r in result.rows], result.next_cursor)
