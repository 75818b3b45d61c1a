"""MariaDB values -> JSON values, as the SPEC fixes them.

NULL -> null, DECIMAL -> string (no float rounding), dates and times -> ISO
8601, TIME (a duration in MariaDB) -> ``[-]HH:MM:SS[.ffffff]``, binary ->
base64 string. Dispatch is by exact type through a dict: this runs for every
value of every row.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

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


def _identity(value: Any) -> Any:  # noqa: ANN401 - JSON-native values pass through
    return value


_ENCODERS: dict[type, Callable[[Any], JSONValue]] = {
    str: _identity,
    int: _identity,
    float: _identity,
    bool: _identity,
    type(None): _identity,
    Decimal: str,
    dt.datetime: dt.datetime.isoformat,
    dt.date: dt.date.isoformat,
    dt.timedelta: _time,
    dt.time: dt.time.isoformat,
    bytes: _binary,
    bytearray: _binary,
    set: lambda v: ",".join(sorted(v)),
}


def encode_value(value: object) -> JSONValue:
    """Encode one value; an unknown type is shown as its string form."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        return str(value)
    return encoder(value)


def encode_row(row: Sequence[object]) -> list[JSONValue]:
    """Encode one row."""
    get = _ENCODERS.get
    out: list[JSONValue] = []
    for value in row:
        encoder = get(type(value))
        out.append(encoder(value) if encoder is not None else str(value))
    return out
