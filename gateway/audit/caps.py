"""What one audit record may hold: every recorded field has a size cap (SECURITY rule 29).

Records carry text that arrives from outside (a user agent, an unverified
token subject, a statement, a database's error message, a request path), so
an unauthenticated request with an 8 MB header must not make an 8 MB durable
record. :func:`bound_record` is the one place every record passes (the audit
log calls it before either store sees the record):

* a string longer than its cap keeps its first ``cap`` characters and ends
  with the marker ``…[truncated, N chars]`` (N is the original length), so a
  cut value is visible as cut and says how long it was;
* a list keeps its first ``items`` entries, then one marker entry
  ``…[+N more]``; a mapping keeps its first ``items`` members, then the member
  ``"…": "+N more"``;
* a value nested deeper than ``depth`` levels is replaced by
  ``…[nested too deep]``.

Caps are per field, as the record kinds mark them (``gateway/audit/records.py``):
each statement (a transaction's too) may be as long as the SQL size cap
(``limits.max_sql_bytes``), so an allowed statement is always recorded whole;
a policy edit's ``diff`` has its own, larger cap; every other string (and
every mapping key) has :attr:`RecordCaps.text`. Numbers, booleans
and nulls are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.audit.fields import FIELD_CAPS

if TYPE_CHECKING:
    from collections.abc import Mapping

TEXT_CAP = 4096  # characters of any string field not named below
STATEMENT_CAP = 64 * 1024  # characters of one statement (the default SQL size cap)
DIFF_CAP = 64 * 1024  # characters of a policy edit's diff
ITEMS_CAP = 1000  # entries of one list or members of one mapping
DEPTH_CAP = 4  # levels of nesting below the record itself


@dataclass(frozen=True, slots=True)
class RecordCaps:
    """The caps :func:`bound_record` applies (see the module docstring)."""

    text: int = TEXT_CAP
    statement: int = STATEMENT_CAP
    diff: int = DIFF_CAP
    items: int = ITEMS_CAP
    depth: int = DEPTH_CAP

    def for_field(self, name: str) -> int:
        """The string cap of the top-level field ``name`` (its own, as the record kinds mark it, else ``text``)."""
        own = FIELD_CAPS.get(name)
        return self.text if own is None else int(getattr(self, own))


def cut_text(text: str, cap: int) -> str:
    """``text`` if it fits in ``cap`` characters, else its first ``cap`` and the truncation marker."""
    if len(text) <= cap:
        return text
    return f"{text[:cap]}…[truncated, {len(text)} chars]"


def bound_record(record: Mapping[str, object], caps: RecordCaps) -> dict[str, object]:
    """A copy of ``record`` with every field within its cap (see the module docstring)."""
    bounded: dict[str, object] = {}
    for name, value in record.items():
        if isinstance(value, str):  # the common case first: most fields are short strings
            bounded[name] = value if len(value) <= caps.text else cut_text(value, caps.for_field(name))
        elif value is None or isinstance(value, bool | int | float):
            bounded[name] = value
        else:
            bounded[name] = _bound(value, caps, caps.for_field(name), 1)
    return bounded  # the record's own field names come from the gateway's code, not from requests


def _bound(value: object, caps: RecordCaps, text_cap: int, depth: int) -> object:
    """``value`` within the caps; ``text_cap`` applies to its strings (a statement list's, say)."""
    if isinstance(value, str):
        return cut_text(value, text_cap)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > caps.depth:
        return "…[nested too deep]"
    if isinstance(value, list | tuple):
        items: list[object] = [_bound(v, caps, text_cap, depth + 1) for v in value[: caps.items]]
        if len(value) > caps.items:
            items.append(f"…[+{len(value) - caps.items} more]")
        return items
    if isinstance(value, dict):
        members = {
            cut_text(str(k), caps.text): _bound(v, caps, caps.text, depth + 1)
            for k, v in list(value.items())[: caps.items]
        }
        if len(value) > caps.items:
            members["…"] = f"+{len(value) - caps.items} more"
        return members
    return value  # anything else is refused later, as not JSON-serialisable
