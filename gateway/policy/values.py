"""Values from admin requests on their way into a policy file: checked, then escaped (SECURITY rule 27).

Checked (``InvalidRequest``, 422 ``invalid_request``, before anything is
read or written):

* subjects go through ``gateway.identity.subjects``: ``user:NAME`` / ``group:NAME``
  with a sane, length-capped name, written in canonical form (NFC, stripped,
  case-folded), duplicates dropped;
* every other string is at most ``MAX_VALUE`` characters (``reason``:
  ``MAX_REASON``) and holds no control, format, line or paragraph separator,
  surrogate, private-use or unassigned character: such text is refused, not
  repaired, so what an admin sent is what the file says;
* numbers are finite and fit in 64 bits; only the keys of a grant or a
  revocation are accepted.

Policy rules (a known target, a grant name's pattern, an access level...)
stay with the loader, which every edit runs (422 ``policy_invalid``).

Escaped: values are written in YAML flow style with every string double
quoted and every character outside printable ASCII as a ``u`` (four hex
digits) or ``U`` (eight) escape. JSON's ``ensure_ascii`` is not enough: it writes a
character beyond U+FFFF as a surrogate pair, which YAML reads as two lone
surrogates. Comments are free text the gateway composes (an approval names
the requester and their reason), so they are repaired rather than refused:
each unsafe character (every line break YAML or Python knows among them)
becomes a space and each line is capped at ``MAX_COMMENT`` characters.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

from gateway.errors import InvalidRequest
from gateway.identity.subjects import canonical_subject
from gateway.policy.review import REVIEW_KEYS
from gateway.policy.schema import GRANT_KEYS, REVOCATION_KEYS

MAX_VALUE = 256
MAX_REASON = 500
MAX_COMMENT = 600
MAX_COMMENT_LINES = 8
# Cc control (CR, LF, NEL, VT, FF, FS/GS/RS, tab...), Cf format (BOM, bidi, zero-width),
# Zl U+2028, Zp U+2029, Cs surrogates, Co private use, Cn unassigned (U+FFFE, U+FFFF).
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_INT64 = 2**63


def unsafe_char(text: str) -> str | None:
    """The first character of ``text`` that must not reach a policy file as is, else None."""
    for char in text:
        if unicodedata.category(char) in UNSAFE_CATEGORIES:
            return char
    return None


def checked_text(value: object, what: str, limit: int = MAX_VALUE) -> str:
    """``value`` if it is a string short and plain enough for a policy value; ``InvalidRequest`` otherwise."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string")
    if len(value) > limit:
        raise InvalidRequest(f"{what} is longer than {limit} characters")
    bad = unsafe_char(value)
    if bad is not None:
        raise InvalidRequest(f"{what} holds the character U+{ord(bad):04X} (control or line break), which is refused")
    return value


def checked_subject(value: object, what: str = "subject") -> str:
    """The canonical ``user:...`` / ``group:...`` form of ``value``; ``InvalidRequest`` if it is not one."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string")
    try:
        return canonical_subject(value)
    except ValueError as exc:
        raise InvalidRequest(f"{what} {value[:64]!r}: {exc}") from None


def _number(value: object, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{what} must be a number or a string")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{what} must be finite")
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise InvalidRequest(f"{what} does not fit in 64 bits")
    return value


def _scalar(value: object, what: str) -> object:
    """A string or number of a policy entry, checked."""
    if isinstance(value, str):
        return checked_text(value, what)
    return _number(value, what)


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{what} must be a list of strings")
    return [checked_text(item, f"{what}[{i}]") for i, item in enumerate(value)]


def _unknown(entry: dict[str, Any], keys: tuple[str, ...], what: str) -> None:
    extra = sorted(str(key) for key in entry if key not in keys)
    if extra:
        raise InvalidRequest(f"{what}: unknown field(s) {', '.join(extra)} (known: {', '.join(keys)})")


def grant_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A grant from a request, checked and with canonical subjects; keys in file order, ``None`` dropped."""
    _unknown(entry, GRANT_KEYS, "grant")
    out: dict[str, Any] = {}
    for key in GRANT_KEYS:
        value = entry.get(key)
        if value is None:
            continue
        if key == "subjects":
            if not isinstance(value, list):
                raise InvalidRequest("subjects must be a list of user:NAME / group:NAME")
            subjects = [checked_subject(item, f"subjects[{i}]") for i, item in enumerate(value)]
            out[key] = list(dict.fromkeys(subjects))
        elif key == "tables":
            if not isinstance(value, dict):
                raise InvalidRequest("tables must be a mapping with allow and/or deny lists")
            _unknown(value, ("allow", "deny"), "tables")
            out[key] = {k: _strings(value[k], f"tables.{k}") for k in ("allow", "deny") if value.get(k) is not None}
        elif key == "functions":
            out[key] = _strings(value, key)
        elif key == "review":
            out[key] = _review(value)
        else:
            out[key] = _scalar(value, key)
    return out


def _review(value: object) -> dict[str, Any]:
    """A grant's ``review`` block from a request: its shape checked here, its rules by the loader."""
    if not isinstance(value, dict):
        raise InvalidRequest("review must be a mapping")
    _unknown(value, REVIEW_KEYS, "review")
    out: dict[str, Any] = {}
    for key in REVIEW_KEYS:
        item = value.get(key)
        if item is None:
            continue
        if key in {"writes", "ddl"}:
            if not isinstance(item, bool):
                raise InvalidRequest(f"review.{key} must be true or false")
            out[key] = item
        elif key == "reviewers":
            if not isinstance(item, list):
                raise InvalidRequest("review.reviewers must be a list of user:NAME / group:NAME")
            out[key] = list(dict.fromkeys(checked_subject(s, f"review.reviewers[{i}]") for i, s in enumerate(item)))
        elif key == "tables":
            out[key] = _strings(item, "review.tables")
        else:
            out[key] = _scalar(item, f"review.{key}")
    return out


def revocation_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A revocation from a request, checked, with its subject in canonical form."""
    _unknown(entry, REVOCATION_KEYS, "revocation")
    out: dict[str, Any] = {}
    for key in REVOCATION_KEYS:
        value = entry.get(key)
        if value is None:
            continue
        if key == "subject":
            out[key] = checked_subject(value)
        else:
            out[key] = checked_text(value, key, MAX_REASON if key == "reason" else MAX_VALUE)
    return out


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar of printable ASCII only."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in {'"', "\\"}:
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:  # noqa: PLR2004 - printable ASCII
            out.append(char)
        elif code <= 0xFFFF:  # noqa: PLR2004 - the largest \u escape
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def flow(value: object) -> str:
    """``value`` (JSON-like) in YAML flow style, on one line of printable ASCII."""
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        # repr of a finite float is read back by YAML 1.2 as the same float; ints are decimal.
        return repr(_number(value, "a value"))
    if isinstance(value, list):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{quoted(str(k))}: {flow(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    raise InvalidRequest(f"cannot write a {type(value).__name__} into a policy file")


def comment_lines(comment: str) -> list[str]:
    """The lines of a comment, split at the caller's LFs, each made safe for one YAML comment line."""
    lines: list[str] = []
    for raw in comment.split("\n")[:MAX_COMMENT_LINES]:
        text = "".join(" " if unicodedata.category(c) in UNSAFE_CATEGORIES else c for c in raw).rstrip(" ")
        if len(text) > MAX_COMMENT:
            text = text[: MAX_COMMENT - 3] + "..."
        lines.append(text)
    return lines
