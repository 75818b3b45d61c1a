"""What the review page shows of a statement: its text highlighted on the server, and its sample as a diff.

``highlight`` runs Pygments' MySQL lexer with an HTML formatter that writes
CSS classes only (``nowrap``: no inline styles, no scripts, no wrapper): the
formatter escapes every token's text, so the result is safe markup for the
template (the console's Content-Security-Policy stays as strict; the classes
are styled in ``console.css``). ``diff_rows`` turns a dry run's sample
(``gateway.pipeline.sampling``) into table rows whose changed cells are
marked; the template escapes every value.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from pygments import highlight as pygmentize
from pygments.formatters import HtmlFormatter
from pygments.lexers import MySqlLexer

from gateway.console.templating import as_text

_LEXER = MySqlLexer()
_FORMATTER = HtmlFormatter(nowrap=True, noclasses=False)
MAX_HIGHLIGHT = 20000  # characters; a longer statement is shown as plain (escaped) text


def highlight(sql: str) -> Markup:
    """``sql`` as HTML spans with Pygments' short CSS classes (``k`` keyword, ``s1`` string, ...), escaped."""
    if len(sql) > MAX_HIGHLIGHT:
        return Markup.escape(sql)
    return Markup(pygmentize(sql, _LEXER, _FORMATTER).rstrip("\n"))  # noqa: S704 - Pygments escapes every token


def _cells(row: list[Any] | None, other: list[Any] | None) -> list[dict[str, Any]]:
    if row is None:
        return []
    return [
        {
            "text": "NULL" if value is None else as_text(value),
            "null": value is None,
            "changed": other is not None and index < len(other) and other[index] != value,
        }
        for index, value in enumerate(row)
    ]


def diff_rows(sample: dict[str, Any], command: str) -> list[dict[str, Any]]:
    """Rows for the diff table: per sampled row its ``before`` (and, for an UPDATE, ``after``) with changed cells.

    Each item: ``{"mark": "-" | "+" | " ", "label", "cells": [{"text", "null", "changed"}], "missing": bool}``.
    """
    before: list[list[Any]] = sample.get("before") or []
    after: list[list[Any] | None] | None = sample.get("after")
    out: list[dict[str, Any]] = []
    for index, row in enumerate(before):
        if command == "DELETE":
            out.append({"mark": "-", "label": "deleted", "cells": _cells(row, None), "missing": False})
            continue
        then = after[index] if after is not None and index < len(after) else None
        if then is None:
            out.append({"mark": " ", "label": "before", "cells": _cells(row, None), "missing": after is not None})
            continue
        same = then == row
        out.append(
            {
                "mark": " " if same else "-",
                "label": "unchanged" if same else "before",
                "cells": _cells(row, then),
                "missing": False,
            }
        )
        if not same:
            out.append({"mark": "+", "label": "after", "cells": _cells(then, row), "missing": False})
    return out
