"""Admin edits with the shared state store: the same edits, written as managed documents in one transaction.

``StoreEditor`` is ``PolicyEditor`` with another place to write: it builds and
checks every edit exactly as for files (byte-preserving splice, semantic
check, ``If-Match`` against the merged policy's revision), over the base files
plus the managed documents, and writes the edited document in the store's
transaction (``gateway.state.store``): claim the revision (412 if another
replica's edit committed since it was read), write the document, write the
audit record (fails closed: rolled back), commit. The base files are read-only:
an edit that would change one (removing a grant defined there) is refused.

An approval's edit (no ``If-Match``) that loses the race to another replica
is built again on the newer documents, up to ``retries`` times; an admin's
edit with ``If-Match`` is not: they get the 412 and look again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from pathlib import Path

from gateway.errors import PolicyInvalid, PreconditionFailed
from gateway.policy.edit import Audit, Change, EditResult, PolicyEditor, snapshot
from gateway.policy.editcheck import Snapshot
from gateway.state.store import DocumentWrite, StateStore


class StoreEditor(PolicyEditor):
    """Applies admin edits to the managed documents of a state store; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        store: StateStore,
        *,
        managed_file: str = "managed.yaml",
        known_targets: Collection[str] | None = None,
        retries: int = 3,
    ) -> None:
        super().__init__(directory, managed_file=managed_file, known_targets=known_targets)
        self.store = store
        self._retries = retries

    async def _edit(self, if_match: str | None, make: Callable[[Snapshot], Change], audit: Audit) -> EditResult:
        async with self._lock:
            attempts = 1 if if_match is not None else self._retries
            for attempt in range(1, attempts + 1):
                write = await asyncio.to_thread(self.store.begin_write)
                try:
                    return await self._attempt(write, if_match, make, audit)
                except PreconditionFailed:
                    if attempt == attempts:
                        raise
                finally:
                    await asyncio.to_thread(write.close)
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _attempt(
        self, write: DocumentWrite, if_match: str | None, make: Callable[[Snapshot], Change], audit: Audit
    ) -> EditResult:
        revision, documents = await asyncio.to_thread(write.read)
        base = await asyncio.to_thread(snapshot, self.directory)
        change, result = await asyncio.to_thread(self.prepare_files, {**base, **documents}, if_match, make)
        if change.intent.file in base:
            raise PolicyInvalid(
                f"{change.intent.file} is a read-only base policy file; change it through the reviewed files "
                "(a pull request), not the admin API"
            )
        await asyncio.to_thread(write.claim, revision)
        await asyncio.to_thread(write.put, change.intent.file, change.content)
        await audit(result)  # durable before the commit; a failure rolls the edit back
        await asyncio.to_thread(write.commit)
        return result
