"""The audit log: durable, hash-chained records of every decision and outcome.

``await log.append(record)`` takes a typed record (``gateway/audit/records.py``)
and returns the stored entry (the record's fields plus ``seq``, ``prev_hash``
and ``hash``) only once it is committed to the store, so a caller
that gets an answer may run the statement (SECURITY rule 21). If the store
cannot be written the caller gets :class:`~gateway.errors.AuditUnavailable`
and the statement must not run. ``log.submit(record)`` queues a record without
waiting (outcome records: the reply need not wait for them); its future settles
when the record is committed. Records commit in the order they were queued, so
once an awaited ``append`` returns, everything queued before it is stored too;
:meth:`AuditLog.wait_committed` is that barrier for a thread.

One writer thread owns the store. It takes whatever is queued and commits it
as one transaction with one fsync (group commit), so many concurrent requests
share a disk flush and the event loop never waits on the disk. A batch of
queued records only waits up to ``linger`` for an awaited one to share its
commit, and a failed commit fails the awaited records in it but keeps the
queued ones for a retry (see :meth:`AuditLog.submit`). After each
commit every entry is also emitted as an ``audit_record`` event on the
``audit`` structlog logger for SIEM shipping (under the JSON log set-up, the
group's lines in one write: ``gateway.log.info_batch``); the event carries
``seq`` and ``hash``, which is the external anchor that makes a truncated tail
visible.

:meth:`AuditLog.submit` only stamps the record's time; its checks, redaction
and caps (``gateway/audit/pending.py``) run in the writer thread, or in the
store's own process for a ``PreparingStore`` (``gateway/audit/process.py``),
and a record that cannot be stored fails its own future, never its group.
The log needs only a :class:`~gateway.audit.store.BatchStore` of its store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import queue
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from gateway.audit.caps import RecordCaps
from gateway.audit.pending import Pending, PreparingStore, store_prepared
from gateway.clock import utcnow
from gateway.errors import AuditUnavailable
from gateway.log import info_batch

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TypeAlias

    from gateway.audit.records import AuditRecord
    from gateway.audit.store import BatchStore, Entry

    # (record, its caller's loop, the caller's future, retried until committed?)
    _Item: TypeAlias = tuple[Pending, asyncio.AbstractEventLoop, asyncio.Future[Entry], bool]
    _Queued: TypeAlias = _Item | threading.Event | None
    # An entry, or why its record was not stored (a record that cannot be stored keeps its own error type).
    _Result: TypeAlias = Entry | Exception

_STOP = None
RETRY_FIRST = 0.05  # seconds before the first retry of queued records after a failed commit
RETRY_MAX = 2.0  # the longest wait between retries
CLOSE_RETRY_SECONDS = 5.0  # how long close() keeps retrying before it logs what it could not store
# How long a batch of queued records only (nobody waits on them) waits for an
# awaited record to share its commit: at low concurrency a request's outcome
# record then rides with the next request's decision record, one fsync not two.
QUEUED_LINGER_SECONDS = 0.02


@dataclasses.dataclass(slots=True)
class AuditStats:
    """What the writer thread has done (plain ints: read at scrape time, written by one thread)."""

    records: int = 0
    failed: int = 0
    commits: int = 0


class AuditLog:
    """Append-only audit log in front of an :class:`~gateway.audit.store.AuditStore`.

    The log owns the store and its writer thread; :meth:`close` commits what
    is pending, stops the thread and closes the store. Every record is cut to
    ``caps`` (``gateway/audit/caps.py``) before it is stored; with
    ``redact_literals`` the literals of its statement text are replaced first
    (``gateway/audit/format.py``). ``max_pending`` bounds
    the queue: when it is full, :meth:`append` fails with ``AuditUnavailable``
    instead of growing without limit. ``max_batch`` bounds one transaction.
    An append not committed within ``timeout`` seconds fails the same way (the
    record may still land later; the statement it guards never runs).
    """

    def __init__(
        self,
        store: BatchStore | PreparingStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        redact_literals: bool = False,
        caps: RecordCaps | None = None,
        max_pending: int = 10_000,
        max_batch: int = 1_000,
        timeout: float = 10.0,
        observe_commit: Callable[[float], None] | None = None,
        close_retry: float = CLOSE_RETRY_SECONDS,
        linger: float = QUEUED_LINGER_SECONDS,
    ) -> None:
        self.store = store
        self.stats = AuditStats()
        self.last_error: str | None = None  # the last commit's failure, cleared by the next success
        self._retrying = 0  # records the writer keeps for a retry (read by metrics)
        self._observe_commit = observe_commit
        self._close_retry = close_retry
        self._linger = linger
        self.redact_literals = redact_literals
        self.caps = caps or RecordCaps()
        self._clock = clock
        self._max_batch = max_batch
        self._timeout = timeout
        # SimpleQueue: a C queue without queue.Queue's Python locks and conditions;
        # the bound is kept in append (one producer thread per loop; overshoot at most one per loop).
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._max_pending = max_pending
        self._closed = False
        self._logger = structlog.get_logger("audit")
        # One group's records, prepared and stored in one transaction: by a store that prepares records
        # itself (a child process), else here in the writer thread (pending.store_prepared).
        self._store_group: Callable[[list[Pending]], Sequence[Entry | Exception]] = (
            store.append_pending
            if isinstance(store, PreparingStore)
            else functools.partial(store_prepared, store, caps=self.caps, redact=self.redact_literals)
        )
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    async def append(self, record: AuditRecord) -> Entry:
        """Durably store ``record``; return the entry with ``seq``, ``prev_hash``, ``hash``.

        ``record`` needs a ``request_id``; its ``time`` is the clock's when it
        has none. Raises ``ValueError``/``TypeError`` for a record that cannot
        be stored, and ``AuditUnavailable`` when the store fails.
        """
        return await self.settled(self.submit(record))

    async def settled(self, future: asyncio.Future[Entry]) -> Entry:
        """Wait for a :meth:`submit` future; ``AuditUnavailable`` if the store has not answered in time."""
        # A plain timer rather than ``asyncio.timeout()`` (two per request): the
        # same answer, AuditUnavailable, if the store has not answered in time.
        timer = future.get_loop().call_later(self._timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def submit(self, record: AuditRecord, *, retry: bool = False) -> asyncio.Future[Entry]:
        """Queue ``record`` without waiting; the future settles once it is committed (or failed).

        Raises at once for a closed log or a full queue. The event loop only
        stamps the record's time: its checks, redaction and caps run in the
        writer thread (or the store's process), so a record that cannot be
        stored fails its own future, with the error :meth:`append` raises
        (``ValueError`` / ``TypeError``; ``AuditUnavailable`` from a child
        process), and never the group it was committed with. A ``retry`` record (an outcome:
        its statement has already run, nobody is refused if it is late) is
        not failed by a failed commit: the writer retries it, with backoff,
        until the store takes it; :meth:`close` retries for
        ``close_retry`` seconds and then logs every record it could not store,
        whole, as ``audit_record_unsaved``.
        """
        if self._closed or not self._thread.is_alive():
            raise AuditUnavailable("the audit log is closed")
        entry = Pending(record, record.time or self._clock())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Entry] = loop.create_future()
        if self._queue.qsize() >= self._max_pending:
            raise AuditUnavailable("the audit queue is full")
        self._queue.put((entry, loop, future, retry))
        return future

    def wait_committed(self, timeout: float) -> bool:
        """Block until everything queued before this call is committed or failed; False on timeout.

        For threads other than the event loop's (tests, tools); callers on the
        loop await :meth:`append`, which gives the same ordering.
        """
        if self._closed:  # close() commits everything pending, then the thread ends
            self._thread.join(timeout)
            return not self._thread.is_alive()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    async def close(self) -> None:
        """Commit everything pending, stop the writer thread and close the store."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)  # never blocks: a SimpleQueue has no bound of its own
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        stopping = False
        retry: list[_Item] = []  # records kept across failed commits, oldest first
        barriers: list[threading.Event] = []
        backoff = RETRY_FIRST
        while not stopping:
            try:
                first = self._queue.get(timeout=backoff if retry else None)
            except queue.Empty:  # time to retry
                items: list[_Item] = []
            else:
                items, new_barriers, stopping = self._take(first)
                barriers += new_barriers
                if not retry:
                    stopping = self._wait_for_company(items, barriers, stopping=stopping)
            if retry or items:
                retry = self._commit_or_keep(retry + items)
                backoff = min(backoff * 2, RETRY_MAX) if retry else RETRY_FIRST
            if not retry:  # everything queued before each barrier is committed or failed
                _release(barriers)
        deadline = time.monotonic() + self._close_retry
        while retry and time.monotonic() < deadline:
            time.sleep(min(backoff, max(deadline - time.monotonic(), 0)))
            backoff = min(backoff * 2, RETRY_MAX)
            retry = self._commit_or_keep(retry)
        self._give_up(retry, "the audit store was still failing when the gateway stopped")
        _release(barriers)
        try:
            self.store.close()
        except Exception:  # nothing is pending: report and end
            self._logger.exception("audit_close_failed", logger="audit")

    def _commit_or_keep(self, items: list[_Item]) -> list[_Item]:
        """Commit ``items``; on failure fail the awaited ones and return the ones to retry."""
        try:
            self._commit(items)
        except _StoreFailed as failed:
            exc = failed.cause
            waiting = [item for item in items if not item[3]]
            _settle(waiting, [_unavailable(exc) for _ in waiting])
            kept = [item for item in items if item[3]]
            overflow = len(kept) - self._max_pending
            if overflow > 0:  # bounded: the oldest are logged whole and dropped
                self._give_up(kept[:overflow], "too many records waiting for the audit store")
                kept = kept[overflow:]
            self._retrying = len(kept)
            return kept
        except Exception as exc:  # after the store took them: never retried, never stranded
            with contextlib.suppress(Exception):
                self._logger.exception("audit_settle_failed", logger="audit", records=len(items))
            _settle(items, [_unavailable(exc) for _ in items])
        self._retrying = 0
        return []

    def _give_up(self, items: list[_Item], why: str) -> None:
        """Fail ``items`` for good; log each record whole, so the log stream still carries it."""
        for record, _, _, _ in items:
            with contextlib.suppress(Exception):
                self._logger.error("audit_record_unsaved", logger="audit", reason=why, record=record.fields())
        _settle(items, [AuditUnavailable(why) for _ in items])

    def _wait_for_company(self, items: list[_Item], barriers: list[threading.Event], *, stopping: bool) -> bool:
        """While nobody waits on ``items`` (queued records only), wait up to ``linger`` for more to commit with.

        Ends at once when an awaited record, a barrier or the stop arrives;
        returns whether the stop did.
        """
        deadline = time.monotonic() + self._linger
        while items and not stopping and not barriers and len(items) < self._max_batch and all(i[3] for i in items):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                more, new_barriers, stopping = self._take(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
            items += more
            barriers += new_barriers
        return stopping

    def _take(self, item: _Queued) -> tuple[list[_Item], list[threading.Event], bool]:
        """Take ``item`` and whatever else is already queued: one transaction for all of it."""
        items: list[_Item] = []
        barriers: list[threading.Event] = []
        stopping = False
        while True:
            if item is _STOP:
                stopping = True
            elif isinstance(item, threading.Event):
                barriers.append(item)
            else:
                items.append(item)
            if len(items) >= self._max_batch:
                return items, barriers, stopping
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items, barriers, stopping

    @property
    def pending(self) -> int:
        """Records queued and not yet committed: new ones, and ones kept for a retry."""
        return self._queue.qsize() + self._retrying

    def _commit(self, items: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            results = self._store_group([record for record, _, _, _ in items])
        except Exception as exc:  # any store failure refuses the statements (the caller settles them)
            self.stats.failed += len(items)
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            # Logged before callers hear of it, so the failure is on record first.
            with contextlib.suppress(Exception):
                self._logger.exception("audit_write_failed", logger="audit", records=len(items))
            raise _StoreFailed(exc) from exc
        entries = [r for r in results if not isinstance(r, Exception)]
        self.stats.records += len(entries)
        self.stats.failed += len(results) - len(entries)
        self.last_error = None
        if entries:  # a group of records that could not be stored only commits nothing
            self.stats.commits += 1
            if self._observe_commit is not None:
                self._observe_commit(time.perf_counter() - started)
        # Copies for the log events, made before callers get (and may change) the entries.
        events = [_log_fields(e) for e in entries]
        _settle(items, results)
        if not events:
            return
        try:
            # One write for the whole group (under the JSON set-up), not one flushed write per record.
            info_batch("audit", "audit_record", events)
        except Exception:  # the records are committed; shipping them is best effort
            with contextlib.suppress(Exception):
                self._logger.exception(
                    "audit_emit_failed", logger="audit", seq=events[0]["seq"], last_seq=events[-1]["seq"]
                )


def _log_fields(entry: Entry) -> dict[str, object]:
    # ``event`` names the structlog event and ``logger`` is the logger's name.
    fields = dict(entry)
    for key in ("event", "logger"):
        if key in fields:
            fields[f"audit_{key}"] = fields.pop(key)
    return fields


class _StoreFailed(Exception):
    """The store refused a batch; ``cause`` is the store's own error."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _release(barriers: list[threading.Event]) -> None:
    for barrier in barriers:
        barrier.set()
    barriers.clear()


def _expire(future: asyncio.Future[Entry]) -> None:
    if not future.done():  # the record may still land later; the statement it guards never runs
        future.set_exception(AuditUnavailable("the audit store did not answer in time"))


def _unavailable(cause: Exception) -> AuditUnavailable:
    error = AuditUnavailable("the audit record could not be written")
    error.__cause__ = cause
    return error


def _settle(items: list[_Item], results: Sequence[_Result]) -> None:
    """Hand each caller its result on its own event loop: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Entry], _Result]]] = {}
    for (_, loop, future, _), result in zip(items, results, strict=True):
        by_loop.setdefault(loop, []).append((future, result))
    for loop, pairs in by_loop.items():
        # A closed loop has nobody left waiting for these answers.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[asyncio.Future[Entry], _Result]]) -> None:
    for future, result in pairs:
        if future.done():  # the caller was cancelled; the record is stored anyway
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
