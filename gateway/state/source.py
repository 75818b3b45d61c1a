"""The policy with the shared state store: the read-only base files merged with the managed documents.

Every replica's ``PolicyStore`` polls :meth:`StoreSource.fingerprint` (the
store's revision, one primary-key read, plus the base directory's own
fingerprint) every ``state.poll_interval`` seconds, and reloads in a worker
thread when it moved. The reload applies revocations to running statements
through the store's listeners, exactly as a local edit does. While the store
cannot be read, the poll fails and the last good policy stays in force.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from pathlib import Path

from gateway.policy.files import load_merged
from gateway.policy.store import DirectorySource
from gateway.policy.types import PolicySet
from gateway.state.store import StateStore

LABEL = "state"  # problems in a managed document read "state:managed.yaml:3: ..."


class StoreSource:
    """Base files of ``directory`` plus the managed documents of ``store``."""

    def __init__(self, directory: Path, store: StateStore) -> None:
        self.directory = directory
        self.store = store
        self._base = DirectorySource(directory)

    def fingerprint(self) -> Hashable:
        """The store's revision and the base files' fingerprint."""
        return (self.store.revision(), self._base.fingerprint())

    def load(self, known_targets: Collection[str]) -> PolicySet:
        """Read the documents (one snapshot) and merge them with the base files."""
        _, documents = self.store.documents()
        return load_merged(self.directory, documents, known_targets=known_targets, label=LABEL)
