"""A record on its way to the store, and the one preparation every writer gives it.

``AuditLog.submit`` (``gateway/audit/log.py``) only stamps a record's time
(:class:`Pending`); :func:`prepared` then builds what is stored, in the
writer thread: its fields and time, the literals redacted if asked, every
field within its cap (SECURITY rule 29), and a check that it is JSON. A store
that does this itself, in another process (:class:`PreparingStore`,
``gateway/audit/process.py``), applies the same :func:`redacted_and_capped`.
A record that cannot be prepared fails alone (``ValueError`` / ``TypeError``).
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import orjson

from gateway.audit.caps import RecordCaps, bound_record
from gateway.audit.format import format_time, redact_fields
from gateway.audit.store import canonical

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from gateway.audit.records import AuditRecord
    from gateway.audit.store import BatchStore, Entry
    from gateway.errors import AuditUnavailable

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """A record handed to a store that prepares records itself (``PreparingStore``): the record and its time.

    The event loop only stamps the time; building the mapping (:meth:`fields`)
    happens in the writer thread, and the caps and redaction in the store.
    """

    record: AuditRecord
    time: datetime

    def fields(self) -> dict[str, object]:
        """The record's fields and its time, checked as :meth:`AuditLog.submit` checks them (``ValueError``)."""
        fields = self.record.fields()
        for name in ("event", "request_id"):
            if not fields.get(name):
                raise ValueError(f"an audit record needs {name!r}")
        fields["time"] = format_time(self.time)
        return fields


@runtime_checkable
class PreparingStore(Protocol):
    """A store that caps, redacts and stores records itself (``gateway/audit/process.py``), each on its own.

    ``append_pending`` raises for a failure of the whole batch (the store is
    down: the log's usual retry rules apply); a record that cannot be stored
    (not JSON, no request id) is its own ``AuditUnavailable`` in the result.
    """

    def append_pending(self, records: Sequence[Pending]) -> list[Entry | AuditUnavailable]:
        """Prepare and durably store ``records`` in one transaction; each one's entry or error, in order."""
        ...

    def close(self) -> None:
        """Release the store's resources (everything answered is committed)."""
        ...


def redacted_and_capped(fields: dict[str, object], caps: RecordCaps, *, redact: bool) -> dict[str, object]:
    """A record's fields as stored: literals redacted if asked (in place), then every field within its cap.

    The one preparation both writers apply (the writer thread's, and the store's process).
    """
    if redact:
        redact_fields(fields)
    # Every field within its cap, whoever sent it (SECURITY rule 29): after redaction, which only shortens.
    return bound_record(fields, caps)


def prepared(pending: Pending, caps: RecordCaps, *, redact: bool) -> dict[str, object]:
    """The mapping stored for a record (see the module docstring); ``ValueError`` / ``TypeError`` if it cannot be."""
    fields = redacted_and_capped(pending.fields(), caps, redact=redact)
    try:  # this record alone fails, never the group it would be committed with
        canonical(fields)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"audit record is not JSON-serialisable: {exc}") from None
    return fields


def store_each(
    store: BatchStore, items: Sequence[T], prepare: Callable[[T], dict[str, object]]
) -> list[Entry | Exception]:
    """Prepare each item and store the good ones in one transaction; each one's entry or its own error.

    An item that cannot be prepared (``ValueError`` / ``TypeError``) takes no
    seq and fails alone; a failure of the store raises for the whole group.
    The writer thread's preparation (:func:`store_prepared`) and the store's
    process (``gateway/audit/process.py``) both store through this.
    """
    results: list[Entry | Exception | None] = []
    ready: list[dict[str, object]] = []
    for item in items:
        try:
            ready.append(prepare(item))
        except (ValueError, TypeError) as exc:
            results.append(exc)
        else:
            results.append(None)
    entries = iter(store.append_batch(ready) if ready else [])
    return [next(entries) if result is None else result for result in results]


def store_prepared(
    store: BatchStore, records: Sequence[Pending], *, caps: RecordCaps, redact: bool
) -> list[Entry | Exception]:
    """Prepare each record (:func:`prepared`) and store the good ones in one transaction (:func:`store_each`)."""
    return store_each(store, records, functools.partial(prepared, caps=caps, redact=redact))
