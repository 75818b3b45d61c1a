"""``gateway audit export`` and the store opening shared by the audit commands.

These commands read the configured store directly (SQLite file or shared
MariaDB store), so they are for auditors who have access to the store itself;
everyone else uses ``GET /v1/audit``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from gateway.audit.export import FORMATS, export
from gateway.audit.factory import open_audit_store
from gateway.audit.query import EQUALITY_FILTERS, AuditFilter
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import AuditStore
from gateway.cli.progress import Progress
from gateway.errors import ConfigError, GatewayError
from gateway.settings import load_settings


def open_for_reading(args: argparse.Namespace) -> AuditStore:
    """The store named by ``--path`` (an SQLite file) or by the config; MariaDB read-only."""
    if getattr(args, "path", None):
        return SQLiteAuditStore(_existing(args.path))
    settings = load_settings(args.config).audit
    if settings.store == "sqlite":
        _existing(settings.path)
    # The SQLite store opens read-write so that an old file is migrated like the gateway would.
    return open_audit_store(settings, readonly=settings.store == "mariadb")


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
        last = store.last()
        unfiltered = filters == AuditFilter()
        progress = Progress("exported", total=int(last["seq"]) if last and unfiltered else None)
        out: TextIO
        if args.output is None:
            out = sys.stdout
            count = export(store, out, args.format, filters, progress)
        else:
            with args.output.open("w", encoding="utf-8", newline="") as out:
                count = export(store, out, args.format, filters, progress)
    finally:
        store.close()
    progress.finish(count)
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
