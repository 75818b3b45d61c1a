"""Where audit entries are kept: the store protocol, the entry, and the hash chain both stores build.

An *entry* is a stored record (the mapping :meth:`~gateway.audit.records.AuditRecord.fields`
gave, as the audit log prepared it) plus ``seq``, ``prev_hash`` and ``hash``.
The store assigns ``seq`` and links the chain inside the same transaction
that writes the rows, so sequence order is chain order even if several
writers share one store::

    body = canonical({**record, "seq": seq})
    hash = sha256(prev_hash.encode() + body).hexdigest()

The first entry's ``prev_hash`` is :data:`GENESIS_HASH`. :class:`AuditStore`
is the swap point: the embedded SQLite store (``gateway/audit/sqlite.py``),
the shared MariaDB store for several replicas (``gateway/audit/mariadb.py``)
and the in-memory fake for tests (``gateway/audit/fake.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

import orjson

from gateway.audit.query import DEFAULT_LIMIT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from gateway.audit.checkpoints import Checkpoint
    from gateway.audit.query import AuditFilter

Entry: TypeAlias = dict[str, Any]  # a stored record as read back: JSON values, plus the chain fields

GENESIS_HASH = "0" * 64
CHAIN_FIELDS = frozenset({"seq", "chain", "prev_hash", "hash"})


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of :meth:`AuditStore.query`: entries in page order, and the cursor for the next page."""

    entries: list[Entry]
    next_cursor: str | None


class BatchStore(Protocol):
    """What the audit log's writer needs of a store: commit batches, then close."""

    def append_batch(self, records: Sequence[Mapping[str, object]]) -> list[Entry]:
        """Chain and durably commit ``records`` in one transaction; return their entries."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


class AuditStore(BatchStore, Protocol):
    """A durable, append-only home for hash-chained audit entries."""

    def iter_entries(self, after_seq: int = 0, batch: int = 1000) -> Iterator[Entry]:
        """Yield entries with ``seq > after_seq`` in seq order, ``batch`` rows per read."""
        ...

    def last(self) -> Entry | None:
        """Return the entry with the highest seq, or ``None`` for an empty log."""
        ...

    def query(
        self,
        filters: AuditFilter,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
        *,
        oldest_first: bool = False,
    ) -> AuditPage:
        """One page of entries matching ``filters``, newest first; see ``gateway/audit/query.py``."""
        ...


@runtime_checkable
class ColumnCheckedStore(Protocol):
    """A store that copies fields out of the hashed record into plain columns (for filters).

    Verification must see an edit to those columns too: editing ``user`` or
    ``time`` of a row would hide it from filters while the hashed record stays
    intact. Both SQL stores implement this.
    """

    def iter_checked(self, after_seq: int = 0, batch: int = 1000) -> Iterator[tuple[Entry, tuple[str, ...]]]:
        """Entries in seq order, each with the names of its stored columns that disagree with its record."""
        ...


@runtime_checkable
class MultiChainStore(Protocol):
    """A store with one chain per replica and signed checkpoints over their heads (the shared MariaDB store).

    Verification (``gateway/audit/chains.py``) checks each chain on its own and
    every checkpoint against them.
    """

    def chain_heads(self) -> dict[str, tuple[int, str]]:
        """Each chain's head (seq, hash) as recorded by its last commit (the head rows)."""
        ...

    def chains_in_log(self) -> set[str]:
        """The chains that have entries."""
        ...

    def iter_chain(self, chain: str, batch: int = 1000, after_seq: int = 0) -> Iterator[tuple[Entry, tuple[str, ...]]]:
        """One chain's entries after ``after_seq`` in seq order, each with its columns that disagree with its record."""
        ...

    def iter_checkpoints(self, batch: int = 1000) -> Iterator[Checkpoint]:
        """Every stored checkpoint, oldest first."""
        ...


def canonical(record: Mapping[str, object]) -> bytes:
    """Return the canonical bytes of ``record``: compact JSON with sorted keys."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, body: bytes) -> str:
    """Return the SHA-256 hex digest over the previous hash and a record's bytes."""
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def chained_body(entry: Mapping[str, object]) -> bytes:
    """The bytes an entry's ``hash`` covers: its record with ``seq``, without ``prev_hash`` and ``hash``."""
    return canonical({k: v for k, v in entry.items() if k not in ("prev_hash", "hash")})


@dataclass(slots=True)
class Linked:
    """Records chained on from a head: one row per record for the store, and the entries to return."""

    rows: list[tuple[object, ...]]
    entries: list[Entry]
    seq: int  # the new head
    hash: str


def link(
    records: Sequence[Mapping[str, object]],
    seq: int,
    prev: str,
    columns: Callable[[Mapping[str, object]], tuple[object, ...]],
    *,
    chain: str | None = None,
) -> Linked:
    """Chain ``records`` on from the head ``(seq, prev)``; each row is ``(seq, *columns(record), body, prev, hash)``.

    With ``chain`` (the shared store's replica id) every record also carries
    ``chain``, inside the hashed bytes: an entry cannot be moved to another chain.
    """
    rows: list[tuple[object, ...]] = []
    entries: list[Entry] = []
    position: dict[str, object] = {} if chain is None else {"chain": chain}
    for record in records:
        seq += 1
        stored = {**record, **position, "seq": seq}
        body = canonical(stored)
        digest = chain_hash(prev, body)
        rows.append((seq, *columns(record), body, prev, digest))
        entries.append({**stored, "prev_hash": prev, "hash": digest})
        prev = digest
    return Linked(rows, entries, seq, prev)


def decode_entry(record: bytes, prev_hash: str, digest: str) -> Entry:
    """Rebuild an entry from its stored record bytes (``seq`` included) and chain columns."""
    try:
        body = orjson.loads(record)
    except orjson.JSONDecodeError:
        body = None
    # An unreadable row still yields an entry, so verification can name it.
    entry: Entry = body if isinstance(body, dict) else {}
    entry["prev_hash"] = prev_hash
    entry["hash"] = digest
    return entry


def statement_text(record: Mapping[str, object]) -> str | None:
    """The statement column's text: the statement, or a transaction's statements one per line."""
    statement = record.get("statement")
    if isinstance(statement, str):
        return statement
    if isinstance(statement, list | tuple):
        return "\n".join(str(s) for s in statement)
    return None


def column_mismatches(names: Sequence[str], stored: Sequence[object], expected: Sequence[object]) -> tuple[str, ...]:
    """The names whose stored value differs from the value the hashed record implies."""
    return tuple(name for name, got, want in zip(names, stored, expected, strict=True) if got != want)


def entry_total(store: AuditStore) -> int | None:
    """How many entries the store holds, as its chain heads say (for progress bars); ``None`` when empty."""
    if isinstance(store, MultiChainStore):
        return sum(seq for seq, _ in store.chain_heads().values()) or None
    last = store.last()
    return int(last["seq"]) if last else None
