"""The wall clock: the default of every ``clock=`` parameter, so tests pass their own instead of patching."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)
