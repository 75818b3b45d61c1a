"""structlog set-up: JSON lines with the request id, and secret scrubbing."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|authorization|credential)", re.IGNORECASE)
_SAFE_KEYS = frozenset({"token_hash", "token_id"})


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    """Decided once per key name: every audit record is a log event of some 25 keys."""
    return key not in _SAFE_KEYS and _SECRET_KEYS.search(key) is not None


def scrub_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:  # noqa: ANN401
    """Replace the value of any key that looks like it holds a secret (SECURITY rule 23)."""
    for key in list(event):
        if _is_secret_key(key) if isinstance(key, str) else _SECRET_KEYS.search(str(key)):
            event[key] = "[redacted]"
    return event


def dumps(value: Any, **kwargs: Any) -> str:  # noqa: ANN401
    """JSON for log lines with orjson (every audit record is logged); stdlib json if orjson refuses."""
    try:
        return orjson.dumps(value, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, **kwargs)


def configure(*, json: bool = True, level: int = logging.INFO) -> None:
    """Configure structlog once per process (called by the CLI, not at import)."""
    renderer: Any = structlog.processors.JSONRenderer(serializer=dumps) if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            scrub_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
