"""structlog set-up: JSON lines with the request id, secret scrubbing, and groups of lines in one write."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any, TextIO

import orjson
import structlog

_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|authorization|credential)", re.IGNORECASE)
_SAFE_KEYS = frozenset({"token_hash", "token_id"})


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    """Decided once per key name: every audit record is a log event of some 25 keys."""
    return key not in _SAFE_KEYS and _SECRET_KEYS.search(key) is not None


def scrub_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:  # noqa: ANN401 - structlog's processor signature
    """Replace the value of any key that looks like it holds a secret (SECURITY rule 23)."""
    for key in list(event):
        if _is_secret_key(key) if isinstance(key, str) else _SECRET_KEYS.search(str(key)):
            event[key] = "[redacted]"
    return event


def dumps(value: Any, **kwargs: Any) -> str:  # noqa: ANN401 - any JSON-able value, as json.dumps
    """JSON for log lines with orjson (every audit record is logged); stdlib json if orjson refuses."""
    try:
        return orjson.dumps(value, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, **kwargs)


class LineOutput:
    """structlog's output: each rendered event one line on ``file``, written and flushed at once.

    Inside :meth:`gathered`, the lines this thread renders are held and
    written in one go at its end: one write and one flush for a group of
    events (the audit log emits every committed record), not one per line.
    """

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self._lock = threading.Lock()  # lines from several threads never interleave
        self._held = threading.local()

    def msg(self, message: str) -> None:
        """Write one rendered event (held while this thread gathers)."""
        held: list[str] | None = getattr(self._held, "lines", None)
        if held is not None:
            held.append(message)
            return
        self._write(message)

    log = debug = info = warn = warning = error = err = critical = exception = failure = fatal = msg

    @contextlib.contextmanager
    def gathered(self) -> Iterator[None]:
        """Hold this thread's lines until the end of the block, then write them at once."""
        if getattr(self._held, "lines", None) is not None:  # already gathering: the outer block writes
            yield
            return
        self._held.lines = []
        try:
            yield
        finally:
            lines, self._held.lines = self._held.lines, None
            if lines:
                self._write("\n".join(lines))

    def lines(self, lines: Sequence[str]) -> None:
        """Write rendered events together (held while this thread gathers)."""
        held: list[str] | None = getattr(self._held, "lines", None)
        if held is not None:
            held.extend(lines)
        elif lines:
            self._write("\n".join(lines))

    def _write(self, text: str) -> None:
        with self._lock:
            self._file.write(text + "\n")
            self._file.flush()


@dataclasses.dataclass(frozen=True, slots=True)
class _JSONSetUp:
    """What :func:`configure` installed for JSON lines: :func:`info_batch` renders batches with it directly."""

    processors: tuple[Any, ...]  # structlog's processors as installed (capture_logs changes the list in place)
    wrapper: Any
    factory: Any
    level: int
    stamper: structlog.processors.TimeStamper
    renderer: structlog.processors.JSONRenderer


_output: LineOutput | None = None
_json_setup: _JSONSetUp | None = None


def configure(*, json: bool = True, level: int = logging.INFO) -> None:
    """Configure structlog once per process (called by the CLI, not at import)."""
    global _output, _json_setup  # noqa: PLW0603 - the process-wide logging set-up, like structlog's own
    renderer: Any = structlog.processors.JSONRenderer(serializer=dumps) if json else structlog.dev.ConsoleRenderer()
    output = LineOutput(sys.stderr)
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # info_batch's direct rendering (_render_json) does what these processors do, in this order.
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamper,
        scrub_secrets,
        structlog.processors.format_exc_info,
        renderer,
    ]
    wrapper = structlog.make_filtering_bound_logger(level)

    def factory(*_: Any) -> LineOutput:  # noqa: ANN401 - structlog passes the logger's name, if any
        return output

    structlog.configure(
        processors=processors,
        wrapper_class=wrapper,
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    _output = output
    _json_setup = _JSONSetUp(tuple(processors), wrapper, factory, level, stamper, renderer) if json else None


def info_batch(logger: str, event: str, events: Sequence[Mapping[str, Any]]) -> None:
    """Log ``event`` at INFO once per item of ``events``, as ``.info(event, **fields)`` would, per item.

    Each item goes through structlog's own processor chain (level, context
    variables, timestamp, secret scrubbing, renderer) as any event does;
    under :func:`configure`'s set-up the lines are written in one go. Under
    its JSON set-up (the gateway's own, while nothing has reconfigured
    structlog since) the batch is rendered directly with the same steps,
    the context variables and the timestamp taken once for the batch: the
    same lines at a third of the cost (the audit writer logs every record).
    """
    setup, output = _json_setup, _output
    if setup is not None and output is not None and _installed(setup):
        if setup.level <= logging.INFO:
            output.lines(_render_json(setup, logger, event, events))
        return
    bound = structlog.get_logger(logger)
    with _output.gathered() if _output is not None else contextlib.nullcontext():
        for fields in events:
            bound.info(event, **{"logger": logger, **fields})


def _installed(setup: _JSONSetUp) -> bool:
    """Whether structlog still runs the processors, level filter and output :func:`configure` installed."""
    config = structlog.get_config()
    processors = config["processors"]
    return (
        config["wrapper_class"] is setup.wrapper
        and config["logger_factory"] is setup.factory
        and len(processors) == len(setup.processors)
        and all(now is then for now, then in zip(processors, setup.processors, strict=True))
    )


def _render_json(setup: _JSONSetUp, logger: str, event: str, events: Sequence[Mapping[str, Any]]) -> list[str]:
    """The lines ``.info(event, logger=logger, **fields)`` writes under the JSON set-up, one per item."""
    context = structlog.contextvars.get_contextvars()  # merge_contextvars, once for the batch
    stamp = setup.stamper(None, "info", {})  # TimeStamper, once for the batch
    lines = []
    for fields in events:
        # As structlog builds it: the call's keywords, then the event; then each processor in turn.
        event_dict: MutableMapping[str, Any] = {"logger": logger, **fields, "event": event}
        for key, value in context.items():
            event_dict.setdefault(key, value)
        event_dict["level"] = "info"  # add_log_level
        event_dict.update(stamp)
        scrub_secrets(None, "info", event_dict)
        if "exc_info" in event_dict:
            event_dict = structlog.processors.format_exc_info(None, "info", event_dict)
        line = setup.renderer(None, "info", event_dict)
        lines.append(line if isinstance(line, str) else line.decode())
    return lines
