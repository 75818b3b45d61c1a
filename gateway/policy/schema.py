"""One policy file's entries -> typed values, each problem noted with its line.

``policyfile`` parses the YAML and merges files; this module checks the shape
of ``roles``, one grant and one revocation. Nothing here raises on bad input:
every problem goes to a ``Report`` so a file's problems are listed together.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from gateway.policy.durations import parse_duration, parse_timestamp
from gateway.policy.review import read_review
from gateway.policy.types import KNOWN_ROLES, Access, Grant, Revocation
from gateway.policy.yamlnodes import (
    TABLE_PATTERN,
    Report,
    check_keys,
    is_int,
    item_line,
    key_line,
    read_subject,
    read_subjects,
)

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime

GRANT_KEYS = (
    "name",
    "subjects",
    "target",
    "access",
    "db_user",
    "tables",
    "max_rows",
    "statement_timeout",
    "expires",
    "functions",
    "review",
)
REVOCATION_KEYS = ("subject", "target", "reason", "until")

# Grant names appear in URLs (DELETE /v1/grants/{name}) and audit records.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
# MariaDB user names are at most 80 characters; keep to a plain, quotable set.
DB_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.$-]{0,79}")
DB_USER_RULE = "1-80 letters, digits, '_', '.', '$' or '-'"
FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)?")


def read_roles(value: object, line: int, roles: dict[str, set[str]], report: Report) -> None:
    """Add the ``roles`` mapping of one file to ``roles`` (a union across files)."""
    if not isinstance(value, CommentedMap):
        report.add(line, "roles must be a mapping of role name to a list of subjects")
        return
    for role, subjects in value.items():
        role_line = key_line(value, role, line)
        if role not in KNOWN_ROLES:
            known = ", ".join(sorted(KNOWN_ROLES))
            report.add(role_line, f"roles: unknown role {role!r} (known: {known})")
            continue
        found = read_subjects(subjects, role_line, f"roles.{role}", report, allow_empty=True)
        roles[role].update(found or ())


class _Fields:
    """Reads the fields of one grant or revocation mapping, noting problems."""

    def __init__(self, mapping: CommentedMap, line: int, what: str, report: Report) -> None:
        self.mapping = mapping
        self.line = line
        self.what = what
        self.report = report

    def problem(self, key: str, reason: str) -> None:
        self.report.add(key_line(self.mapping, key, self.line), f"{self.what}: {key} {reason}")

    def get(self, key: str, *, required: bool) -> object:
        value = self.mapping.get(key)
        if value is None and required:
            self.report.add(self.line, f"{self.what}: missing required field {key!r}")
        return value

    def string(self, key: str, pattern: re.Pattern[str] | None, rule: str, *, required: bool) -> str | None:
        value = self.get(key, required=required)
        if value is None:
            return None
        if not isinstance(value, str) or not value or (pattern and not pattern.fullmatch(value)):
            self.problem(key, f"must be a string {rule} (got {value!r})")
            return None
        return str(value)

    def target(self, known: Collection[str] | None, *, star: bool) -> str | None:
        value = self.string("target", None, "naming a target", required=True)
        if value is None or (star and value == "*") or known is None or value in known:
            return value
        self.problem("target", f"names unknown target {value!r}")
        return None

    def timestamp(self, key: str) -> datetime | None:
        value = self.get(key, required=False)
        try:
            return None if value is None else parse_timestamp(value)
        except (TypeError, ValueError) as exc:
            self.problem(key, str(exc))
            return None

    def positive_int(self, key: str) -> int | None:
        value = self.get(key, required=False)
        if value is None:
            return None
        if not is_int(value) or value <= 0:
            self.problem(key, f"must be a positive integer (got {value!r})")
            return None
        return int(value)

    def duration(self, key: str) -> float | None:
        value = self.get(key, required=False)
        try:
            return None if value is None else parse_duration(value)
        except (TypeError, ValueError) as exc:
            self.problem(key, str(exc))
            return None

    def access(self) -> Access | None:
        value = self.get("access", required=True)
        try:
            return None if value is None else Access.from_label(str(value))
        except ValueError:
            self.problem("access", f"must be one of read, write, ddl (got {value!r})")
            return None

    def patterns(self, tables: CommentedMap, key: str) -> tuple[str, ...] | None:
        value = tables.get(key)
        if value is None:
            return None
        where = key_line(tables, key, self.line)
        if not isinstance(value, CommentedSeq):
            self.report.add(where, f"{self.what}: tables.{key} must be a list of patterns")
            return None
        found: list[str] = []
        for index, item in enumerate(value):
            if isinstance(item, str) and TABLE_PATTERN.fullmatch(item):
                found.append(item.lower())
                continue
            self.report.add(
                item_line(value, index, where),
                f"{self.what}: tables.{key} pattern must be DB.TABLE (fnmatch, e.g. shop.*) or * (got {item!r})",
            )
        return tuple(found)

    def tables(self) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        tables = self.get("tables", required=False)
        if tables is None:
            return None, ()
        if not isinstance(tables, CommentedMap):
            self.problem("tables", "must be a mapping with allow and/or deny lists")
            return None, ()
        check_keys(tables, ("allow", "deny"), f"{self.what}: tables", self.line, self.report)
        allow = self.patterns(tables, "allow")
        if allow == () and isinstance(tables.get("allow"), CommentedSeq):
            self.report.add(
                key_line(tables, "allow", self.line),
                f"{self.what}: tables.allow is empty and would allow no table; leave it out to allow every table",
            )
        return allow, self.patterns(tables, "deny") or ()

    def functions(self) -> frozenset[str]:
        value = self.get("functions", required=False)
        if value is None:
            return frozenset()
        if not isinstance(value, CommentedSeq):
            self.problem("functions", "must be a list of function names")
            return frozenset()
        names: set[str] = set()
        for index, item in enumerate(value):
            if isinstance(item, str) and FUNCTION.fullmatch(item):
                names.add(item.upper())
                continue
            self.report.add(
                item_line(value, index, key_line(self.mapping, "functions", self.line)),
                f"{self.what}: functions: not a function name: {item!r}",
            )
        return frozenset(names)


def read_grant(
    item: object, line: int, known_targets: Collection[str] | None, report: Report
) -> tuple[str | None, Grant | None]:
    """One grant list item -> (its name if valid, the ``Grant`` if wholly valid)."""
    if not isinstance(item, CommentedMap):
        report.add(line, "grants: each grant must be a mapping")
        return None, None
    before = len(report.problems)
    fields = _Fields(item, line, "grant", report)
    name = fields.string("name", NAME, f"of {NAME_RULE}", required=True)
    if name is not None:
        fields.what = f"grant {name}"
    check_keys(item, GRANT_KEYS, fields.what, line, report)
    subjects = None
    if (value := fields.get("subjects", required=True)) is not None:
        subjects = read_subjects(
            value,
            key_line(item, "subjects", line),
            f"{fields.what}: subjects",
            report,
            allow_empty=False,
        )
    target = fields.target(known_targets, star=False)
    access = fields.access()
    db_user = fields.string("db_user", DB_USER, f"of {DB_USER_RULE}", required=True)
    tables_allow, tables_deny = fields.tables()
    max_rows = fields.positive_int("max_rows")
    timeout = fields.duration("statement_timeout")
    expires = fields.timestamp("expires")
    functions = fields.functions()
    review = None
    if (written := fields.get("review", required=False)) is not None:
        review = read_review(written, key_line(item, "review", line), fields.what, report)
    if len(report.problems) > before:
        return name, None
    if name is None or subjects is None or target is None or access is None or db_user is None:
        return name, None  # unreachable: each None above noted a problem
    return name, Grant(
        name=name,
        subjects=subjects,
        target=target,
        access=access,
        db_user=db_user,
        tables_allow=tables_allow,
        tables_deny=tables_deny,
        max_rows=max_rows,
        statement_timeout=timeout,
        expires=expires,
        functions=functions,
        source_file=report.name,
        source_line=line,
        review=review,
    )


def read_revocation(
    item: object, line: int, known_targets: Collection[str] | None, report: Report
) -> Revocation | None:
    """One revocation list item -> a ``Revocation`` if wholly valid."""
    if not isinstance(item, CommentedMap):
        report.add(line, "revocations: each revocation must be a mapping")
        return None
    before = len(report.problems)
    fields = _Fields(item, line, "revocation", report)
    written = fields.get("subject", required=True)
    subject = None if written is None else read_subject(written, key_line(item, "subject", line), "revocation", report)
    if subject is not None:
        fields.what = f"revocation of {subject}"
    check_keys(item, REVOCATION_KEYS, fields.what, line, report)
    target = fields.target(known_targets, star=True)
    reason = fields.string("reason", None, "of free text", required=False)
    until = fields.timestamp("until")
    if len(report.problems) > before or subject is None or target is None:
        return None
    return Revocation(
        subject=subject,
        target=target,
        reason=reason or "",
        until=until,
        source_file=report.name,
        source_line=line,
    )
