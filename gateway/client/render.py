"""Render query results for people and scripts: table (rich), JSON, NDJSON, CSV, TSV.

Results arrive as the gateway's NDJSON stream (a header dict, row lists, a
trailer dict), and every format but ``table`` writes rows as they come, so
exporting a large result keeps the CLI's memory flat. ``table`` must see every
row to size its columns. A stream that ends with an error line raises
``ProblemError`` after the rows already written. ``gateway query --format
csv|tsv`` asks the gateway for CSV / TSV itself and copies its bytes
(``copy_table``); the shell renders those formats from NDJSON here.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, Protocol, TextIO

import orjson
from rich import box
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from gateway.client.errors import ProblemError
from gateway.csvcells import safe_cell, tsv_cell

FORMATS = ("table", "json", "ndjson", "csv", "tsv")
# ``query --format csv|tsv``: the gateway streams these itself (``Accept``), formula-safe CSV, TSV as `mariadb --batch`.
TABLE_MEDIA = {"csv": "text/csv", "tsv": "text/tab-separated-values"}
PROGRESS_EVERY = 10_000  # rows between progress updates


class Sink(Protocol):
    """Where one result goes."""

    def start(self, header: dict[str, Any]) -> None:
        """The header: columns, grant, request id."""

    def row(self, row: list[Any]) -> None:
        """One row."""

    def finish(self, trailer: dict[str, Any]) -> None:
        """The trailer: counts, truncation, duration."""


def _names(header: dict[str, Any]) -> list[str]:
    return [str(c["name"]) for c in header.get("columns", [])]


def summary(trailer: dict[str, Any]) -> str:
    """``12 rows (truncated at the row cap) in 3.1 ms`` and the like."""
    if "bytes" in trailer:  # a CSV / TSV body the gateway wrote: no counts come with it
        return f"{trailer['bytes']:,} bytes written"
    if trailer.get("rows_affected") is not None and not trailer.get("row_count"):
        text = f"{trailer['rows_affected']} rows affected"
        if trailer.get("last_insert_id"):
            text += f", last insert id {trailer['last_insert_id']}"
    else:
        count = trailer.get("row_count", 0)
        text = f"{count} row{'' if count == 1 else 's'}"
        if trailer.get("truncated"):
            text += " (truncated at the row cap)"
    duration = trailer.get("duration_ms")
    return f"{text} in {duration:.1f} ms" if isinstance(duration, int | float) else text


class TableSink:
    """An aligned rich table, then a one-line summary."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._table = Table(box=box.SIMPLE_HEAD, show_edge=False, highlight=False)

    def start(self, header: dict[str, Any]) -> None:
        """Add the columns."""
        for column in header.get("columns", []):
            self._table.add_column(str(column["name"]), no_wrap=False, overflow="fold")

    def row(self, row: list[Any]) -> None:
        """Add a row; NULL shows as a dim NULL."""
        self._table.add_row(*("[dim]NULL[/dim]" if v is None else _escape(str(v)) for v in row))

    def finish(self, trailer: dict[str, Any]) -> None:
        """Print the table (when the statement returned columns) and the summary."""
        if self._table.columns:
            self._console.print(self._table)
        self._console.print(f"[dim]{summary(trailer)}[/dim]", highlight=False)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


class JSONSink:
    """One JSON document shaped like the buffered reply, written row by row."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._first = True
        self._header: dict[str, Any] = {}

    def start(self, header: dict[str, Any]) -> None:
        """Open the document."""
        self._header = header
        columns = orjson.dumps(header.get("columns", [])).decode()
        self._out.write(f'{{"columns": {columns}, "rows": [')

    def row(self, row: list[Any]) -> None:
        """Append a row."""
        self._out.write(("\n  " if self._first else ",\n  ") + orjson.dumps(row).decode())
        self._first = False

    def finish(self, trailer: dict[str, Any]) -> None:
        """Close the document with the counts."""
        rest = {k: v for k, v in trailer.items() if k != "type"}
        rest.update({k: self._header[k] for k in ("request_id", "target", "kind", "grant") if k in self._header})
        tail = orjson.dumps(rest).decode()[1:-1]
        self._out.write(("\n], " if not self._first else "], ") + tail + "}\n")


class NDJSONSink:
    """The gateway's own NDJSON lines, as received."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def start(self, header: dict[str, Any]) -> None:
        """Write the header line."""
        self._out.write(orjson.dumps(header).decode() + "\n")

    def row(self, row: list[Any]) -> None:
        """Write a row line."""
        self._out.write(orjson.dumps(row).decode() + "\n")

    def finish(self, trailer: dict[str, Any]) -> None:
        """Write the trailer line."""
        self._out.write(orjson.dumps(trailer).decode() + "\n")


class CSVSink:
    """RFC 4180 CSV with a header row; NULL is an empty field; formula-safe cells (``gateway/csvcells.py``)."""

    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out, lineterminator="\n")

    def start(self, header: dict[str, Any]) -> None:
        """Write the column names."""
        if header.get("columns"):
            self._writer.writerow([safe_cell(str(name)) for name in _names(header)])

    def row(self, row: list[Any]) -> None:
        """Write a row."""
        self._writer.writerow(["" if v is None else safe_cell(str(v)) for v in row])

    def finish(self, trailer: dict[str, Any]) -> None:
        """Nothing to add: CSV has no trailer."""


class TSVSink:
    """Tab-separated, as ``mariadb --batch`` writes it: a header row, NULL as ``NULL``, specials escaped."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def start(self, header: dict[str, Any]) -> None:
        """Write the column names."""
        if header.get("columns"):
            self._out.write("\t".join(tsv_cell(name) for name in _names(header)) + "\n")

    def row(self, row: list[Any]) -> None:
        """Write a row."""
        self._out.write("\t".join("NULL" if v is None else tsv_cell(str(v)) for v in row) + "\n")

    def finish(self, trailer: dict[str, Any]) -> None:
        """Nothing to add: TSV has no trailer."""


def copy_table(chunks: Iterable[bytes], out: BinaryIO) -> dict[str, Any]:
    """Copy a CSV / TSV body to ``out`` as it arrives; a trailer-like summary (bytes written)."""
    written = 0
    for chunk in chunks:
        out.write(chunk)
        written += len(chunk)
    out.flush()
    return {"type": "trailer", "bytes": written}


def sink_for(fmt: str, out: TextIO, console: Console) -> Sink:
    """The sink for a ``--format`` value."""
    if fmt == "table":
        return TableSink(console)
    if fmt == "json":
        return JSONSink(out)
    if fmt == "ndjson":
        return NDJSONSink(out)
    if fmt == "csv":
        return CSVSink(out)
    if fmt == "tsv":
        return TSVSink(out)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def consume(lines: Iterable[Any], sink: Sink, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Feed a streamed result into ``sink``; return the trailer. Raises ``ProblemError`` on an error line."""
    count = 0
    started = False
    for line in lines:
        if isinstance(line, list):
            sink.row(line)
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count)
        elif line.get("type") == "header":
            sink.start(line)
            started = True
        elif line.get("type") == "trailer":
            if not started:
                sink.start({})
            sink.finish(line)
            return dict(line)
        elif line.get("type") == "error":
            raise ProblemError(
                int(line.get("status", 500)),
                str(line.get("code")),
                f"{line.get('detail')} (after {line.get('row_count', count)} rows)",
                line.get("request_id"),
            )
    raise ProblemError(0, "stream_cut", f"the result stream ended without a trailer after {count} rows", None)


@contextmanager
def row_counter(console: Console) -> Iterator[Callable[[int], None] | None]:
    """A live row count (rich) on ``console`` while a result streams; ``None`` off a terminal."""
    if not console.is_terminal:
        yield None
        return
    # The rows themselves go to stdout as they come: rich must not capture it.
    columns = (SpinnerColumn(), TextColumn("{task.completed:,.0f} rows"))
    with Progress(*columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False) as bar:
        task = bar.add_task("rows", total=None)
        yield lambda count: bar.update(task, completed=count)
