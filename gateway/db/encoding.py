"""MariaDB values -> JSON values, as the SPEC fixes them.

NULL -> null, DECIMAL -> string (no float rounding), dates and times -> ISO
8601, TIME (a duration in MariaDB) -> ``[-]HH:MM:SS[.ffffff]``, binary ->
base64 string. Rows are serialised by orjson in C; only the values it does
not encode itself (DECIMAL, TIME, binary, SET) come back to Python through
:func:`json_default`, dispatched by exact type through a dict. orjson writes
dates and times exactly as ``isoformat()`` does.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson
from asyncmy.constants import FIELD_TYPE

JSONValue = None | bool | int | float | str

TYPE_NAMES: dict[int, str] = {
    value: name
    for name, value in vars(FIELD_TYPE).items()
    if name.isupper() and isinstance(value, int) and name not in {"CHAR", "INTERVAL"}
}


def _time(value: dt.timedelta) -> str:
    micros = value // dt.timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    seconds, frac = divmod(micros, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{text}.{frac:06d}" if frac else text


def _binary(value: bytes | bytearray) -> str:
    return base64.b64encode(value).decode("ascii")


_ENCODERS: dict[type, Callable[[Any], JSONValue]] = {
    Decimal: str,
    dt.timedelta: _time,
    bytes: _binary,
    bytearray: _binary,
    set: lambda v: ",".join(sorted(v)),
}


def json_default(value: object) -> JSONValue:
    """Encode a value orjson has no native form for; an unknown type is shown as its string form."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        return str(value)
    return encoder(value)


def dump_rows(rows: Sequence[Sequence[object]]) -> bytes:
    """Serialise rows as one JSON array of arrays."""
    return orjson.dumps(rows, default=json_default)


def dump_row_line(row: Sequence[object]) -> bytes:
    """Serialise one row as a JSON array and a newline (an NDJSON line)."""
    return orjson.dumps(row, default=json_default, option=orjson.OPT_APPEND_NEWLINE)


def _iso(value: dt.date) -> str:
    return value.isoformat()


def _text(encode: Callable[[Any], JSONValue]) -> Callable[[Any], str]:
    return lambda value: str(encode(value))


_TEXTS: dict[type, Callable[[Any], str]] = {
    **{kind: _text(encode) for kind, encode in _ENCODERS.items()},
    int: str,
    float: repr,
    str: str,
    dt.datetime: _iso,
    dt.date: _iso,
    dt.time: _iso,
}


def text_of(value: object) -> str:
    """A non-NULL value's text as its JSON value reads (DECIMAL, ISO 8601 times, base64): CSV and TSV cells."""
    encoder = _TEXTS.get(type(value))
    return str(value) if encoder is None else encoder(value)
