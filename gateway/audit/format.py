"""How audit records are written down: times in one fixed form, literals redacted on request.

With ``audit.redact_literals`` on, :func:`redact_fields` replaces the literals
of every field that carries statement text (:data:`~gateway.audit.fields.REDACTED`):
``statement`` (one statement, or a transaction's list of them) and ``error``
(MariaDB's messages quote the values they refused, e.g. ``Duplicate entry
'alice@example.com'``). Strings and identifiers are found by the SQL guard's own
lexer (``gateway/sql/lexer.py``), so redaction reads quotes as MariaDB does:
a string becomes ``?`` (with its ``X``/``B``/``N`` prefix), a number outside
strings and identifiers becomes ``?``, literals inside comments too, and an
unterminated string hides everything after its quote.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from gateway.audit.fields import REDACTED
from gateway.sql.lexer import tokens

_PADDED_YEARS = 1000
# Numbers are whole tokens: not part of a name (t1, x3) or of a qualified one (t.5x).
_NUMBER = re.compile(r"(?<![\w$.])(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![\w$.])")
_PREFIX = re.compile(r"(?<![\w$])[xXbBnN]\Z")  # X'0F', B'101', N'text': the prefix goes with the string


def redact_literals(sql: str) -> str:
    """Replace every string and number literal in ``sql`` with ``?``."""
    out: list[str] = []
    end = 0
    for token in tokens(sql):
        out.append(_NUMBER.sub("?", sql[end : token.start()]))
        end = token.end()
        kind, text = token.lastgroup, token[0]
        if kind == "string":
            out[-1] = _PREFIX.sub("", out[-1])
            out.append("?")
        elif kind == "comment":  # /* ... */, # ... or -- ...
            opener, closer = ("/*", "*/") if text.startswith("/*") else (text[: 1 if text[0] == "#" else 2], "")
            out.append(f"{opener}{redact_literals(text[len(opener) : len(text) - len(closer)])}{closer}")
        elif kind == "unterminated":
            # A stray quote runs to the end, so nothing after it leaks; a stray ` or /* keeps its text, redacted.
            if text in "'\"":
                out[-1] = _PREFIX.sub("", out[-1])
                out.append("?")
                return "".join(out)
            out.append(text)
        else:
            out.append(text)
    out.append(_NUMBER.sub("?", sql[end:]))
    return "".join(out)


def redact_fields(record: dict[str, object]) -> None:
    """Redact, in place, the literals of every field of ``record`` that carries statement text."""
    for name in REDACTED:
        value = record.get(name)
        if isinstance(value, str):
            record[name] = redact_literals(value)
        elif isinstance(value, list | tuple):  # a transaction's statements
            record[name] = [redact_literals(v) if isinstance(v, str) else v for v in value]


def format_time(moment: datetime) -> str:
    """Return ``moment`` as ISO 8601 UTC with microseconds, e.g. ``2025-01-02T03:04:05.000006Z``."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    utc = moment.astimezone(UTC)
    if utc.year < _PADDED_YEARS:  # strftime leaves such years unpadded: keep that form
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as that strftime() at a fraction of the cost (two records per request).
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"
