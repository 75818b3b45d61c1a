"""``gateway db plan`` and ``gateway db check``: the database's own privileges as a second enforcer.

``db plan`` prints, per server, the ``GRANT`` statements giving each account
exactly what the policies need (``--revoke-excess`` adds the ``REVOKE``
statements for what it holds beyond that, first); a DBA reviews and applies
them (``gateway db plan | mariadb``). ``db check`` lists every privilege an
account holds beyond its plan and exits 1 if there is any, for CI; missing
privileges are listed too but do not fail the check.

Both connect as an administrator who can read ``mysql.user`` and every
account's grants: ``--admin-user`` (or ``GATEWAY_DB_ADMIN_USER``, then
``GATEWAY_DEMO_ROOT_USER``, then ``root``) with the password from
``--admin-password-file`` or ``GATEWAY_DB_ADMIN_PASSWORD`` (then
``GATEWAY_DEMO_ROOT_PASSWORD``, then empty); never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from asyncmy import errors as db_errors

from gateway.db.accounts import AccountReport, ServerReport, admin_connect, servers, survey
from gateway.db.privileges import grant_statements, revoke_statements
from gateway.db.tlsguard import CleartextRefused
from gateway.errors import ConfigError, PolicyFileError, StateUnavailable
from gateway.policy.files import load_merged, load_policies
from gateway.policy.types import PolicySet
from gateway.settings import Settings, load_settings
from gateway.state.source import LABEL
from gateway.state.store import StateStore

EXIT_DRIFT = 1
EXIT_CANNOT_CHECK = 2


class CannotCheck(Exception):
    """The server could not be read (connection refused, no rights to read grants): nothing was checked."""


def admin_credentials(args: argparse.Namespace) -> tuple[str, str]:
    """The administrator's user and password (file or environment, never an argument)."""
    user = args.admin_user or os.environ.get("GATEWAY_DB_ADMIN_USER") or os.environ.get("GATEWAY_DEMO_ROOT_USER")
    if args.admin_password_file is not None:
        try:
            password = args.admin_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the admin password file: {exc.strerror}") from None
    else:
        password = os.environ.get("GATEWAY_DB_ADMIN_PASSWORD", os.environ.get("GATEWAY_DEMO_ROOT_PASSWORD", ""))
    return user or "root", password


def _inputs(args: argparse.Namespace) -> tuple[Settings, PolicySet, list[str]]:
    settings = load_settings(args.config)
    unknown = sorted(set(args.target) - set(settings.targets))
    if unknown:
        raise ConfigError(f"unknown target(s): {', '.join(unknown)}")
    names = list(args.target or settings.targets)
    directory = args.policies or settings.policies_dir
    try:
        if args.policies is None and settings.state.store == "mariadb" and settings.state.mariadb is not None:
            # The policy in force: the base files and the state store's managed documents (what the API wrote).
            store = StateStore.open(settings.state.mariadb)
            try:
                _, documents = store.documents()
            finally:
                store.close()
            policy = load_merged(directory, documents, known_targets=settings.targets.keys(), label=LABEL)
        else:
            policy = load_policies(directory, known_targets=settings.targets.keys())
    except StateUnavailable as exc:
        raise ConfigError(f"cannot read the managed policy documents: {exc.detail}") from None
    except PolicyFileError as exc:
        raise ConfigError(f"the policies in {directory} are invalid:\n{exc}") from None
    return settings, policy, names


def _table(text: str) -> tuple[str, str]:
    db, dot, table = text.partition(".")
    if not (db and dot and table):
        raise argparse.ArgumentTypeError(f"not DB.TABLE: {text!r}")
    return db, table


async def _survey_all(
    settings: Settings, policy: PolicySet, names: list[str], *, admin: tuple[str, str], extra: list[tuple[str, str]]
) -> list[ServerReport]:
    user, password = admin
    reports = []
    now = datetime.now(UTC)
    for (host, port), on_server in servers(settings.targets, names).items():
        try:
            conn = await admin_connect(settings.targets[on_server[0]], user, password)
        except (db_errors.MySQLError, OSError, CleartextRefused) as exc:
            raise CannotCheck(f"cannot connect to {host}:{port} as {user}: {_why(exc)}") from None
        try:
            reports.append(await survey(conn, policy, settings.targets, on_server, now, extra_tables=extra))
        except db_errors.MySQLError as exc:
            raise CannotCheck(f"cannot read privileges on {host}:{port} as {user}: {_why(exc)}") from None
        finally:
            with contextlib.suppress(Exception):
                await conn.ensure_closed()
    return reports


def _why(exc: BaseException) -> str:
    if isinstance(exc, db_errors.MySQLError) and len(exc.args) > 1:
        return f"MariaDB error {exc.args[0]}: {exc.args[1]}"
    return str(exc) or type(exc).__name__


def _run(args: argparse.Namespace) -> tuple[PolicySet, list[ServerReport]] | None:
    settings, policy, names = _inputs(args)
    admin = admin_credentials(args)
    try:
        return policy, asyncio.run(_survey_all(settings, policy, names, admin=admin, extra=args.extra_table))
    except CannotCheck as exc:
        print(f"gateway db {args.db_command}: {exc}", file=sys.stderr)
        return None


def plan_lines(report: ServerReport, revision: str, *, revoke_excess: bool) -> list[str]:
    """The SQL ``db plan`` prints for one server (comments start with ``--``)."""
    targets = ", ".join(report.targets)
    lines = [f"-- gateway db plan: server {report.host}:{report.port} (targets {targets}), revision {revision[:12]}"]
    for account in report.accounts:
        lines.append(f"-- {account.account}: " + _needed_by(account))
        if account.host is None:
            lines.append(f"-- {account.account} does not exist on this server: CREATE USER it first")
        if revoke_excess:
            lines.extend(revoke_statements(account.excess, account.account))
        lines.extend(grant_statements(account.planned, account.account))
    return lines


def _needed_by(account: AccountReport) -> str:
    if not account.grants:
        return "no grant uses it: it needs no privileges"
    return f"needed by grants {', '.join(account.grants)}"


def cmd_db_plan(args: argparse.Namespace) -> int:
    """Print the GRANT statements each account needs (and REVOKE for its excess with --revoke-excess)."""
    found = _run(args)
    if found is None:
        return EXIT_CANNOT_CHECK
    policy, reports = found
    for report in reports:
        print("\n".join(plan_lines(report, policy.revision, revoke_excess=args.revoke_excess)))
    return 0


def cmd_db_check(args: argparse.Namespace) -> int:
    """List privileges beyond the plan (exit 1 if any) and privileges the plan needs but are missing."""
    found = _run(args)
    if found is None:
        return EXIT_CANNOT_CHECK
    reports = found[1]
    accounts = [a for r in reports for a in r.accounts]
    for account in accounts:
        for item in account.excess:
            print(f"EXCESS {account.account}: {item}")
        for privilege in account.missing:
            print(f"MISSING {account.account}: {privilege.sql()}")
    drifting = [a for a in accounts if a.excess]
    if drifting:
        count = sum(len(a.excess) for a in drifting)
        print(
            f"drift: {count} privileges beyond the plan on {len(drifting)} of {len(accounts)} accounts", file=sys.stderr
        )
        return EXIT_DRIFT
    print(f"ok: {len(accounts)} accounts on {len(reports)} servers hold nothing beyond the plan", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_config: Path) -> None:
    """Register ``db plan`` and ``db check``."""
    db = sub.add_parser("db", help="the database accounts' own privileges").add_subparsers(
        dest="db_command", required=True
    )

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--config", type=Path, default=default_config, help="gateway YAML config")
        parser.add_argument("--policies", type=Path, help="policy directory (default: policies_dir of the config)")
        parser.add_argument("--target", action="append", default=[], help="only this target (repeatable)")
        parser.add_argument(
            "--extra-table",
            type=_table,
            action="append",
            default=[],
            metavar="DB.TABLE",
            help="plan for this table too, though information_schema does not list it (Sequence engine seq_1_to_N)",
        )
        parser.add_argument("--admin-user", help="administrator account (default: $GATEWAY_DB_ADMIN_USER or root)")
        parser.add_argument(
            "--admin-password-file",
            type=Path,
            help="file holding the admin password (default: $GATEWAY_DB_ADMIN_PASSWORD)",
        )
        return parser

    plan = common(db.add_parser("plan", help="print the GRANT statements each db_user needs"))
    plan.add_argument("--revoke-excess", action="store_true", help="also print REVOKE for privileges beyond the plan")
    plan.set_defaults(func=cmd_db_plan)
    common(db.add_parser("check", help="list privileges beyond the plan; exit 1 if any")).set_defaults(
        func=cmd_db_check
    )
