"""Admin edits of the policy files: add/remove grants and revocations, safely.

Edits splice text (``gateway.policy.splice``): the lines of the edited entry
(with the comment lines right above it) are removed, or a new entry is
appended after the last entry of the list, so every other byte of the file
(admins' comments, key order, quoting, line endings) stays as it was.
ruamel.yaml's round-trip loader only finds where entries are. Values from
requests are checked and escaped first (``gateway.policy.values``), and every
edit is checked semantically before it is written (``gateway.policy.editcheck``):
the policy after it is the policy before plus or minus exactly the intended
entry, or nothing is written (SECURITY rule 27).

An edit, under an in-process lock and an ``flock`` on ``.policy-edit.lock`` in
the policies directory (so replicas on one host or a shared volume take
turns): read every policy file -> check the revision against ``If-Match``
(stale: ``PreconditionFailed``) -> build the new file -> load the whole
would-be set in a scratch directory and compare it with the set before
(invalid or not exactly the intended change: ``PolicyInvalid``, nothing
written) -> audit (fails closed: nothing written) -> re-read the directory
and check the revision once more -> write a temp file in the same
directory, fsync, ``os.replace``, fsync the directory. The file work runs in
a thread, off the event loop.
New grants and revocations go to the managed file (``managed.yaml`` by
default, created with ``version: 1``); removals edit whichever file holds
the entry. A removal names exactly one entry: a grant by its name, a
revocation by its subject's canonical form (``gateway.identity.subjects``) and,
when there are several, its target.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from gateway.errors import NotFound, PolicyInvalid, PolicyWriteFailed, PreconditionFailed
from gateway.identity.subjects import canonical_subject
from gateway.policy.editcheck import Entry, Intent, Snapshot, check_edit
from gateway.policy.splice import append_entry, matching_items, remove_entries, remove_items, split_lines
from gateway.policy.types import Grant, Revocation
from gateway.policy.values import checked_subject, checked_text, grant_entry, revocation_entry

__all__ = [
    "Audit",
    "EditResult",
    "PolicyEditor",
    "append_entry",
    "remove_entries",
    "revision_of",
    "snapshot",
]

LOCK_NAME = ".policy-edit.lock"
EMPTY_MANAGED = b"version: 1\n"


@dataclass(frozen=True, slots=True)
class Change:
    """One file's new content, what the edit was (for the audit record) and what it must do."""

    content: bytes
    action: str
    detail: dict[str, Any]
    intent: Intent


@dataclass(frozen=True, slots=True)
class EditResult:
    """What an edit did: revisions before and after, the file and its diff."""

    action: str
    detail: dict[str, Any]
    file: str
    previous_revision: str
    revision: str
    diff: str


Audit = Callable[[EditResult], Awaitable[None]]


def snapshot(directory: Path) -> Snapshot:
    """Every policy file's bytes, chosen as ``policyfile`` chooses them."""
    files: Snapshot = {}
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if path.suffix in {".yaml", ".yml"} and not path.name.startswith(".") and path.is_file():
            files[path.name] = path.read_bytes()
    return files


def revision_of(files: Snapshot) -> str:
    """The revision ``load_policies`` would give these files (same formula)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        digest.update(b"%s\0%d\0%s" % (name.encode(), len(data), data))
    return digest.hexdigest()


class PolicyEditor:
    """Applies admin edits to a policy directory, one at a time across replicas."""

    def __init__(
        self,
        directory: Path,
        *,
        managed_file: str = "managed.yaml",
        known_targets: Collection[str] | None = None,
        lock_timeout: float = 5.0,
    ) -> None:
        self.directory = directory
        self.managed_file = managed_file
        self._known_targets = known_targets
        self._lock = asyncio.Lock()
        self._lock_timeout = lock_timeout

    async def add_grant(
        self, entry: dict[str, Any], if_match: str | None, audit: Audit, comment: str | None = None
    ) -> EditResult:
        """Append a grant to the managed file (``comment`` above it, made safe for one comment line each)."""
        checked = grant_entry(entry)

        def change(files: Snapshot) -> Change:
            data = files.get(self.managed_file, EMPTY_MANAGED)
            new = append_entry(data, "grants", checked, comment)
            intent = Intent(self.managed_file, "grants", added=checked)
            return Change(new, "grant_add", {"grant": checked}, intent)

        return await self._edit(if_match, change, audit)

    async def delete_grant(self, name: str, if_match: str | None, audit: Audit) -> EditResult:
        """Remove the grant called ``name`` from whichever file holds it."""
        checked_text(name, "the grant name", 128)

        def named(entry: Entry) -> bool:
            return isinstance(entry, Grant) and entry.name == name

        def change(files: Snapshot) -> Change:
            file, index = _only_one(files, "grants", lambda item: _get(item, "name") == name, f"grant named {name!r}")
            new = remove_items(files[file], "grants", [index])
            return Change(new, "grant_delete", {"grant": name}, Intent(file, "grants", removed=index, names=named))

        return await self._edit(if_match, change, audit)

    async def add_revocation(self, entry: dict[str, Any], if_match: str | None, audit: Audit) -> EditResult:
        """Append a revocation to the managed file (refused if that subject is already revoked on that target)."""
        checked = revocation_entry(entry)
        match = _revocation_of(str(checked.get("subject", "")), checked.get("target"))

        def change(files: Snapshot) -> Change:
            existing = [file for file, data in files.items() if matching_items(data, "revocations", match, file)]
            if existing:
                raise PolicyInvalid(
                    f"{checked.get('subject')} is already revoked on {checked.get('target')!r} "
                    f"(in {', '.join(existing)}); lift that revocation first to change it"
                )
            data = files.get(self.managed_file, EMPTY_MANAGED)
            new = append_entry(data, "revocations", checked, None)
            intent = Intent(self.managed_file, "revocations", added=checked)
            return Change(new, "revocation_add", {"revocation": checked}, intent)

        return await self._edit(if_match, change, audit)

    async def lift_revocation(self, subject: str, target: str | None, if_match: str | None, audit: Audit) -> EditResult:
        """Remove the one revocation of ``subject`` (canonical form) on ``target`` (any, when it has only one)."""
        wanted = checked_subject(subject)
        if target is not None:
            checked_text(target, "target", 128)
        match = _revocation_of(wanted, target)

        def named(entry: Entry) -> bool:  # the typed entry that went must be this person's, on this target
            same = isinstance(entry, Revocation) and _canonical(entry.subject) == wanted
            return same and (target is None or entry.target == target)

        def change(files: Snapshot) -> Change:
            what = f"revocation of {wanted!r}" + (f" on {target!r}" if target else "")
            hint = "" if target else ": name the target (?target=...)"
            file, index = _only_one(files, "revocations", match, what, hint)
            new = remove_items(files[file], "revocations", [index])
            detail = {"subject": wanted, "target": target}
            return Change(new, "revocation_lift", detail, Intent(file, "revocations", removed=index, names=named))

        return await self._edit(if_match, change, audit)

    async def _edit(self, if_match: str | None, make: Callable[[Snapshot], Change], audit: Audit) -> EditResult:
        async with self._lock:
            with await self._file_lock():
                change, result = await asyncio.to_thread(self._prepare, if_match, make)
                await audit(result)
                await asyncio.to_thread(self._commit, change, result.previous_revision)
                return result

    def _prepare(self, if_match: str | None, make: Callable[[Snapshot], Change]) -> tuple[Change, EditResult]:
        """Read, build and check the edit (nothing written); in a thread."""
        return self.prepare_files(snapshot(self.directory), if_match, make)

    def prepare_files(
        self, files: Snapshot, if_match: str | None, make: Callable[[Snapshot], Change]
    ) -> tuple[Change, EditResult]:
        """Build and check the edit of ``files`` (every policy file or document, by name); nothing written."""
        before = revision_of(files)
        if if_match is not None and if_match != before:
            raise PreconditionFailed(
                f"the policy changed since revision {if_match[:12]} (now {before[:12]}): fetch GET /v1/policy and retry"
            )
        change = make(files)
        file = change.intent.file
        candidate = dict(files)
        candidate[file] = change.content
        check_edit(files, candidate, change.intent, self._known_targets)
        old = files.get(file, b"").decode("utf-8", errors="replace")
        diff = "".join(
            difflib.unified_diff(
                split_lines(old), split_lines(change.content.decode("utf-8")), f"a/{file}", f"b/{file}"
            )
        )
        return change, EditResult(change.action, change.detail, file, before, revision_of(candidate), diff)

    def _commit(self, change: Change, before: str) -> None:
        """Write the checked file if nothing changed meanwhile; in a thread."""
        if revision_of(snapshot(self.directory)) != before:
            raise PreconditionFailed("the policy files changed during the edit; nothing was written")
        try:
            _write_atomically(self.directory / change.intent.file, change.content)
        except OSError as exc:
            raise PolicyWriteFailed(f"cannot write {change.intent.file} ({exc.strerror or exc})") from None

    async def _file_lock(self) -> contextlib.AbstractContextManager[None]:
        try:
            handle = (self.directory / LOCK_NAME).open("a+b")
        except OSError as exc:
            raise PolicyWriteFailed(f"cannot lock the policies directory ({exc.strerror or exc})") from None
        deadline = time.monotonic() + self._lock_timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise PolicyWriteFailed("another policy edit holds the lock; retry") from None
                await asyncio.sleep(0.02)
        return _held(handle)


@contextlib.contextmanager
def _held(handle: Any) -> Iterator[None]:  # noqa: ANN401 - a binary file object
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _get(item: Any, key: str) -> Any:  # noqa: ANN401 - YAML nodes are untyped
    return item.get(key) if isinstance(item, CommentedMap) else None


def _canonical(subject: object) -> str | None:
    """A subject's canonical form, or None when it has none (it then matches no request)."""
    try:
        return canonical_subject(subject) if isinstance(subject, str) else None
    except ValueError:
        return None


def _revocation_of(subject: str, target: object) -> Callable[[Any], bool]:
    """A test: does a revocation item name ``subject`` (canonical) on ``target`` (any target when None)."""

    def match(item: Any) -> bool:  # noqa: ANN401 - a YAML node
        return _canonical(_get(item, "subject")) == subject and (target is None or _get(item, "target") == target)

    return match


def _only_one(files: Snapshot, key: str, match: Callable[[Any], bool], what: str, hint: str = "") -> tuple[str, int]:
    """The (file, index) of the one item of list ``key`` that ``match``: ``NotFound`` for none, refused for more."""
    found = [(file, index) for file, data in files.items() for index in matching_items(data, key, match, file)]
    if not found:
        raise NotFound(f"no {what}")
    if len(found) > 1:
        places = ", ".join(f"{file} item {index + 1}" for file, index in found[:5])
        raise PolicyInvalid(f"several entries match the {what} ({places}){hint or '; edit the files by hand'}")
    return found[0]


def _write_atomically(path: Path, content: bytes) -> None:
    """Temp file in the same directory, fsync, rename over, fsync the directory."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # noqa: PTH101 - the temp file is known by its path string
        os.replace(tmp, path)  # noqa: PTH105 - the temp file is known by its path string
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # noqa: PTH108 - the temp file is known by its path string
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
