"""Names of people and groups, and policy subjects: one canonical form (SECURITY rule 26).

Every name the gateway compares (a token's user name and groups, the
``user:`` / ``group:`` subjects in policies, revocations, roles and admin
requests) goes through ``canonical_name`` first, so two spellings of one name
can never be told apart by a comparison:

* Unicode NFC, then surrounding whitespace removed (any Unicode
  whitespace, U+2028 and U+00A0 included);
* compared without case: ``str.casefold`` (``Bob@Example.COM`` is
  ``bob@example.com``; the whole name, the local part of an email included),
  then NFC again;
* refused when empty, longer than ``MAX_NAME`` characters, or holding a
  control character, a line or paragraph separator, or any format character
  (zero-width joiners, bidi controls); user names may hold no whitespace at
  all, group names single inner spaces.

``canonical_name`` raises ``ValueError`` with a reason; callers turn it into
their own error (a 401 for a token, a policy problem, a 422 for a request).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

MAX_NAME = 256
SubjectKind = Literal["user", "group"]
SUBJECT_KINDS: tuple[SubjectKind, ...] = ("user", "group")
# Cc control, Cf format (zero-width, bidi), Zl line separator, Zp paragraph separator,
# Cs surrogates, Co private use, Cn unassigned.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def canonical_name(text: str, *, kind: SubjectKind = "user") -> str:
    """The canonical (NFC, stripped, case-folded) form of a user or group name; ``ValueError`` if unusable.

    Idempotent: ``canonical_name(canonical_name(x)) == canonical_name(x)``, so a name
    stored in canonical form (an access request, a policy written by an approval) is
    the same name when it is read back. Case folding can decompose (``ß\u0301`` folds
    to ``ss\u0301``) and lengthen (``ß`` to ``ss``), so the result is put in NFC again
    and the rules are checked on it, not on the input.
    """
    if not isinstance(text, str):
        raise TypeError("a name must be a string")
    name = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).strip().casefold())
    if not name:
        raise ValueError("the name is empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"the name is longer than {MAX_NAME} characters")
    for char in name:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            raise ValueError(f"the name holds the character U+{ord(char):04X}, which is not allowed in names")
        if char.isspace() and (kind == "user" or char != " "):
            raise ValueError("the name holds whitespace" if kind == "user" else "a group name may hold only spaces")
    if kind == "group" and "  " in name:
        raise ValueError("a group name may not hold two spaces in a row")
    return name


@dataclass(frozen=True, slots=True)
class Subject:
    """A policy subject: ``user:NAME`` or ``group:NAME`` with the name in canonical form."""

    kind: SubjectKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_subject(text: str) -> Subject:
    """Parse ``user:NAME`` / ``group:NAME`` into its canonical ``Subject``; ``ValueError`` if unusable."""
    if not isinstance(text, str):
        raise TypeError("a subject must be a string")
    kind, colon, name = text.partition(":")
    if not colon or kind not in SUBJECT_KINDS:
        raise ValueError("a subject looks like user:NAME or group:NAME")
    checked: SubjectKind = "user" if kind == "user" else "group"
    return Subject(checked, canonical_name(name, kind=checked))


def canonical_subject(text: str) -> str:
    """``parse_subject`` as the string compared everywhere: ``user:bob@example.com``."""
    return str(parse_subject(text))


def same_subject(left: str, right: str) -> bool:
    """Whether two subject texts name one subject (``user: Bob@X.org`` is ``user:bob@x.org``); False if unusable."""
    try:
        return parse_subject(left) == parse_subject(right)
    except (TypeError, ValueError):
        return False
