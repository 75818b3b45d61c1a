"""Template filters: times and countdowns in words, shortened text, values as text.

They return plain strings, never markup: the templates' autoescaping then
applies to whatever they return, as to every other value.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson


def _moment(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def span(seconds: float) -> str:
    """A duration in words, two units at most: ``3d 4h``, ``2h 5m``, ``40s``."""
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


def countdown(value: object, now: datetime) -> str:
    """How long until ``value`` (``in 3h 12m``), or since (``expired 2d ago``); ``never`` for none."""
    moment = _moment(value)
    if moment is None:
        return "never"
    left = (moment - now).total_seconds()
    return f"in {span(left)}" if left > 0 else f"expired {span(left)} ago"


def when(value: object) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    moment = _moment(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def short(value: object, length: int = 120) -> str:
    """Text cut to ``length`` characters (with an ellipsis), lines joined."""
    text = value if isinstance(value, str) else "" if value is None else as_text(value)
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


def as_text(value: object) -> str:
    """A JSON value as text: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def filters() -> dict[str, Callable[..., Any]]:
    """The filters the console's templates use."""
    return {"countdown": countdown, "when": when, "short": short, "as_text": as_text, "span": span}
