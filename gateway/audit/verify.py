"""Check an audit store's hash chain: find edited, deleted, inserted or reordered entries.

Each entry is checked as it was hashed (``gateway/audit/store.py``), whatever
its kind: a log written by any version of the gateway verifies. Besides the
hashed record, each row of an SQL store keeps plain copies of the fields
auditors filter on (:data:`~gateway.audit.fields.COLUMNS`: ``time``,
``user``, ``target``, ...). Verification compares every such stored column
with the value its hashed record implies, so an edit that would hide a row
from filters (its ``user`` or ``time`` changed) is found too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.audit.store import GENESIS_HASH, AnchoredStore, ColumnCheckedStore, chain_hash, chained_body

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from gateway.audit.store import AuditStore, Entry


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify`.

    ``count`` is the number of entries read; ``head_seq``/``head_hash`` are the
    last entry that continued the chain (``0`` and the genesis hash for an
    empty log). ``problems`` lists the first problems found, each naming a seq.
    """

    ok: bool
    count: int
    head_seq: int
    head_hash: str
    problems: list[str] = field(default_factory=list)


def _problem(entry: Entry, expected_seq: int, prev_hash: str) -> str | None:
    """Return what is wrong with ``entry`` at the position where ``expected_seq`` belongs."""
    seq = entry.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return f"seq {expected_seq}: entry has no valid seq (corrupt record)"
    if chain_hash(str(entry.get("prev_hash")), chained_body(entry)) != entry.get("hash"):
        return f"seq {seq}: hash does not match the record (record edited)"
    if seq < expected_seq:
        return f"seq {seq}: out of order after seq {expected_seq - 1} (reordered or inserted)"
    if seq > expected_seq:
        missing = str(expected_seq) if seq == expected_seq + 1 else f"{expected_seq}-{seq - 1}"
        return f"seq {missing}: missing, next entry is seq {seq} (deleted or reordered)"
    if entry.get("prev_hash") != prev_hash:
        return f"seq {seq}: prev_hash does not link to seq {seq - 1} (inserted or replaced)"
    return None


def _anchor_problem(expected: tuple[int, str], head_seq: int, found_hash: str | None) -> str | None:
    """Compare the SIEM's last shipped head with what the log holds at that seq."""
    seq, digest = expected
    if seq > head_seq:
        return (
            f"seq {head_seq + 1}-{seq}: missing, the log ends at seq {head_seq} "
            f"but seq {seq} was shipped (tail truncated)"
        )
    if seq > 0 and found_hash != digest:
        return f"seq {seq}: hash differs from the shipped head (rewritten)"
    return None


def _anchor(store: AuditStore, given: tuple[int, str] | None) -> tuple[int, str] | None:
    """The head to check against: the one given, else the store's own record of it (if it keeps one)."""
    if given is None and isinstance(store, AnchoredStore):
        # Read before the walk: whatever commits meanwhile only lengthens the chain.
        return store.recorded_head()
    return given


def _rows(store: AuditStore, batch: int) -> Iterator[tuple[Entry, tuple[str, ...]]]:
    """Every entry with the columns that disagree with it (none for a store without plain columns)."""
    if isinstance(store, ColumnCheckedStore):
        yield from store.iter_checked(batch=batch)
        return
    for entry in store.iter_entries(batch=batch):
        yield entry, ()


def _row_problem(entry: Entry, columns: tuple[str, ...], expected_seq: int, prev_hash: str) -> str | None:
    """What is wrong with the row: its chain position first, then its plain columns."""
    problem = _problem(entry, expected_seq, prev_hash)
    if problem is None and columns:
        return (
            f"seq {entry.get('seq')}: stored column(s) {', '.join(columns)} differ from the hashed record (row edited)"
        )
    return problem


def _quiet(_count: int) -> None:
    """Ignore progress when nobody asked for it."""


def verify(
    store: AuditStore,
    progress: Callable[[int], None] | None = None,
    *,
    expected_head: tuple[int, str] | None = None,
    batch: int = 1000,
    max_problems: int = 20,
) -> VerifyResult:
    """Stream through ``store`` in seq order and check every link of the chain.

    Each entry must hash to its stored ``hash`` (else: edited), have every
    plain column equal to what its record holds (else: row edited), carry the next
    seq starting at 1 (else: deleted, reordered or inserted) and point with
    ``prev_hash`` at the previous entry's hash (genesis for seq 1). After a
    problem the check re-anchors on the entry that follows, so later damage
    is reported too; at most ``max_problems`` are listed. ``progress`` is
    called with the running count after every ``batch`` entries and at the end.

    Removing entries from the *end* leaves a shorter chain that is still
    valid, so truncation is only visible against an external anchor. Every
    ``audit_record`` log event shipped to the SIEM carries ``seq`` and
    ``hash``: pass the SIEM's last seen head as ``expected_head`` and the log
    must still contain that entry unchanged. A store that keeps its own head
    (the MariaDB store's head row) is checked against it when no head is given.
    """
    report = progress or _quiet
    expected_head = _anchor(store, expected_head)
    anchor_seq = -1 if expected_head is None else expected_head[0]
    problems: list[str] = []
    found = count = 0
    head_seq, head_hash = 0, GENESIS_HASH
    anchor_hash: str | None = None
    for entry, columns in _rows(store, batch):
        count += 1
        problem = _row_problem(entry, columns, head_seq + 1, head_hash)
        if problem is not None:
            found += 1
            if found <= max_problems:  # a wrecked log must not fill memory
                problems.append(problem)
        seq = entry.get("seq")
        # Re-anchor on entries that move forward; one that goes back is set aside.
        if isinstance(seq, int) and seq > head_seq:
            head_seq, head_hash = seq, str(entry.get("hash"))
            if seq == anchor_seq:
                anchor_hash = head_hash
        if count % batch == 0:
            report(count)
    report(count)
    if expected_head is not None:
        problem = _anchor_problem(expected_head, head_seq, anchor_hash)
        if problem is not None:
            problems.append(problem)
    if found > max_problems:
        problems.append(f"... and {found - max_problems} more problems")
    return VerifyResult(not problems, count, head_seq, head_hash, problems)
