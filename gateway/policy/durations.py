"""Duration and timestamp values as written in policy files.

``parse_duration`` turns ``250ms``, ``30s``, ``5m``, ``1h`` or a plain number
of seconds into float seconds; ``parse_timestamp`` turns an ISO 8601 date and
time *with a timezone* (a string, or the datetime YAML already made of it) into
an aware UTC ``datetime``. Both raise ``ValueError`` (a bad value) or
``TypeError`` (a value of the wrong type) with a message fit for a policy
problem report.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

_DURATION = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DURATION_HINT = "a duration such as 250ms, 30s, 5m or 1h, or a number of seconds"
TIMESTAMP_HINT = "an ISO 8601 date and time with a timezone, e.g. 2026-12-31T23:59:59Z"


def parse_duration(value: object) -> float:
    """Return ``value`` as a positive number of seconds.

    Accepts an int or float (seconds) or a string of digits with a unit
    (``ms``, ``s``, ``m``, ``h``). Booleans, zero, negative and non-finite
    values are refused.
    """
    if isinstance(value, bool):
        raise TypeError(f"must be {DURATION_HINT}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int past float's range (YAML reads 0x... integers of any size)
            raise ValueError("must be a positive duration of a sensible size") from None
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"must be {DURATION_HINT} (got {value!r})")
        seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    else:
        raise TypeError(f"must be {DURATION_HINT}")
    # `seconds == seconds` is False only for NaN.
    if not (seconds == seconds and 0 < seconds < float("inf")):  # noqa: PLR0124 - x == x is false only for NaN
        raise ValueError(f"must be a positive duration (got {value!r})")
    return seconds


def parse_timestamp(value: object) -> datetime:
    """Return ``value`` as an aware datetime in UTC.

    YAML loaders already turn unquoted timestamps into ``datetime`` objects
    (aware when the text had a zone); quoted ones arrive as strings. A
    datetime without a timezone is ambiguous and refused, as is a bare date.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        raise TypeError(f"must be {TIMESTAMP_HINT}, not a bare date")
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"must be {TIMESTAMP_HINT} (got {value!r})") from None
    else:
        raise TypeError(f"must be {TIMESTAMP_HINT}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"must have a timezone, e.g. Z or +02:00 (got {value!s})")
    # Rebuild as a plain datetime: YAML loaders hand out datetime subclasses.
    plain = datetime(
        parsed.year,
        parsed.month,
        parsed.day,
        parsed.hour,
        parsed.minute,
        parsed.second,
        parsed.microsecond,
        tzinfo=parsed.tzinfo,
    )
    try:
        return plain.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the year 1 in UTC
        raise ValueError(f"must fall within the years 1-9999 in UTC (got {value!s})") from None
