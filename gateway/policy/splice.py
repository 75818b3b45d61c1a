"""Text splicing of policy files: append or remove one block-list item, every other byte kept.

Where entries are comes from ruamel.yaml's round-trip loader (``lc.line``);
the splicer cuts the text into lines with ``split_lines``, which breaks
lines exactly where ruamel counts them. ruamel.yaml 0.19's ``Reader.forward``
advances ``line`` on LF and on a CR not followed by LF (so CRLF counts
once) and on nothing else: NEL (U+0085), LINE SEPARATOR (U+2028) and
PARAGRAPH SEPARATOR (U+2029) do not move the line count (its YAML 1.1
variant, ``forward_1_1``, which does, is never used), and VT, FF and
U+001C-U+001E are not printable YAML, so a file holding one never loads.
Python's ``str.splitlines`` breaks on all of those, which put the old
splicer's line numbers out of step with ruamel's after the first such
character and made it cut the wrong entry.

NEL, U+2028 and U+2029 are still breaks to ruamel's *scanner* (a comment
ends there and what follows is read as YAML), so a line holding one may
carry more structure than its indentation shows. The splicer does not try
to be clever about that: every edit is checked semantically afterwards
(``gateway.policy.editcheck``), and a splice that changed anything but the
intended entry is refused.

New items are written in flow style (``gateway.policy.values.flow``), with
the file's own line ending and the last item's indentation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from gateway.errors import PolicyInvalid
from gateway.policy.schema import GRANT_KEYS, REVOCATION_KEYS
from gateway.policy.values import comment_lines, flow

# Exactly the line breaks ruamel.yaml counts in Mark.line (see the module docstring).
LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Breaks to ruamel's scanner that it does not count as lines; blank-looking if alone on a line.
SCANNER_ONLY_BREAKS = "\x85\u2028\u2029"
_EMPTY_KEY = r"[ \t]*(['\"]?){key}\1[ \t]*:[ \t]*(?:#.*)?"


def split_lines(text: str) -> list[str]:
    """``text`` cut into lines (each with its line ending) exactly where ruamel.yaml counts a new line."""
    lines: list[str] = []
    start = 0
    for match in LINE_BREAK.finditer(text):
        lines.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        lines.append(text[start:])
    return lines


def body(line: str) -> str:
    """A line without its line ending."""
    match = LINE_BREAK.search(line)
    return line[: match.start()] if match else line


def ending(line: str) -> str:
    """The line ending of ``line`` ("" for a last line without one)."""
    return line[len(body(line)) :]


def _indent(line: str) -> int:
    text = body(line)
    return len(text) - len(text.lstrip(" "))


def _blank(line: str) -> bool:
    return not body(line).strip(" \t" + SCANNER_ONLY_BREAKS)


def _comment(line: str) -> bool:
    return body(line).lstrip(" \t").startswith("#")


def load_document(text: str) -> CommentedMap | None:
    """The round-trip document of a policy file, or None if it is not a YAML mapping."""
    try:
        return read_document(text, "the file")
    except PolicyInvalid:
        return None


def read_document(text: str, file: str) -> CommentedMap:
    """The round-trip document of a policy file; ``PolicyInvalid`` saying why when there is none."""
    try:
        document = YAML(typ="rt").load(text)
    except Exception as exc:  # noqa: BLE001 - whatever ruamel raises, the file cannot be edited
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise PolicyInvalid(f"{file} cannot be read as YAML ({reason}); fix it by hand first") from None
    if not isinstance(document, CommentedMap):
        raise PolicyInvalid(f"{file} is not a YAML mapping; fix it by hand first")
    return document


def decode(data: bytes) -> str:
    """Policy bytes as text (UTF-8, a BOM kept as part of the first line)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyInvalid("the policy file is not valid UTF-8; fix it by hand first") from None


def _line_ending(lines: list[str], near: int) -> str:
    """The line ending to write: that of line ``near``, else of the nearest line before (or after) it; else LF."""
    for index in [*range(near, -1, -1), *range(near + 1, len(lines))]:
        if 0 <= index < len(lines) and ending(lines[index]):
            return ending(lines[index])
    return "\n"


def item_span(lines: list[str], seq: CommentedSeq, index: int) -> tuple[int, int, int, int]:
    """Lines ``[start, end)`` of block list item ``index`` with its leading comments; dash and content columns."""
    first = int(seq.lc.item(index)[0])
    if not 0 <= first < len(lines):
        raise PolicyInvalid("cannot edit this entry: its lines cannot be found; edit the file by hand")
    dash = first
    while dash >= 0 and not body(lines[dash]).lstrip(" ").startswith("-"):
        dash -= 1
    if dash < 0 or dash < first - 1:
        raise PolicyInvalid("cannot edit this entry: its list item is laid out unusually; edit the file by hand")
    dash_col = _indent(lines[dash])
    after = body(lines[dash])[dash_col + 1 :]
    # With "-" alone (or with a comment) on its line, the entry's first key sets the column.
    content_col = dash_col + 1 + len(after) - len(after.lstrip(" ")) if dash == first else _indent(lines[first])
    end = dash + 1
    while end < len(lines) and (_blank(lines[end]) or _indent(lines[end]) > dash_col):
        end += 1
    while end - 1 > dash and _blank(lines[end - 1]):
        end -= 1
    start = dash
    while start - 1 >= 0 and _comment(lines[start - 1]):
        start -= 1
    return start, end, dash_col, content_col


def render_item(
    entry: dict[str, Any], keys: tuple[str, ...], *, dash_col: int, content_col: int, eol: str, comment: str | None
) -> str:
    """A block list item: a sanitised comment, then one ``key: flow-value`` line per set key."""
    if content_col <= dash_col:
        raise PolicyInvalid("cannot add an entry: the list's layout is unusual; edit the file by hand")
    out: list[str] = []
    if comment:
        out.extend(f"{' ' * dash_col}# {line}".rstrip(" ") + eol for line in comment_lines(comment))
    first = True
    for key in keys:
        if entry.get(key) is None:
            continue
        prefix = " " * dash_col + "-" + " " * (content_col - dash_col - 1) if first else " " * content_col
        out.append(f"{prefix}{key}: {flow(entry[key])}{eol}")
        first = False
    return "".join(out)


def _keys_of(key: str) -> tuple[str, ...]:
    return GRANT_KEYS if key == "grants" else REVOCATION_KEYS


def append_entry(data: bytes, key: str, entry: dict[str, Any], comment: str | None) -> bytes:
    """Append ``entry`` to the top-level list ``key``, leaving every other byte alone."""
    text = decode(data)
    lines = split_lines(text)
    document = load_document(text)
    if document is None or document.fa.flow_style():
        raise PolicyInvalid("the managed policy file is not a block-style YAML mapping; fix it by hand first")
    if lines and not ending(lines[-1]):
        lines[-1] += _line_ending(lines, len(lines) - 1)
    value = document.get(key)
    keys = _keys_of(key)
    if isinstance(value, CommentedSeq) and len(value) > 0 and not value.fa.flow_style():
        _, end, dash_col, content_col = item_span(lines, value, len(value) - 1)
        eol = _line_ending(lines, end - 1)
        lines.insert(
            end, render_item(entry, keys, dash_col=dash_col, content_col=content_col, eol=eol, comment=comment)
        )
    elif key in document and value is None:
        at = int(document.lc.key(key)[0])
        if not re.fullmatch(_EMPTY_KEY.format(key=key), body(lines[at])):
            raise PolicyInvalid(f"{key} is written as an explicit null in this file; edit it by hand")
        lines.insert(
            at + 1, render_item(entry, keys, dash_col=2, content_col=4, eol=_line_ending(lines, at), comment=comment)
        )
    elif key not in document:
        eol = _line_ending(lines, len(lines) - 1)
        lines.append(f"{key}:{eol}" + render_item(entry, keys, dash_col=2, content_col=4, eol=eol, comment=comment))
    else:
        raise PolicyInvalid(f"{key} in the managed file is not a non-empty block list; edit it by hand")
    return "".join(lines).encode("utf-8")


def matching_items(data: bytes, key: str, match: Callable[[Any], bool], file: str = "the file") -> list[int]:
    """Indexes of the items of top-level list ``key`` that ``match``; ``PolicyInvalid`` if the file cannot be read."""
    value = read_document(decode(data), file).get(key)
    if not isinstance(value, CommentedSeq):
        return []
    return [i for i, item in enumerate(value) if match(item)]


def remove_items(data: bytes, key: str, indexes: list[int]) -> bytes:
    """Remove items ``indexes`` of the block list ``key`` (with their leading comments)."""
    text = decode(data)
    document = load_document(text)
    value = document.get(key) if document is not None else None
    if not isinstance(value, CommentedSeq) or value.fa.flow_style():
        raise PolicyInvalid(f"{key} is not a block-style list in this file; edit it by hand")
    lines = split_lines(text)
    spans = sorted(item_span(lines, value, i)[:2] for i in indexes)
    for start, end in reversed(spans):
        del lines[start:end]
    return "".join(lines).encode("utf-8")


def remove_entries(data: bytes, key: str, match: Callable[[Any], bool]) -> tuple[bytes, int]:
    """Remove the items of list ``key`` that ``match``; return the new bytes and how many went."""
    indexes = matching_items(data, key, match)
    if not indexes:
        return data, 0
    return remove_items(data, key, indexes), len(indexes)
