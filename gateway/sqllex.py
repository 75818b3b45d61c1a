"""A small lexer for MariaDB's quoting rules, used as a guard around the parser.

It knows what MariaDB's own lexer does in the sql_mode the gateway pins
(no ``ANSI_QUOTES``, no ``NO_BACKSLASH_ESCAPES``; character set utf8mb4):

* ``'...'`` and ``"..."`` are strings; a backslash escapes the next character
  and a doubled quote stands for one quote;
* ```...``` is an identifier; a doubled backtick stands for one backtick;
* ``# ...`` and ``-- ...`` (two dashes, then a space, a control character or
  the end of the text) are comments to the end of the line;
* ``/* ... */`` is a comment that does not nest, except that ``/*!``,
  ``/*!NNNNN``, ``/*M!`` and ``/*M!NNNNNN`` make MariaDB *execute* what
  follows (SECURITY rule 9), and ``/*+`` is an optimizer hint.

Everything else is left to the parser. One compiled regular expression scans
the text once; possessive quantifiers keep it linear and stop it backtracking
into a reading MariaDB would not make.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gateway.errors import StatementRejected

_TOKEN = re.compile(
    r"""
      (?P<string>'(?:[^'\\]++|\\.|'')*+'|"(?:[^"\\]++|\\.|"")*+")
    | (?P<ident>`(?:[^`]++|``)*+`)
    | (?P<executable>/\*(?:!|[Mm]!|\+))
    | (?P<comment>/\*.*?\*/|\#[^\n]*+|--(?=[\x00-\x20\x7f]|\Z)[^\n]*+)
    | (?P<unterminated>['"`]|/\*)
    | (?P<placeholder>\?)
    | (?P<variable>@)
    | (?P<separator>;)
    | (?P<open>\()
    | (?P<close>\))
    """,
    re.VERBOSE | re.DOTALL,
)

_REJECTIONS = {
    "executable": "executable comments (/*! */, /*M! */) and optimizer hints (/*+ */) are not allowed",
    "unterminated": "unterminated string, identifier or comment",
    "nul": "NUL characters are not allowed in SQL text",
}


class Scan(NamedTuple):
    """What one pass over SQL text found outside strings, identifiers and comments."""

    placeholders: tuple[int, ...]  # offsets of each `?`
    depth: int  # deepest parenthesis nesting
    variables: bool  # an `@` (user or system variable, or `user@host`)
    separators: int  # `;` statement separators


def scan(sql: str) -> Scan:
    """Scan ``sql`` once; raise ``StatementRejected`` for what MariaDB would read differently.

    Rejected: executable comments and optimizer hints outside string literals,
    unterminated strings, identifiers or comments, and NUL characters (MariaDB
    ends a line comment at a NUL, other lexers do not).
    """
    if "\x00" in sql:  # checked first: a NUL inside a comment counts too
        raise StatementRejected(f"{_REJECTIONS['nul']} (at offset {sql.index(chr(0))})")
    placeholders: list[int] = []
    depth = deepest = 0
    variables = False
    separators = 0
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind == "open":
            depth += 1
            deepest = max(deepest, depth)
        elif kind == "close":
            depth -= 1
        elif kind == "placeholder":
            placeholders.append(match.start())
        elif kind == "variable":
            variables = True
        elif kind == "separator":
            separators += 1
        elif kind in _REJECTIONS:
            raise StatementRejected(f"{_REJECTIONS[kind]} (at offset {match.start()})")
    return Scan(tuple(placeholders), deepest, variables, separators)


def check_comments(sql: str) -> None:
    """Raise ``StatementRejected`` for executable comments, hints and unterminated text."""
    scan(sql)


def split_placeholders(sql: str) -> tuple[str, ...]:
    """Split ``sql`` at its ``?`` placeholders (those outside strings, identifiers, comments).

    Returns one more part than there are placeholders, so
    ``"?".join(parts) == sql``. Raises like ``check_comments``.
    """
    parts: list[str] = []
    start = 0
    for offset in scan(sql).placeholders:
        parts.append(sql[start:offset])
        start = offset + 1
    parts.append(sql[start:])
    return tuple(parts)
