"""Walking one hash chain: what is wrong with each entry, and the tally a verification keeps.

Used by :func:`gateway.audit.verify.verify` for a store with one chain and
by ``gateway/audit/chains.py`` for each chain of the shared store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.audit.store import GENESIS_HASH, chain_hash, chained_body

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable

    from gateway.audit.store import Entry


@dataclass(frozen=True)
class ChainHead:
    """One chain as verified: entries read, and the last entry that continued it."""

    count: int
    head_seq: int
    head_hash: str
    first_time: str | None = None  # the first entry's recorded time


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a verification.

    ``count`` is the number of entries read; ``head_seq``/``head_hash`` are the
    last entry that continued the chain (``0`` and the genesis hash for an
    empty log; on the shared store, those of the chain asked about, or of the
    only chain). ``problems`` lists the first problems found, each naming a
    seq (and its chain). ``chains`` has every chain's own count and head;
    ``checkpoints`` counts the checkpoints checked; ``notes`` says what the
    check could not cover.
    """

    ok: bool
    count: int
    head_seq: int
    head_hash: str
    problems: list[str] = field(default_factory=list)
    chains: dict[str, ChainHead] = field(default_factory=dict)
    checkpoints: int = 0
    notes: list[str] = field(default_factory=list)


def _quiet(_count: int) -> None:
    """Ignore progress when nobody asked for it."""


@dataclass
class Tally:
    """What a verification has found so far, across chains: entries read, problems (the first few listed)."""

    batch: int = 1000
    max_problems: int = 20
    report: Callable[[int], None] = _quiet
    count: int = 0
    found: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, problem: str) -> None:
        """Count a problem; list it while fewer than ``max_problems`` are (a wrecked log must not fill memory)."""
        self.found += 1
        if self.found <= self.max_problems:
            self.problems.append(problem)

    def listed(self) -> list[str]:
        """The problems listed, with how many more were found."""
        more = self.found - self.max_problems
        return [*self.problems, f"... and {more} more problems"] if more > 0 else list(self.problems)


def entry_problem(entry: Entry, expected_seq: int, prev_hash: str) -> str | None:
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


def walk(
    rows: Iterable[tuple[Entry, tuple[str, ...]]],
    tally: Tally,
    *,
    prefix: str = "",
    wanted: Collection[int] = (),
) -> tuple[ChainHead, dict[int, str]]:
    """Check every link of one chain; return its head and the hashes found at the ``wanted`` seqs.

    Each entry must hash to its stored ``hash`` (else: edited), have every
    plain column equal to what its record holds (else: row edited), carry
    the next seq starting at 1 (else: deleted, reordered or inserted) and
    point with ``prev_hash`` at the previous entry's hash (genesis for seq 1).
    After a problem the check re-anchors on the entry that follows, so later
    damage is reported too. Problems are prefixed with ``prefix``.
    """
    count = 0
    head_seq, head_hash = 0, GENESIS_HASH
    seen: dict[int, str] = {}
    first_time: str | None = None
    for entry, columns in rows:
        count += 1
        if count == 1:
            first_time = str(entry.get("time")) if entry.get("time") is not None else None
        tally.count += 1
        problem = entry_problem(entry, head_seq + 1, head_hash)
        if problem is None and columns:
            problem = (
                f"seq {entry.get('seq')}: stored column(s) {', '.join(columns)} "
                "differ from the hashed record (row edited)"
            )
        if problem is not None:
            tally.add(prefix + problem)
        seq = entry.get("seq")
        # Re-anchor on entries that move forward; one that goes back is set aside.
        if isinstance(seq, int) and not isinstance(seq, bool) and seq > head_seq:
            head_seq, head_hash = seq, str(entry.get("hash"))
            if seq in wanted:
                seen[seq] = head_hash
        if tally.count % tally.batch == 0:
            tally.report(tally.count)
    return ChainHead(count, head_seq, head_hash, first_time), seen


def anchor_problem(anchor: tuple[int, str], head_seq: int, found_hash: str | None, source: str) -> str | None:
    """Compare a head recorded elsewhere (``source``: a SIEM, a head row, a checkpoint) with the chain."""
    seq, digest = anchor
    if seq > head_seq:
        ends = f"the chain ends at seq {head_seq} but {source} names seq {seq}"
        missing = str(seq) if seq == head_seq + 1 else f"{head_seq + 1}-{seq}"
        return f"seq {missing}: missing, {ends} (tail truncated)"
    if seq > 0 and found_hash != digest:
        return f"seq {seq}: hash differs from {source} (rewritten)"
    return None
