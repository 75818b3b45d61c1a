"""``gateway audit export`` and the store opening shared by the audit commands.

These commands read the configured store directly (SQLite file or shared
MariaDB store), so they are for auditors who have access to the store itself;
everyone else uses ``GET /v1/audit``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from gateway.audit.export import FORMATS, export
from gateway.audit.factory import open_audit_store
from gateway.audit.query import EQUALITY_FILTERS, AuditFilter
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import AuditStore
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
        last = store.last()
        unfiltered = filters == AuditFilter()
        out: TextIO
        with progress_bar("exported", int(last["seq"]) if last and unfiltered else None) as progress:
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
