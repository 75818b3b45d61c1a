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
import sys
from pathlib import Path

from gateway.clock import utcnow
from gateway.errors import ConfigError, GatewayError, PolicyFileError
from gateway.policy.files import MAX_FILE_BYTES, load_merged
from gateway.settings import Settings, load_settings
from gateway.state.source import LABEL
from gateway.state.store import DOCUMENT_NAME, StateStore


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
    store = _store(settings)
    try:
        revision = store.replace_documents(documents, args.if_revision, now=utcnow())
    except GatewayError as exc:
        print(f"{exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"imported {len(documents)} document(s) as revision {revision} (policy {policy.revision[:12]})")
    return 0


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
