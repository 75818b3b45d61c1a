"""A review's dry-run samples as rich tables for ``gateway review show`` (issue 16).

Each sampled write becomes one table: a ``-`` row for each row before the
write and, for an UPDATE, a ``+`` row after it; the cells the write changed
are red (struck through) before and green after; a DELETE's rows are all
``-``. Every value is a ``rich.text.Text``, never markup: a value such as
``[bold]`` prints as itself. Statements without a sample print why.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

BEFORE, AFTER = "red strike", "green bold"


def _text(value: object) -> str:
    if value is None:
        return "NULL"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _row(mark: str, row: list[Any], other: list[Any] | None, style: str, note: str = "") -> list[Text]:
    """One table row: the mark, the cells (those differing from ``other`` styled), the note column."""
    cells = [Text(mark, style=style.split(maxsplit=1)[0] if style else "")]
    for index, value in enumerate(row):
        changed = other is not None and index < len(other) and other[index] != value
        cells.append(Text(_text(value), style=style if changed else ""))
    cells.append(Text(note, style="italic"))
    return cells


def sample_table(step: dict[str, Any], number: int) -> tuple[Text, Table] | None:
    """Statement ``number``'s sample as (a heading, a table) (None without one).

    The last column names the columns a ``+`` row changed (readable without colour too).
    """
    sample = step.get("sample")
    if not sample:
        return None
    command = str(step.get("command", ""))
    columns = [str(c) for c in sample.get("columns") or []]
    before: list[list[Any]] = sample.get("before") or []
    after: list[list[Any] | None] | None = sample.get("after")
    more = f" (the first {len(before)}; more would change)" if sample.get("more") else ""
    title = Text(
        f"statement {number}: {command} of {', '.join(step.get('tables') or [])}, "
        f"{len(before)} row(s){more}; key {', '.join(sample.get('primary_key') or [])}"
    )
    table = Table()
    table.add_column(Text(""), no_wrap=True)
    for column in columns:
        table.add_column(Text(column))
    table.add_column(Text("changed"))
    for index, row in enumerate(before):
        if command == "DELETE":
            table.add_row(*_row("-", row, None, "red", "deleted"))
            continue
        then = after[index] if after is not None and index < len(after) else None
        if then is None:
            missing = "not found by its key after the write" if after is not None else ""
            table.add_row(*_row(" ", row, None, "", missing))
        elif then == row:
            table.add_row(*_row("=", row, None, "", "nothing"))
        else:
            changed = ", ".join(c for c, old, new in zip(columns, row, then, strict=False) if old != new)
            table.add_row(*_row("-", row, then, BEFORE))
            table.add_row(*_row("+", then, row, AFTER, changed))
    if not before:
        table.add_row(Text(""), *[Text("") for _ in columns], Text("no rows", style="italic"))
    return title, table


def print_samples(review: dict[str, Any], console: Console) -> None:
    """Every statement's sample (or why there is none) of ``review``'s dry run."""
    dry = review.get("dry_run") or {}
    if not dry.get("executed"):
        return
    for number, step in enumerate(dry.get("statements") or [], start=1):
        shown = sample_table(step, number)
        if shown is not None:
            console.print(*shown, sep="\n")
        elif step.get("sample_note"):
            console.print(Text(f"statement {number}: {step['sample_note']}", style="dim"))
