r"""Literals reach MariaDB exactly as the caller wrote them (SECURITY rule 25).

The statement that runs is regenerated from sqlglot's tree (so a parser
differential cannot run anything unanalysed), but sqlglot folds literal forms
that MariaDB tells apart: ``X'01'`` (a binary string, 0 in a number context)
and ``0x01`` (a number there), ``'\\%'`` (two characters in MariaDB),
``DATE'..'`` and ``CAST('..' AS DATE)`` (an error and a NULL for a bad date).
So every literal the parser read from the text is written back as the very
characters it was read from, after checking that those characters are exactly
one literal token in MariaDB's own grammar. A literal whose source cannot be
found or is not such a token fails the statement closed.

``verbatim`` gives that source text; ``check_typed_literal`` keeps to the
typed literals MariaDB has (``DATE '..'``, ``TIME '..'``, ``TIMESTAMP '..'``).
"""

from __future__ import annotations

import re

from sqlglot import exp

from gateway.errors import StatementRejected
from gateway.sql.dialect import TYPED_LITERAL_TYPES, TypedLiteral

# MariaDB's literal tokens, in the sql_mode the gateway pins (no ANSI_QUOTES, no
# NO_BACKSLASH_ESCAPES). `X'..'` needs an even number of digits; `0x` and `0b`
# are lower case only (`0X1` is an identifier); a number's exponent needs digits.
_STRING = r"'(?:[^'\\]|\\.|'')*+'|\"(?:[^\"\\]|\\.|\"\")*+\""
_FORMS: dict[type[exp.Expr], re.Pattern[str]] = {
    exp.HexString: re.compile(r"[xX]'(?:[0-9A-Fa-f]{2})*+'|0x[0-9A-Fa-f]++", re.DOTALL),
    exp.BitString: re.compile(r"[bB]'[01]*+'|0b[01]++", re.DOTALL),
    exp.National: re.compile(r"[nN]'(?:[^'\\]|\\.|'')*+'", re.DOTALL),
}
_STRING_FORM = re.compile(_STRING, re.DOTALL)
_NUMBER_FORM = re.compile(r"(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][-+]?[0-9]++)?")
# A character that would continue an unquoted token (MariaDB reads `0x1g` or
# `1e3x` as identifiers): identifier characters, including any non-ASCII one.
_CONTINUES = re.compile(r"[0-9A-Za-z_$\x80-\U0010ffff]")
LITERAL_TYPES = (exp.Literal, exp.HexString, exp.BitString, exp.National, exp.ByteString)


def verbatim(node: exp.Expr, source: str) -> str | None:
    """The caller's own text of literal ``node``; None for a literal sqlglot made up itself.

    Raises ``StatementRejected`` when the text the parser says it read is not
    exactly one MariaDB literal token of the node's kind.
    """
    start, last = node.meta_get("start"), node.meta_get("end")
    if not isinstance(start, int) or not isinstance(last, int):
        return None
    end = last + 1
    text = source[start:end]
    if isinstance(node, exp.Literal):
        form = _STRING_FORM if node.is_string else _NUMBER_FORM
    else:
        form = _FORMS.get(type(node), _STRING_FORM)
    if not form.fullmatch(text) or (end < len(source) and text[-1] not in "'\"" and _CONTINUES.match(source[end])):
        raise StatementRejected(f"the literal {text[:40]!r} is not one MariaDB reads the same way")
    return text


def check_typed_literal(node: TypedLiteral) -> None:
    """Refuse typed literals MariaDB does not have (``DECIMAL '1'``) or that wrap anything but a string."""
    to = node.args.get("to")
    this = node.this
    if not (isinstance(to, exp.DataType) and to.this in TYPED_LITERAL_TYPES and not to.expressions):
        raise StatementRejected(f"{to.sql() if isinstance(to, exp.Expr) else to} '...' is not a MariaDB literal")
    if not (isinstance(this, exp.Literal) and this.is_string):
        raise StatementRejected("a typed literal (DATE '...') takes a plain string")
