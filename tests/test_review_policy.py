"""Statement review, the policy half: the ``review:`` block and the pure functions over it.

The block is validated with file:line problems; ``needs_review``, ``over_threshold`` and
``review_digest`` decide and bind (no I/O).
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from gateway.errors import InvalidRequest, PolicyFileError
from gateway.policy.files import load_policies
from gateway.policy.review import needs_review, over_threshold, review_digest
from gateway.policy.types import Grant, ReviewRule
from gateway.policy.values import grant_entry
from gateway.policy.views import grant_view
from gateway.sql.statements import Statement, analyze

GRANT = """\
version: 1
grants:
  - name: eng-write
    subjects: ["group:engineers"]
    target: shop
    access: ddl
    db_user: gw_writer
{review}
"""


def _load(tmp_path: Path, review: str) -> Grant:
    (tmp_path / "p.yaml").write_text(GRANT.format(review=textwrap.indent(review, "    ")), encoding="utf-8")
    (grant,) = load_policies(tmp_path, known_targets={"shop"}).grants
    return grant


def _problems(tmp_path: Path, review: str) -> list[str]:
    with pytest.raises(PolicyFileError) as caught:
        _load(tmp_path, review)
    return [str(p) for p in caught.value.problems]


def _sql(text: str) -> Statement:
    return analyze(text, default_database="shop")


def test_a_review_block_loads_typed(tmp_path: Path) -> None:
    """Every field is read and typed; reviewers canonical; valid_for a duration; defaults for the rest."""
    grant = _load(
        tmp_path,
        'review: {writes: true, reviewers: ["group:DB-Admins", "user:Ann@Example.com"], valid_for: 30m,\n'
        '         tables: ["Shop.Orders"], min_rows: 100}',
    )
    assert grant.review == ReviewRule(
        writes=True,
        ddl=False,
        reviewers=("group:db-admins", "user:ann@example.com"),
        min_approvals=1,
        valid_for=1800.0,
        tables=("shop.orders",),
        min_rows=100,
    )
    view = grant_view(grant)["review"]
    assert view == {
        "writes": True,
        "ddl": False,
        "reviewers": ["group:db-admins", "user:ann@example.com"],
        "min_approvals": 1,
        "valid_for": 1800.0,
        "tables": ["shop.orders"],
        "min_rows": 100,
    }


def test_a_grant_without_review_shows_none(tmp_path: Path) -> None:
    """No block: no rule, and ``/v1/me`` shows ``review: null``."""
    grant = _load(tmp_path, "")
    assert grant.review is None
    assert grant_view(grant)["review"] is None


@pytest.mark.parametrize(
    ("review", "line", "reason"),
    [
        ("review: yes", 8, "review must be a mapping"),
        ('review: {writes: true, reviewers: ["group:a"], colour: red}', 8, "unknown key 'colour'"),
        ("review: {writes: true}", 8, "missing required field 'reviewers'"),
        ('review: {reviewers: ["group:a"]}', 8, "must set writes: true and/or ddl: true"),
        ('review: {writes: "yes", reviewers: ["group:a"]}', 8, "review.writes must be true or false"),
        ('review:\n  writes: true\n  reviewers: ["root"]', 10, "a subject must look like user:NAME"),
        ('review:\n  writes: true\n  reviewers: ["group:a"]\n  min_approvals: 0', 11, "min_approvals must be"),
        ('review:\n  writes: true\n  reviewers: ["group:a"]\n  valid_for: soon', 11, "valid_for must be a duration"),
        ('review:\n  writes: true\n  reviewers: ["group:a"]\n  valid_for: 30d', 11, "valid_for must be a duration"),
        ('review:\n  writes: true\n  reviewers: ["group:a"]\n  valid_for: 200h', 11, "at most 7 days"),
        ('review:\n  writes: true\n  reviewers: ["group:a"]\n  tables: ["orders"]', 11, "not a DB.TABLE pattern"),
        ('review:\n  writes: true\n  reviewers: ["group:a"]\n  tables: []', 11, "non-empty list"),
        ('review:\n  writes: true\n  reviewers: ["group:a"]\n  min_rows: -1', 11, "non-negative integer"),
        ('review:\n  ddl: true\n  reviewers: ["group:a"]\n  min_rows: 5', 11, "applies to writes only"),
    ],
)
def test_bad_review_blocks_are_reported_with_their_line(tmp_path: Path, review: str, line: int, reason: str) -> None:
    """Each problem names the file, the line of the offending key and what is wrong; the grant is not loaded."""
    problems = _problems(tmp_path, review)
    assert any(
        p.startswith(f"{tmp_path / 'p.yaml'}:{line}: grant eng-write: review") and reason in p for p in problems
    ), problems


RULE = ReviewRule(
    writes=True, ddl=False, reviewers=("group:a",), min_approvals=1, valid_for=60.0, tables=None, min_rows=None
)


def test_needs_review_by_kind_and_tables() -> None:
    """Writes wait under writes: true, DDL under ddl: true, reads never; a tables list narrows it."""
    update, select = _sql("UPDATE orders SET n = 1 WHERE id = 2"), _sql("SELECT * FROM orders")
    create = _sql("CREATE TABLE t2 (id INT)")
    assert needs_review(RULE, [update])
    assert not needs_review(RULE, [select])
    assert not needs_review(RULE, [create])
    assert needs_review(dataclasses.replace(RULE, ddl=True), [create])
    assert not needs_review(None, [update])
    narrow = dataclasses.replace(RULE, tables=("shop.pay*",))
    assert not needs_review(narrow, [update])
    assert needs_review(narrow, [_sql("DELETE FROM payments WHERE id = 1")])
    assert needs_review(narrow, [select, _sql("DELETE FROM payments WHERE id = 1")])  # a transaction as a whole


def test_row_threshold() -> None:
    """With min_rows, the dry run's write counts decide: more than the threshold waits, the threshold itself not."""
    rule = dataclasses.replace(RULE, min_rows=100)
    statements = [_sql("UPDATE orders SET n = 1"), _sql("SELECT 1")]
    assert not over_threshold(rule, statements, [100, 5000])  # reads do not count
    assert over_threshold(rule, statements, [101, None])
    assert over_threshold(RULE, statements, [0, None])  # no threshold: always


def test_the_digest_binds_every_part() -> None:
    """One byte of a statement, one param, another grant, target or author person: another digest."""
    update = [_sql("UPDATE orders SET n = ? WHERE id = 2")]
    person = ("https://idp", "ann")
    digest = review_digest("shop", update, [[1]], "g", person)
    assert digest == review_digest("shop", update, [[1]], "g", person)
    variants = [
        review_digest("crm", update, [[1]], "g", person),
        review_digest("shop", [_sql("UPDATE orders SET n = ? WHERE id = 3")], [[1]], "g", person),
        review_digest("shop", update, [[2]], "g", person),
        review_digest("shop", update, [["1"]], "g", person),
        review_digest("shop", update, [[1]], "h", person),
        review_digest("shop", update, [[1]], "g", ("https://idp", "bob")),
    ]
    assert len({*variants, digest}) == len(variants) + 1


def test_admin_api_entries_carry_a_checked_review() -> None:
    """The admin API's grant entries accept a review block (checked, subjects canonical) and refuse unknown keys."""
    entry = grant_entry({"name": "g", "review": {"writes": True, "reviewers": ["group:A"], "valid_for": "1h"}})
    assert entry["review"] == {"writes": True, "reviewers": ["group:a"], "valid_for": "1h"}
    with pytest.raises(InvalidRequest, match="unknown field"):
        grant_entry({"name": "g", "review": {"writes": True, "approvers": []}})
