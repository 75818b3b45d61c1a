"""``gateway policy export`` and ``gateway policy import``: the state store's managed documents as YAML files.

With ``state.store: mariadb`` the admin API and approvals write managed policy
documents in the store, while the base files stay the reviewed source in git.
``export`` writes the managed documents, byte for byte, as files of their names
into a directory (for a pull request) and prints the store's revision;
``import`` loads reviewed files back as the new set of managed documents, in
one transaction, as a new revision, after checking that they merge cleanly
with the base files (every problem printed as ``state:<name>:<line>``).
``--if-revision`` makes the import conditional: refused if anything was
edited since that export; ``--base DIR`` checks against other base files
(the ones about to be rolled out, e.g. without a file moving into the
store). Both talk to the store directly, so they are for operators who hold
its credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import getpass
import socket
import sys
from pathlib import Path

from gateway.audit.caps import RecordCaps
from gateway.audit.factory import open_audit_store
from gateway.audit.log import AuditLog
from gateway.audit.records import PolicyEditRecord, Who
from gateway.clock import utcnow
from gateway.errors import AuditUnavailable, ConfigError, GatewayError, PolicyFileError
from gateway.policy.files import MAX_FILE_BYTES, load_merged
from gateway.policy.types import PolicySet
from gateway.requestids import RequestIds
from gateway.settings import Settings, load_settings
from gateway.state.source import LABEL
from gateway.state.store import DOCUMENT_NAME, Documents, StateStore


def _store(settings: Settings) -> StateStore:
    if settings.state.store != "mariadb" or settings.state.mariadb is None:
        raise ConfigError("policy export and import need state.store: mariadb (embedded policies are plain files)")
    return StateStore.open(settings.state.mariadb)


def cmd_export(args: argparse.Namespace) -> int:
    """Write every managed document into ``--out`` (refusing to overwrite a different file unless ``--force``)."""
    store = _store(load_settings(args.config))
    try:
        revision, documents = store.documents()
    finally:
        store.close()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, content in sorted(documents.items()):
        path = out / name
        if path.exists() and path.read_bytes() != content and not args.force:
            print(f"{path} exists and differs; nothing overwritten (use --force)", file=sys.stderr)
            return 1
    for name, content in sorted(documents.items()):
        (out / name).write_bytes(content)
    print(f"exported {len(documents)} managed document(s) at revision {revision} to {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Replace the managed documents with the YAML files of ``directory``, checked first, as a new revision."""
    settings = load_settings(args.config)
    documents: dict[str, bytes] = {}
    for path in sorted(args.directory.iterdir()):
        if path.name.startswith(".") or path.suffix not in {".yaml", ".yml"} or not path.is_file():
            continue
        if not DOCUMENT_NAME.fullmatch(path.name) or path.stat().st_size > MAX_FILE_BYTES:
            print(
                f"{path}: not importable (name as admin.managed_file, at most {MAX_FILE_BYTES} bytes)", file=sys.stderr
            )
            return 1
        documents[path.name] = path.read_bytes()
    try:
        base = args.base or settings.policies_dir
        policy = load_merged(base, documents, known_targets=settings.targets.keys(), label=LABEL)
    except PolicyFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); nothing imported", file=sys.stderr)
        return 1
    try:
        revision = asyncio.run(_import_audited(settings, documents, args.if_revision, policy))
    except GatewayError as exc:
        print(f"{exc.code}: {exc.detail}; nothing imported", file=sys.stderr)
        return 1
    print(f"imported {len(documents)} document(s) as revision {revision} (policy {policy.revision[:12]})")
    return 0


def _audit_log(settings: Settings) -> AuditLog:
    """The audit log the config names; an embedded SQLite log only where it already is (never a new one)."""
    audit = settings.audit
    if audit.store == "sqlite" and not audit.path.is_file():
        raise AuditUnavailable(
            f"the audit log {audit.path} is not on this machine: run the import where the gateway's audit log is, "
            "or use the shared audit store (audit.store: mariadb); an import is never left unaudited"
        )
    return AuditLog(open_audit_store(audit), redact_literals=audit.redact_literals, caps=RecordCaps())


async def _import_audited(settings: Settings, documents: Documents, expected: int | None, policy: PolicySet) -> int:
    """Replace the managed documents in one transaction, its ``policy_edit`` record durable before the commit."""
    log = await asyncio.to_thread(_audit_log, settings)
    store: StateStore | None = None
    try:
        store = await asyncio.to_thread(_store, settings)
        write = await asyncio.to_thread(store.begin_write)
        try:
            current, before = await asyncio.to_thread(write.read)
            revision = await asyncio.to_thread(write.claim, current if expected is None else expected)
            await asyncio.to_thread(write.clear)
            for name, content in sorted(documents.items()):
                await asyncio.to_thread(write.put, name, content, now=utcnow())
            await log.append(_record(settings, before, documents, (current, revision), policy))
            return await asyncio.to_thread(write.commit)
        finally:
            write.close()  # without the commit (a refused or failed audit write): rolled back
    finally:
        if store is not None:
            store.close()
        await log.close()


def _record(
    settings: Settings, before: Documents, after: Documents, revisions: tuple[int, int], policy: PolicySet
) -> PolicyEditRecord:
    """The ``policy_edit`` record of an import (``revisions``: the store's before and after)."""
    previous: PolicySet | None = None
    with contextlib.suppress(PolicyFileError):  # the old documents may not merge with today's base files
        previous = load_merged(settings.policies_dir, before, known_targets=settings.targets.keys(), label=LABEL)
    previous_revision = previous.revision if previous is not None else None
    diff = "".join(
        "".join(
            difflib.unified_diff(
                before.get(name, b"").decode("utf-8", "replace").splitlines(keepends=True),
                after.get(name, b"").decode("utf-8", "replace").splitlines(keepends=True),
                f"a/{LABEL}:{name}",
                f"b/{LABEL}:{name}",
            )
        )
        for name in sorted(before.keys() | after.keys())
    )
    who = Who(
        request_id=RequestIds().new(),
        user=f"{getpass.getuser()}@{socket.gethostname()}",
        user_verified=False,  # the operator holds the state store's credentials; no IdP vouched for them
        policy_revision=previous_revision,
        via="cli",
    )
    return PolicyEditRecord(
        who=who,
        action="import",
        detail={"documents": sorted(after), "store_revision": revisions[1], "previous_store_revision": revisions[0]},
        file=f"{LABEL}:*",
        diff=diff,
        new_revision=policy.revision,
    )


def add_commands(policy: argparse._SubParsersAction[argparse.ArgumentParser], default_config: Path) -> None:
    """``policy export`` and ``policy import``."""
    export = policy.add_parser("export", help="write the state store's managed policy documents as YAML files")
    export.add_argument("--config", type=Path, default=default_config, help="gateway YAML config")
    export.add_argument("--out", type=Path, required=True, help="directory to write the documents into")
    export.add_argument("--force", action="store_true", help="overwrite files that differ")
    export.set_defaults(func=cmd_export)
    load = policy.add_parser("import", help="replace the managed policy documents with reviewed YAML files")
    load.add_argument("--config", type=Path, default=default_config, help="gateway YAML config")
    load.add_argument("directory", type=Path, help="the reviewed documents (*.yaml, *.yml)")
    load.add_argument("--if-revision", type=int, help="refuse if the store's revision is no longer this one")
    load.add_argument("--base", type=Path, help="base files to check against (default: policies_dir of the config)")
    load.set_defaults(func=cmd_import)
