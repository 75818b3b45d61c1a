r"""Hypothesis strategies: valid policy files laid out in every way the editor may meet.

A generated file has one line ending (LF, CRLF or CR) or a mix, maybe a BOM,
maybe no final line break; comments and quoted values hold every Unicode
line break YAML loads (NEL, U+2028, U+2029: raw, or escaped as ``\N``,
``\L``, ``\P``), blank lines hold them too; values are plain, single- or
double-quoted (with ``\u`` / ``\U`` escapes); grants are block mappings
(first key on the dash line, or the dash alone on its line, with or without
a comment) or flow mappings; subject lists are flow or block; lists sit at
column 0 or indented; top-level keys come in any order. ``PolicyFile``
records what was generated, so a test knows which edits are possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from gateway.identity.subjects import canonical_subject

__all__ = ["SCANNER_BREAKS", "PolicyFile", "policy_files", "subject_names"]

SCANNER_BREAKS = "\x85\u2028\u2029"  # line breaks to ruamel's scanner that Mark.line does not count
EOLS = ("\n", "\r\n", "\r")
DB_USERS = ("gw_reader", "gw_writer", "gw_ddl")
_NAME_CHARS = "abcXYZ019._-@éßΣЖ😀"
_TEXT_CHARS = "ab Z9#:'\",{}[]-é😀\\" + SCANNER_BREAKS


@dataclass
class PolicyFile:
    """A generated file and what it holds."""

    text: str
    grant_names: list[str] = field(default_factory=list)
    revoked: list[tuple[str, str]] = field(default_factory=list)  # (subject as written, target)
    flow_lists: set[str] = field(default_factory=set)  # top-level lists written in flow style


def subject_names() -> st.SearchStrategy[str]:
    """User or group names that canonicalise (mixed case, non-ASCII, astral characters)."""
    first = st.sampled_from([c for c in _NAME_CHARS if c not in "@.-"])
    return st.builds(str.__add__, first, st.text(_NAME_CHARS, max_size=9))


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws (and False when shrinking: the common case comes first)."""
    return draw(st.sampled_from([False] * (one_in - 1) + [True]))


def _dq(draw: st.DrawFn, text: str) -> str:
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\u2028":
            out.append(draw(st.sampled_from(["\u2028", "\\L", "\\u2028"])))
        elif char == "\u2029":
            out.append(draw(st.sampled_from(["\u2029", "\\P"])))
        elif char == "\x85":
            out.append(draw(st.sampled_from(["\\N", "\\x85"])))  # a raw NEL folds to a space
        elif ord(char) > 0x7F and draw(st.booleans()):
            out.append(f"\\U{ord(char):08x}" if ord(char) > 0xFFFF else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out) + '"'


def _scalar(draw: st.DrawFn, text: str, *, plain_ok: bool = True) -> str:
    """``text`` as a YAML scalar in a random style that reads back as the same string."""
    styles = ["dq"]
    if all(c.isalnum() or c in "@._-:*" for c in text) and text[:1].isalpha() and plain_ok:
        styles.append("plain")
    if not any(c in SCANNER_BREAKS for c in text):
        styles.append("sq")
    style = draw(st.sampled_from(styles))
    if style == "plain":
        return text
    if style == "sq":
        return "'" + text.replace("'", "''") + "'"
    return _dq(draw, text)


def _comment(draw: st.DrawFn) -> str:
    """``# text``, maybe several comments joined by scanner-only breaks (each break followed by ``#``)."""
    parts = draw(st.lists(st.text(_TEXT_CHARS.replace(SCANNER_BREAKS, ""), max_size=8), min_size=1, max_size=3))
    joined = "# " + parts[0]
    for part in parts[1:]:
        joined += draw(st.sampled_from(SCANNER_BREAKS)) + draw(st.sampled_from(["", " "])) + "# " + part
    if draw(st.booleans()):
        joined += draw(st.sampled_from(SCANNER_BREAKS))
    return joined


def _extra(draw: st.DrawFn, indent: int) -> list[str]:
    """Nothing, a comment line, a blank line or a line of scanner-only breaks."""
    kind = draw(st.sampled_from(["none", "none", "comment", "blank", "breaks"]))
    if kind == "comment":
        return [" " * indent + _comment(draw)]
    if kind == "blank":
        return [" " * draw(st.integers(0, 3))]
    if kind == "breaks":
        return [draw(st.text(SCANNER_BREAKS, min_size=1, max_size=2))]
    return []


def _tail(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", "", "  " + _comment(draw)]))


def _mapping_lines(draw: st.DrawFn, fields: list[tuple[str, str]], dash_col: int) -> list[str]:
    """A list item holding ``fields`` (key, YAML text), in block style."""
    gap = draw(st.integers(1, 3))
    content = dash_col + 1 + gap
    lines: list[str] = []
    if _rarely(draw, 5):  # the dash alone, maybe with a comment
        lines.append(" " * dash_col + "-" + draw(st.sampled_from(["", " " + _comment(draw)])))
        first_prefix = " " * content
    else:
        first_prefix = " " * dash_col + "-" + " " * gap
    for index, (key, value) in enumerate(fields):
        prefix = first_prefix if index == 0 else " " * content
        if index:
            lines.extend(_extra(draw, content))
        if value.startswith("\n"):  # a block list under the key
            lines.append(f"{prefix}{key}:{_tail(draw)}")
            lines.extend(" " * (content + 2) + item for item in value[1:].split("\n"))
        else:
            lines.append(f"{prefix}{key}: {value}{_tail(draw)}")
    return lines


def _subjects(draw: st.DrawFn, subjects: list[str]) -> str:
    if draw(st.booleans()):
        return "[" + ", ".join(_scalar(draw, s) for s in subjects) + "]"
    return "\n" + "\n".join("- " + _scalar(draw, s) for s in subjects)


def _grant(draw: st.DrawFn, name: str) -> list[tuple[str, str]]:
    subjects = [f"{draw(st.sampled_from(['user', 'group']))}:{draw(subject_names())}" for _ in range(2)]
    fields = [
        ("name", _scalar(draw, name)),
        ("subjects", _subjects(draw, subjects)),
        ("target", _scalar(draw, "shop")),
        ("access", _scalar(draw, draw(st.sampled_from(["read", "write", "ddl"])))),
        ("db_user", _scalar(draw, draw(st.sampled_from(DB_USERS)))),
    ]
    optional = {
        "max_rows": str(draw(st.integers(1, 10**6))),
        "statement_timeout": draw(st.sampled_from(["30s", "'5m'", "2.5", '"250ms"'])),
        "expires": draw(st.sampled_from(["2099-01-01T00:00:00Z", '"2099-06-01T12:00:00+02:00"'])),
        "tables": draw(st.sampled_from(["{allow: [shop.*]}", '{"deny": ["shop.secret_*"]}'])),
    }
    fields += [(key, value) for key, value in optional.items() if draw(st.booleans())]
    return draw(st.permutations(fields))


def _revocation(draw: st.DrawFn, subject: str, target: str) -> list[tuple[str, str]]:
    fields = [("subject", _scalar(draw, subject)), ("target", _scalar(draw, target))]
    if draw(st.booleans()):
        fields.append(("reason", _scalar(draw, draw(st.text(_TEXT_CHARS, min_size=1, max_size=12)), plain_ok=False)))
    if draw(st.booleans()):
        fields.append(("until", '"2099-01-01T00:00:00Z"'))
    return draw(st.permutations(fields))


def _flow_item(fields: list[tuple[str, str]]) -> str:
    parts = []
    for key, value in fields:
        text = value
        if value.startswith("\n"):  # a block subject list, turned into flow
            text = "[" + ", ".join(line.removeprefix("- ") for line in value[1:].split("\n")) + "]"
        parts.append(f"{key}: {text}")
    return "{" + ", ".join(parts) + "}"


def _section(draw: st.DrawFn, key: str, items: list[list[tuple[str, str]]], policy: PolicyFile) -> list[str]:
    """A top-level list: block items (or flow items inside it), an empty key, or a whole flow list."""
    if not items:
        return draw(st.sampled_from([[], [f"{key}:{_tail(draw)}"]]))
    if _rarely(draw, 8) and all(not v.startswith("\n") for f in items for _, v in f):
        policy.flow_lists.add(key)
        return [f"{key}: [" + ", ".join(_flow_item(f) for f in items) + "]"]
    dash_col = draw(st.sampled_from([0, 2, 4]))
    lines = [f"{key}:{_tail(draw)}"]
    for fields in items:
        lines.extend(_extra(draw, dash_col))
        if _rarely(draw, 6):
            lines.append(" " * dash_col + "- " + _flow_item(fields) + _tail(draw))
        else:
            lines.extend(_mapping_lines(draw, fields, dash_col))
    return lines


@st.composite
def policy_files(draw: st.DrawFn, name_prefix: str = "g", subject_pool: tuple[str, ...] = ()) -> PolicyFile:
    """A valid policy file (target ``shop``) in a random layout; ``subject_pool`` seeds revoked subjects."""
    policy = PolicyFile(text="")
    names = draw(st.lists(st.integers(0, 999), max_size=4, unique=True))
    policy.grant_names = [f"{name_prefix}{n}" for n in names]
    grants = [_grant(draw, name) for name in policy.grant_names]
    pool = list(subject_pool) or [f"user:{draw(subject_names())}" for _ in range(3)]
    revocations: list[list[tuple[str, str]]] = []
    for _ in range(draw(st.integers(0, 4))):
        subject, target = draw(st.sampled_from(pool)), draw(st.sampled_from(["*", "shop"]))
        variant = draw(
            st.sampled_from([subject, subject.upper().replace("USER:", "user:").replace("GROUP:", "group:")])
        )
        if (canonical_subject(variant), target) in {(canonical_subject(s), t) for s, t in policy.revoked}:
            continue  # one revocation per person and target: two spellings of one would be a duplicate
        policy.revoked.append((variant, target))
        revocations.append(_revocation(draw, variant, target))
    sections: list[list[str]] = [["version: 1" + _tail(draw)], _section(draw, "grants", grants, policy)]
    sections.append(_section(draw, "revocations", revocations, policy))
    if draw(st.booleans()):
        sections.append(["roles:", "  admin: [" + _scalar(draw, "group:db-admins") + "]"])
    lines = [line for section in draw(st.permutations(sections)) for line in [*_extra(draw, 0), *section]]
    eol = draw(st.sampled_from([*EOLS, "mixed"]))
    ends = [draw(st.sampled_from(EOLS)) if eol == "mixed" else eol for _ in lines]
    text = "".join(line + end for line, end in zip(lines, ends, strict=True))
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    policy.text = ("\ufeff" if _rarely(draw, 6) else "") + text
    return policy
