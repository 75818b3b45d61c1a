"""The policy editor against hostile text (SECURITY rule 27): line breaks, escaping, the semantic backstop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from gateway.errors import InvalidRequest, NotFound, PolicyInvalid
from gateway.policy.edit import EditResult, PolicyEditor, snapshot
from gateway.policy.editcheck import Intent, check_edit
from gateway.policy.files import load_policies
from gateway.policy.splice import body, split_lines

# Every character Python's str.splitlines() breaks on, and CRLF.
LINE_BREAKS = ["\n", "\r\n", "\r", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
SCANNER_ONLY = {"\x85", "\u2028", "\u2029"}  # breaks to ruamel's scanner, not counted in Mark.line
EVIL = "eve\u2028#"  # a user name that made the old editor cut the wrong entry

# managed.yaml as the old editor wrote it after approving EVIL's request: the comment and a JSON
# string both hold a raw U+2028, which str.splitlines() counts as a line and ruamel does not. (The
# subject the old editor wrote held it too; a name with U+2028 is now refused by the loader itself,
# so here a free-text reason carries it, which still loads.)
ATTACK = (
    "version: 1\n"
    "grants:\n"
    f"  # access request r1 by {EVIL}, approved by admin@example.com at 2026-01-01T00:00:00+00:00\n"
    "  # reason: x\n"
    '  - name: "r1"\n'
    '    subjects: ["user:eve@example.com"]\n'
    '    target: "shop"\n'
    '    access: "read"\n'
    '    db_user: "gw_reader"\n'
    "revocations:\n"
    '  - subject: "user:alice@example.com"\n'
    '    target: "*"\n'
    '  - subject: "user:bob@example.com"\n'
    '    target: "*"\n'
    '  - subject: "user:carol@example.com"\n'
    '    target: "*"\n'
    f'    reason: "asked by {EVIL}"\n'
)


async def _no_audit(result: EditResult) -> None:
    del result


def _editor(directory: Path) -> PolicyEditor:
    return PolicyEditor(directory, known_targets={"shop"})


def _doc(char: str, where: str) -> str:
    """Two revocations, with ``char`` in a comment, a quoted value or a blank line before the second."""
    first = {
        "comment": f'- subject: "user:a"\n  target: "*"\n# note{char}\n',
        "dq": f'- subject: "user:a"\n  target: "*"\n  reason: "x{char}y"\n',
        "sq": f"- subject: 'user:a'\n  target: '*'\n  reason: 'x{char}y'\n",
        "blank": f'- subject: "user:a"\n  target: "*"\n{char}\n',
    }[where]
    return f'version: 1\nrevocations:\n{first}- subject: "user:bob"\n  target: "*"\n'


@pytest.mark.parametrize("where", ["comment", "dq", "sq", "blank"])
@pytest.mark.parametrize("char", LINE_BREAKS, ids=[f"U+{ord(c[-1]):04X}{'-CRLF' * (len(c) > 1)}" for c in LINE_BREAKS])
def test_split_lines_breaks_exactly_where_ruamel_counts_lines(tmp_path: Path, char: str, where: str) -> None:
    """For every line break, the line split_lines gives for an entry is the line ruamel reports; else refused."""
    text = _doc(char, where)
    (tmp_path / "managed.yaml").write_text(text, encoding="utf-8", newline="")
    before = snapshot(tmp_path)
    try:
        seq = YAML(typ="rt").load(text)["revocations"]
    except Exception:  # noqa: BLE001 - ruamel refuses VT, FF and U+001C-U+001E anywhere: then so must the editor
        with pytest.raises(PolicyInvalid):
            asyncio.run(_editor(tmp_path).lift_revocation("user:bob", None, None, _no_audit))
        assert snapshot(tmp_path) == before
        return
    lines = split_lines(text)
    assert "".join(lines) == text
    for index in range(len(seq)):
        line, column = seq.lc.item(index)
        assert body(lines[line])[column:].startswith("subject:")
    if char in SCANNER_ONLY:  # the old splitter's line numbers are off here (the bug this test guards)
        old = text.splitlines(keepends=True)
        assert not old[seq.lc.item(1)[0]].lstrip(" -").startswith("subject")
    asyncio.run(_editor(tmp_path).lift_revocation("user:bob", None, None, _no_audit))
    assert [r.subject for r in load_policies(tmp_path).revocations] == ["user:a"]


def test_the_attack_file_lift_bob_removes_only_bob(tmp_path: Path) -> None:
    """The file the old editor left behind: lifting bob's revocation removes bob's lines and nothing else."""
    (tmp_path / "managed.yaml").write_text(ATTACK, encoding="utf-8")
    result = asyncio.run(_editor(tmp_path).lift_revocation("user:bob@example.com", None, None, _no_audit))
    assert [r.subject for r in load_policies(tmp_path).revocations] == [
        "user:alice@example.com",
        "user:carol@example.com",
    ]
    assert (tmp_path / "managed.yaml").read_text(encoding="utf-8") == ATTACK.replace(
        '  - subject: "user:bob@example.com"\n    target: "*"\n', ""
    )
    assert [line for line in result.diff.splitlines() if line.startswith(("-", "+"))][2:] == [
        '-  - subject: "user:bob@example.com"',
        '-    target: "*"',
    ]


def test_the_semantic_check_refuses_a_wrong_splice() -> None:
    """The backstop: the old splicer's output (alice's lines cut for bob's), a changed value, a swap: all refused."""
    files = {"managed.yaml": ATTACK.encode()}
    bob = Intent("managed.yaml", "revocations", removed=1)
    right = ATTACK.replace('  - subject: "user:bob@example.com"\n    target: "*"\n', "")
    wrong = ATTACK.replace('  - subject: "user:alice@example.com"\n    target: "*"\n', "")
    changed = right.replace('alice@example.com"\n    target: "*"', 'alice@example.com"\n    target: "shop"')
    swapped = ATTACK.replace('"user:bob@example.com"', '"user:mallory@example.com"')
    for candidate in (wrong, changed, swapped):
        with pytest.raises(PolicyInvalid, match="nothing was written"):
            check_edit(files, {"managed.yaml": candidate.encode()}, bob, {"shop"})
    check_edit(files, {"managed.yaml": right.replace("# reason: x", "# another comment").encode()}, bob, {"shop"})


@pytest.mark.parametrize("bad", ["\u2028", "\u2029", "\x85", "\n", "\r", "\x00", "\u200b", "\x1e", " x"])
def test_request_values_that_could_break_out_are_refused(tmp_path: Path, bad: str) -> None:
    """A subject or reason holding a line break, control or format character is refused (422), nothing written."""
    (tmp_path / "managed.yaml").write_text(ATTACK, encoding="utf-8")
    before = snapshot(tmp_path)
    editor = _editor(tmp_path)
    grant = {"name": "g", "subjects": [f"user:a{bad}b"], "target": "shop", "access": "read", "db_user": "gw"}
    with pytest.raises(InvalidRequest, match="subjects"):
        asyncio.run(editor.add_grant(grant, None, _no_audit))
    if bad != " x":  # a space is fine in a reason
        with pytest.raises(InvalidRequest, match="reason"):
            asyncio.run(
                editor.add_revocation({"subject": "user:z", "target": "*", "reason": f"a{bad}"}, None, _no_audit)
            )
    with pytest.raises(InvalidRequest, match="longer than 500"):
        asyncio.run(editor.add_revocation({"subject": "user:z", "target": "*", "reason": "r" * 501}, None, _no_audit))
    assert snapshot(tmp_path) == before


def test_values_are_written_as_escaped_ascii_and_read_back_canonical(tmp_path: Path) -> None:
    """Non-ASCII names are escaped (astral ones in eight hex digits, not surrogate pairs), read back canonical."""
    editor = _editor(tmp_path)
    subjects = ["user:José@Example.COM", "group:Σ😀", "user:JOSÉ@example.com"]
    entry = {"name": "uni", "subjects": subjects, "target": "shop", "access": "read", "db_user": "gw"}
    result = asyncio.run(editor.add_grant(entry, None, _no_audit))
    data = (tmp_path / "managed.yaml").read_bytes()
    assert data.isascii()
    assert b'subjects: ["user:jos\\u00e9@example.com", "group:\\u03c3\\U0001f600"]' in data
    (grant,) = load_policies(tmp_path).grants
    assert grant.subjects == ("user:josé@example.com", "group:\u03c3😀")
    assert result.detail["grant"]["subjects"] == list(grant.subjects)


def test_a_comment_with_every_line_break_stays_on_its_lines(tmp_path: Path) -> None:
    """Every break character in an approval comment becomes a space; only the caller's LF starts a comment line."""
    editor = _editor(tmp_path)
    noise = "".join(c for c in LINE_BREAKS if "\n" not in c) + "\ufeff\t\x00"
    entry = {"name": "c1", "subjects": ["user:x"], "target": "shop", "access": "read", "db_user": "gw"}
    asyncio.run(editor.add_grant(entry, None, _no_audit, f"by {EVIL}{noise}end\nreason: {noise}- name: fake"))
    text = (tmp_path / "managed.yaml").read_text(encoding="utf-8")
    assert text.splitlines() == [line.rstrip("\n") for line in split_lines(text)]
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) == 2
    assert comments[1].endswith("- name: fake")
    assert [g.name for g in load_policies(tmp_path).grants] == ["c1"]


def test_lift_matches_the_canonical_subject_and_only_one_entry(tmp_path: Path) -> None:
    """A request in another spelling lifts the one revocation of that person; two of them on one target: refused."""
    text = ATTACK.replace("user:bob@example.com", "user:BOB@Example.com")
    (tmp_path / "managed.yaml").write_text(text, encoding="utf-8")
    result = asyncio.run(_editor(tmp_path).lift_revocation("user:bob@EXAMPLE.com ", "*", None, _no_audit))
    assert result.detail == {"subject": "user:bob@example.com", "target": "*"}
    assert "bob" not in (tmp_path / "managed.yaml").read_text(encoding="utf-8").lower()
    twice = ATTACK + '  - subject: "user:Bob@example.com"\n    target: "*"\n'
    (tmp_path / "managed.yaml").write_text(twice, encoding="utf-8")
    before = snapshot(tmp_path)
    with pytest.raises(PolicyInvalid, match="several entries"):
        asyncio.run(_editor(tmp_path).lift_revocation("user:bob@example.com", "*", None, _no_audit))
    with pytest.raises(NotFound):
        asyncio.run(_editor(tmp_path).lift_revocation("user:bob@example.com", "shop", None, _no_audit))
    with pytest.raises(PolicyInvalid, match="already revoked"):
        asyncio.run(
            _editor(tmp_path).add_revocation({"subject": "user:BOB@example.com", "target": "*"}, None, _no_audit)
        )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_files_with_other_line_endings_are_edited_in_their_own(tmp_path: Path, eol: str) -> None:
    """A CRLF or CR file gets new lines in its own ending, and removing them restores it byte for byte."""
    original = ATTACK.replace(EVIL, "eve").replace("\n", eol).encode()
    (tmp_path / "managed.yaml").write_bytes(original)
    editor = _editor(tmp_path)
    asyncio.run(editor.add_revocation({"subject": "user:dan@example.com", "target": "shop"}, None, _no_audit))
    added = (tmp_path / "managed.yaml").read_bytes()
    assert added.count(b"\n") == original.count(b"\n") + (2 if eol == "\r\n" else 0)
    assert added.count(b"\r") == original.count(b"\r") + 2
    asyncio.run(editor.lift_revocation("user:dan@example.com", None, None, _no_audit))
    assert (tmp_path / "managed.yaml").read_bytes() == original


def test_a_broken_entry_can_still_be_removed(tmp_path: Path) -> None:
    """While the policy is invalid (a grant names an unknown target) the broken grant can be deleted."""
    broken = ATTACK.replace(EVIL, "eve").replace('target: "shop"', 'target: "gone"')
    (tmp_path / "managed.yaml").write_text(broken, encoding="utf-8")
    asyncio.run(_editor(tmp_path).delete_grant("r1", None, _no_audit))
    assert load_policies(tmp_path, known_targets={"shop"}).grants == ()


def test_an_explicit_null_list_is_refused_clearly(tmp_path: Path) -> None:
    """``grants: null`` cannot take an appended item: a clear 422, the file unchanged."""
    (tmp_path / "managed.yaml").write_text("version: 1\ngrants: null\n", encoding="utf-8")
    entry = {"name": "n", "subjects": ["user:x"], "target": "shop", "access": "read", "db_user": "gw"}
    with pytest.raises(PolicyInvalid, match="explicit null"):
        asyncio.run(_editor(tmp_path).add_grant(entry, None, _no_audit))
    assert (tmp_path / "managed.yaml").read_text(encoding="utf-8") == "version: 1\ngrants: null\n"
