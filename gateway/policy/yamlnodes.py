"""The YAML-node helpers every policy entry reader shares: problems with their lines, keys, subjects.

Nothing here raises on bad input: every problem goes to a ``Report`` so a
file's problems are listed together.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeGuard

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarbool import ScalarBoolean

from gateway.errors import PolicyProblem
from gateway.identity.subjects import SUBJECT_KINDS, canonical_subject

if TYPE_CHECKING:
    from collections.abc import Iterable

SUBJECT_RULE = "like user:NAME or group:NAME"
# "*" or DB.TABLE, each side an fnmatch pattern without dots, quotes or spaces.
TABLE_PATTERN = re.compile(r"\*|[^.\s`'\"\x00-\x1f\x7f]+\.[^.\s`'\"\x00-\x1f\x7f]+")


@dataclass
class Report:
    """Problems found in one file."""

    file: str  # as reported: the path as given
    name: str  # the file name, recorded in Grant/Revocation.source_file
    problems: list[PolicyProblem] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        """Note one problem on ``line`` (1-based)."""
        self.problems.append(PolicyProblem(self.file, line, reason))


def node_line(node: object, default: int) -> int:
    """1-based line where a YAML mapping or sequence starts, else ``default``."""
    lc = getattr(node, "lc", None)
    line = getattr(lc, "line", None)
    return line + 1 if isinstance(line, int) else default


def key_line(mapping: CommentedMap, key: object, default: int) -> int:
    """1-based line of ``key`` in ``mapping`` (``default`` for merged-in keys)."""
    try:
        return int(mapping.lc.key(key)[0]) + 1
    except (AttributeError, IndexError, KeyError, TypeError):
        return default


def item_line(seq: CommentedSeq, index: int, default: int) -> int:
    """1-based line of item ``index`` of ``seq``."""
    try:
        return int(seq.lc.item(index)[0]) + 1
    except (AttributeError, IndexError, KeyError, TypeError):
        return default


def is_int(value: object) -> TypeGuard[int]:
    """Tell YAML integers from booleans (``bool`` and ruamel's booleans are ints)."""
    return isinstance(value, int) and not isinstance(value, bool | ScalarBoolean)


def check_keys(mapping: CommentedMap, known: Iterable[str], what: str, line: int, report: Report) -> None:
    """Note every key of ``mapping`` that is not in ``known``."""
    allowed = tuple(known)
    for key in mapping:
        if isinstance(key, str) and key in allowed:
            continue
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f" (known: {', '.join(allowed)})"
        report.add(key_line(mapping, key, line), f"{what}: unknown key {key!r}{suggestion}")


def read_subject(value: object, line: int, what: str, report: Report) -> str | None:
    """One ``user:NAME`` / ``group:NAME`` in canonical form (``gateway.identity.subjects``); None after a problem."""
    shape = f"{what}: a subject must look {SUBJECT_RULE} (got {value!r})"
    if not isinstance(value, str) or value.partition(":")[0] not in SUBJECT_KINDS:
        report.add(line, shape)
        return None
    try:
        return canonical_subject(value)
    except ValueError as exc:
        report.add(line, f"{shape}: {exc}")
        return None


def read_subjects(value: object, line: int, what: str, report: Report, *, allow_empty: bool) -> tuple[str, ...] | None:
    """Read a list of ``user:...`` / ``group:...`` strings, each made canonical; None after a problem."""
    if not isinstance(value, CommentedSeq):
        report.add(line, f"{what} must be a list of subjects {SUBJECT_RULE}")
        return None
    if not value and not allow_empty:
        report.add(line, f"{what} must list at least one subject")
        return None
    subjects: list[str] = []
    ok = True
    for index, item in enumerate(value):
        subject = read_subject(item, item_line(value, index, line), what, report)
        if subject is None:
            ok = False
        elif subject not in subjects:
            subjects.append(subject)
    return tuple(subjects) if ok else None
