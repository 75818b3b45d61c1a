"""Property tests of the policy editor (SECURITY rule 27): every edit is exactly the intended change, or none.

First ``split_lines`` against ruamel's own line counter (``Reader.line``) on
random text of every line break. Then the editor. Inputs: valid policy
files in odd layouts (``policygen``: every Unicode line break in comments,
quoted values and blank lines; LF, CRLF, CR and mixed files; BOMs; plain,
single- and double-quoted values with escapes; block and flow items and
lists) and random edits: add or delete a grant, revoke or lift (subjects in
other spellings, invalid subjects, reasons and comments holding line breaks
and controls). The oracle (``policyoracle``) is apart from the editor's own
check: after a successful edit the loaded policy is the policy before plus
or minus exactly the intended typed entry, and the file is the file before
with one contiguous block of lines inserted or removed (in the file's own
line ending); after a refusal every file is unchanged byte for byte, and the
refusal is the one the inputs call for.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from fuzzprofile import budget
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from policygen import PolicyFile, policy_files
from policyoracle import Edit, check_bytes, check_typed, edits, expected_refusal
from ruamel.yaml.reader import Reader, ReaderError

from gateway.errors import GatewayError
from gateway.policy.edit import EditResult, PolicyEditor, snapshot
from gateway.policy.files import load_policies
from gateway.policy.splice import split_lines

pytestmark = pytest.mark.fuzz

FILE = "a.yaml"
UNPRINTABLE_BREAKS = "\x0b\x0c\x1c\x1d\x1e"  # str.splitlines() breaks on them; YAML refuses them


@settings(max_examples=budget(300))
@given(st.text(alphabet="ab #'\"\r\n\x85\u2028\u2029\ufeff" + UNPRINTABLE_BREAKS, max_size=40))
def test_split_lines_puts_every_character_on_the_line_ruamel_counts(text: str) -> None:
    """At every character, split_lines' line number is ruamel's Reader.line (or ruamel refuses the text outright)."""
    try:
        reader = Reader(text)
    except ReaderError:
        assert any(char in UNPRINTABLE_BREAKS for char in text)
        return
    counted = []
    for _ in text:
        counted.append(reader.line)
        reader.forward()
    assert [number for number, line in enumerate(split_lines(text)) for _ in line] == counted


async def _no_audit(result: EditResult) -> None:
    del result


def _run(directory: Path, managed: str, edit: Edit) -> GatewayError | None:
    editor = PolicyEditor(directory, managed_file=managed, known_targets={"shop"})
    call = getattr(editor, edit.op)
    args = dict(edit.args)
    try:
        if edit.op == "lift_revocation":
            asyncio.run(call(args["subject"], args["target"], None, _no_audit))
        elif edit.op == "delete_grant":
            asyncio.run(call(args["name"], None, _no_audit))
        elif edit.op == "add_grant":
            asyncio.run(call(args["entry"], None, _no_audit, args["comment"]))
        else:
            asyncio.run(call(args["entry"], None, _no_audit))
    except GatewayError as exc:
        return exc
    return None


@settings(max_examples=budget(250))
@given(data=st.data(), policy=policy_files(), managed=st.sampled_from([FILE, "managed.yaml"]))
def test_every_edit_is_exactly_the_intended_change_or_nothing(
    data: st.DataObject, policy: PolicyFile, managed: str
) -> None:
    """On any valid file, an edit changes exactly the intended entry (typed and bytes) or is refused as it should be."""
    edit = data.draw(edits(policy))
    note(f"file: {policy.text!a}\nedit: {edit!a}\nmanaged: {managed}")
    with tempfile.TemporaryDirectory(prefix="policyedit-fuzz-") as scratch:
        directory = Path(scratch)
        (directory / FILE).write_bytes(policy.text.encode("utf-8"))
        before_files = snapshot(directory)
        before = load_policies(directory, known_targets={"shop"})
        outcome = _run(directory, managed, edit)
        after_files = snapshot(directory)
        expected = expected_refusal(edit, policy, appends_here=managed == FILE)
        note(f"outcome: {outcome!r}")
        event(f"{edit.op}: {expected.__name__ if expected else 'applied'}")
        if expected is not None:
            assert isinstance(outcome, expected)
            assert after_files == before_files
            return
        assert outcome is None
        after = load_policies(directory, known_targets={"shop"})
        check_typed(before, after, edit, managed)
        (changed,) = [name for name in after_files if after_files[name] != before_files.get(name)]
        if changed in before_files:
            check_bytes(before_files[changed], after_files[changed], edit.op)
