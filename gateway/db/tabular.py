r"""Rows as CSV or tab-separated text, one fetched batch at a time (``Accept: text/csv`` or TSV).

A cell's text is its JSON value's (``encoding.text_of``: DECIMAL as written,
dates and times in ISO 8601, TIME as ``[-]HH:MM:SS``, binary as base64).

- **CSV** (RFC 4180 quoting, ``\n`` line ends, a header row of column
  names): NULL is an empty field, as in the client's ``--format csv``; every
  text cell is formula-safe (``gateway/csvcells.py``, SECURITY rule 29).
- **TSV** as ``mariadb --batch`` writes it: a header row, fields separated
  by tabs, NULL as ``NULL``, and NUL, tab, newline and backslash inside a
  field escaped as ``\0``, ``\t``, ``\n`` and ``\\``.

Speed: the batch is turned into columns (``zip``), and each column is looked
at once, in C where possible (the set of its value types, a joined scan for
characters that need work): a column of numbers, or of text that needs no
escaping, is handed to the writer as it is; a column of other values (dates,
DECIMAL, binary) becomes its JSON values' text through orjson, in C; only the
cells that need a guard or an escape go through Python one by one.
"""

from __future__ import annotations

import csv
import io
import operator
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import cast

import orjson

from gateway.csvcells import TRIGGERS, TSV_ESCAPES, safe_cell
from gateway.db.encoding import json_default, text_of

CSV = "text/csv"
TSV = "text/tab-separated-values"
_NONE = type(None)
_NUMBERS = frozenset({int, float, Decimal})  # their text never needs quoting, escaping or a formula guard
_NUMBERS_OR_NULL = _NUMBERS | {_NONE}
_TEXT_OR_NULL = frozenset({str, _NONE})
_FIRST = operator.itemgetter(0)  # a non-empty cell's first character
_TSV_SPECIAL = ("\0", "\t", "\n", "\\")
_CSV_SPECIAL = (",", '"', "\r", "\n")  # a field with one of these is quoted

Column = Sequence[object]


def _json_values(column: Column) -> Column:
    """The column's JSON values (text for DECIMAL, times, binary, SET), through orjson: in C but for the hooks."""
    values: list[object] = orjson.loads(orjson.dumps(column, default=json_default))
    return values


def _texts(column: Column) -> Sequence[str | None]:
    """A column whose cells the caller checked are all str or None, typed so."""
    return cast("Sequence[str | None]", column)


def _csv_cell(value: object) -> object:
    if value is None:
        return None
    return safe_cell(value if isinstance(value, str) else text_of(value))


def _csv_column(column: Column) -> Column:
    kinds = set(map(type, column))
    if kinds <= _NUMBERS_OR_NULL:
        return column  # the writer writes str() of each and "" for None
    if not kinds <= _TEXT_OR_NULL:
        column = _json_values(column)
        kinds = set(map(type, column))
    if kinds <= _TEXT_OR_NULL and TRIGGERS.isdisjoint(map(_FIRST, filter(None, _texts(column)))):
        return column  # no cell starts with a formula trigger
    return list(map(_csv_cell, column))


def _unquoted(column: Column) -> Sequence[str] | None:
    """A CSV column's fields as the writer would write them, when none needs quoting; None when one does."""
    kinds = set(map(type, column))
    if kinds <= _NUMBERS:
        return list(map(str, column))
    if kinds <= _NUMBERS_OR_NULL:
        return ["" if value is None else str(value) for value in column]
    if kinds <= _TEXT_OR_NULL:
        texts = _texts(column)
        if any(special in "".join(filter(None, texts)) for special in _CSV_SPECIAL):
            return None
        if _NONE not in kinds:
            return cast("Sequence[str]", texts)  # no None among them: as they are
        return ["" if value is None else value for value in texts]
    return None


def _tsv_cell(value: object) -> str:
    if value is None:
        return "NULL"
    return (value if isinstance(value, str) else text_of(value)).translate(TSV_ESCAPES)


def _tsv_column(column: Column) -> Iterable[str]:
    kinds = set(map(type, column))
    if kinds <= _NUMBERS:
        return map(str, column)
    if kinds <= _NUMBERS_OR_NULL:
        return ["NULL" if value is None else str(value) for value in column]
    if not kinds <= _TEXT_OR_NULL:
        column = _json_values(column)
        kinds = set(map(type, column))
    if kinds <= _TEXT_OR_NULL:
        texts = _texts(column)
        if not any(special in "".join(filter(None, texts)) for special in _TSV_SPECIAL):
            if _NONE not in kinds:
                return cast("Sequence[str]", texts)  # no None among them: as they are
            return ["NULL" if value is None else value for value in texts]
    return map(_tsv_cell, column)


class TableEncoder:
    """Encodes one stream's header and row batches as CSV or TSV bytes."""

    def __init__(self, media: str) -> None:
        if media not in {CSV, TSV}:
            raise ValueError(f"not a table format: {media}")
        self.media = media
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")

    def header(self, names: Sequence[str]) -> bytes:
        """The header row (empty when the statement returned no columns)."""
        if not names:
            return b""
        if self.media == TSV:
            return ("\t".join(name.translate(TSV_ESCAPES) for name in names) + "\n").encode()
        return self._csv([[safe_cell(name) for name in names]])

    def rows(self, rows: Sequence[Sequence[object]]) -> bytes:
        """One batch of rows."""
        if not rows:
            return b""
        columns = list(zip(*rows, strict=True))
        if self.media == TSV:
            cells: list[Iterable[str]] = [_tsv_column(column) for column in columns]
            return ("\n".join(map("\t".join, zip(*cells, strict=True))) + "\n").encode()
        fields = [_csv_column(column) for column in columns]
        if len(fields) > 1:  # (the writer quotes a lone empty field: one column always goes through it)
            texts = [_unquoted(column) for column in fields]
            plain = [text for text in texts if text is not None]
            if len(plain) == len(texts):  # no field needs quoting: joined as the writer would write them
                return ("\n".join(map(",".join, zip(*plain, strict=True))) + "\n").encode()
            fields = [text if text is not None else field for text, field in zip(texts, fields, strict=True)]
        return self._csv(zip(*fields, strict=True))

    def _csv(self, rows: Iterable[Iterable[object]]) -> bytes:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerows(rows)
        return self._buffer.getvalue().encode()
