"""What the rest of the audit package takes from the record kinds rather than from lists of its own.

* :data:`FIELDS`: every field a record may hold (the export's CSV columns);
* :data:`JSON_FIELDS`: the fields whose values are not text (a CSV cell holds JSON);
* :data:`COLUMNS`: the fields both stores copy into plain columns, which
  ``/v1/audit`` filters on (``gateway/audit/reading.py``, ``query.py``);
* :data:`REDACTED`: the fields carrying statement text (``format.py``);
* :data:`FIELD_CAPS`: the fields with a cap of their own (``caps.py``).

All come from ``gateway/audit/records.py``: a new kind or field is defined
there once, and the stores, the API, the export and the caps follow.
"""

from __future__ import annotations

import types
import typing
from dataclasses import Field
from dataclasses import fields as dataclass_fields
from datetime import datetime
from typing import Any

from gateway.audit.records import KINDS, AuditRecord, Who


def _stored_fields() -> list[Field[Any]]:
    """Every field a stored record may hold, ``Who``'s in place of ``who``, the first of each name."""
    seen: dict[str, Field[Any]] = {}
    for kind in KINDS:
        for f in dataclass_fields(kind):
            for one in dataclass_fields(Who) if f.name == "who" else (f,):
                seen.setdefault(one.name, one)
    return list(seen.values())


def _is_text(kind: type[AuditRecord | Who], name: str) -> bool:
    """Whether the field holds text (a string or nothing): else its values are JSON numbers, lists, ..."""
    hint = typing.get_type_hints(kind)[name]
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return str in members or datetime in members


def _json_fields() -> frozenset[str]:
    """The fields whose values are not text; a name must be one or the other in every kind."""
    text: dict[str, bool] = {}
    every: tuple[type[AuditRecord | Who], ...] = (Who, *KINDS)
    for kind in every:
        for f in dataclass_fields(kind):
            if f.name == "who":
                continue
            is_text = _is_text(kind, f.name)
            if text.setdefault(f.name, is_text) != is_text:
                raise TypeError(f"audit field {f.name!r} is text in one record kind and not in another")
    return frozenset(name for name, is_text in text.items() if not is_text)


_STORED = _stored_fields()
FIELDS: tuple[str, ...] = ("time", "event", *(f.name for f in _STORED if f.name != "time"))
COLUMNS: tuple[str, ...] = ("time", "event", *(f.name for f in _STORED if f.metadata.get("column")))
REDACTED: tuple[str, ...] = tuple(f.name for f in _STORED if f.metadata.get("redacted"))
FIELD_CAPS: dict[str, str] = {f.name: f.metadata["cap"] for f in _STORED if f.metadata.get("cap")}
JSON_FIELDS: frozenset[str] = _json_fields()
