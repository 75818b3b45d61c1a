"""The live policy: the last good ``PolicySet``, reloaded when its source changes.

The source is the policies directory (``DirectorySource``), or, with the
shared state store, the directory's read-only base files merged with the
store's managed documents (``gateway.state.source``). A source gives a cheap
``fingerprint`` (polled) and a ``load``.

An invalid edit never replaces the last good policy; the problem is kept in
``last_error`` (shown by ``/readyz``) and logged. A source that cannot be read
(the state store down) keeps the last good policy in force too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Collection, Hashable
from pathlib import Path
from typing import Protocol

import structlog

from gateway.errors import GatewayError, PolicyFileError
from gateway.policy.files import MAX_FILE_BYTES, PolicySet, load_policies

log = structlog.get_logger("gateway.policy.decide")


_Fingerprint = tuple[tuple[str, int, int, str], ...]


def _fingerprint(directory: Path) -> _Fingerprint:
    # File timestamps are as coarse as the kernel tick, so two same-size writes in
    # one tick look alike by (mtime, size): compare a digest of the bytes as well.
    entries = []
    for path in sorted(directory.glob("*.y*ml")):
        with contextlib.suppress(OSError):
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size <= MAX_FILE_BYTES else ""
            entries.append((path.name, st.st_mtime_ns, st.st_size, digest))
    return tuple(entries)


class PolicySource(Protocol):
    """Where the policy comes from (blocking calls: the store runs them in a thread when it can)."""

    def fingerprint(self) -> Hashable:
        """Something that changes whenever what ``load`` would return may have changed; cheap."""
        ...

    def load(self, known_targets: Collection[str]) -> PolicySet:
        """The merged, validated policy (``PolicyFileError`` listing every problem)."""
        ...


class DirectorySource:
    """The policy files of one directory."""

    def __init__(self, directory: Path, loader: Callable[..., PolicySet] = load_policies) -> None:
        self.directory = directory
        self._loader = loader

    def fingerprint(self) -> Hashable:
        """Names, times, sizes and digests of the files."""
        return _fingerprint(self.directory)

    def load(self, known_targets: Collection[str]) -> PolicySet:
        """Load the directory."""
        return self._loader(self.directory, known_targets=known_targets)


class PolicyStore:
    """Holds the current policy set and reloads it from its source (by default, its directory)."""

    def __init__(
        self,
        directory: Path,
        known_targets: Collection[str],
        *,
        loader: Callable[..., PolicySet] = load_policies,
        source: PolicySource | None = None,
    ) -> None:
        self.directory = directory
        self.source: PolicySource = source or DirectorySource(directory, loader)
        self._known_targets = frozenset(known_targets)
        self._current: PolicySet | None = None
        self._fingerprint: Hashable = ()
        self._generation = 0  # bumped by every applied load, good or refused
        self.last_error: str | None = None
        self.reload_failures = 0  # since start-up, for the metrics
        self.source_error: str | None = None  # why the source could not be read at the last poll (store down)
        # Called with the new set after each successful load that changed the revision.
        self.listeners: list[Callable[[PolicySet], None]] = []

    @property
    def current(self) -> PolicySet:
        """The last good policy set (``load`` must have succeeded once)."""
        if self._current is None:
            raise RuntimeError("policies are not loaded")
        return self._current

    @property
    def loaded(self) -> bool:
        """Whether a good policy set is in force."""
        return self._current is not None

    def load(self) -> PolicySet:
        """Load the directory now; on failure keep the last good set and re-raise."""
        fingerprint = self.source.fingerprint()
        try:
            policy = self.source.load(self._known_targets)
        except PolicyFileError as exc:
            self._refuse(fingerprint, exc)
            raise
        return self._accept(fingerprint, policy)

    def _refuse(self, fingerprint: Hashable, exc: PolicyFileError) -> None:
        self._generation += 1
        self._fingerprint = fingerprint
        self.last_error = str(exc)
        self.reload_failures += 1
        log.error("policy_reload_failed", problems=[str(p) for p in exc.problems])

    def _accept(self, fingerprint: Hashable, policy: PolicySet) -> PolicySet:
        self._generation += 1
        self._fingerprint = fingerprint
        changed = self._current is None or policy.revision != self._current.revision
        if changed:
            log.info("policy_loaded", revision=policy.revision, grants=len(policy.grants))
        self._current = policy
        self.last_error = None
        if changed:
            for listener in self.listeners:
                listener(policy)
        return policy

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the directory and reload on change, until cancelled; nothing else ends it."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll_in_thread()
            except GatewayError as exc:  # the state store down: keep the last good policy, say so once
                if self.source_error is None:
                    log.warning("policy_source_unavailable", error=exc.detail)
                self.source_error = exc.detail
                continue
            except Exception:  # a loader bug must not end the watch: revocations would stop applying
                self.reload_failures += 1
                log.exception("policy_watch_failed")
                continue
            if self.source_error is not None:
                log.info("policy_source_available")
                self.source_error = None

    async def poll_in_thread(self) -> bool:
        """:meth:`poll` with the reading and parsing in a thread, so a large file never stalls the loop."""
        generation = self._generation
        fingerprint = await asyncio.to_thread(self.source.fingerprint)
        if fingerprint == self._fingerprint:
            return False
        try:
            policy = await asyncio.to_thread(self.source.load, self._known_targets)
        except PolicyFileError as exc:
            if generation == self._generation:
                self._refuse(fingerprint, exc)
            return True
        # A load applied meanwhile (an admin edit) is newer than what this thread read: keep it.
        if generation == self._generation:
            self._accept(fingerprint, policy)
        return True

    def poll(self) -> bool:
        """Reload if any policy file changed since the last load; tell whether it did."""
        if self.source.fingerprint() == self._fingerprint:
            return False
        with contextlib.suppress(PolicyFileError):
            self.load()
        return True
