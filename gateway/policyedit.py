"""Admin edits of the policy files: add/remove grants and revocations, safely.

Edits splice text: the lines of the edited entry (with the comment lines right
above it) are removed, or a new entry is appended after the last entry of the
list, so every other byte of the file (admins' comments, key order, quoting)
stays as it was. ruamel.yaml's round-trip loader only finds where entries are.

An edit, under an in-process lock and an ``flock`` on ``.policy-edit.lock`` in
the policies directory (so replicas on one host or a shared volume take
turns): read every policy file -> check the revision against ``If-Match``
(stale: ``PreconditionFailed``) -> build the new file -> validate the whole
would-be set with ``load_policies`` in a scratch directory (invalid:
``PolicyInvalid``, nothing written) -> audit (fails closed: nothing written)
-> re-read the directory and check the revision once more -> write a temp
file in the same directory, fsync, ``os.replace``, fsync the directory.
New grants and revocations go to the managed file (``managed.yaml`` by
default, created with ``version: 1``); removals edit whichever file holds
the entry.
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

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from gateway.errors import (
    NotFound,
    PolicyFileError,
    PolicyInvalid,
    PolicyWriteFailed,
    PreconditionFailed,
)
from gateway.policyfile import load_policies
from gateway.policyschema import GRANT_KEYS, REVOCATION_KEYS
from gateway.subjects import same_subject

LOCK_NAME = ".policy-edit.lock"
Snapshot = dict[str, bytes]  # file name -> bytes, every policy file of the directory


@dataclass(frozen=True, slots=True)
class Change:
    """One file's new content, and what the edit was (for the audit record)."""

    file: str
    content: bytes
    action: str
    detail: dict[str, Any]


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


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blank(line: str) -> bool:
    return not line.strip()


def _load(data: bytes) -> CommentedMap | None:
    try:
        document = YAML(typ="rt").load(data.decode("utf-8-sig"))
    except (YAMLError, UnicodeDecodeError):
        return None
    return document if isinstance(document, CommentedMap) else None


def _item_span(lines: list[str], seq: CommentedSeq, index: int) -> tuple[int, int, int, int]:
    """Lines ``[start, end)`` of a block list item with its leading comments; dash and content columns."""
    first = seq.lc.item(index)[0]
    dash = first
    while dash >= 0 and not lines[dash].lstrip(" ").startswith("-"):
        dash -= 1
    if dash < 0 or dash < first - 1:
        raise PolicyInvalid("cannot edit this entry: its list item is laid out unusually; edit the file by hand")
    dash_col = _indent(lines[dash])
    after = lines[dash][dash_col + 1 :]
    content_col = dash_col + 1 + (len(after) - len(after.lstrip(" ")))
    end = dash + 1
    while end < len(lines) and (_blank(lines[end]) or _indent(lines[end]) > dash_col):
        end += 1
    while end - 1 > dash and _blank(lines[end - 1]):
        end -= 1
    start = dash
    while start - 1 >= 0 and lines[start - 1].strip().startswith("#"):
        start -= 1
    return start, end, dash_col, content_col


def _render(entry: dict[str, Any], keys: tuple[str, ...], dash_col: int, content_col: int, comment: str | None) -> str:
    """A block list item; every value in JSON form (valid YAML flow style)."""
    out: list[str] = []
    if comment:
        out.extend(f"{' ' * dash_col}# {line}\n" for line in comment.splitlines())
    first = True
    for key in keys:
        if entry.get(key) is None:
            continue
        prefix = " " * dash_col + "-" + " " * (content_col - dash_col - 1) if first else " " * content_col
        out.append(f"{prefix}{key}: {orjson.dumps(entry[key]).decode()}\n")
        first = False
    return "".join(out)


def append_entry(data: bytes, key: str, entry: dict[str, Any], comment: str | None) -> bytes:
    """Append ``entry`` to the top-level list ``key``, leaving every other byte alone."""
    keys = GRANT_KEYS if key == "grants" else REVOCATION_KEYS
    text = data.decode("utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    document = _load(data)
    if document is None:
        raise PolicyInvalid("the managed policy file is not a YAML mapping; fix it by hand first")
    value = document.get(key)
    if isinstance(value, CommentedSeq) and len(value) > 0:
        if value.fa.flow_style():
            raise PolicyInvalid(f"{key} is a flow-style list in this file; edit it by hand")
        _, end, dash_col, content_col = _item_span(lines, value, len(value) - 1)
        lines.insert(end, _render(entry, keys, dash_col, content_col, comment))
    elif key in document and value is None:
        at = document.lc.key(key)[0] + 1
        lines.insert(at, _render(entry, keys, 2, 4, comment))
    elif key not in document:
        lines.append(f"{key}:\n" + _render(entry, keys, 2, 4, comment))
    else:
        raise PolicyInvalid(f"{key} in the managed file is not a block list; edit it by hand")
    return "".join(lines).encode("utf-8")


def remove_entries(data: bytes, key: str, match: Callable[[Any], bool]) -> tuple[bytes, int]:
    """Remove the items of list ``key`` that ``match``; return the new bytes and how many went."""
    document = _load(data)
    value = document.get(key) if document is not None else None
    if not isinstance(value, CommentedSeq) or value.fa.flow_style():
        return data, 0
    lines = data.decode("utf-8").splitlines(keepends=True)
    spans = [_item_span(lines, value, i)[:2] for i, item in enumerate(value) if match(item)]
    for start, end in reversed(spans):
        del lines[start:end]
    return "".join(lines).encode("utf-8"), len(spans)


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
        """Append a grant to the managed file."""

        def change(files: Snapshot) -> Change:
            data = files.get(self.managed_file, b"version: 1\n")
            new = append_entry(data, "grants", entry, comment)
            return Change(self.managed_file, new, "grant_add", {"grant": entry})

        return await self._edit(if_match, change, audit)

    async def delete_grant(self, name: str, if_match: str | None, audit: Audit) -> EditResult:
        """Remove the grant called ``name`` from whichever file holds it."""

        def change(files: Snapshot) -> Change:
            for file, data in files.items():
                new, count = remove_entries(data, "grants", lambda item: _get(item, "name") == name)
                if count:
                    return Change(file, new, "grant_delete", {"grant": name})
            raise NotFound(f"no grant named {name!r}")

        return await self._edit(if_match, change, audit)

    async def add_revocation(self, entry: dict[str, Any], if_match: str | None, audit: Audit) -> EditResult:
        """Append a revocation to the managed file."""

        def change(files: Snapshot) -> Change:
            data = files.get(self.managed_file, b"version: 1\n")
            new = append_entry(data, "revocations", entry, None)
            return Change(self.managed_file, new, "revocation_add", {"revocation": entry})

        return await self._edit(if_match, change, audit)

    async def lift_revocation(self, subject: str, target: str | None, if_match: str | None, audit: Audit) -> EditResult:
        """Remove the revocation of ``subject`` (on ``target``; any target when it is the only one)."""

        def matches(item: Any) -> bool:  # noqa: ANN401 - a YAML node
            same = same_subject(str(_get(item, "subject") or ""), subject)  # canonical forms (SECURITY rule 26)
            return same and (target is None or _get(item, "target") == target)

        def change(files: Snapshot) -> Change:
            found = [(f, d) for f, d in files.items() if remove_entries(d, "revocations", matches)[1]]
            total = sum(remove_entries(d, "revocations", matches)[1] for _, d in found)
            if total == 0:
                raise NotFound(f"no revocation of {subject!r}" + (f" on {target!r}" if target else ""))
            if total > 1:
                raise PolicyInvalid(f"{subject!r} has several revocations: name the target (?target=...)")
            file, data = found[0]
            new, _ = remove_entries(data, "revocations", matches)
            return Change(file, new, "revocation_lift", {"subject": subject, "target": target})

        return await self._edit(if_match, change, audit)

    async def _edit(self, if_match: str | None, make: Callable[[Snapshot], Change], audit: Audit) -> EditResult:
        async with self._lock:
            with await self._file_lock():
                files = snapshot(self.directory)
                before = revision_of(files)
                if if_match is not None and if_match != before:
                    raise PreconditionFailed(
                        "the policy changed since revision "
                        f"{if_match[:12]} (now {before[:12]}): fetch GET /v1/policy and retry"
                    )
                change = make(files)
                candidate = dict(files)
                candidate[change.file] = change.content
                self._validate(candidate)
                old = files.get(change.file, b"").decode("utf-8")
                diff = "".join(
                    difflib.unified_diff(
                        old.splitlines(keepends=True),
                        change.content.decode("utf-8").splitlines(keepends=True),
                        f"a/{change.file}",
                        f"b/{change.file}",
                    )
                )
                result = EditResult(change.action, change.detail, change.file, before, revision_of(candidate), diff)
                await audit(result)
                if revision_of(snapshot(self.directory)) != before:
                    raise PreconditionFailed("the policy files changed during the edit; nothing was written")
                try:
                    _write_atomically(self.directory / change.file, change.content)
                except OSError as exc:
                    raise PolicyWriteFailed(f"cannot write {change.file} ({exc.strerror or exc})") from None
                return result

    def _validate(self, files: Snapshot) -> None:
        with tempfile.TemporaryDirectory(prefix="policy-check-") as scratch:
            for name, data in files.items():
                (Path(scratch) / name).write_bytes(data)
            try:
                load_policies(Path(scratch), known_targets=self._known_targets)
            except PolicyFileError as exc:
                problems = "; ".join(f"{Path(p.file).name}:{p.line}: {p.reason}" for p in exc.problems[:10])
                raise PolicyInvalid(f"the edit would make the policy invalid: {problems}") from None

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
        os.replace(tmp, path)  # noqa: PTH105
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # noqa: PTH108
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
