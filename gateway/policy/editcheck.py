"""The semantic check every policy edit passes before it is written (SECURITY rule 27).

An edit splices text; this module proves, by parsing, that the splice did
what was meant and nothing else, so a splicing bug fails closed instead of
changing someone else's access:

1. Document level, always: the edited file parsed after the edit equals the
   file parsed before, with exactly the intended item appended to (or
   removed from) its top-level list. Every value is compared with its type
   (``1`` is not ``true``, ``"5"`` is not ``5``) and every key in order; only
   comments and layout may differ. This works even when the policy is
   currently invalid, so an admin can still remove a broken entry.
2. Typed level, when the policy before the edit loads: the typed grants and
   revocations after the edit (the loader's own ``Grant`` / ``Revocation``
   values, source lines ignored) are those before, plus the entry built
   from the request or minus exactly one entry the request named; roles are
   unchanged.

Any difference raises ``PolicyInvalid`` (422 ``policy_invalid``) saying the
edit was refused and nothing was written.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from collections.abc import Callable, Collection
from datetime import date
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarbool import ScalarBoolean

from gateway.errors import PolicyFileError, PolicyInvalid
from gateway.policy.files import load_policies
from gateway.policy.schema import read_grant, read_revocation
from gateway.policy.splice import load_document
from gateway.policy.types import Grant, PolicySet, Revocation
from gateway.policy.yamlnodes import Report

Snapshot = dict[str, bytes]  # file name -> bytes, every policy file of the directory
Entry = Grant | Revocation
REFUSED = "the edit was refused and nothing was written"


@dataclasses.dataclass(frozen=True, slots=True)
class Intent:
    """What one edit means: one item appended to, or removed from, list ``key`` of ``file``."""

    file: str
    key: str  # "grants" or "revocations"
    added: dict[str, Any] | None = None  # the entry appended, as written
    removed: int | None = None  # the index of the item removed
    # For a removal: does a typed entry of the policy before the edit fit what the request named?
    names: Callable[[Entry], bool] | None = None


def plain(value: object) -> object:
    """A YAML value as nested lists and tagged tuples: equal exactly when the values and their types are."""
    if isinstance(value, dict):
        return ("map", [(plain(k), plain(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("seq", [plain(item) for item in value])
    if value is None:
        return None
    for kind, types, convert in _SCALARS:
        if isinstance(value, types):
            return (kind, convert(value))
    return ("other", type(value).__name__, repr(value))


# Order matters: a bool is an int, ruamel's booleans are ints, a datetime is a date.
_SCALARS: tuple[tuple[str, type | tuple[type, ...], Callable[[Any], object]], ...] = (
    ("bool", (bool, ScalarBoolean), bool),
    ("int", int, int),
    ("float", float, lambda v: repr(float(v))),
    ("str", str, str),
    ("time", date, lambda v: (v.isoformat(), repr(getattr(v, "tzinfo", None)))),
)


def _document(data: bytes | None, file: str) -> CommentedMap:
    if data is None:  # a managed file not written yet
        return CommentedMap({"version": 1})
    try:
        document = load_document(data.decode("utf-8"))
    except UnicodeDecodeError:
        document = None
    if document is None:
        raise PolicyInvalid(f"{file} cannot be read as a YAML mapping; {REFUSED}")
    return document


def check_document(before: bytes | None, after: bytes, intent: Intent) -> None:
    """Level 1: the edited file's data changed by exactly the intended item."""
    old = _document(before, intent.file)
    new = _document(after, intent.file)
    expected: list[tuple[object, object]] = []
    items = list(old.get(intent.key) or [])
    if intent.removed is not None:
        del items[intent.removed]
    if intent.added is not None:
        items.append(intent.added)
    for key, value in old.items():
        expected.append((plain(key), plain(items if key == intent.key else value)))
    if intent.key not in old:
        expected.append((plain(intent.key), plain(items)))
    actual = [(plain(k), plain(v if k != intent.key or v is not None else [])) for k, v in new.items()]
    if actual != expected:
        raise PolicyInvalid(
            f"the edit of {intent.file} would change more than the intended {intent.key} entry; {REFUSED}: "
            "edit the file by hand"
        )


def load_snapshot(files: Snapshot, known_targets: Collection[str] | None) -> PolicySet:
    """``load_policies`` over these files, in a scratch directory (``PolicyFileError`` if invalid)."""
    with tempfile.TemporaryDirectory(prefix="policy-check-") as scratch:
        for name, data in files.items():
            (Path(scratch) / name).write_bytes(data)
        return load_policies(Path(scratch), known_targets=known_targets)


def typed_entry(intent: Intent, known_targets: Collection[str] | None) -> Entry:
    """The loader's typed value of the entry an edit appends, read from the entry itself (not the file)."""
    if intent.added is None:
        raise ValueError("not an addition")
    item = _as_yaml(intent.added)
    report = Report(file=intent.file, name=intent.file)
    if intent.key == "grants":
        entry: Entry | None = read_grant(item, 0, known_targets, report)[1]
    else:
        entry = read_revocation(item, 0, known_targets, report)
    if entry is None or report.problems:
        reasons = "; ".join(p.reason for p in report.problems[:5])
        raise PolicyInvalid(f"the new {intent.key} entry is invalid: {reasons}")
    return entry


def check_typed(before: PolicySet, after: PolicySet, intent: Intent, known_targets: Collection[str] | None) -> None:
    """Level 2: typed grants, revocations and roles changed by exactly the intended entry."""
    if dict(before.roles) != dict(after.roles):
        raise PolicyInvalid(f"the edit would change roles; {REFUSED}")
    for key, old, new in (
        ("grants", before.grants, after.grants),
        ("revocations", before.revocations, after.revocations),
    ):
        old_count = Counter(_unplaced(e) for e in old)
        new_count = Counter(_unplaced(e) for e in new)
        plus = list((new_count - old_count).elements())
        minus = list((old_count - new_count).elements())
        want_plus: list[Entry] = []
        if key == intent.key and intent.added is not None:
            want_plus = [_unplaced(typed_entry(intent, known_targets))]
        ok = plus == want_plus
        if key == intent.key and intent.removed is not None:
            ok = ok and len(minus) == 1 and minus[0].source_file == intent.file
            ok = ok and (intent.names is None or intent.names(minus[0]))
        else:
            ok = ok and not minus
        if not ok:
            raise PolicyInvalid(f"the edit would not change exactly the intended {intent.key} entry; {REFUSED}")


def check_edit(
    files: Snapshot, candidate: Snapshot, intent: Intent, known_targets: Collection[str] | None
) -> PolicySet:
    """Both levels; the candidate's ``PolicySet`` if the edit is exactly what was meant.

    The candidate must load (``PolicyInvalid`` listing the loader's problems
    otherwise); the typed comparison is made when the files before the edit
    load too.
    """
    if any(files.get(name) != data for name, data in candidate.items() if name != intent.file) or set(files) - set(
        candidate
    ):
        raise PolicyInvalid(f"the edit would touch files other than {intent.file}; {REFUSED}")
    try:
        after = load_snapshot(candidate, known_targets)
    except PolicyFileError as exc:
        problems = "; ".join(f"{Path(p.file).name}:{p.line}: {p.reason}" for p in exc.problems[:10])
        raise PolicyInvalid(f"the edit would make the policy invalid: {problems}") from None
    check_document(files.get(intent.file), candidate[intent.file], intent)
    try:
        before = load_snapshot(files, known_targets)
    except PolicyFileError:
        return after  # nothing typed to compare with; level 1 held
    check_typed(before, after, intent, known_targets)
    return after


def _unplaced(entry: Entry) -> Entry:
    return dataclasses.replace(entry, source_line=0)


def _as_yaml(value: object) -> object:
    """JSON-like values as the round-trip types the schema readers expect."""
    if isinstance(value, dict):
        return CommentedMap((k, _as_yaml(v)) for k, v in value.items())
    if isinstance(value, list):
        return CommentedSeq(_as_yaml(v) for v in value)
    return value
