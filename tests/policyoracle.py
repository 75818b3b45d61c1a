"""Random admin edits of a generated policy file, and the oracle that judges their outcome.

Shared by the editor's property test and the admin API's: ``edits(policy)``
draws an edit (add or delete a grant, revoke, lift) with valid values in odd
spellings and values that must be refused; ``expected_refusal`` says which
refusal the inputs call for (None: the edit must apply); ``check_typed`` and
``check_bytes`` judge an applied edit independently of the editor's own
check: the loaded policy changed by exactly the intended typed entry, and
the file by one contiguous block of lines in its own line ending.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import strategies as st
from policygen import SCANNER_BREAKS, PolicyFile, subject_names

from gateway.errors import GatewayError, InvalidRequest, NotFound, PolicyInvalid
from gateway.identity.subjects import canonical_subject
from gateway.policy.types import Access, Grant, PolicySet, Revocation

__all__ = ["Edit", "check_bytes", "check_typed", "edits", "expected_refusal"]

_UNSAFE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_ODD_TEXT = "ab #:é😀\t\r\n\x0b\x0c\x1c\x1d\x1e\ufeff\u200b" + SCANNER_BREAKS


@dataclass(frozen=True)
class Edit:
    """One editor call: ``op`` is add_grant, delete_grant, add_revocation or lift_revocation."""

    op: str
    args: dict[str, Any]


def _canonical(subject: str) -> str | None:
    try:
        return canonical_subject(subject)
    except ValueError:
        return None


def _subjects() -> st.SearchStrategy[str]:
    """Subjects from requests: valid ones in odd spellings, and ones that must be refused."""
    valid = st.builds(lambda k, n: f"{k}:{n}", st.sampled_from(["user", "group"]), subject_names())
    spaced = st.builds(lambda n: f"user: {n} ", subject_names())
    broken = st.sampled_from(["user:a\u2028b", "user:a\nb", "user:a\x85b", "bob@example.com", "user:", "user:a\u200bb"])
    return st.one_of(valid, valid, spaced, broken)


@st.composite
def edits(draw: st.DrawFn, policy: PolicyFile, db_user: str = "gw_reader") -> Edit:
    """One random edit of ``policy`` (grants get ``db_user``)."""
    kind = draw(st.sampled_from(["add_grant", "delete_grant", "add_revocation", "lift_revocation"]))
    if kind == "add_grant":
        name = draw(st.sampled_from([f"new{draw(st.integers(0, 99))}", "bad name", *policy.grant_names[:1]]))
        entry = {
            "name": name,
            "subjects": draw(st.lists(_subjects(), min_size=1, max_size=3)),
            "target": "shop",
            "access": draw(st.sampled_from(["read", "write"])),
            "db_user": db_user,
        }
        comment = draw(st.one_of(st.none(), st.text(_ODD_TEXT, max_size=30)))
        return Edit(kind, {"entry": entry, "comment": comment})
    if kind == "delete_grant":
        return Edit(kind, {"name": draw(st.sampled_from([*policy.grant_names, "absent"]))})
    if kind == "add_revocation":
        entry = {"subject": draw(_subjects()), "target": draw(st.sampled_from(["*", "shop"]))}
        if draw(st.booleans()):
            clean = st.text("ab #:'\"é😀", min_size=1, max_size=20)
            entry["reason"] = draw(st.one_of(clean, st.text(_ODD_TEXT, min_size=1, max_size=20)))
        return Edit(kind, {"entry": entry})
    known = [subject for subject, _ in policy.revoked]
    subject = draw(st.sampled_from(known) | st.just("user:nobody")) if known else draw(_subjects())
    subject = draw(st.sampled_from([subject, subject.upper().replace("USER:", "user:").replace("GROUP:", "group:")]))
    return Edit(kind, {"subject": subject, "target": draw(st.sampled_from([None, None, "*", "shop"]))})


def expected_refusal(edit: Edit, policy: PolicyFile, *, appends_here: bool) -> type[GatewayError] | None:
    """The refusal the inputs call for (None: the edit must succeed)."""
    return _EXPECTED[edit.op](edit.args, policy, appends_here=appends_here)


def _expect_add_grant(args: dict[str, Any], policy: PolicyFile, *, appends_here: bool) -> type[GatewayError] | None:
    entry = args["entry"]
    if any(_canonical(s) is None for s in entry["subjects"]):
        return InvalidRequest
    if entry["name"] in policy.grant_names or entry["name"] == "bad name":
        return PolicyInvalid
    return PolicyInvalid if appends_here and "grants" in policy.flow_lists else None


def _expect_delete_grant(args: dict[str, Any], policy: PolicyFile, *, appends_here: bool) -> type[GatewayError] | None:
    del appends_here
    if args["name"] not in policy.grant_names:
        return NotFound
    return PolicyInvalid if "grants" in policy.flow_lists else None


def _expect_add_revocation(
    args: dict[str, Any], policy: PolicyFile, *, appends_here: bool
) -> type[GatewayError] | None:
    entry = args["entry"]
    wanted = _canonical(entry["subject"])
    if wanted is None or any(unicodedata.category(c) in _UNSAFE for c in entry.get("reason", "")):
        return InvalidRequest
    if (wanted, entry["target"]) in {(_canonical(s), t) for s, t in policy.revoked}:
        return PolicyInvalid
    return PolicyInvalid if appends_here and "revocations" in policy.flow_lists else None


def _expect_lift(args: dict[str, Any], policy: PolicyFile, *, appends_here: bool) -> type[GatewayError] | None:
    del appends_here
    wanted = _canonical(args["subject"])
    if wanted is None:
        return InvalidRequest
    found = [t for s, t in policy.revoked if _canonical(s) == wanted and args["target"] in {None, t}]
    if not found:
        return NotFound
    return PolicyInvalid if len(found) > 1 or "revocations" in policy.flow_lists else None


_EXPECTED = {
    "add_grant": _expect_add_grant,
    "delete_grant": _expect_delete_grant,
    "add_revocation": _expect_add_revocation,
    "lift_revocation": _expect_lift,
}


def _unplaced(entries: tuple[Grant, ...] | tuple[Revocation, ...]) -> Counter[Grant | Revocation]:
    return Counter(replace(entry, source_line=0) for entry in entries)


def check_typed(before: PolicySet, after: PolicySet, edit: Edit, managed: str) -> None:
    """The typed policy changed by exactly the entry the edit names."""
    assert dict(after.roles) == dict(before.roles)
    grants_plus = _unplaced(after.grants) - _unplaced(before.grants)
    grants_minus = _unplaced(before.grants) - _unplaced(after.grants)
    revs_plus = _unplaced(after.revocations) - _unplaced(before.revocations)
    revs_minus = _unplaced(before.revocations) - _unplaced(after.revocations)
    if edit.op == "add_grant":
        entry = edit.args["entry"]
        subjects = tuple(dict.fromkeys(canonical_subject(s) for s in entry["subjects"]))
        grant = Grant(
            name=entry["name"],
            subjects=subjects,
            target="shop",
            access=Access.from_label(entry["access"]),
            db_user=entry["db_user"],
            tables_allow=None,
            tables_deny=(),
            max_rows=None,
            statement_timeout=None,
            expires=None,
            functions=frozenset(),
            source_file=managed,
            source_line=0,
        )
        assert (list(grants_plus.elements()), grants_minus, revs_plus, revs_minus) == ([grant], {}, {}, {})
    elif edit.op == "delete_grant":
        (gone,) = grants_minus.elements()
        assert isinstance(gone, Grant)
        assert (gone.name, grants_plus, revs_plus, revs_minus) == (edit.args["name"], {}, {}, {})
    elif edit.op == "add_revocation":
        entry = edit.args["entry"]
        revocation = Revocation(
            subject=canonical_subject(entry["subject"]),
            target=entry["target"],
            reason=entry.get("reason", ""),
            until=None,
            source_file=managed,
            source_line=0,
        )
        assert (list(revs_plus.elements()), revs_minus, grants_plus, grants_minus) == ([revocation], {}, {}, {})
    else:
        (gone,) = revs_minus.elements()
        assert isinstance(gone, Revocation)
        assert canonical_subject(gone.subject) == canonical_subject(edit.args["subject"])
        assert edit.args["target"] in {None, gone.target}
        assert (revs_plus, grants_plus, grants_minus) == ({}, {}, {})


def check_bytes(old: bytes, new: bytes, op: str) -> None:
    """``new`` is ``old`` with one contiguous block inserted (add) or removed, in the file's own line ending."""
    if op.startswith("add") and old and not old.endswith((b"\n", b"\r")):
        old += re.findall(rb"\r\n|\r|\n", old)[-1] if re.search(rb"\r|\n", old) else b"\n"
    shorter, longer = (new, old) if op in {"delete_grant", "lift_revocation"} else (old, new)
    prefix = 0
    while prefix < len(shorter) and shorter[prefix] == longer[prefix]:
        prefix += 1
    suffix = 0
    while suffix < len(shorter) - prefix and shorter[-1 - suffix] == longer[-1 - suffix]:
        suffix += 1
    assert prefix + suffix == len(shorter), "not a single contiguous block"
    block = longer[prefix : len(longer) - suffix]
    endings = set(re.findall(rb"\r\n|\r|\n", old))
    if len(endings) == 1 and op.startswith("add"):
        assert set(re.findall(rb"\r\n|\r|\n", block)) <= endings, "an added line does not use the file's line ending"
