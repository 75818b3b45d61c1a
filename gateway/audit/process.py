"""The audit store in a process of its own (``audit.writer: process``).

With the default writer (``thread``) the store's work (hash chain, SQLite or
MariaDB inserts, JSON) runs in the audit writer thread, beside the event loop
in one interpreter: the two share one GIL, so the gateway's process does at
most one core of Python work, and the store's share of it is taken from the
requests. :class:`ProcessStore` moves that work to a child process: the
event loop only stamps each record's time (``Pending``); the writer thread
(``gateway/audit/log.py``: group commit, ordering, retries, the SIEM log
events) builds and serialises each record and hands the group over a pipe,
then blocks, GIL released, until the child answers; the child caps and
redacts each record exactly as the log would, stores the group in one
transaction and answers with the entries (a record that cannot be prepared
fails alone). Records are immutable once submitted (frozen dataclasses whose
mappings are built for them), so building them later reads the same values. The guarantees do
not move: the child commits (``synchronous=FULL`` or InnoDB's commit) before
it answers, and the writer settles the callers only with that answer.

Failure is the store's failure: if the child cannot open the store, the
gateway does not start; if it dies or answers garbage, that batch fails
(decision records refuse their statements, outcome records are retried) and
the next batch starts a new child, which reads the chain head from the store
as any writer does. A child killed after its commit but before its answer
leaves those records stored although the gateway counted them failed: the
statements they guarded did not run, and a retried outcome record can be
stored twice (``verify`` still passes; each copy is chained).

The child ignores SIGINT and SIGTERM (a terminal's Ctrl-C reaches the whole
process group): it ends when the gateway closes the pipe, after the last
batch, so a draining gateway never loses its writer first.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import orjson

from gateway.audit.caps import RecordCaps
from gateway.audit.pending import Pending, redacted_and_capped, store_each
from gateway.errors import AuditUnavailable

if TYPE_CHECKING:
    from collections.abc import Sequence
    from multiprocessing.connection import Connection

    from gateway.audit.store import AuditStore, Entry
    from gateway.settings import AuditSettings

_READY = b"ready"
START_TIMEOUT = 60.0  # seconds a new child may take to import and open the store


class ProcessStore:
    """A :class:`~gateway.audit.pending.PreparingStore` whose writes run in a child process; see the module docstring.

    It only writes (``append_pending``, ``close``): the gateway reads
    through a store of its own (``readonly``), never through its writer.
    """

    def __init__(
        self, settings: AuditSettings, *, caps: RecordCaps | None = None, start_timeout: float = START_TIMEOUT
    ) -> None:
        self.settings = settings
        self.caps = caps or RecordCaps()
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._child: Any = None  # multiprocessing's Process (untyped for its context)
        self._pipe: Connection | None = None
        self.starts = 0
        with self._lock:
            self._start()

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=serve, args=(self.settings, self.caps, child), name="gateway-audit-store", daemon=True
        )
        process.start()
        child.close()
        self.starts += 1
        try:
            if not parent.poll(self._start_timeout):
                raise AuditUnavailable("the audit store process did not start in time")
            answer = parent.recv_bytes()
        except (EOFError, OSError) as exc:
            _end(process, parent)
            raise AuditUnavailable(f"the audit store process ended while starting ({exc})") from None
        except AuditUnavailable:
            _end(process, parent)
            raise
        if answer != _READY:
            _end(process, parent)
            raise AuditUnavailable(_error_of(answer))
        self._child, self._pipe = process, parent

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before it starts or after it ended)."""
        return self._child.pid if self._child is not None and self._child.is_alive() else None

    def append_pending(self, records: Sequence[Pending]) -> list[Entry | AuditUnavailable]:
        """Build each record's mapping here, cap, redact and store them in the child; each one's entry or error.

        A record that cannot be serialised or prepared fails alone; the
        others are stored in one transaction.
        """
        results: list[Entry | AuditUnavailable | None] = [None] * len(records)
        sent: list[int] = []
        lines: list[bytes] = []
        for index, pending in enumerate(records):
            try:
                lines.append(orjson.dumps(pending.fields()))
            except (ValueError, TypeError) as exc:  # orjson's JSONEncodeError is a TypeError
                results[index] = AuditUnavailable(f"the audit record cannot be stored ({exc})")
            else:
                sent.append(index)
        if sent:
            reply = self._exchange(b"[" + b",".join(lines) + b"]")
            answers = reply.get("results")
            if not isinstance(answers, list) or len(answers) != len(sent):
                raise AuditUnavailable("the audit store process answered for a different number of records")
            for index, answer in zip(sent, answers, strict=True):
                # Each answer is {"entry": ...} or {"refused": why}: an entry may itself have an "error" field.
                entry = answer.get("entry") if isinstance(answer, dict) else None
                if isinstance(entry, dict):
                    results[index] = entry
                else:
                    why = answer.get("refused") if isinstance(answer, dict) else None
                    results[index] = AuditUnavailable(f"the audit record cannot be stored ({why or 'no entry'})")
        return [r if r is not None else AuditUnavailable("the audit record was not stored") for r in results]

    def _exchange(self, message: bytes) -> dict[str, Any]:
        """Send one message to the child and return its answer (``AuditUnavailable`` for the store's failure)."""
        with self._lock:
            if self._pipe is None or self._child is None or not self._child.is_alive():
                self._discard()
                self._start()  # a new child: the store is read afresh (its chain head too)
            pipe = self._pipe
            if pipe is None:  # pragma: no cover - _start sets it or raises
                raise AuditUnavailable("the audit store process is not running")
            try:
                pipe.send_bytes(message)
                answer = pipe.recv_bytes()
            except (EOFError, OSError) as exc:
                self._discard()
                raise AuditUnavailable(f"the audit store process ended ({exc or 'no answer'})") from None
        try:
            reply = orjson.loads(answer)
        except orjson.JSONDecodeError:
            reply = None
        if not isinstance(reply, dict) or "error" in reply:
            raise AuditUnavailable(_error_of(answer))
        return reply

    def close(self) -> None:
        """Close the pipe: the child closes its store (everything answered is committed) and ends."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._child is not None and self._pipe is not None:
            _end(self._child, self._pipe)
        self._child, self._pipe = None, None


def _end(process: Any, pipe: Connection) -> None:  # noqa: ANN401 - multiprocessing's Process
    """Close ``pipe`` (the child's end of input) and wait for the child; kill it if it does not end."""
    pipe.close()
    process.join(10)
    if process.is_alive():
        process.kill()
        process.join(5)


def _error_of(answer: bytes) -> str:
    try:
        return str(orjson.loads(answer)["error"])[:500]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "the audit store process answered something that is not an answer"


def _store_pending(store: AuditStore, records: list[dict[str, object]], caps: RecordCaps, *, redact: bool) -> bytes:
    """Prepare each record (a failure is that record's), store the rest in one transaction; the answer."""
    results = store_each(store, records, lambda record: redacted_and_capped(record, caps, redact=redact))
    answers = [
        {"refused": f"{type(result).__name__}: {result}"} if isinstance(result, Exception) else {"entry": result}
        for result in results
    ]
    return orjson.dumps({"results": answers})


def serve(settings: AuditSettings, caps: RecordCaps, pipe: Connection) -> None:
    """The child: open the store, then store each batch the pipe brings and answer with its entries."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from gateway import log  # noqa: PLC0415 - the child's own imports, after the signals are set
    from gateway.audit.factory import open_audit_store  # noqa: PLC0415 - imported in the child, after the signals

    log.configure(json=not sys.stderr.isatty())
    try:
        store = open_audit_store(settings)
    except Exception as exc:  # noqa: BLE001 - any failure to open: the parent reports it and does not start
        pipe.send_bytes(orjson.dumps({"error": f"{getattr(exc, 'detail', None) or exc}"}))
        return
    pipe.send_bytes(_READY)
    try:
        while True:
            try:
                data = pipe.recv_bytes()
            except EOFError:  # the gateway closed the pipe: everything answered is committed
                return
            try:
                answer = _store_pending(store, orjson.loads(data), caps, redact=settings.redact_literals)
            except Exception as exc:  # noqa: BLE001 - the store's failure is the batch's failure, told to the parent
                answer = orjson.dumps({"error": f"{type(exc).__name__}: {exc}"})
            pipe.send_bytes(answer)
    finally:
        store.close()
