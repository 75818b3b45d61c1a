"""structlog set-up: JSON lines with the request id, and secret scrubbing."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class _JSONLines:
    """What :func:`configure` set up for JSON lines, so :func:`info_batch` can write many in one go."""

    processors: tuple[Any, ...]
    level: int
    stamper: structlog.processors.TimeStamper
    output: structlog.PrintLogger


_json_lines: _JSONLines | None = None


def configure(*, json: bool = True, level: int = logging.INFO) -> None:
    """Configure structlog once per process (called by the CLI, not at import)."""
    global _json_lines  # noqa: PLW0603 - the process-wide logging set-up, like structlog's own
    renderer: Any = structlog.processors.JSONRenderer(serializer=dumps) if json else structlog.dev.ConsoleRenderer()
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamper,
        scrub_secrets,
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _json_lines = _JSONLines(tuple(processors), level, stamper, structlog.PrintLogger(sys.stderr)) if json else None


def info_batch(logger: str, event: str, events: Sequence[Mapping[str, Any]]) -> None:
    """Log ``event`` at INFO once per item of ``events``: what ``.info(event, **fields)`` would write, per item.

    Under :func:`configure`'s JSON set-up the lines go out in one write (the
    audit log emits every committed record): the same fields, context
    variables, level and secret scrubbing as the processor chain, one
    timestamp per write, one flush instead of one per line. Under any other set-up (the console
    renderer, ``structlog.testing.capture_logs``) each item is an ordinary
    structlog call.
    """
    sink = _json_lines
    # By content: capture_logs() swaps the processors inside the same list.
    if sink is None or tuple(structlog.get_config()["processors"]) != sink.processors:
        bound = structlog.get_logger(logger)
        for fields in events:
            bound.info(event, **{"logger": logger, **fields})
        return
    if sink.level > logging.INFO or not events:
        return
    context = structlog.contextvars.get_contextvars()
    stamp = sink.stamper(None, "info", {})["timestamp"]
    lines = []
    for fields in events:
        line = {**context, "logger": logger, **fields, "event": event, "level": "info", "timestamp": stamp}
        lines.append(dumps(scrub_secrets(None, "info", line), default=repr))  # repr: as structlog's fallback
    sink.output.msg("\n".join(lines))
