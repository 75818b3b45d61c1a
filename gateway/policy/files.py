"""Policy files -> one typed, validated ``PolicySet``; every problem at once.

``load_policies(directory)`` reads every ``*.yaml`` / ``*.yml`` file in the
directory (sorted by name; names starting with ``.`` are skipped, as editors
leave lock and swap files there), checks each against the format in SPEC.md
"Policy files" and merges them. Like oauth2-proxy's option validation, it
collects every problem in every file before failing with one
``PolicyFileError`` listing ``file:line: reason`` for each; a caller keeps its
last good ``PolicySet`` meanwhile. ``check_policies`` returns the same
problems as a list, for ``gateway policy check DIR``.

Format decisions beyond the SPEC:

- ``version: 1`` is required in every file; an empty file is a problem.
- Top-level keys: ``version``, ``roles``, ``grants``, ``revocations``; any
  other key, at any level, is a problem (a typo must not silently widen or
  narrow access). Duplicate YAML keys are problems too.
- ``roles`` keys are ``admin`` and ``auditor``; a role's subjects are the union
  over files.
- Grant ``name``: 1-128 of ``[A-Za-z0-9._-]``, starting with a letter or digit,
  unique across files. Required: ``name``, ``subjects`` (non-empty),
  ``target``, ``access``, ``db_user`` (1-80 of ``[A-Za-z0-9_.$-]``).
  Optional: ``tables`` (``allow`` / ``deny`` lists of ``DB.TABLE`` fnmatch
  patterns or ``*``, stored lower case; an empty ``allow`` list is a problem:
  leave it out to allow every non-system table), ``max_rows`` (positive
  int), ``statement_timeout`` (``250ms``/``30s``/``5m``/``1h`` or a number of
  seconds), ``expires`` (ISO 8601 with a timezone), ``functions`` (names
  allowed beyond the safe list, stored upper case). ``null`` means absent.
- Subjects: ``user:NAME`` or ``group:NAME``, kept in canonical form
  (``gateway.identity.subjects``: NFC, stripped, case-folded); a name failing its
  rules is a problem. One subject written twice in a list counts once.
- Revocation: ``subject`` and ``target`` (a target or ``*``) required;
  ``reason`` (text) and ``until`` (ISO 8601 with a timezone) optional; the
  same (subject, target) twice is a problem.
- A problem's ``file`` is the path as found in the given directory; line 0
  means the directory itself (missing, or holding no policy file). Problems
  come file by file in name order, sorted by line within a file. Files over
  1 MiB, unreadable or not UTF-8 are problems. A scalar YAML cannot build
  (``2026-13-01T00:00:00Z``) is a problem and checking goes on.
- Identities carry canonical names too, so subjects match them exactly;
  revocations also match every alias of the person (``gateway.identity.aliases``).
- ``PolicySet.revision`` is SHA-256 over, for each file sorted by name,
  ``name NUL len(bytes) NUL bytes``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode

from gateway.errors import PolicyFileError, PolicyProblem
from gateway.policy.schema import read_grant, read_revocation, read_roles
from gateway.policy.types import KNOWN_ROLES, Access, Grant, PolicySet, Revocation
from gateway.policy.yamlnodes import Report, check_keys, is_int, item_line, key_line, node_line

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from pathlib import Path

    from ruamel.yaml.nodes import Node

__all__ = [
    "Access",
    "Grant",
    "PolicySet",
    "Revocation",
    "check_policies",
    "load_merged",
    "load_policies",
]

MAX_FILE_BYTES = 1024 * 1024
# ruamel's scanner checks every open flow collection on every token, so time grows with
# nesting depth times file size (400 levels and 100 KB: 15 s). Policies nest two or three.
MAX_FLOW_DEPTH = 32
MAX_SHOWN = 40  # characters of an offending value quoted in a problem
TOP_KEYS = ("version", "roles", "grants", "revocations")
_BRACKETS = re.compile(r"[\[\]{}]")


def load_policies(directory: Path, *, known_targets: Collection[str] | None = None) -> PolicySet:
    """Read, validate and merge every policy file in ``directory``.

    ``known_targets``, when given, is the set of target names from the gateway
    config; a grant or revocation naming another target is a problem. Raises
    ``PolicyFileError`` listing every problem found in every file.
    """
    policy, problems = _load(directory, known_targets)
    if problems:
        raise PolicyFileError(problems)
    return policy


def load_merged(
    directory: Path,
    documents: Mapping[str, bytes],
    *,
    known_targets: Collection[str] | None = None,
    label: str = "state",
) -> PolicySet:
    """``load_policies`` over ``directory``'s files and the managed ``documents`` (name -> YAML bytes) together.

    A document is merged exactly as a file of its name would be (name order,
    same checks, same revision formula); its problems name it
    ``<label>:<name>``. A document named like a base file is a problem.
    """
    policy, problems = _load(directory, known_targets, documents, label)
    if problems:
        raise PolicyFileError(problems)
    return policy


def check_policies(directory: Path, *, known_targets: Collection[str] | None = None) -> list[PolicyProblem]:
    """Every problem in ``directory``'s policy files; empty when they load cleanly.

    ``str(problem)`` is ``file:line: reason``, one line each, for a CLI.
    """
    return _load(directory, known_targets)[1]


class _Constructor(RoundTripConstructor):
    """Round-trip constructor that notes problems instead of stopping at the first.

    Duplicate keys keep their first value; a scalar that cannot be built
    (``2026-13-01T00:00:00Z``, ``!!int x``) becomes its text, so the rest of
    the file is still checked. Both are noted in ``problems`` with their line.
    """

    problems: list[tuple[int, str]]

    def check_mapping_key(self, node: Node, key_node: Node, mapping: CommentedMap, key: object, value: object) -> bool:
        del node, value
        if key in mapping:
            self.problems.append((key_node.start_mark.line + 1, f"duplicate key {key!r}"))
            return False
        return True

    # The base signature has a positional boolean; keep it for the override.
    def construct_object(self, node: Node, deep: bool = False) -> object:  # noqa: FBT001, FBT002 - ruamel.yaml's signature
        try:
            value = super().construct_object(node, deep=deep)
        except ValueError as exc:
            if not isinstance(node, ScalarNode):
                raise ConstructorError(problem=str(exc), problem_mark=node.start_mark) from exc
            reason = f"cannot read {node.value!r}: {exc}"
            self.problems.append((node.start_mark.line + 1, reason))
            return str(node.value)
        # YAML reads 0x/0o/0b integers of any length; past 64 bits they break float(),
        # JSON replies and even repr() (Python's int-to-text digit limit).
        if is_int(value) and not -(2**63) <= value < 2**63 and isinstance(node, ScalarNode):
            text = node.value if len(node.value) <= MAX_SHOWN else f"{node.value[:MAX_SHOWN]}..."
            self.problems.append((node.start_mark.line + 1, f"integer {text} is out of range (64 bits at most)"))
            return text
        return value


@dataclass
class _Merged:
    """Everything read so far, across files."""

    roles: dict[str, set[str]] = field(default_factory=lambda: {r: set() for r in KNOWN_ROLES})
    grants: list[Grant] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)
    grant_names: dict[str, str] = field(default_factory=dict)  # name -> "file:line"
    revoked: dict[tuple[str, str], str] = field(default_factory=dict)
    problems: list[PolicyProblem] = field(default_factory=list)


def _load(
    directory: Path,
    known_targets: Collection[str] | None,
    documents: Mapping[str, bytes] | None = None,
    label: str = "state",
) -> tuple[PolicySet, list[PolicyProblem]]:
    merged = _Merged()
    digest = hashlib.sha256()
    sources: list[tuple[str, Report, Path | bytes]] = [
        (path.name, Report(file=str(path), name=path.name), path)
        for path in _policy_files(directory, merged.problems, required=not documents)
    ]
    names = {name for name, _, _ in sources}
    for name, content in (documents or {}).items():
        report = Report(file=f"{label}:{name}", name=name)
        if name in names:
            report.add(1, f"a managed document has the name of the base file {name} (rename one of them)")
            merged.problems.extend(report.problems)
            continue
        sources.append((name, report, content))
    for name, report, source in sorted(sources, key=lambda item: item[0]):
        data = _sized(source, report) if isinstance(source, bytes) else _read(source, report)
        if data is not None:
            digest.update(b"%s\0%d\0%s" % (name.encode(), len(data), data))
            document = _parse(data, report)
            if document is not None:
                _merge_file(document, report, merged, known_targets)
        merged.problems.extend(sorted(report.problems, key=lambda p: p.line))
    policy = PolicySet(
        roles=MappingProxyType({r: frozenset(s) for r, s in sorted(merged.roles.items())}),
        grants=tuple(merged.grants),
        revocations=tuple(merged.revocations),
        revision=digest.hexdigest(),
    )
    return policy, merged.problems


def _sized(data: bytes, report: Report) -> bytes | None:
    if len(data) > MAX_FILE_BYTES:
        report.add(1, f"document is larger than {MAX_FILE_BYTES} bytes")
        return None
    return data


def _policy_files(directory: Path, problems: list[PolicyProblem], *, required: bool = True) -> list[Path]:
    if not directory.is_dir():
        problems.append(PolicyProblem(str(directory), 0, "policy directory not found"))
        return []
    paths = sorted(
        (p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"}),
        key=lambda p: p.name,
    )
    files = [p for p in paths if not p.name.startswith(".") and p.is_file()]
    if not files and required:
        reason = "no policy files (*.yaml, *.yml) in the directory"
        problems.append(PolicyProblem(str(directory), 0, reason))
    return files


def _read(path: Path, report: Report) -> bytes | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        report.add(1, f"cannot read the file: {exc.strerror or exc}")
        return None
    if len(data) > MAX_FILE_BYTES:
        report.add(1, f"file is larger than {MAX_FILE_BYTES} bytes")
        return None
    return data


def _parse(data: bytes, report: Report) -> object | None:
    """YAML bytes -> round-trip document (None after a problem or when empty)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report.add(data[: exc.start].count(b"\n") + 1, "file is not valid UTF-8")
        return None
    deep_line = _flow_too_deep(text)
    if deep_line is not None:
        report.add(deep_line, f"invalid YAML: nested deeper than {MAX_FLOW_DEPTH} levels of [ and {{")
        return None
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    constructor: _Constructor = yaml.constructor
    constructor.problems = []
    try:
        document: object = yaml.load(text)
    except Exception as exc:  # noqa: BLE001 - whatever the YAML library raises, the file is unreadable
        report.add(*_yaml_problem(exc))
        return None
    for line, reason in constructor.problems:
        report.add(line, reason)
    if document is None:
        report.add(1, "file is empty: a policy file is a mapping with version: 1")
    return document


def _yaml_problem(exc: Exception) -> tuple[int, str]:
    """The line and reason for a file the YAML library could not load."""
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        context = f"{exc.context}: " if exc.context else ""
        return line, f"invalid YAML: {context}{exc.problem}"
    if isinstance(exc, YAMLError):
        return 1, f"invalid YAML: {exc}"
    if isinstance(exc, RecursionError):
        return 1, "invalid YAML: nested too deeply"
    # ruamel checks some input with assert (a duplicate key in `!!omap [a: 1, a: 2]`).
    return 1, f"invalid YAML: the file cannot be read ({str(exc)[:MAX_SHOWN] or type(exc).__name__})"


def _flow_too_deep(text: str) -> int | None:
    """The line where ``[``/``{`` nesting first passes ``MAX_FLOW_DEPTH``, else None.

    Brackets inside quotes and comments count too, so a real policy never
    comes near the limit, and a stray closer never takes the count below
    zero. A file that hides real nesting behind a quoted closer per level
    gets past this check: it is a bound on runaway text, not a parser.
    """
    depth = 0
    for match in _BRACKETS.finditer(text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        if depth > MAX_FLOW_DEPTH:
            return text.count("\n", 0, match.start()) + 1
    return None


def _merge_file(
    document: object,
    report: Report,
    merged: _Merged,
    known_targets: Collection[str] | None,
) -> None:
    if not isinstance(document, CommentedMap):
        report.add(node_line(document, 1), "a policy file must be a mapping with version: 1")
        return
    check_keys(document, TOP_KEYS, "policy file", 1, report)
    version = document.get("version")
    if "version" not in document:
        report.add(1, "version: 1 is required")
    elif not is_int(version) or version != 1:
        report.add(key_line(document, "version", 1), f"version must be 1 (got {version!r})")
    if document.get("roles") is not None:
        read_roles(document["roles"], key_line(document, "roles", 1), merged.roles, report)
    _merge_grants(document, report, merged, known_targets)
    _merge_revocations(document, report, merged, known_targets)


def _merge_grants(
    document: CommentedMap,
    report: Report,
    merged: _Merged,
    known_targets: Collection[str] | None,
) -> None:
    for item, line in _items(document, "grants", report):
        name, grant = read_grant(item, line, known_targets, report)
        if name is not None:
            if (first := merged.grant_names.get(name)) is not None:
                report.add(line, f"duplicate grant name {name!r} (first defined at {first})")
                continue
            merged.grant_names[name] = f"{report.file}:{line}"
        if grant is not None:
            merged.grants.append(grant)


def _merge_revocations(
    document: CommentedMap,
    report: Report,
    merged: _Merged,
    known_targets: Collection[str] | None,
) -> None:
    for item, line in _items(document, "revocations", report):
        revocation = read_revocation(item, line, known_targets, report)
        if revocation is None:
            continue
        key = (revocation.subject, revocation.target)
        if (first := merged.revoked.get(key)) is not None:
            report.add(
                line,
                f"duplicate revocation of {key[0]} on target {key[1]!r} (first at {first})",
            )
            continue
        merged.revoked[key] = f"{report.file}:{line}"
        merged.revocations.append(revocation)


def _items(document: CommentedMap, key: str, report: Report) -> list[tuple[object, int]]:
    """Return a top-level list's items with their lines; a problem if not a list."""
    value = document.get(key)
    if value is None:
        return []
    line = key_line(document, key, 1)
    if not isinstance(value, CommentedSeq):
        report.add(line, f"{key} must be a list")
        return []
    return [(item, item_line(value, i, line)) for i, item in enumerate(value)]
