"""Admin and access-request commands: clients of the gateway's HTTP API.

``gateway grant``, ``gateway revoke``, ``gateway request-access``,
``gateway requests``, ``gateway approve``, ``gateway deny``. They share the
engineers' HTTP client, URL and token rule (``--url``/``--token``, their
environment variables, then the ``gateway login`` cache: see
``gateway.client.session``) and error rendering. Policy edits fetch the
current revision (``GET /v1/policy``) and send it as ``If-Match``; if another
edit lands in between (412) they fetch it again and retry, at most three
times (``GatewayClient.edit``): the server validates every attempt.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from gateway.client.errors import UsageError
from gateway.client.session import add_arguments, connect


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401 - httpx's options
    with connect(args) as client:
        return client.call(method, path, **kwargs)


def _edit(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401 - httpx's options
    with connect(args) as client:
        return client.edit(method, path, **kwargs)


def cmd_grant(args: argparse.Namespace) -> dict[str, Any]:
    """Add a grant (or remove one with --delete)."""
    if args.delete:
        return _edit(args, "DELETE", f"/v1/grants/{args.delete}")
    missing = [f for f in ("name", "target", "access", "db_user") if not getattr(args, f)]
    if missing or not args.subject:
        raise UsageError(f"a grant needs NAME, --subject, -t, --access and --db-user (missing {missing or 'subject'})")
    body: dict[str, Any] = {
        "name": args.name,
        "subjects": args.subject,
        "target": args.target,
        "access": args.access,
        "db_user": args.db_user,
    }
    if args.allow or args.deny:
        body["tables"] = {k: v for k, v in (("allow", args.allow), ("deny", args.deny)) if v}
    for key in ("max_rows", "statement_timeout", "expires"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    return _edit(args, "POST", "/v1/grants", json=body)


def cmd_revoke(args: argparse.Namespace) -> dict[str, Any]:
    """Revoke a subject (or lift a revocation with --lift)."""
    if args.lift:
        params = {"target": args.target} if args.target else {}
        return _edit(args, "DELETE", f"/v1/revocations/{args.lift}", params=params)
    if not args.subject:
        raise UsageError("name the SUBJECT to revoke (user:... or group:...), or --lift SUBJECT")
    body = {"subject": args.subject, "target": args.target or "*"}
    body |= {k: v for k, v in (("reason", args.reason), ("until", args.until)) if v}
    return _edit(args, "POST", "/v1/revocations", json=body)


def cmd_request_access(args: argparse.Namespace) -> dict[str, Any]:
    """Ask for time-boxed access."""
    body = {"target": args.target, "access": args.access, "duration": args.duration, "reason": args.reason}
    return _call(args, "POST", "/v1/access-requests", json=body)


def cmd_requests(args: argparse.Namespace) -> dict[str, Any]:
    """List access requests (one's own; admins see all)."""
    params = {"state": args.state} if args.state else {}
    return _call(args, "GET", "/v1/access-requests", params=params)


def cmd_approve(args: argparse.Namespace) -> dict[str, Any]:
    """Approve an access request."""
    body = {k: v for k, v in (("reason", args.reason), ("db_user", args.db_user)) if v}
    return _call(args, "POST", f"/v1/access-requests/{args.id}/approve", json=body)


def cmd_deny(args: argparse.Namespace) -> dict[str, Any]:
    """Deny an access request."""
    return _call(args, "POST", f"/v1/access-requests/{args.id}/deny", json={"reason": args.reason})


def _run(command: Callable[[argparse.Namespace], dict[str, Any]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        result = command(args)
        if "requests" in result and not args.json:
            for item in result["requests"]:
                print(
                    f"{item['id']}  {item['state']:<8}  {item['requester']}  {item['target']}:{item['access']}"
                    f"  for {item['duration_s'] / 3600:g}h  {item['reason']}"
                )
        else:
            print(json.dumps(result, indent=2, sort_keys=True))
        return 0

    run.__doc__ = command.__doc__
    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the admin and access-request commands to ``gateway``'s subcommands."""

    def client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_arguments(p).add_argument("--json", action="store_true", help="print the raw JSON reply")
        return p

    grant = client(sub.add_parser("grant", help="add a grant (admin), or --delete NAME"))
    grant.add_argument("name", nargs="?")
    grant.add_argument("--delete", metavar="NAME", help="remove the grant NAME")
    grant.add_argument("--subject", action="append", default=[], help="user:... or group:... (repeat)")
    grant.add_argument("-t", "--target")
    grant.add_argument("--access", choices=("read", "write", "ddl"))
    grant.add_argument("--db-user", dest="db_user")
    grant.add_argument("--allow", action="append", default=[], help="table pattern allowed (repeat)")
    grant.add_argument("--deny", action="append", default=[], help="table pattern denied (repeat)")
    grant.add_argument("--max-rows", dest="max_rows", type=int)
    grant.add_argument("--statement-timeout", dest="statement_timeout")
    grant.add_argument("--expires", help="ISO 8601 with a timezone, e.g. 2026-12-31T23:59:59Z")
    grant.set_defaults(func=_run(cmd_grant))

    revoke = client(sub.add_parser("revoke", help="revoke a subject (admin), or --lift SUBJECT"))
    revoke.add_argument("subject", nargs="?")
    revoke.add_argument("--lift", metavar="SUBJECT", help="lift the revocation of SUBJECT")
    revoke.add_argument("-t", "--target", help="target (default: every target)")
    revoke.add_argument("--reason")
    revoke.add_argument("--until", help="ISO 8601 end of the revocation")
    revoke.set_defaults(func=_run(cmd_revoke))

    ask = client(sub.add_parser("request-access", help="ask for time-boxed access"))
    ask.add_argument("-t", "--target", required=True)
    ask.add_argument("--access", choices=("read", "write", "ddl"), default="read")
    ask.add_argument("--for", dest="duration", required=True, help="duration, e.g. 30m, 4h, 2d")
    ask.add_argument("--reason", required=True)
    ask.set_defaults(func=_run(cmd_request_access))

    listing = client(sub.add_parser("requests", help="list access requests"))
    listing.add_argument("--state", choices=("pending", "approved", "denied", "expired"))
    listing.set_defaults(func=_run(cmd_requests))

    approve = client(sub.add_parser("approve", help="approve an access request (admin)"))
    approve.add_argument("id")
    approve.add_argument("--reason")
    approve.add_argument("--db-user", dest="db_user", help="database account (default: from a grant of that level)")
    approve.set_defaults(func=_run(cmd_approve))

    deny = client(sub.add_parser("deny", help="deny an access request (admin)"))
    deny.add_argument("id")
    deny.add_argument("--reason", required=True)
    deny.set_defaults(func=_run(cmd_deny))
