"""``gateway audit export`` and the store opening shared by the audit commands.

These commands read the configured store directly (SQLite file or shared
MariaDB store), so they are for auditors who have access to the store itself;
everyone else uses ``GET /v1/audit``.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from gateway.audit.anchor import open_anchor
from gateway.audit.checkpoints import Checkpoint, load_public_keys
from gateway.audit.export import FORMATS, export
from gateway.audit.factory import open_audit_store
from gateway.audit.query import EQUALITY_FILTERS, AuditFilter
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import AuditStore, entry_total
from gateway.errors import ConfigError, GatewayError
from gateway.settings import load_settings


def checkpoint_keys(args: argparse.Namespace) -> dict[str, Ed25519PublicKey]:
    """The public keys the config trusts for checkpoint signatures (none for an SQLite file given by path)."""
    if getattr(args, "path", None):
        return {}
    return load_public_keys(load_settings(args.config).audit.checkpoints)


def anchored_checkpoints(args: argparse.Namespace) -> Iterator[Checkpoint | str] | None:
    """The checkpoints anchored in S3, when the config names an anchor."""
    if getattr(args, "path", None):
        return None
    anchor = open_anchor(load_settings(args.config).audit.checkpoints.anchor)
    return None if anchor is None else anchor.iter_anchored()


def cmd_audit_keygen(args: argparse.Namespace) -> int:
    """Write a new Ed25519 checkpoint signing key (PEM, mode 0600) and print the config lines for it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        sys.stderr.write(f"cannot create {args.output}: {exc.strerror}\n")
        return 1
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    sys.stdout.write(
        f"wrote the private key to {args.output} (keep it in a Secret; never in the config file)\n"
        "audit:\n  checkpoints:\n"
        f"    key_id: {args.key_id}\n    signing_key: {{file: /run/secrets/audit-checkpoint-key}}\n"
        f"    public_keys:\n      {args.key_id}: {public}\n"
    )
    return 0


def add_keygen(audit: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``gateway audit keygen``: a checkpoint signing key and its public half for the config."""
    keygen = audit.add_parser("keygen", help="make an Ed25519 key for signing audit checkpoints")
    keygen.add_argument("output", type=Path, help="file for the private key (created, mode 0600; never overwritten)")
    keygen.add_argument("--key-id", required=True, help="the key id checkpoints carry (e.g. audit-2026-12)")
    keygen.set_defaults(func=cmd_audit_keygen)


def open_for_reading(args: argparse.Namespace) -> AuditStore:
    """The store named by ``--path`` (an SQLite file) or by the config; MariaDB read-only."""
    if getattr(args, "path", None):
        return SQLiteAuditStore(_existing(args.path))
    settings = load_settings(args.config).audit
    if settings.store == "sqlite":
        _existing(settings.path)
    # The SQLite store opens read-write so that an old file is migrated like the gateway would.
    return open_audit_store(settings, readonly=settings.store == "mariadb")


@contextmanager
def progress_bar(label: str, total: int | None, console: Console | None = None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (or ``console``) for export and verify; silent off a terminal.

    Yields the callback export and verify report their running count to; call it
    with the final count before leaving, so the bar ends on it.
    """
    out = console or Console(stderr=True)
    columns = (TextColumn(label), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # Records go to stdout as they are exported: rich must not capture it.
    with Progress(
        *columns, console=out, disable=not out.is_terminal, redirect_stdout=False, redirect_stderr=False
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda count: bar.update(task, completed=count)


def _existing(path: Path) -> Path:
    # Opening a missing file would create an empty log and report it as fine.
    if not path.is_file():
        raise ConfigError(f"audit store file not found: {path}")
    return path


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filters(args: argparse.Namespace) -> AuditFilter:
    values = {name: getattr(args, name) for name in EQUALITY_FILTERS}
    return AuditFilter(**values, since=args.since, until=args.until, q=args.q)


def cmd_audit_export(args: argparse.Namespace) -> int:
    """Export the audit log (or the entries matching the filters) as JSON lines or CSV."""
    try:
        store = open_for_reading(args)
    except GatewayError as exc:
        sys.stderr.write(f"audit store: {exc.detail}\n")
        return 1
    try:
        filters = _filters(args)
        unfiltered = filters == AuditFilter()
        out: TextIO
        with progress_bar("exported", entry_total(store) if unfiltered else None) as progress:
            if args.output is None:
                out = sys.stdout
                count = export(store, out, args.format, filters, progress)
            else:
                with args.output.open("w", encoding="utf-8", newline="") as out:
                    count = export(store, out, args.format, filters, progress)
            progress(count)
    finally:
        store.close()
    if args.output is not None:
        sys.stderr.write(f"exported {count} records to {args.output}\n")
    return 0


def add_export(audit: argparse._SubParsersAction[argparse.ArgumentParser], config_default: Path) -> None:
    """Register ``gateway audit export`` under the ``audit`` command."""
    p = audit.add_parser("export", help="export the audit log as JSON lines or CSV")
    p.add_argument("--config", type=Path, default=config_default, help="gateway YAML config")
    p.add_argument("--path", type=Path, help="audit store file (default: from the config)")
    p.add_argument("--format", choices=FORMATS, default="jsonl")
    p.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    for name in EQUALITY_FILTERS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"only entries with this {name}")
    p.add_argument("--since", type=_time, help="ISO 8601 time, inclusive (UTC when no offset)")
    p.add_argument("--until", type=_time, help="ISO 8601 time, exclusive")
    p.add_argument("-q", dest="q", help="case-insensitive text in the statement")
    p.set_defaults(func=cmd_audit_export)
