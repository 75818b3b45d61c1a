"""Check an audit store's hash chains: find edited, deleted, inserted or reordered entries.

Each entry is checked as it was hashed (``gateway/audit/store.py``), whatever
its kind: a log written by any version of the gateway verifies. Besides the
hashed record, each row of an SQL store keeps plain copies of the fields
auditors filter on (:data:`~gateway.audit.fields.COLUMNS`: ``time``,
``user``, ``target``, ...). Verification compares every such stored column
with the value its hashed record implies, so an edit that would hide a row
from filters (its ``user`` or ``time`` changed) is found too.

A store with one chain (the embedded SQLite file, the fake) is walked here;
the shared store, with a chain per replica and signed checkpoints, in
``gateway/audit/chains.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.audit.chains import verify_chains
from gateway.audit.store import ColumnCheckedStore, MultiChainStore
from gateway.audit.walk import ChainHead, Tally, VerifyResult, anchor_problem, walk

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gateway.audit.checkpoints import Checkpoint
    from gateway.audit.store import AuditStore, Entry

__all__ = ["ChainHead", "VerifyResult", "verify"]


def _rows(store: AuditStore, batch: int) -> Iterator[tuple[Entry, tuple[str, ...]]]:
    """Every entry with the columns that disagree with it (none for a store without plain columns)."""
    if isinstance(store, ColumnCheckedStore):
        yield from store.iter_checked(batch=batch)
        return
    for entry in store.iter_entries(batch=batch):
        yield entry, ()


def verify(
    store: AuditStore,
    progress: Callable[[int], None] | None = None,
    *,
    expected_head: tuple[int, str] | None = None,
    chain: str | None = None,
    keys: Mapping[str, Ed25519PublicKey] | None = None,
    anchored: Iterable[Checkpoint | str] | None = None,
    batch: int = 1000,
    max_problems: int = 20,
) -> VerifyResult:
    """Stream through ``store`` and check every link of every chain (see ``gateway/audit/walk.py``).

    At most ``max_problems`` are listed. ``progress`` is called with the
    running count after every ``batch`` entries and at the end.

    Removing entries from the *end* leaves a shorter chain that is still
    valid, so truncation is only visible against an anchor kept elsewhere.
    Every ``audit_record`` log event shipped to the SIEM carries ``seq`` and
    ``hash`` (and, on the shared store, ``chain``): pass the SIEM's last seen
    head as ``expected_head`` (with its ``chain`` on the shared store) and
    the log must still contain that entry unchanged. The shared store is also
    checked against its head rows and its signed checkpoints, with ``keys``
    (key id -> Ed25519 public key) trusted for their signatures, and against
    the checkpoints ``anchored`` outside the database (S3 Object Lock).
    """
    tally = Tally(batch=batch, max_problems=max_problems, report=progress or _quiet)
    if isinstance(store, MultiChainStore):
        return verify_chains(store, tally, keys or {}, expected_head=expected_head, chain=chain, anchored=anchored)
    head, seen = walk(_rows(store, batch), tally, wanted=() if expected_head is None else (expected_head[0],))
    tally.report(tally.count)
    problems = tally.listed()
    if expected_head is not None:
        problem = anchor_problem(expected_head, head.head_seq, seen.get(expected_head[0]), "the shipped head")
        if problem is not None:
            problems.append(problem)
    return VerifyResult(not problems, head.count, head.head_seq, head.head_hash, problems)


def _quiet(_count: int) -> None:
    """Ignore progress when nobody asked for it."""
