"""``gateway ...``: the server's commands (serve, policy check, audit, db, dev-token, demo) and the client's.

Each command module adds its own subcommands (``COMMANDS``); every command is
a function of the parsed arguments returning the exit status. Failures are
rendered here, once: a client command's ``ClientError`` as its ``text()``
with its exit code, a configuration error with exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.cli import audit as auditcli
from gateway.cli import db as dbcli
from gateway.cli import policydocs
from gateway.client import admin as admincli
from gateway.client import commands as clicommands
from gateway.client import reviews as reviewcli
from gateway.client.errors import EXIT_INTERRUPTED, EXIT_USAGE, ClientError
from gateway.errors import ConfigError, GatewayError, PolicyFileError
from gateway.settings import Settings, load_settings

DEFAULT_CONFIG = Path(os.environ.get("GATEWAY_CONFIG", "gateway.yaml"))
DESCRIPTION = "The identity-aware database gateway: the server's commands and the engineer's and admin's client."
H11_SLACK = 16 * 1024  # bytes h11 may read past limits.max_header_bytes (the request line, a margin)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway with uvicorn (uvloop and httptools where available)."""
    import uvicorn  # noqa: PLC0415 - only the server needs it

    from gateway import console, log  # noqa: PLC0415 - loaded only by the command that uses it
    from gateway.http.app import create_app  # noqa: PLC0415 - loaded only by the command that uses it

    settings = _settings(args)
    log.configure(json=not sys.stderr.isatty())
    uvicorn.run(
        create_app(settings, pages=console.install),
        host=settings.listen.host,
        port=settings.listen.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        # Longer than the usual load balancer idle timeout (60 s), so the balancer,
        # not the gateway, closes idle connections and never races a reused one.
        timeout_keep_alive=75,
        h11_max_incomplete_event_size=h11_header_limit(settings),
    )
    return 0


def h11_header_limit(settings: Settings) -> int:
    """The most h11 (uvicorn's parser when httptools is missing) reads of a request head.

    Past it h11 answers a bare 400 before the app. It sits a margin above the
    gateway's own cap, so up to well past that cap the gateway answers 431
    itself and records it.
    """
    return settings.limits.max_header_bytes + H11_SLACK


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a policy directory offline; print every problem as file:line: reason."""
    from gateway.policy.files import load_policies  # noqa: PLC0415 - loaded only by the command that uses it

    try:
        policy = load_policies(args.directory)
    except PolicyFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"ok: {len(policy.grants)} grants, {len(policy.revocations)} revocations, revision {policy.revision[:12]}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check the audit log's hash chain (either store); show a progress bar on a terminal."""
    from gateway.audit.store import entry_total  # noqa: PLC0415 - loaded only by the command that uses it
    from gateway.audit.verify import verify  # noqa: PLC0415 - loaded only by the command that uses it

    try:
        store = auditcli.open_for_reading(args)
    except GatewayError as exc:
        print(f"audit store: {exc.detail}", file=sys.stderr)
        return 1
    try:
        keys = auditcli.checkpoint_keys(args)
        with auditcli.progress_bar("verified", entry_total(store)) as progress:
            anchored = auditcli.anchored_checkpoints(args)
            result = verify(store, progress=progress, keys=keys, anchored=anchored, batch=5000)
            progress(result.count)
    except GatewayError as exc:
        print(f"audit store: {exc.detail}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"config: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if result.ok:
        print(f"ok: {result.count} records, head seq {result.head_seq} hash {result.head_hash}")
    for name, chain in result.chains.items():
        print(f"chain {name}: {chain.count} records, head seq {chain.head_seq} hash {chain.head_hash}")
    if result.chains:
        print(f"checkpoints checked: {result.checkpoints}")
    for note in result.notes:
        print(f"note: {note}")
    for problem in result.problems:
        print(problem, file=sys.stderr)
    return 0 if result.ok else 1


def cmd_dev_token(args: argparse.Namespace) -> int:
    """Mint a dev-issuer token (dev mode only)."""
    from gateway.identity.devissuer import DevIssuer, dev_issuer_url  # noqa: PLC0415 - loaded only by this command

    settings = _settings(args)
    if not settings.dev_mode:
        print("dev-token works only with dev_mode: true", file=sys.stderr)
        return 2
    issuer = DevIssuer.from_key_file(dev_issuer_url(settings.listen.port, settings.listen.host), settings.dev.key_file)
    lifetime = args.lifetime or settings.dev.token_lifetime
    try:
        token = issuer.mint(args.user, groups=args.group, audience=settings.dev.audience, lifetime=lifetime)
    except ValueError as exc:  # a name the gateway would refuse (SECURITY rule 26), or a bad lifetime
        print(f"dev-token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_demo_seed(args: argparse.Namespace) -> int:
    """Create the demo database, its accounts, their secret files and a dev config."""
    from gateway.cli.demo import seed  # noqa: PLC0415 - loaded only by the command that uses it

    config, accounts = asyncio.run(seed(args.state_dir, port=args.port, policies=args.policies))
    for account in accounts.values():
        grants = "\n  ".join(account.grants) or "(none: no grant uses it)"
        print(
            f"{account.user}: created with no privileges, then `gateway db plan` applied:\n  {grants}", file=sys.stderr
        )
    print(f"demo ready: config {config}", file=sys.stderr)
    return 0


def add_server_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The server-side commands: serve, policy check, audit verify and export, db, dev-token, demo seed."""

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="gateway YAML config")
        return p

    with_config(sub.add_parser("serve", help="run the gateway")).set_defaults(func=cmd_serve)

    policy = sub.add_parser("policy", help="policy tools").add_subparsers(dest="policy_command", required=True)
    check = policy.add_parser("check", help="validate a policy directory")
    check.add_argument("directory", type=Path)
    check.set_defaults(func=cmd_policy_check)
    policydocs.add_commands(policy, DEFAULT_CONFIG)

    audit = sub.add_parser("audit", help="audit log tools").add_subparsers(dest="audit_command", required=True)
    verify = with_config(audit.add_parser("verify", help="verify the audit hash chain"))
    verify.add_argument("--path", type=Path, help="audit store file (default: from the config)")
    verify.set_defaults(func=cmd_audit_verify)
    auditcli.add_export(audit, DEFAULT_CONFIG)
    auditcli.add_keygen(audit)
    dbcli.add_commands(sub, DEFAULT_CONFIG)

    token = with_config(sub.add_parser("dev-token", help="mint a dev token (dev mode)"))
    token.add_argument("user")
    token.add_argument("--group", action="append", default=[])
    token.add_argument("--lifetime", type=int, help="seconds")
    token.set_defaults(func=cmd_dev_token)

    demo = sub.add_parser("demo", help="demo set-up").add_subparsers(dest="demo_command", required=True)
    seed = demo.add_parser("seed", help="create the demo database, accounts and dev config")
    seed.add_argument("--state-dir", type=Path, default=Path(".run"))
    seed.add_argument("--port", type=int, default=8080, help="port the demo gateway listens on")
    seed.add_argument("--policies", type=Path, default=Path("policies"), help="the policies whose plan is applied")
    seed.set_defaults(func=cmd_demo_seed)


# Each adds its subcommands; each subcommand sets ``func``, taking the parsed arguments, returning the exit status.
COMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    add_server_commands,
    clicommands.register,  # login, logout, whoami, targets, query, shell
    admincli.register,  # grant, revoke, request-access, requests, approve, deny
    reviewcli.register,  # reviews, review show|approve|reject|execute
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="gateway", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway`` command: run one command, render its failure for people."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args))
    except ClientError as exc:
        print(exc.text(), file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
