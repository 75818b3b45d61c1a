"""Verifying the shared store: every replica's chain, its head row, and every signed checkpoint.

In order, so that whatever commits meanwhile only lengthens what is walked:

1. read every chain's head row and every checkpoint; check each checkpoint's
   Ed25519 signature with the public key of its key id (an unknown key id or
   a bad signature is a problem: forged or altered) and keep the heads of the
   trusted ones;
2. walk every chain that has entries, a head row, or is named by a trusted
   checkpoint (``gateway/audit/walk.py``), remembering the hashes at the seqs
   the head rows and checkpoints name;
3. each chain must still hold, unchanged, every head its head row and every
   trusted checkpoint names: a chain that ends before one was cut (tail
   truncated), a chain with no entries that a checkpoint names was removed.

The head rows are in the same database as the entries, so a database
administrator could rewrite both; the checkpoints' signatures are what such
a rewrite cannot forge. Checkpoints anchored outside the database
(``gateway/audit/anchor.py``) cannot be deleted either: each anchored copy's
signature is checked, its heads are trusted like a stored checkpoint's, and a
stored checkpoint missing or different from its copy is a problem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.audit.checkpoints import Checkpoint, check
from gateway.audit.store import GENESIS_HASH
from gateway.audit.walk import ChainHead, Tally, VerifyResult, anchor_problem, walk

# A chain no trusted checkpoint names is suspect when it began this long before the latest checkpoint:
# every replica's head row exists from its start, so every checkpoint after that names it.
CLOCK_SKEW = timedelta(minutes=5)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gateway.audit.store import MultiChainStore


@dataclass
class _Anchors:
    """The heads recorded for one chain elsewhere: (seq, hash) -> where it was recorded."""

    named: dict[int, tuple[str, str]] = field(default_factory=dict)  # seq -> (hash, source)

    def add(self, seq: int, digest: str, source: str, tally: Tally, prefix: str) -> None:
        known = self.named.get(seq)
        if known is None:
            self.named[seq] = (digest, source)
        elif known[0] != digest:  # two records of the same entry disagree: one of them is not the log's
            tally.add(f"{prefix}seq {seq}: {source} and {known[1]} name different hashes (forked or rewritten)")


def _digest(checkpoint: Checkpoint) -> bytes:
    return hashlib.sha256(checkpoint.body + b"\0" + checkpoint.signature).digest()


@dataclass
class _Trust:
    """What the checkpoints established: heads to find, the chains they name, the latest one."""

    anchors: dict[str, _Anchors] = field(default_factory=dict)
    stored: dict[int, bytes] = field(default_factory=dict)  # id -> digest of every stored checkpoint
    covered: set[str] = field(default_factory=set)  # chains named by a trusted checkpoint
    latest: str | None = None
    latest_time: str = ""

    def trust(self, checkpoint: Checkpoint, heads: Mapping[str, tuple[int, str]], source: str, tally: Tally) -> None:
        """Take a checkpoint whose signature verified: its heads must all be found."""
        if checkpoint.time >= self.latest_time:
            self.latest, self.latest_time = source, checkpoint.time
        for chain, (seq, digest) in heads.items():
            self.covered.add(chain)
            self.anchors.setdefault(chain, _Anchors()).add(seq, digest, source, tally, f"chain {chain!r}: ")


def _trusted_heads(store: MultiChainStore, keys: Mapping[str, Ed25519PublicKey], tally: Tally, trust: _Trust) -> int:
    """Check every stored checkpoint; trust the heads of those whose signature verifies. Return the count."""
    count = 0
    for checkpoint in store.iter_checkpoints(batch=tally.batch):
        count += 1
        trust.stored[checkpoint.id] = _digest(checkpoint)
        heads, problem = check(checkpoint, keys)
        if problem is not None:
            tally.add(problem)
        if heads is not None and problem is None:
            trust.trust(checkpoint, heads, f"checkpoint #{checkpoint.id} ({checkpoint.time})", tally)
    return count


def _anchored_heads(
    anchored: Iterable[Checkpoint | str], keys: Mapping[str, Ed25519PublicKey], tally: Tally, trust: _Trust
) -> list[str]:
    """Check the copies anchored outside the database against their signatures and the stored checkpoints."""
    seen: set[int] = set()
    for copy in anchored:
        if isinstance(copy, str):
            tally.add(copy)
            continue
        seen.add(copy.id)
        name = f"checkpoint #{copy.id} ({copy.time}, by {copy.writer})"
        heads, problem = check(copy, keys)
        if problem is not None:
            tally.add(f"S3 anchor: {problem}")
        if copy.id not in trust.stored:
            tally.add(f"{name}: in the S3 anchor but not in the database (deleted)")
        elif trust.stored[copy.id] != _digest(copy):
            tally.add(f"{name}: differs from its copy in the S3 anchor (rewritten)")
        if heads is not None and problem is None:
            trust.trust(copy, heads, f"anchored checkpoint #{copy.id} ({copy.time})", tally)
    missing = len(set(trust.stored) - seen)
    return [f"{missing} stored checkpoints are not (yet) in the S3 anchor"] if missing else []


def verify_chains(
    store: MultiChainStore,
    tally: Tally,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    expected_head: tuple[int, str] | None = None,
    chain: str | None = None,
    anchored: Iterable[Checkpoint | str] | None = None,
) -> VerifyResult:
    """Verify every chain of ``store`` and every checkpoint (and their ``anchored`` copies); see the module doc."""
    trust = _Trust()
    anchors = trust.anchors
    heads = store.chain_heads()
    checkpoints = _trusted_heads(store, keys, tally, trust)
    anchor_notes = [] if anchored is None else _anchored_heads(anchored, keys, tally, trust)
    for name, (seq, digest) in heads.items():
        anchors.setdefault(name, _Anchors()).add(seq, digest, "its head row", tally, f"chain {name!r}: ")
    if expected_head is not None:
        target = chain or (next(iter(heads)) if len(heads) == 1 else None)
        if target is None:
            tally.add("the shipped head names no chain, and the log has several: give its chain too")
        else:
            anchors.setdefault(target, _Anchors()).add(*expected_head, "the shipped head", tally, f"chain {target!r}: ")
    present = store.chains_in_log()
    results: dict[str, ChainHead] = {}
    for name in sorted(present | set(heads) | set(anchors)):
        prefix = f"chain {name!r}: "
        wanted = anchors.get(name, _Anchors()).named
        if name not in present:
            _absent(name, wanted, tally)
            results[name] = ChainHead(0, 0, GENESIS_HASH)
            continue
        if name not in heads:
            tally.add(f"{prefix}has entries but no head row (head row deleted)")
        head, seen = walk(store.iter_chain(name, batch=tally.batch), tally, prefix=prefix, wanted=wanted.keys())
        results[name] = head
        if name not in trust.covered and _older(head.first_time, trust.latest_time):
            tally.add(
                f"{prefix}not named by any trusted checkpoint, though its first entry ({head.first_time}) is older "
                f"than {trust.latest} (a chain inserted into the database?)"
            )
        for seq, (digest, source) in sorted(wanted.items()):
            problem = anchor_problem((seq, digest), head.head_seq, seen.get(seq), source)
            if problem is not None:
                tally.add(prefix + problem)
    tally.report(tally.count)
    notes = _notes(checkpoints, trust.latest, results) + anchor_notes
    shown = results.get(chain) if chain else next(iter(results.values())) if len(results) == 1 else None
    shown = shown or ChainHead(0, 0, GENESIS_HASH)
    problems = tally.listed()
    return VerifyResult(
        not problems, tally.count, shown.head_seq, shown.head_hash, problems, results, checkpoints, notes
    )


def _older(first_time: str | None, checkpoint_time: str) -> bool:
    """Whether a chain's first entry precedes a checkpoint by more than the clock skew allowed between replicas."""
    if not first_time or not checkpoint_time:
        return False
    try:
        first, checkpoint = datetime.fromisoformat(first_time), datetime.fromisoformat(checkpoint_time)
        return first < checkpoint - CLOCK_SKEW
    except (ValueError, TypeError):  # an unreadable time is the walk's problem already (the record's hash)
        return False


def _absent(name: str, wanted: Mapping[int, tuple[str, str]], tally: Tally) -> None:
    """A chain with no entries: fine while nothing recorded it beyond seq 0; else it was removed."""
    named = [(seq, source) for seq, (_, source) in sorted(wanted.items()) if seq > 0]
    if named:
        seq, source = named[-1]
        tally.add(f"chain {name!r}: missing, {source} names it at seq {seq} (a replica's chain was removed)")


def _notes(checkpoints: int, latest: str | None, chains: Mapping[str, ChainHead]) -> list[str]:
    """What this verification could not cover."""
    if not chains:
        return []
    if checkpoints == 0:
        return [
            (
                "no signed checkpoints: a cut tail or a removed chain is found only against the head rows, "
                "which sit in the same database (configure audit.checkpoints)"
            )
        ]
    return [] if latest is None else [f"latest trusted checkpoint: {latest}"]
