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
from typing import TYPE_CHECKING, NamedTuple

from gateway.errors import StatementRejected

if TYPE_CHECKING:
    from collections.abc import Iterator

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
    "adjacent": "adjacent string literals ('a' 'b', N'a' 'b') are not allowed: MariaDB joins them, write CONCAT",
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
    unterminated strings, identifiers or comments, NUL characters (MariaDB
    ends a line comment at a NUL, other lexers do not), and a string literal
    right after another (only whitespace or comments between): MariaDB joins
    them into one string whatever prefix the first has (``N'a' 'b'``), where
    the parser may read the second as an alias.
    """
    if "\x00" in sql:  # checked first: a NUL inside a comment counts too
        raise StatementRejected(f"{_REJECTIONS['nul']} (at offset {sql.index(chr(0))})")
    placeholders: list[int] = []
    depth = deepest = 0
    variables = False
    separators = 0
    adjacent = _Adjacency(sql)
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        adjacent.check(match)
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


class _Adjacency:
    """Finds a string literal right after another, with only whitespace and comments between."""

    def __init__(self, sql: str) -> None:
        self._sql = sql
        self._end = 0  # where the previous token ended
        self._after_string = False  # only whitespace and comments since the last string

    def check(self, match: re.Match[str]) -> None:
        """Note one token; raise ``StatementRejected`` when it is a string following a string."""
        gap = self._sql[self._end : match.start()]
        if gap and not gap.isspace():
            self._after_string = False
        self._end = match.end()
        kind = match.lastgroup
        if kind == "string":
            if self._after_string:
                raise StatementRejected(f"{_REJECTIONS['adjacent']} (at offset {match.start()})")
            self._after_string = True
        elif kind != "comment":
            self._after_string = False


def tokens(sql: str) -> Iterator[re.Match[str]]:
    """Every token of ``sql`` in order, unchecked: ``match.lastgroup`` names its kind.

    The kinds: ``string``, ``ident``, ``comment``, ``executable`` (the opener
    only), ``unterminated`` (the opening quote or ``/*`` only), ``placeholder``,
    ``variable``, ``separator``, ``open``, ``close``. The text between tokens
    is plain SQL. For readers of SQL text that must not refuse it (the audit
    log's literal redaction); :func:`scan` is the guard.
    """
    return _TOKEN.finditer(sql)


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
