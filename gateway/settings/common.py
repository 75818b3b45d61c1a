"""What every settings model shares: frozen, no unknown keys, no password in the file."""

from __future__ import annotations

from pydantic import ConfigDict

FROZEN = ConfigDict(frozen=True, extra="forbid")


def refuse_passwords(data: object, instead: str) -> object:
    """Refuse a mapping with a key naming a password (``password``, ``db_password``, ...)."""
    if isinstance(data, dict) and any("password" in str(key).lower() for key in data):
        raise ValueError(f"passwords never sit in the config file: use {instead}")
    return data
