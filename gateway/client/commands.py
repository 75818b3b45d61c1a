"""The engineers' commands: ``login``, ``logout``, ``whoami``, ``targets``, ``query``, ``shell``.

The gateway's URL and the token follow one rule for every command
(``gateway.client.session``). Failures raise ``ClientError``, which
``gateway.cli.main`` prints and turns into the exit status: 0 done, 1 the
gateway or the IdP refused, 2 usage or local set-up problems.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from gateway.client import login as devicelogin
from gateway.client import reviews, tokencache
from gateway.client.http import GatewayClient, HeldForReview, QueryRequest
from gateway.client.render import FORMATS, TABLE_MEDIA, consume, copy_table, row_counter, sink_for, summary
from gateway.client.session import add_arguments, connect


def parse_param(text: str) -> Any:  # noqa: ANN401 - a JSON scalar
    """``-p`` values: a JSON number, true, false, null or "quoted string" as such; anything else is text."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if value is None or isinstance(value, bool | int | float | str) else text


def cmd_login(args: argparse.Namespace) -> int:
    """Device flow: show the URL and code, wait for approval, cache the token (0600)."""
    meta = devicelogin.discover(args.issuer)
    code = devicelogin.start(meta, args.client_id, args.scope)
    where = code.verification_uri_complete or code.verification_uri
    print(f"To sign in, open {where}", file=sys.stderr)
    print(f"and check that it shows the code {code.user_code}", file=sys.stderr)
    print("Waiting for approval...", file=sys.stderr, flush=True)
    token = devicelogin.poll(meta, args.client_id, code)
    path = tokencache.save(token)
    print(f"Logged in; token cached in {path}", file=sys.stderr)
    return 0


def cmd_logout(_args: argparse.Namespace) -> int:
    """Forget the cached token."""
    removed = tokencache.remove()
    print("Logged out." if removed else "Not logged in.", file=sys.stderr)
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    """Who the gateway thinks you are (``GET /v1/me``)."""
    with connect(args) as client:
        me = client.me()
    if args.json:
        print(orjson.dumps(me, option=orjson.OPT_INDENT_2).decode())
        return 0
    console = Console()
    console.print(f"[bold]{me['user']}[/bold]  (sub {me['subject']}, issuer {me['issuer']})", highlight=False)
    console.print(f"groups: {', '.join(me['groups']) or '-'}   roles: {', '.join(me['roles']) or '-'}")
    _grants_table(console, me["grants"])
    return 0


def _grants_table(console: Console, grants: list[dict[str, Any]]) -> None:
    table = Table("grant", "target", "access", "max rows", "timeout", "expires", box=None)
    for g in grants:
        table.add_row(
            g["name"], g["target"], g["access"], str(g["max_rows"] or "-"),
            f"{g['statement_timeout']:g}s" if g["statement_timeout"] else "-",
            g["expires"] or "never",
        )  # fmt: skip
    console.print(table)


def cmd_targets(args: argparse.Namespace) -> int:
    """Targets you can use, at which access level, until when."""
    with connect(args) as client:
        targets = client.targets()
    if args.json:
        print(orjson.dumps(targets, option=orjson.OPT_INDENT_2).decode())
        return 0
    print_targets(Console(), targets)
    return 0


def print_targets(console: Console, targets: list[dict[str, Any]]) -> None:
    """The targets as a table."""
    if not targets:
        console.print("No targets: you hold no usable grant.")
        return
    table = Table("target", "database", "access", "grant", "expires", box=None)
    for t in targets:
        table.add_row(t["name"], t["database"], t["access"], t["grant"], t["expires"] or "never")
    console.print(table)


def run_query(client: GatewayClient, request: QueryRequest, fmt: str, console: Console) -> dict[str, Any]:
    """Stream one statement into the chosen format on stdout; return the trailer."""
    if fmt in TABLE_MEDIA:  # the gateway writes CSV / TSV itself: its bytes go to stdout as they come
        return copy_table(client.stream_table(request, TABLE_MEDIA[fmt]), sys.stdout.buffer)
    sink = sink_for(fmt, sys.stdout, console)
    if fmt == "table":  # the table is drawn at the end: no counter before it
        return consume(client.stream(request), sink)
    try:
        with row_counter(Console(stderr=True)) as progress:
            return consume(client.stream(request), sink, progress)
    finally:
        sys.stdout.flush()


def cmd_query(args: argparse.Namespace) -> int:
    """Run one statement and print the result."""
    params = [parse_param(p) for p in args.param]
    request = QueryRequest(args.target, args.sql, params, args.max_rows, reason=args.reason)
    console = Console()
    with connect(args) as client:
        started = time.perf_counter()
        try:
            trailer = run_query(client, request, args.format, console)
        except HeldForReview as held:  # nothing ran: a reviewer approves it first
            return reviews.after_hold(client, held.reply, wait=not args.no_wait, timeout=args.wait, poll=args.poll)
    if args.format != "table" and sys.stderr.isatty():
        print(f"{summary(trailer)}; {(time.perf_counter() - started) * 1000:.0f} ms round trip", file=sys.stderr)
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    """The interactive SQL shell."""
    from gateway.client.shell import Shell  # noqa: PLC0415 - readline only for the shell

    with connect(args) as client:
        client.me()  # a refused token or an unreachable gateway ends the command now, as any command's would
        return Shell(client, args.target, args.format).run()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the engineers' commands to ``gateway``'s subcommands."""
    login = sub.add_parser("login", help="sign in with the OIDC device flow and cache the token")
    login.add_argument("--issuer", required=True, help="the OIDC issuer URL")
    login.add_argument("--client-id", default=devicelogin.DEFAULT_CLIENT_ID)
    login.add_argument("--scope", default=devicelogin.DEFAULT_SCOPE)
    login.set_defaults(func=cmd_login)

    sub.add_parser("logout", help="forget the cached token").set_defaults(func=cmd_logout)

    whoami = add_arguments(sub.add_parser("whoami", help="who you are to the gateway: groups, roles, grants"))
    whoami.add_argument("--json", action="store_true")
    whoami.set_defaults(func=cmd_whoami)

    targets = add_arguments(sub.add_parser("targets", help="targets you can use"))
    targets.add_argument("--json", action="store_true")
    targets.set_defaults(func=cmd_targets)

    query = add_arguments(sub.add_parser("query", help="run one statement"))
    query.add_argument("sql")
    query.add_argument("-t", "--target", required=True)
    query.add_argument(
        "-p", "--param", action="append", default=[], help="a value for the next ? (JSON scalar, else text)"
    )
    query.add_argument("--format", choices=FORMATS, default="table")
    query.add_argument("--max-rows", type=int)
    reviews.add_wait_arguments(query)
    query.set_defaults(func=cmd_query)

    shell = add_arguments(sub.add_parser("shell", help="interactive SQL shell"))
    shell.add_argument("-t", "--target", required=True)
    shell.add_argument("--format", choices=FORMATS, default="table")
    shell.set_defaults(func=cmd_shell)
