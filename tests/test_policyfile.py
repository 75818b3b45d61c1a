"""Policy files: parsing, merging and validation with file and line for every problem."""

from __future__ import annotations

import textwrap
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import PolicyFileError, PolicyProblem
from gateway.policy.durations import parse_duration
from gateway.policy.files import Access, check_policies, load_policies
from gateway.policy.types import Grant

EXAMPLES = Path(__file__).resolve().parent.parent / "policies"

GRANT = """\
version: 1
grants:
  - name: {name}
    subjects: ["group:analysts"]
    target: shop
    access: read
    db_user: gw_reader
"""


def write(directory: Path, name: str, text: str) -> Path:
    """Write ``text`` (dedented) as policy file ``name`` in ``directory``."""
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(directory: Path, known_targets: Collection[str] | None = None) -> list[tuple[str, int, str]]:
    """Every problem as (file name, line, reason), in report order."""
    found = check_policies(directory, known_targets=known_targets)
    return [(Path(p.file).name, p.line, p.reason) for p in found]


def grant_problems(tmp_path: Path, fields: str, known_targets: Collection[str] | None = None) -> list[tuple[int, str]]:
    """Problems of one grant whose extra ``fields`` start on line 8 of g.yaml."""
    text = GRANT.format(name="g") + textwrap.indent(textwrap.dedent(fields), "    ")
    (tmp_path / "g.yaml").write_text(text, encoding="utf-8")
    return [(line, reason) for _, line, reason in problems(tmp_path, known_targets)]


def load_one_grant(tmp_path: Path, fields: str) -> Grant:
    """Load g.yaml with one grant plus ``fields`` and return that grant."""
    text = GRANT.format(name="g") + textwrap.indent(textwrap.dedent(fields), "    ")
    (tmp_path / "g.yaml").write_text(text, encoding="utf-8")
    (grant,) = load_policies(tmp_path).grants
    return grant


# --- the examples and a clean load ----------------------------------------------------


def test_example_policies_load_cleanly() -> None:
    """The shipped ``policies/`` directory is valid against the demo target ``shop``."""
    policy = load_policies(EXAMPLES, known_targets={"shop"})
    assert check_policies(EXAMPLES, known_targets={"shop"}) == []
    assert policy.roles == {
        "admin": frozenset({"group:db-admins"}),
        "auditor": frozenset({"group:security", "user:carol@example.com"}),
    }
    by_name = {g.name: g for g in policy.grants}
    analysts = by_name["analysts-read-shop"]
    assert analysts.subjects == ("group:analysts", "user:alice@example.com")
    assert analysts.access is Access.READ
    assert (analysts.db_user, analysts.max_rows, analysts.statement_timeout) == (
        "gw_reader",
        10000,
        30.0,
    )
    assert analysts.tables_allow == ("shop.*",)
    assert analysts.tables_deny == ("shop.payment_*",)
    engineers = by_name["engineers-write-shop"]
    assert (engineers.access, engineers.db_user, engineers.max_rows) == (
        Access.WRITE,
        "gw_writer",
        1000,
    )
    assert engineers.statement_timeout == 10.0
    assert by_name["dba-ddl-shop"].access is Access.DDL
    assert by_name["contractor-read-orders"].expires == datetime(2025, 1, 31, 18, tzinfo=UTC)
    (revocation,) = policy.revocations
    assert (revocation.subject, revocation.target, revocation.until) == (
        "user:mallory@example.com",
        "*",
        None,
    )


def test_grant_fields_become_typed_values(tmp_path: Path) -> None:
    """A full grant loads into typed values: enum, seconds, aware UTC time, normalised names."""
    write(
        tmp_path,
        "shop.yaml",
        """\
        version: 1
        grants:
          - name: full
            subjects: ["group:analysts", "user:alice@example.com"]
            target: shop
            access: write
            db_user: gw_writer
            tables: {allow: ["Shop.*"], deny: ["shop.payment_*"]}
            max_rows: 500
            statement_timeout: 250ms
            expires: 2026-12-31T23:59:59+02:00
            functions: [sleep, shop.margin]
        """,
    )
    (grant,) = load_policies(tmp_path, known_targets={"shop"}).grants
    assert grant.access is Access.WRITE
    assert grant.tables_allow == ("shop.*",)
    assert grant.statement_timeout == 0.25
    assert grant.expires == datetime(2026, 12, 31, 21, 59, 59, tzinfo=UTC)
    assert type(grant.expires) is datetime
    assert grant.functions == frozenset({"SLEEP", "SHOP.MARGIN"})
    assert (grant.source_file, grant.source_line) == ("shop.yaml", 3)


def test_optional_fields_may_be_absent_or_null(tmp_path: Path) -> None:
    """Leaving out optional fields, or writing null, means no limit and no table rules."""
    grant = load_one_grant(tmp_path, "max_rows: null\nexpires: ~\ntables: null\n")
    assert grant.tables_allow is None
    assert grant.tables_deny == ()
    assert (grant.max_rows, grant.statement_timeout, grant.expires) == (None, None, None)
    assert grant.functions == frozenset()


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5), ("45", 45.0)],
)
def test_statement_timeout_units(tmp_path: Path, written: str, seconds: float) -> None:
    """``statement_timeout`` takes ms/s/m/h suffixes or a plain number of seconds."""
    assert load_one_grant(tmp_path, f"statement_timeout: {written}\n").statement_timeout == seconds


def test_quoted_timestamp_string_is_accepted(tmp_path: Path) -> None:
    """A quoted ISO 8601 string with a zone is read like an unquoted YAML timestamp."""
    grant = load_one_grant(tmp_path, 'expires: "2026-12-31T23:59:59Z"\n')
    assert grant.expires == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_files_merge_in_name_order(tmp_path: Path) -> None:
    """Every *.yaml and *.yml file is read, sorted by name; roles are a union."""
    write(tmp_path, "b.yml", GRANT.format(name="second") + "roles: {admin: ['user:b']}\n")
    write(tmp_path, "a.yaml", GRANT.format(name="first") + "roles: {admin: ['user:a']}\n")
    write(tmp_path, "c.yaml", "version: 1\nroles:\n  admin: ['user:a']\n  auditor: []\n")
    policy = load_policies(tmp_path)
    assert [g.name for g in policy.grants] == ["first", "second"]
    assert [g.source_file for g in policy.grants] == ["a.yaml", "b.yml"]
    assert policy.roles == {"admin": frozenset({"user:a", "user:b"}), "auditor": frozenset()}


def test_hidden_and_other_files_are_ignored(tmp_path: Path) -> None:
    """Editor lock/swap files (leading dot) and non-YAML files are not policy files."""
    write(tmp_path, "a.yaml", GRANT.format(name="g"))
    write(tmp_path, ".#a.yaml", "not: [valid")
    write(tmp_path, "README.md", "# notes")
    write(tmp_path, "a.yaml.bak", "junk: [")
    (tmp_path / "dir.yaml").mkdir()
    assert [g.name for g in load_policies(tmp_path).grants] == ["g"]


def test_revision_is_a_digest_of_names_and_bytes(tmp_path: Path) -> None:
    """The revision is stable for the same files and changes with content or names."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    write(one, "a.yaml", GRANT.format(name="g"))
    write(two, "a.yaml", GRANT.format(name="g"))
    first = load_policies(one).revision
    assert len(first) == 64
    assert load_policies(two).revision == first
    write(two, "a.yaml", GRANT.format(name="g") + "# a comment\n")
    assert load_policies(two).revision != first
    (two / "a.yaml").rename(two / "b.yaml")
    write(two, "b.yaml", GRANT.format(name="g"))
    assert load_policies(two).revision != first


def test_revocation_fields(tmp_path: Path) -> None:
    """Revocations load with target ``*`` allowed, an optional reason and ``until``."""
    write(
        tmp_path,
        "r.yaml",
        """\
        version: 1
        revocations:
          - subject: "user:bob@example.com"
            target: "*"
            reason: left the team
          - subject: "group:contractors"
            target: shop
            until: 2026-07-01T00:00:00Z
        """,
    )
    bob, contractors = load_policies(tmp_path, known_targets={"shop"}).revocations
    assert (bob.subject, bob.target, bob.reason, bob.until) == (
        "user:bob@example.com",
        "*",
        "left the team",
        None,
    )
    assert contractors.reason == ""
    assert contractors.until == datetime(2026, 7, 1, tzinfo=UTC)
    assert (contractors.source_file, contractors.source_line) == ("r.yaml", 6)


# --- problems, with file and line ------------------------------------------------------


def test_every_problem_in_a_file_is_reported_with_its_line(tmp_path: Path) -> None:
    """One pass reports all problems of a file, each on its own line, sorted by line."""
    write(
        tmp_path,
        "bad.yaml",
        """\
        version: 2
        rolez: {}
        roles:
          admin: ["group:ok", "bad"]
          root: ["user:x"]
        grants:
          - name: g1
            subjects: ["group:a", "alice"]
            target: nowhere
            access: admin
            db_user: "bad user"
            tables: {allow: ["shop", "shop.*"], deny: 5, extra: 1}
            max_rows: 0
            statement_timeout: 30 seconds
            expires: 2026-12-31T23:59:59
            functions: ["SLEEP", "1bad"]
            expiry: x
          - name: g2
            subjects: []
          - just a string
        revocations:
          - subject: "bob"
            target: "*"
            until: "2026-01-01T00:00:00"
          - target: shop
        """,
    )
    assert problems(tmp_path, known_targets={"shop"}) == [
        ("bad.yaml", 1, "version must be 1 (got 2)"),
        ("bad.yaml", 2, "policy file: unknown key 'rolez'; did you mean 'roles'?"),
        (
            "bad.yaml",
            4,
            "roles.admin: a subject must look like user:NAME or group:NAME (got 'bad')",
        ),
        ("bad.yaml", 5, "roles: unknown role 'root' (known: admin, auditor)"),
        (
            "bad.yaml",
            8,
            "grant g1: subjects: a subject must look like user:NAME or group:NAME (got 'alice')",
        ),
        ("bad.yaml", 9, "grant g1: target names unknown target 'nowhere'"),
        ("bad.yaml", 10, "grant g1: access must be one of read, write, ddl (got 'admin')"),
        (
            "bad.yaml",
            11,
            "grant g1: db_user must be a string of 1-80 letters, digits, '_', '.', '$' or '-' (got 'bad user')",
        ),
        ("bad.yaml", 12, "grant g1: tables: unknown key 'extra' (known: allow, deny)"),
        (
            "bad.yaml",
            12,
            "grant g1: tables.allow pattern must be DB.TABLE (fnmatch, e.g. shop.*) or * (got 'shop')",
        ),
        ("bad.yaml", 12, "grant g1: tables.deny must be a list of patterns"),
        ("bad.yaml", 13, "grant g1: max_rows must be a positive integer (got 0)"),
        (
            "bad.yaml",
            14,
            (
                "grant g1: statement_timeout must be a duration such as 250ms, 30s, 5m or 1h,"
                " or a number of seconds (got '30 seconds')"
            ),
        ),
        (
            "bad.yaml",
            15,
            "grant g1: expires must have a timezone, e.g. Z or +02:00 (got 2026-12-31T23:59:59)",
        ),
        ("bad.yaml", 16, "grant g1: functions: not a function name: '1bad'"),
        ("bad.yaml", 17, "grant g1: unknown key 'expiry'; did you mean 'expires'?"),
        ("bad.yaml", 18, "grant g2: missing required field 'target'"),
        ("bad.yaml", 18, "grant g2: missing required field 'access'"),
        ("bad.yaml", 18, "grant g2: missing required field 'db_user'"),
        ("bad.yaml", 19, "grant g2: subjects must list at least one subject"),
        ("bad.yaml", 20, "grants: each grant must be a mapping"),
        (
            "bad.yaml",
            22,
            "revocation: a subject must look like user:NAME or group:NAME (got 'bob')",
        ),
        (
            "bad.yaml",
            24,
            "revocation: until must have a timezone, e.g. Z or +02:00 (got 2026-01-01T00:00:00)",
        ),
        ("bad.yaml", 25, "revocation: missing required field 'subject'"),
    ]


def test_problems_in_several_files_are_reported_together(tmp_path: Path) -> None:
    """Problems from every file come in one error, files in name order."""
    write(tmp_path, "a.yaml", "version: 1\ngrants:\n  - name: x\n")
    write(tmp_path, "b.yaml", "version: 1\nbogus: 1\n")
    with pytest.raises(PolicyFileError) as caught:
        load_policies(tmp_path)
    files_and_lines = [(Path(p.file).name, p.line) for p in caught.value.problems]
    assert files_and_lines == [
        ("a.yaml", 3),
        ("a.yaml", 3),
        ("a.yaml", 3),
        ("a.yaml", 3),
        ("b.yaml", 2),
    ]


def test_error_prints_one_line_per_problem(tmp_path: Path) -> None:
    """``str(PolicyFileError)`` is ``file:line: reason`` per line, for ``policy check``."""
    path = write(tmp_path, "a.yaml", "version: 1\nextra: 1\ngrants: 5\n")
    with pytest.raises(PolicyFileError) as caught:
        load_policies(tmp_path)
    assert str(caught.value).splitlines() == [
        f"{path}:2: policy file: unknown key 'extra' (known: version, roles, grants, revocations)",
        f"{path}:3: grants must be a list",
    ]
    assert caught.value.problems == check_policies(tmp_path)
    assert check_policies(EXAMPLES) == []


def test_duplicate_grant_names_across_files(tmp_path: Path) -> None:
    """A grant name used again in a later file is reported there, naming the first."""
    first = write(tmp_path, "a.yaml", GRANT.format(name="shared"))
    write(tmp_path, "b.yaml", "# another team's file\n" + GRANT.format(name="shared"))
    assert problems(tmp_path) == [
        ("b.yaml", 4, f"duplicate grant name 'shared' (first defined at {first}:3)"),
    ]


def test_duplicate_grant_names_within_a_file(tmp_path: Path) -> None:
    """A grant name used twice in one file is reported at the second use."""
    text = GRANT.format(name="twice") + GRANT.format(name="twice").split("grants:\n")[1]
    path = write(tmp_path, "a.yaml", text)
    assert problems(tmp_path) == [
        ("a.yaml", 8, f"duplicate grant name 'twice' (first defined at {path}:3)"),
    ]


def test_duplicate_revocations_across_files(tmp_path: Path) -> None:
    """The same subject revoked twice on the same target is reported."""
    text = "version: 1\nrevocations:\n  - {subject: 'user:bob', target: shop}\n"
    first = write(tmp_path, "a.yaml", text)
    write(tmp_path, "b.yaml", text + "  - {subject: 'user:bob', target: '*'}\n")
    assert problems(tmp_path) == [
        ("b.yaml", 3, f"duplicate revocation of user:bob on target 'shop' (first at {first}:3)"),
    ]


def test_yaml_syntax_error_reports_its_line(tmp_path: Path) -> None:
    """A YAML syntax error is reported on the line where the parser found it."""
    text = "version: 1\ngrants:\n  - name: x\n    access: read\n    target: shop: x\n"
    write(tmp_path, "a.yaml", text)
    assert problems(tmp_path) == [
        ("a.yaml", 5, "invalid YAML: mapping values are not allowed here"),
    ]


def test_unclosed_flow_sequence_reports_where_the_parser_stopped(tmp_path: Path) -> None:
    """An unclosed ``[`` is reported on the line where the parser gave up."""
    write(tmp_path, "a.yaml", "version: 1\nroles:\n  admin: [a, b\nother: 1\n")
    ((name, line, reason),) = problems(tmp_path)
    assert (name, line) == ("a.yaml", 4)
    assert reason.startswith("invalid YAML: while parsing a flow sequence:")


def test_tab_indentation_is_a_syntax_error_with_line(tmp_path: Path) -> None:
    """A tab used as indentation is reported on its line."""
    write(tmp_path, "a.yaml", "version: 1\ngrants:\n\t- name: x\n")
    ((_, line, reason),) = problems(tmp_path)
    assert line == 3
    assert reason.startswith("invalid YAML")


def test_syntax_error_in_one_file_does_not_hide_others(tmp_path: Path) -> None:
    """A file that does not parse is reported along with problems of other files."""
    write(tmp_path, "a.yaml", "version: 1\nroles: {admin: [\n")
    write(tmp_path, "b.yaml", "version: 1\nroles: {boss: []}\n")
    assert [(name, line) for name, line, _ in problems(tmp_path)] == [
        ("a.yaml", 3),
        ("b.yaml", 2),
    ]


def test_duplicate_yaml_keys_are_all_reported(tmp_path: Path) -> None:
    """Every duplicate key is reported at its repeated line, and checking goes on."""
    write(
        tmp_path,
        "a.yaml",
        """\
        version: 1
        grants:
          - name: g
            subjects: ["group:a"]
            target: shop
            access: read
            access: ddl
            db_user: r
            max_rows: 0
        grants: []
        """,
    )
    assert problems(tmp_path) == [
        ("a.yaml", 7, "duplicate key 'access'"),
        ("a.yaml", 9, "grant g: max_rows must be a positive integer (got 0)"),
        ("a.yaml", 10, "duplicate key 'grants'"),
    ]


def test_unreadable_scalar_is_reported_and_checking_goes_on(tmp_path: Path) -> None:
    """A timestamp with month 13 is reported on its line; other problems still appear."""
    found = grant_problems(tmp_path, "expires: 2026-13-01T00:00:00Z\nmax_rows: -5\n")
    assert [line for line, _ in found] == [8, 8, 9]
    assert found[0][1] == "cannot read '2026-13-01T00:00:00Z': month must be in 1..12"
    assert found[1][1].startswith("grant g: expires must be an ISO 8601 date and time")
    assert found[2][1] == "grant g: max_rows must be a positive integer (got -5)"


def test_empty_directory_is_a_problem(tmp_path: Path) -> None:
    """A directory without policy files is refused: deny-all by accident is not silent."""
    assert check_policies(tmp_path) == [
        PolicyProblem(str(tmp_path), 0, "no policy files (*.yaml, *.yml) in the directory"),
    ]


def test_missing_directory_is_a_problem(tmp_path: Path) -> None:
    """A directory that does not exist is reported, not treated as empty policy."""
    missing = tmp_path / "nope"
    assert check_policies(missing) == [
        PolicyProblem(str(missing), 0, "policy directory not found"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 1, "file is empty: a policy file is a mapping with version: 1"),
        ("# only a comment\n", 1, "file is empty: a policy file is a mapping with version: 1"),
        ("- version: 1\n", 1, "a policy file must be a mapping with version: 1"),
        ("grants: []\n", 1, "version: 1 is required"),
        ("version: '1'\n", 1, "version must be 1 (got '1')"),
        ("version: true\n", 1, "version must be 1 (got True)"),
        ("roles: {}\nversion: 1.0\n", 2, "version must be 1 (got 1.0)"),
        ("version: 1\nroles: [admin]\n", 2, "roles must be a mapping of role name to a list of subjects"),
        ("version: 1\nrevocations: {}\n", 2, "revocations must be a list"),
        ("version: 1\nrevocations: [bob]\n", 2, "revocations: each revocation must be a mapping"),
    ],
)
def test_file_shape_problems(tmp_path: Path, text: str, line: int, reason: str) -> None:
    """Each file must be a mapping with ``version: 1`` and well-shaped sections."""
    write(tmp_path, "a.yaml", text)
    assert problems(tmp_path) == [("a.yaml", line, reason)]


def test_invalid_utf8_is_reported_on_its_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a problem on the line holding them."""
    (tmp_path / "a.yaml").write_bytes(b"version: 1\nroles:\n  admin: ['user:\xff']\n")
    assert problems(tmp_path) == [("a.yaml", 3, "file is not valid UTF-8")]


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    """A file over 1 MiB is not parsed at all."""
    (tmp_path / "a.yaml").write_bytes(b"version: 1\n" + b"# padding\n" * 110_000)
    assert problems(tmp_path) == [("a.yaml", 1, "file is larger than 1048576 bytes")]


def test_python_tags_build_nothing(tmp_path: Path) -> None:
    """A ``!!python/...`` tag constructs no object; the value is refused as a wrong type."""
    write(tmp_path, "a.yaml", GRANT.format(name="g") + "    max_rows: !!python/object/apply:os.getpid []\n")
    ((name, line, reason),) = problems(tmp_path)
    assert (name, line) == ("a.yaml", 8)
    assert reason.startswith("grant g: max_rows must be a positive integer")


# --- field rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        '"alice@example.com"',
        '"user:"',
        '"user:  "',
        '"admin:x"',
        '"User:x"',
        "5",
        "[]",
        '"user:a b"',
        '"user:a\\u200bb"',
        '"user:a\\u2028b"',
        '"group:a  b"',
        '"group:a\\tb"',
        f'"user:{"a" * 257}"',
    ],
)
def test_bad_subjects_are_refused(tmp_path: Path, subject: str) -> None:
    """Subjects must be ``user:NAME`` / ``group:NAME`` whose name passes the canonical name rules."""
    text = GRANT.format(name="g").replace('["group:analysts"]', f"[{subject}]")
    write(tmp_path, "a.yaml", text)
    ((_, line, reason),) = problems(tmp_path)
    assert line == 4
    assert "a subject must look like user:NAME or group:NAME" in reason


def test_subjects_may_contain_spaces_inside(tmp_path: Path) -> None:
    """A group whose IdP name has inner spaces is a valid subject (kept in canonical, case-folded form)."""
    text = GRANT.format(name="g").replace("group:analysts", "group:DB Admins")
    write(tmp_path, "a.yaml", text)
    assert load_policies(tmp_path).grants[0].subjects == ("group:db admins",)


def test_subjects_are_loaded_in_canonical_form(tmp_path: Path) -> None:
    """Grants, roles and revocations hold one spelling per subject: stripped, NFC, case-folded, deduplicated."""
    text = GRANT.format(name="g").replace(
        '["group:analysts"]', '["user: Bob@Example.COM ", "user:bob@example.com", "group:A\\u0301nalysts"]'
    )
    text += "roles:\n  admin: ['user:ADMIN@example.com ']\n"
    text += 'revocations:\n  - {subject: "user:Eve@Example.com\\t", target: "*"}\n'
    write(tmp_path, "a.yaml", text)
    policy = load_policies(tmp_path)
    assert policy.grants[0].subjects == ("user:bob@example.com", "group:\u00e1nalysts")
    assert policy.roles["admin"] == {"user:admin@example.com"}
    assert [r.subject for r in policy.revocations] == ["user:eve@example.com"]


def test_one_subject_revoked_twice_in_two_spellings_is_a_problem(tmp_path: Path) -> None:
    """Two revocations of one person on one target, spelled differently, are a duplicate (line of the second)."""
    text = "version: 1\nrevocations:\n  - {subject: 'user:bob@x.org', target: shop}\n"
    write(tmp_path, "a.yaml", text + "  - {subject: 'user:BOB@x.org ', target: shop}\n")
    ((_, line, reason),) = problems(tmp_path)
    assert line == 4
    assert reason.startswith("duplicate revocation of user:bob@x.org on target 'shop'")


def test_grant_name_rules(tmp_path: Path) -> None:
    """Grant names are URL-safe: letters, digits, '.', '_', '-', starting alphanumeric."""
    write(tmp_path, "a.yaml", GRANT.format(name='"bad name/../x"'))
    ((_, line, reason),) = problems(tmp_path)
    assert line == 3
    assert reason.startswith("grant: name must be a string of 1-128 letters, digits")


def test_unknown_target_checked_only_when_targets_are_known(tmp_path: Path) -> None:
    """``target`` must be a configured target when the caller passes the list."""
    write(tmp_path, "a.yaml", GRANT.format(name="g"))
    write(tmp_path, "r.yaml", "version: 1\nrevocations:\n  - {subject: 'user:x', target: '*'}\n")
    assert problems(tmp_path) == []
    assert problems(tmp_path, known_targets={"shop"}) == []
    assert problems(tmp_path, known_targets={"billing"}) == [
        ("a.yaml", 5, "grant g: target names unknown target 'shop'"),
    ]


def test_star_is_not_a_grant_target(tmp_path: Path) -> None:
    """Only revocations may use ``*``; a grant names one target."""
    write(tmp_path, "a.yaml", GRANT.format(name="g").replace("target: shop", "target: '*'"))
    assert problems(tmp_path, known_targets={"shop"}) == [
        ("a.yaml", 5, "grant g: target names unknown target '*'"),
    ]


@pytest.mark.parametrize(
    "pattern",
    ['"shop"', '"shop.items.x"', '"`shop`.items"', '"shop .items"', '""', "5", '".items"'],
)
def test_bad_table_patterns_are_refused(tmp_path: Path, pattern: str) -> None:
    """Table patterns must be DB.TABLE (fnmatch) or ``*``."""
    found = grant_problems(tmp_path, f"tables: {{deny: [{pattern}]}}\n")
    assert len(found) == 1
    assert found[0][0] == 8
    assert "tables.deny pattern must be DB.TABLE" in found[0][1]


def test_empty_allow_list_is_refused(tmp_path: Path) -> None:
    """``allow: []`` would allow nothing, so it is reported as a likely mistake."""
    found = grant_problems(tmp_path, "tables:\n  allow: []\n")
    assert found == [
        (
            9,
            "grant g: tables.allow is empty and would allow no table; leave it out to allow every table",
        ),
    ]


@pytest.mark.parametrize("value", ["0", "-1", "true", '"10"', "1.5", "[]"])
def test_max_rows_must_be_a_positive_integer(tmp_path: Path, value: str) -> None:
    """``max_rows`` accepts only positive integers (not booleans, strings or floats)."""
    found = grant_problems(tmp_path, f"max_rows: {value}\n")
    assert len(found) == 1
    assert found[0][0] == 8
    assert found[0][1].startswith("grant g: max_rows must be a positive integer")


@pytest.mark.parametrize("value", ['"0s"', '"-1s"', '"30 s"', '"1d"', "true", "0", "-3", "[]", ".nan"])
def test_bad_statement_timeouts_are_refused(tmp_path: Path, value: str) -> None:
    """``statement_timeout`` must be a positive duration with a known unit."""
    found = grant_problems(tmp_path, f"statement_timeout: {value}\n")
    assert len(found) == 1
    assert found[0][0] == 8
    assert found[0][1].startswith("grant g: statement_timeout must be")


@pytest.mark.parametrize(
    "value",
    ["2026-12-31T23:59:59", "2026-12-31", '"2026-12-31T23:59:59"', '"tomorrow"', "5", "[]"],
)
def test_expires_needs_a_date_time_with_zone(tmp_path: Path, value: str) -> None:
    """``expires`` refuses naive times, bare dates and non-timestamps."""
    found = grant_problems(tmp_path, f"expires: {value}\n")
    assert len(found) == 1
    assert found[0][0] == 8
    assert found[0][1].startswith("grant g: expires must")


def test_access_must_be_a_known_level(tmp_path: Path) -> None:
    """``access`` is read, write or ddl, in lower case."""
    write(tmp_path, "a.yaml", GRANT.format(name="g").replace("access: read", "access: READ"))
    assert problems(tmp_path) == [
        ("a.yaml", 6, "grant g: access must be one of read, write, ddl (got 'READ')"),
    ]


def test_missing_required_fields_reported_at_the_grant(tmp_path: Path) -> None:
    """Each missing required field is reported on the grant's first line."""
    write(tmp_path, "a.yaml", "version: 1\ngrants:\n  - name: g\n    max_rows: 5\n")
    assert problems(tmp_path) == [
        ("a.yaml", 3, "grant g: missing required field 'subjects'"),
        ("a.yaml", 3, "grant g: missing required field 'target'"),
        ("a.yaml", 3, "grant g: missing required field 'access'"),
        ("a.yaml", 3, "grant g: missing required field 'db_user'"),
    ]


def test_db_user_is_required(tmp_path: Path) -> None:
    """Every grant names its database account."""
    write(tmp_path, "a.yaml", GRANT.format(name="g").replace("    db_user: gw_reader\n", ""))
    assert problems(tmp_path) == [("a.yaml", 3, "grant g: missing required field 'db_user'")]


def test_functions_must_be_names(tmp_path: Path) -> None:
    """``functions`` is a list of function names; each bad entry is reported on its line."""
    found = grant_problems(tmp_path, "functions:\n  - SLEEP\n  - 'x; DROP'\n  - 5\n")
    assert found == [
        (10, "grant g: functions: not a function name: 'x; DROP'"),
        (11, "grant g: functions: not a function name: 5"),
    ]


# --- bad input found by tests/test_fuzz_policy.py ------------------------------------------------


@pytest.mark.parametrize(
    "written",
    ["0001-01-01T00:00:00+01:00", "'9999-12-31T23:59:59-01:00'"],
)
def test_timestamps_outside_the_utc_range_are_problems(tmp_path: Path, written: str) -> None:
    """An instant that falls outside years 1-9999 once moved to UTC is a problem on its line, not an OverflowError."""
    found = grant_problems(tmp_path, f"expires: {written}\n")
    instant = written.strip("'")
    assert found == [(8, f"grant g: expires must fall within the years 1-9999 in UTC (got {instant})")]


@pytest.mark.parametrize("field", ["max_rows", "statement_timeout"])
def test_integers_past_64_bits_are_problems(tmp_path: Path, field: str) -> None:
    """A hex integer of any length (YAML allows it) is refused on its line, with a short quote of it.

    Unchecked, it broke ``float()`` (statement_timeout), JSON replies (max_rows)
    and ``repr()`` in problem messages (over Python's 4300-digit limit).
    """
    huge = "0x" + "f" * 5000
    found = grant_problems(tmp_path, f"{field}: {huge}\n")
    assert found[0] == (8, f"integer {huge[:40]}... is out of range (64 bits at most)")
    assert all(len(reason) < 200 for _, reason in found)


def test_a_huge_version_number_is_a_problem(tmp_path: Path) -> None:
    """``version: 0x<5000 digits>`` is reported, not a ValueError from printing the number."""
    write(tmp_path, "a.yaml", "version: 0x" + "f" * 5000 + "\n")
    assert [(line, reason.split(" (")[0]) for _, line, reason in problems(tmp_path)] == [
        (1, "integer 0xffffffffffffffffffffffffffffffffffffff... is out of range"),
        (1, "version must be 1"),
    ]


def test_duration_past_float_range_is_a_value_error() -> None:
    """parse_duration keeps its contract (ValueError or TypeError) for ints too large for a float."""
    with pytest.raises(ValueError, match="sensible size"):
        parse_duration(10**400)


def test_deep_flow_nesting_is_refused_before_parsing(tmp_path: Path) -> None:
    """Thousands of ``[`` are refused at once (ruamel's scanner takes seconds to minutes on them)."""
    write(tmp_path, "a.yaml", "version: 1\nroles:\n  admin: " + "[" * 100_000 + "\n")
    assert problems(tmp_path) == [("a.yaml", 3, "invalid YAML: nested deeper than 32 levels of [ and {")]


def test_stray_closing_brackets_do_not_hide_deep_nesting(tmp_path: Path) -> None:
    """Closers before the openers (in a comment, say) do not offset them."""
    write(tmp_path, "a.yaml", "# " + "]" * 100 + "\nversion: 1\nroles: " + "[" * 40 + "\n")
    assert problems(tmp_path) == [("a.yaml", 3, "invalid YAML: nested deeper than 32 levels of [ and {")]


def test_duplicate_keys_in_an_omap_are_a_problem(tmp_path: Path) -> None:
    """The YAML library checks ``!!omap`` keys with ``assert``: the loader reports a problem, not an AssertionError."""
    write(tmp_path, "a.yaml", "version: !!omap [a: 1, a: 2]\n")
    assert problems(tmp_path) == [("a.yaml", 1, "invalid YAML: the file cannot be read (AssertionError)")]
