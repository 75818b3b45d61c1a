"""The policy editor: byte-for-byte splicing, validation, revisions, atomic writes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.errors import NotFound, PolicyInvalid, PreconditionFailed
from gateway.policy.edit import EditResult, PolicyEditor, append_entry, remove_entries, revision_of, snapshot
from gateway.policy.files import load_policies

COMMENTED = """\
# Shop access, reviewed in git.   (trailing spaces kept)
version: 1
roles:
  admin: ['group:db-admins']   # single quotes stay single
grants:
  # readers of the shop
  - name: shop-read
    subjects: ["group:analysts"]   # who
    target: shop
    access: read
    db_user: gw_reader

  # the on-call engineers
  - name: shop-write
    subjects:
      - group:oncall
    target: shop
    access: write
    db_user: gw_writer
    expires: 2099-01-01T00:00:00Z
# a comment between sections
revocations:
- subject: "user:bob@example.com"
  target: "*"
  reason: >-
    left the
    team
# trailing comment
"""


def _entry(name: str) -> dict[str, object]:
    return {
        "name": name,
        "subjects": ["user:x@example.com"],
        "target": "shop",
        "access": "read",
        "db_user": "gw_reader",
    }


def _write(directory: Path, text: str = COMMENTED) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def _no_audit(result: EditResult) -> None:
    del result


def test_append_then_remove_restores_every_byte() -> None:
    """Adding a grant only adds lines; removing it again gives the original file byte for byte."""
    original = COMMENTED.encode()
    added = append_entry(original, "grants", _entry("new-one"), "approved by admin@example.com")
    old_lines, new_lines = original.decode().splitlines(), added.decode().splitlines()
    assert [line for line in new_lines if line not in old_lines] == [
        "  # approved by admin@example.com",
        '  - name: "new-one"',
        '    subjects: ["user:x@example.com"]',
        '    target: "shop"',
        '    access: "read"',
        '    db_user: "gw_reader"',
    ]
    restored, count = remove_entries(added, "grants", lambda item: item.get("name") == "new-one")
    assert count == 1
    assert restored == original


def test_remove_middle_entry_keeps_everything_else() -> None:
    """Removing one grant removes exactly its lines (and its own leading comment), nothing else."""
    original = COMMENTED.encode()
    new, count = remove_entries(original, "grants", lambda item: item.get("name") == "shop-read")
    assert count == 1
    expected = COMMENTED.replace(
        '  # readers of the shop\n  - name: shop-read\n    subjects: ["group:analysts"]   # who\n'
        "    target: shop\n    access: read\n    db_user: gw_reader\n",
        "",
    )
    assert new.decode() == expected


def test_append_to_offset_zero_list_and_to_missing_list() -> None:
    """A list written without indentation gets items in the same layout; a missing list is created."""
    added = append_entry(COMMENTED.encode(), "revocations", {"subject": "user:eve@example.com", "target": "shop"}, None)
    assert added.decode().endswith(
        '    team\n- subject: "user:eve@example.com"\n  target: "shop"\n# trailing comment\n'
    )
    created = append_entry(b"version: 1\n", "grants", _entry("g1"), None)
    assert created.decode().startswith('version: 1\ngrants:\n  - name: "g1"\n')


def test_editor_validates_and_refuses_stale_revisions(tmp_path: Path) -> None:
    """An invalid edit and a stale If-Match both leave every file untouched; a good edit loads."""
    path = _write(tmp_path)
    editor = PolicyEditor(tmp_path, known_targets={"shop"})
    before = revision_of(snapshot(tmp_path))
    bad = _entry("bad") | {"target": "nowhere"}
    with pytest.raises(PolicyInvalid, match="nowhere"):
        asyncio.run(editor.add_grant(bad, before, _no_audit))
    with pytest.raises(PreconditionFailed):
        asyncio.run(editor.add_grant(_entry("ok"), "0" * 64, _no_audit))
    with pytest.raises(NotFound):
        asyncio.run(editor.delete_grant("absent", before, _no_audit))
    assert path.read_text(encoding="utf-8") == COMMENTED
    assert not (tmp_path / "managed.yaml").exists()
    result = asyncio.run(editor.add_grant(_entry("ok"), before, _no_audit))
    assert result.previous_revision == before
    assert load_policies(tmp_path).revision == result.revision
    assert '+  - name: "ok"' in result.diff
    assert (tmp_path / "managed.yaml").read_text(encoding="utf-8").startswith("version: 1\ngrants:\n")
    assert path.read_text(encoding="utf-8") == COMMENTED


def test_editor_duplicate_name_is_invalid(tmp_path: Path) -> None:
    """A grant name already used in another file is refused (names are unique across files)."""
    _write(tmp_path)
    editor = PolicyEditor(tmp_path, known_targets={"shop"})
    with pytest.raises(PolicyInvalid, match="duplicate grant name"):
        asyncio.run(editor.add_grant(_entry("shop-read"), None, _no_audit))


def test_editor_audit_failure_writes_nothing(tmp_path: Path) -> None:
    """When the audit record cannot be written the file is not changed (fail closed)."""
    path = _write(tmp_path)
    editor = PolicyEditor(tmp_path, known_targets={"shop"})

    async def failing(result: EditResult) -> None:
        raise RuntimeError("audit down")

    with pytest.raises(RuntimeError):
        asyncio.run(editor.delete_grant("shop-write", None, failing))
    assert path.read_text(encoding="utf-8") == COMMENTED


def test_lift_revocation_in_another_file(tmp_path: Path) -> None:
    """Lifting edits whichever file holds the revocation, matching the subject case-insensitively."""
    path = _write(tmp_path)
    editor = PolicyEditor(tmp_path, known_targets={"shop"})
    result = asyncio.run(editor.lift_revocation("user:BOB@example.com", None, None, _no_audit))
    assert result.file == "policy.yaml"
    assert "bob" not in path.read_text(encoding="utf-8")
    assert "# trailing comment" in path.read_text(encoding="utf-8")


def test_watcher_sees_a_same_size_rewrite_within_one_clock_tick(tmp_path: Path) -> None:
    """A rewrite with the same size and the same mtime (coarse file clocks) is still picked up."""
    from gateway.policy.store import PolicyStore  # noqa: PLC0415 - only this test needs the live store

    path = _write(tmp_path)
    store = PolicyStore(tmp_path, {"shop"})
    first = store.load().revision
    stamp = path.stat().st_mtime_ns
    path.write_text(COMMENTED.replace("shop-read", "shop-reed"), encoding="utf-8")
    os.utime(path, ns=(stamp, stamp))
    assert store.poll() is True
    assert store.current.revision != first
    assert any(g.name == "shop-reed" for g in store.current.grants)
    assert store.poll() is False
