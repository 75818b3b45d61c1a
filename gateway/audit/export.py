"""Export audit entries as JSON lines or CSV.

Without filters the export streams the whole log in chain (seq) order, so a
JSON-lines export can itself be verified offline (each line is the entry as
hashed, plus ``prev_hash`` and ``hash``). The shared store's export is in
commit order across its chains, each entry naming its ``chain``: the lines of
one chain are still in seq order. With filters it pages through
:meth:`~gateway.audit.store.AuditStore.query` oldest first.

CSV has one column per field of the record kinds (:data:`CSV_COLUMNS`, from
``gateway/audit/records.py``) and an ``extra`` column for any other field (a
record of an older gateway may have some). A cell holds a string as it is,
nothing for a null, and JSON for anything else (numbers, booleans, lists such
as ``groups`` and ``tables``), so :func:`csv_value` reads a cell back. Every cell
is formula-safe (``gateway/csvcells.py``): one that starts with ``=``, ``+``,
``-``, ``@``, tab, CR or ``'`` gets a leading ``'``, which :func:`csv_value`
removes again.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import astuple
from typing import Any, TextIO

import orjson

from gateway.audit.fields import FIELDS, JSON_FIELDS
from gateway.audit.query import MAX_LIMIT, AuditFilter
from gateway.audit.store import AuditStore, Entry
from gateway.csvcells import original_cell, safe_cell

FORMATS = ("jsonl", "csv")
# Every field a record kind defines (gateway/audit/records.py), between the seq and the chain's hashes.
CSV_COLUMNS = ("seq", *FIELDS, "prev_hash", "hash", "extra")
_KNOWN = frozenset(CSV_COLUMNS) - {"extra"}
# Fields whose values are not text: their cells hold JSON.
_JSON_COLUMNS = JSON_FIELDS | {"seq", "extra"}


def csv_cell(value: object) -> str:
    """A formula-safe CSV cell for ``value``: strings as they are, null as empty, other values as JSON."""
    if value is None:
        return ""
    return safe_cell(value if isinstance(value, str) else orjson.dumps(value).decode())


def csv_value(column: str, cell: str) -> object:
    """Read back a cell written by :func:`csv_cell` (strings stay strings where the field is text)."""
    if cell == "":
        return None
    text = original_cell(cell)
    if column in _JSON_COLUMNS:
        return orjson.loads(text)
    return text


def csv_row(entry: Entry) -> list[str]:
    """One CSV row for ``entry``, in :data:`CSV_COLUMNS` order."""
    extra = {k: v for k, v in entry.items() if k not in _KNOWN}
    return [csv_cell(entry.get(c)) for c in CSV_COLUMNS[:-1]] + [csv_cell(extra or None)]


def entries(store: AuditStore, filters: AuditFilter, batch: int = 5000) -> Iterator[Entry]:
    """Every entry matching ``filters``: chain order without filters, else oldest first by time."""
    if not any(value is not None for value in astuple(filters)):
        yield from store.iter_entries(batch=batch)
        return
    cursor: str | None = None
    while True:
        page = store.query(filters, cursor, MAX_LIMIT, oldest_first=True)
        yield from page.entries
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def export(
    store: AuditStore,
    out: TextIO,
    fmt: str,
    filters: AuditFilter | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the matching entries to ``out`` as ``fmt`` (jsonl or csv); return how many."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    writer: Any = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    count = 0
    for entry in entries(store, filters or AuditFilter()):
        if writer is not None:
            writer.writerow(csv_row(entry))
        else:
            out.write(orjson.dumps(entry).decode())
            out.write("\n")
        count += 1
        if progress is not None and count % 1000 == 0:
            progress(count)
    return count
