"""Statement review (issue 16): a grant's ``review:`` block, whether a statement needs it, and what binds it.

A grant may hold some of what it allows for a second person::

    review:
      writes: true              # INSERT / UPDATE / DELETE / REPLACE wait for review
      ddl: true                 # so does DDL (never dry-run)
      reviewers: ["group:db-admins"]
      min_approvals: 1          # distinct persons, never the author (SECURITY rule 26)
      valid_for: 1h             # from the request; approved or not, it is dead after that
      tables: ["shop.orders"]   # optional: only work touching one of these tables
      min_rows: 100             # optional, writes: only when the dry run changes more rows

``read_review`` checks the block like every other policy field (problems with
their lines, nothing raised); ``needs_review`` is the pure decision on an
analysed statement or transaction under its deciding grant; ``review_digest``
is what a review binds to: the target, the statements as the gateway executes
them (``Statement.executable_sql``, placeholders kept), the params, the grant
and the author person. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from fnmatch import fnmatchcase

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from gateway.policy.durations import parse_duration
from gateway.policy.types import ReviewRule
from gateway.policy.yamlnodes import TABLE_PATTERN, Report, check_keys, is_int, item_line, key_line, read_subjects
from gateway.sql.statements import Kind, Statement

REVIEW_KEYS = ("writes", "ddl", "reviewers", "min_approvals", "valid_for", "tables", "min_rows")
DEFAULT_VALID_FOR = 3600.0
MAX_VALID_FOR = 7 * 86400.0


def read_review(value: object, line: int, what: str, report: Report) -> ReviewRule | None:  # noqa: C901 - one check per key, in the order of the keys
    """A grant's ``review:`` mapping -> ``ReviewRule``; None (with problems noted) when it is not valid."""
    where = f"{what}: review"
    if not isinstance(value, CommentedMap):
        report.add(line, f"{where} must be a mapping ({', '.join(REVIEW_KEYS)})")
        return None
    before = len(report.problems)
    check_keys(value, REVIEW_KEYS, where, line, report)

    def at(key: str) -> int:
        return key_line(value, key, line)

    flags = {}
    for key in ("writes", "ddl"):
        flag = value.get(key, False)
        if not isinstance(flag, bool):
            report.add(at(key), f"{where}.{key} must be true or false (got {flag!r})")
        flags[key] = bool(flag)
    if not (flags["writes"] or flags["ddl"]):
        report.add(line, f"{where} must set writes: true and/or ddl: true (otherwise it reviews nothing)")
    reviewers = None
    if "reviewers" not in value:
        report.add(line, f"{where}: missing required field 'reviewers'")
    else:
        reviewers = read_subjects(value["reviewers"], at("reviewers"), f"{where}.reviewers", report, allow_empty=False)
    approvals = value.get("min_approvals", 1)
    if not is_int(approvals) or not 1 <= approvals <= 10:  # noqa: PLR2004 - a sane bound
        report.add(at("min_approvals"), f"{where}.min_approvals must be an integer from 1 to 10 (got {approvals!r})")
    valid_for = DEFAULT_VALID_FOR
    try:
        valid_for = parse_duration(value.get("valid_for", DEFAULT_VALID_FOR))
        if valid_for > MAX_VALID_FOR:
            report.add(at("valid_for"), f"{where}.valid_for must be at most 7 days")
    except (TypeError, ValueError) as exc:
        report.add(at("valid_for"), f"{where}.valid_for {exc}")
    tables = _patterns(value.get("tables"), at("tables"), where, report)
    min_rows = value.get("min_rows")
    if min_rows is not None and (not is_int(min_rows) or min_rows < 0):
        report.add(at("min_rows"), f"{where}.min_rows must be a non-negative integer (got {min_rows!r})")
    elif min_rows is not None and not flags["writes"]:
        report.add(at("min_rows"), f"{where}.min_rows applies to writes only: set writes: true")
    if len(report.problems) > before or reviewers is None:
        return None
    return ReviewRule(
        writes=flags["writes"],
        ddl=flags["ddl"],
        reviewers=reviewers,
        min_approvals=int(approvals),
        valid_for=valid_for,
        tables=tables,
        min_rows=None if min_rows is None else int(min_rows),
    )


def _patterns(value: object, line: int, where: str, report: Report) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, CommentedSeq) or not value:
        report.add(line, f"{where}.tables must be a non-empty list of DB.TABLE patterns")
        return None
    found: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, str) and TABLE_PATTERN.fullmatch(item):
            found.append(item.lower())
        else:
            report.add(item_line(value, index, line), f"{where}.tables: not a DB.TABLE pattern: {item!r}")
    return tuple(found)


def needs_review(rule: ReviewRule | None, statements: Sequence[Statement]) -> bool:
    """Whether the work of ``statements`` (one, or a transaction as a whole) under a grant with ``rule`` waits.

    A transaction waits when any of its statements would. ``min_rows`` is not
    decided here: work that needs review by this function but has a row
    threshold is dry-run first, and waits only past it (``over_threshold``).
    """
    if rule is None:
        return False
    for statement in statements:
        if not ((statement.kind is Kind.WRITE and rule.writes) or (statement.kind is Kind.DDL and rule.ddl)):
            continue
        if rule.tables is None or any(
            fnmatchcase(table, pattern) for table in statement.tables for pattern in rule.tables
        ):
            return True
    return False


def over_threshold(rule: ReviewRule, statements: Sequence[Statement], rows_affected: Sequence[int | None]) -> bool:
    """Whether a dry run's counts reach past the rule's ``min_rows`` (always, without one, or for DDL)."""
    if rule.min_rows is None or any(s.kind is Kind.DDL for s in statements):
        return True
    writes = [rows or 0 for s, rows in zip(statements, rows_affected, strict=True) if s.kind is Kind.WRITE]
    return sum(writes) > rule.min_rows


def review_digest(
    target: str,
    statements: Sequence[Statement],
    params: Sequence[Sequence[object]],
    grant: str,
    person: tuple[str, str],
) -> str:
    """SHA-256 hex over (target, statements as executed, params, grant, author person), canonical JSON."""
    bound = {
        "target": target,
        "statements": [s.executable_sql for s in statements],
        "params": [list(p) for p in params],
        "grant": grant,
        "author": list(person),
    }
    text = json.dumps(bound, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
