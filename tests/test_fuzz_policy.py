"""Property tests of the policy loader (``gateway.policy.files``, ``gateway.policy.schema``).

Whatever a policy directory holds, ``load_policies`` returns a ``PolicySet``
or raises ``PolicyFileError`` whose every problem names a file that is there
and a line inside it. Inputs: mutations of a valid policy file (keys dropped,
values of the wrong type, bad durations and timestamps, duplicate names,
unknown keys), the same file with YAML oddities spliced into its text (huge
hex integers, tags, anchors, extreme dates, tabs, NUL), arbitrary YAML-shaped
documents, and raw bytes including invalid UTF-8.
"""

from __future__ import annotations

import copy
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzprofile import budget
from hypothesis import currently_in_test_context, event, example, given, note, settings
from hypothesis import strategies as st

from gateway.errors import PolicyFileError
from gateway.policy.files import PolicySet, check_policies, load_policies
from gateway.policy.schema import NAME

pytestmark = pytest.mark.fuzz

TARGETS = frozenset({"shop", "crm"})
VALID: dict[str, Any] = {
    "version": 1,
    "roles": {"admin": ["group:db-admins"], "auditor": ["group:security", "user:carol@example.com"]},
    "grants": [
        {
            "name": "analysts-read-shop",
            "subjects": ["group:analysts", "user:alice@example.com"],
            "target": "shop",
            "access": "read",
            "db_user": "gw_reader",
            "tables": {"allow": ["shop.*"], "deny": ["shop.payment_*"]},
            "max_rows": 10000,
            "statement_timeout": "30s",
            "expires": "2026-12-31T23:59:59Z",
            "functions": ["JSON_EXTRACT"],
        },
        {
            "name": "engineers-write-crm",
            "subjects": ["group:engineers"],
            "target": "crm",
            "access": "write",
            "db_user": "gw_writer",
            "statement_timeout": 5,
        },
    ],
    "revocations": [
        {"subject": "user:mallory@example.com", "target": "*", "reason": "left the team", "until": None},
    ],
}
REQUIRED = ("name", "subjects", "target", "access", "db_user")


def dump(document: object) -> str:
    """YAML text for ``document`` (block style, unicode kept)."""
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


# --- strategies ---------------------------------------------------------------------------------

HUGE = "f" * 5000  # a hex integer of ~6000 decimal digits: over Python's int-to-text limit
TRICKY_STRINGS = [
    "30s", "250ms", "0s", "-1s", "1.5h", "1e400h", "9" * 400 + "h", "5 m", "1d", "inf", "nan",
    "2026-12-31T23:59:59Z", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-12-31T23:59:59",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59", "2026-12-31", "",
    "read", "write", "ddl", "READ", "admin", "*", "shop", "crm", "nope",
    "user:alice@example.com", "group:x", "user:", "group: x ", "user:a\x00b", "role:x", "user:\u2028",
    "shop.*", "a.b.c", "`x`.y", "*.*", "JSON_EXTRACT", "shop.f", "1x", "gw_reader", "a" * 200,
]  # fmt: skip
OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**300]),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(TRICKY_STRINGS),
    st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), OFFSETS)),
    st.sampled_from([datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=timezone(timedelta(hours=-23)))]),
)
KEYS = st.one_of(
    st.sampled_from(["version", "roles", "grants", "revocations", "admin", "auditor", "allow", "deny", *REQUIRED]),
    st.text(max_size=8),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)


def _paths(node: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key / index path inside ``node`` (a tree of dicts and lists)."""
    found: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


PATHS = _paths(VALID)


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        document = document[key]
    return document


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """``VALID`` after up to four edits: drop, replace with any value, add a key, repeat a list item."""
    document = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(PATHS))
        try:
            parent = _parent(document, path)
            key = path[-1]
            operation = draw(st.sampled_from(["drop", "replace", "add", "repeat"]))
            if operation == "drop":
                del parent[key]
            elif operation == "replace":
                parent[key] = draw(values)
            elif operation == "add" and isinstance(parent, dict):
                parent[draw(KEYS)] = draw(values)
            elif operation == "repeat" and isinstance(parent, list):
                parent.append(copy.deepcopy(parent[key]))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path
    return document


# Text spliced into a file where a value or a line would be.
TRICKY_TOKENS = [
    f"0x{HUGE}", f"-0x{HUGE}", f"0o{'7' * 6000}", "1" * 5000, "0b" + "1" * 70, "1_000", "+12", "0o17", "12:30:45",
    "0001-01-01T00:00:00+01:00", "0001-01-01 00:00:00 +05", "9999-12-31T23:59:59-23:59", "2026-13-01T00:00:00Z",
    "2026-12-31t23:59:59.123456789z", "2026-12-31T24:00:00Z", ".nan", ".inf", "-.inf", "~", "null", "yes", "on",
    "!!int x", "!!float x", "!!bool x", "!!timestamp x", "!!timestamp 2026-01-01", "!!binary ~~", "!!set {a, b}",
    "!!omap [a: 1, a: 2]", "!!python/name:os.system", "!custom x", "&a x", "*nope", "*a", "&a [*a]", "<<: *a",
    "'unterminated", '"\\x"', '"\\uD800"', '"\\U0010FFFF"', "|\n  block", ">-", "[", "{", "}", "]", "? x", "- - -",
    "\t", "\x00", "\ufeff", "\u2028", "\x85", "%TAG ! x", "---", "...", "@", "`", "a: b: c", "{a: 1, a: 2}",
    "[" * 200, "{a: " * 200, "- " * 200, "&x " * 50 + "1",
]  # fmt: skip
BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xf4\x90\x80\x80", b"\x00", b"\r", b"\xe2\x80"]


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    """A valid or mutated file's text with tokens or bad bytes put at line ends, line starts or anywhere."""
    text = dump(draw(st.one_of(st.just(VALID), mutated())))
    for _ in range(draw(st.integers(1, 3))):
        token = draw(st.sampled_from(TRICKY_TOKENS))
        lines = text.split("\n")
        index = draw(st.integers(0, len(lines) - 1))
        where = draw(st.sampled_from(["value", "line", "anywhere"]))
        if where == "value" and ": " in lines[index]:
            lines[index] = lines[index].split(": ", 1)[0] + ": " + token
        elif where == "line":
            lines.insert(index, token)
        else:
            offset = draw(st.integers(0, len(text)))
            lines = (text[:offset] + token + text[offset:]).split("\n")
        text = "\n".join(lines)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        offset = draw(st.integers(0, len(data)))
        data = data[:offset] + draw(st.sampled_from(BAD_BYTES)) + data[offset:]
    return data


documents = st.one_of(
    mutated().map(dump),
    values.map(dump),
    st.builds(lambda body: {"version": 1, **body}, st.dictionaries(KEYS, values, max_size=4)).map(dump),
).map(lambda text: text.encode("utf-8", "surrogatepass"))
file_bytes = st.one_of(documents, spliced(), st.binary(max_size=300))
FILE_NAMES = ["00-roles.yaml", "grants.yml", "shop.yaml", "z.yaml"]
directories = st.dictionaries(st.sampled_from(FILE_NAMES), file_bytes, min_size=1, max_size=3)


# --- the oracle ---------------------------------------------------------------------------------


def record(outcome: str) -> None:
    """Count an outcome for ``--hypothesis-show-statistics`` (only inside a property test)."""
    if currently_in_test_context():
        event(outcome)


def load(files: dict[str, bytes]) -> PolicySet | PolicyFileError:
    """Write ``files`` to a fresh directory and load it; check every problem is well formed.

    Any exception other than ``PolicyFileError`` fails the test.
    """
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name, data in files.items():
            (directory / name).write_bytes(data)
        try:
            outcome: PolicySet | PolicyFileError = load_policies(directory, known_targets=TARGETS)
        except PolicyFileError as error:
            outcome = error
        if isinstance(outcome, PolicyFileError):
            assert check_policies(directory, known_targets=TARGETS) == outcome.problems
    if isinstance(outcome, PolicyFileError):
        assert str(outcome)  # printable, even with huge values in it
        assert outcome.problems
        for problem in outcome.problems:
            assert Path(problem.file).parent == directory, problem
            assert 1 <= problem.line <= files[Path(problem.file).name].count(b"\n") + 1, problem
            assert problem.reason.strip(), problem
        record(f"problems: {min(len(outcome.problems), 5)}")
        return outcome
    record("loaded")
    names = [grant.name for grant in outcome.grants]
    assert len(names) == len(set(names))
    assert all(NAME.fullmatch(name) for name in names)
    assert all(grant.subjects and grant.target in TARGETS for grant in outcome.grants)
    assert len(outcome.revision) == 64
    return outcome


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=budget(250))
@given(directories)
@example({"a.yaml": f"version: 1\ngrants:\n  - name: g\n    max_rows: 0x{HUGE}\n".encode()})
@example({"a.yaml": f"version: 0x{HUGE}\n".encode()})
@example({"a.yaml": b"version: 1\ngrants: [{statement_timeout: 0x" + HUGE.encode() + b"}]\n"})
@example({"a.yaml": b"version: 1\nrevocations: [{subject: 'user:a', target: '*', until: 0001-01-01T00:00:00+01:00}]"})
@example({"a.yaml": b"version: 1\nrevocations: [{subject: 'user:a', target: '*', until: '9999-12-31T23:59:59-01:00'}]"})
@example({"a.yaml": b"[" * 5000})
@example({"a.yaml": b"\xff\xfe", "b.yaml": b"version: 1\n\xed\xa0\x80"})
def test_any_directory_loads_or_fails_with_file_and_line(files: dict[str, bytes]) -> None:
    """load_policies returns a PolicySet or raises PolicyFileError naming files and lines that exist: nothing else."""
    note(repr(files)[:2000])
    load(files)


@settings(max_examples=budget(100))
@given(st.sampled_from(range(len(VALID["grants"]))), st.sampled_from(REQUIRED))
def test_a_missing_required_grant_field_is_reported(index: int, field: str) -> None:
    """Dropping any required field of any grant is a problem on that grant's line, and the rest is still checked."""
    document = copy.deepcopy(VALID)
    del document["grants"][index][field]
    document["grants"][-1]["max_rows"] = -1  # a second problem in the same file, reported too
    outcome = load({"p.yaml": dump(document).encode()})
    assert isinstance(outcome, PolicyFileError)
    reasons = [problem.reason for problem in outcome.problems]
    assert any(f"missing required field {field!r}" in reason for reason in reasons), reasons
    assert any("max_rows must be a positive integer" in reason for reason in reasons), reasons


@settings(max_examples=budget(100))
@given(st.sampled_from((*REQUIRED[1:], "max_rows", "statement_timeout", "expires", "tables", "functions")), values)
def test_a_wrong_value_in_a_grant_never_yields_that_grant(field: str, value: object) -> None:
    """A grant with any value in any field either loads with that value typed, or is not in the PolicySet at all."""
    document = copy.deepcopy(VALID)
    document["grants"][0][field] = value
    outcome = load({"p.yaml": dump(document).encode()})
    if isinstance(outcome, PolicyFileError):
        return
    (grant,) = [g for g in outcome.grants if g.name == "analysts-read-shop"]
    typed: dict[str, type | tuple[type, ...]] = {
        "max_rows": (int, type(None)),
        "statement_timeout": (float, type(None)),
        "expires": (datetime, type(None)),
        "subjects": tuple,
        "target": str,
        "db_user": str,
        "functions": frozenset,
    }
    if field in typed:
        assert isinstance(getattr(grant, field), typed[field]), (field, getattr(grant, field))
    if isinstance(grant.expires, datetime):
        assert grant.expires.utcoffset() == timedelta(0)


@settings(max_examples=budget(60))
@given(st.lists(st.sampled_from(FILE_NAMES), min_size=2, max_size=3, unique=True))
def test_duplicate_grant_names_across_files_are_reported(names: list[str]) -> None:
    """The same grant name in two files fails with a problem naming the file and line of the second."""
    document = copy.deepcopy(VALID)
    files = {name: dump(document).encode() for name in names}
    outcome = load(files)
    assert isinstance(outcome, PolicyFileError)
    duplicates = [p for p in outcome.problems if "duplicate grant name" in p.reason]
    assert duplicates
    assert all(Path(p.file).name != min(names) for p in duplicates)


def test_the_valid_document_loads() -> None:
    """The base of every mutation is itself valid: the properties above start from a file that loads."""
    outcome = load({"p.yaml": dump(VALID).encode()})
    assert isinstance(outcome, PolicySet)
    assert [g.name for g in outcome.grants] == ["analysts-read-shop", "engineers-write-crm"]
    assert outcome.grants[0].expires == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
