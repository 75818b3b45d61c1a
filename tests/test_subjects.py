"""The one canonical form of user and group names and policy subjects (SECURITY rule 26), as pure functions."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import pytest
from fuzzprofile import budget
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.identity.names import fallback_name
from gateway.identity.subjects import MAX_NAME, Subject, canonical_name, canonical_subject, parse_subject, same_subject


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("bob@example.com", "bob@example.com"),
        ("Bob@Example.COM", "bob@example.com"),
        ("BOB@example.com", "bob@example.com"),
        (" Bob@Example.com", "bob@example.com"),
        ("bob@example.com\t\n", "bob@example.com"),
        ("\u00a0bob@example.com\u3000", "bob@example.com"),  # no-break and ideographic spaces
        ("bob@example.com\u2028", "bob@example.com"),  # a line separator around the name is whitespace
        ("jose\u0301@example.com", "jos\u00e9@example.com"),  # NFD -> NFC
        ("Jos\u00c9@example.com", "jos\u00e9@example.com"),
        ("stra\u00dfe", "strasse"),  # full case folding, not lower()
        ("\u00df\u0301", "s\u015b"),  # folding decomposes; the result is NFC again
    ],
)
def test_spellings_of_one_name_are_one_name(written: str, canonical: str) -> None:
    """Case, surrounding whitespace and Unicode composition never tell two spellings of a name apart."""
    assert canonical_name(written) == canonical


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("\u2028", "empty"),
        ("a" * (MAX_NAME + 1), "longer"),
        ("\u00df" * (MAX_NAME // 2 + 1), "longer"),  # 129 characters that fold to 258
        ("bob smith@example.com", "whitespace"),
        ("bob\t@example.com", "U+0009"),
        ("bob\u00a0@example.com", "whitespace"),
        ("bob\x00@example.com", "U+0000"),
        ("bob\x7f@example.com", "U+007F"),
        ("bob\x85@example.com", "U+0085"),  # NEL, a line break for YAML
        ("bob\u2028@example.com", "U+2028"),
        ("bob\u2029@example.com", "U+2029"),
        ("bob\u200b@example.com", "U+200B"),  # zero-width space
        ("bob\u200d@example.com", "U+200D"),  # zero-width joiner
        ("\u202ebob@example.com", "U+202E"),  # right-to-left override
        ("bob\ufeff@example.com", "U+FEFF"),
        ("bob\ue000@example.com", "U+E000"),  # private use
        ("bob\U000e0001@example.com", "U+E0001"),  # language tag (format)
        ("bob\u0378@example.com", "U+0378"),  # unassigned
    ],
)
def test_unusable_user_names_are_refused(written: str, reason: str) -> None:
    """Empty, too long, inner whitespace, controls, separators, format, private and unassigned characters: refused."""
    with pytest.raises(ValueError, match=re.escape(reason)):
        canonical_name(written)


def test_group_names_may_hold_single_inner_spaces() -> None:
    """``DB Admins`` is a group name; two spaces in a row, a tab or a no-break space are not."""
    assert canonical_name(" DB Admins ", kind="group") == "db admins"
    for bad in ("db  admins", "db\tadmins", "db\u00a0admins", "db\u2009admins"):
        with pytest.raises(ValueError, match=r"space|U\+0009"):
            canonical_name(bad, kind="group")
    with pytest.raises(ValueError, match="whitespace"):
        canonical_name("db admins")


def test_subjects_parse_to_their_canonical_form() -> None:
    """``user:`` / ``group:`` (exactly, lower case) plus a name under the name rules; anything else is refused."""
    assert parse_subject("user: Bob@Example.com ") == Subject("user", "bob@example.com")
    assert canonical_subject("group:DB Admins") == "group:db admins"
    assert canonical_subject("user:sub:00u%41b@https://idp.example.com") == "user:sub:00u%41b@https://idp.example.com"
    for bad in ("bob@example.com", "User:bob", "users:bob", "role:admin", "user:", "user:a b", "group:a\u200bb"):
        with pytest.raises(ValueError, match=r"subject looks like|name"):
            parse_subject(bad)


def test_same_subject_compares_canonical_forms() -> None:
    """Lifting a revocation finds it under any spelling; an unusable subject matches nothing."""
    assert same_subject("user:Bob@Example.com", "user:bob@example.com ")
    assert not same_subject("user:bob@example.com", "group:bob@example.com")
    assert not same_subject("user:bob\u2028x", "user:bob\u2028x")


def test_fallback_names_cannot_collide() -> None:
    """A fallback name escapes what case folding would merge, and names its issuer: distinct inputs, distinct names."""
    names = {
        fallback_name("sub", "00uAb", "https://idp.example.com"),
        fallback_name("sub", "00uab", "https://idp.example.com"),
        fallback_name("sub", "00uab", "https://other.example.com"),
        fallback_name("sub", "x@https://idp.example.com", "https://idp.example.com"),
        fallback_name("sub", "x", "https://idp.example.com"),
        fallback_name("oid", "x", "https://idp.example.com"),
    }
    assert len(names) == 6
    assert (
        fallback_name("sub", "auth0|Ab C", "https://idp.example.com") == "sub:auth0|%41b%20%43@https://idp.example.com"
    )


# --- properties -------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@pytest.mark.fuzz
@settings(max_examples=budget(500))
@given(_TEXT, st.sampled_from(["user", "group"]))
@example("\u00df\u0301", "user")
@example("\u0149\u0301", "user")
@example("\u00df" * 129, "user")
def test_canonical_form_is_a_fixed_point_and_clean(text: str, kind: str) -> None:
    """Any accepted name is NFC, stripped, case-folded, capped, and canonical again: reading it back changes nothing."""
    checked: Literal["user", "group"] = "group" if kind == "group" else "user"
    try:
        name = canonical_name(text, kind=checked)
    except ValueError:
        return
    assert canonical_name(name, kind=checked) == name
    assert name == unicodedata.normalize("NFC", name) == name.strip()
    assert name.casefold() == name or unicodedata.normalize("NFC", name.casefold()) == name
    assert 0 < len(name) <= MAX_NAME
    assert not any(unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"} for c in name)
    assert checked == "group" or not any(c.isspace() for c in name)


@pytest.mark.fuzz
@settings(max_examples=budget(300))
@given(_TEXT, st.sampled_from(["", " ", "\t", "\u00a0", "\n"]), st.sampled_from(["upper", "nfd", "swap"]))
def test_variant_spellings_share_the_canonical_form(text: str, pad: str, variant: str) -> None:
    """Padding, NFD and case changes of an accepted name give the same name (or are refused, never another name)."""
    try:
        name = canonical_name(text)
    except ValueError:
        return
    changed = {
        "upper": name.upper(),
        "nfd": unicodedata.normalize("NFD", name),
        "swap": name.swapcase(),
    }[variant]
    try:
        other = canonical_name(pad + changed + pad)
    except ValueError:
        return
    # upper()/swapcase() are not inverses of casefold for every script (Turkish dotless i),
    # but for ASCII names and any NFD they are: there the two must agree.
    if variant == "nfd" or name.isascii():
        assert other == name


@pytest.mark.fuzz
@settings(max_examples=budget(200))
@given(st.text(max_size=30), st.text(max_size=30))
def test_distinct_fallback_values_never_share_a_name(left: str, right: str) -> None:
    """Two different fallback claim values of one issuer never get one canonical name."""
    if left == right:
        return
    names = []
    for value in (left, right):
        try:
            names.append(fallback_name("sub", value, "https://idp.example.com"))
        except ValueError:
            return
    assert names[0] != names[1]
