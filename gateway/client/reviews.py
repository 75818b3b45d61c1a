"""Statement review from the command line (issue 16): ``reviews``, ``review show|approve|reject|execute``.

``gateway query`` hands a held statement to :func:`after_hold`: it prints the
review id and the dry run, then (unless ``--no-wait``) polls the review every
``--poll`` seconds, at most ``--wait`` seconds, and executes it as soon as it
is approved (the author is the one waiting). Exit status 1 when it was
rejected, expired, or the wait ran out (the review stays; ``gateway review
execute ID`` runs it later).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from gateway.client.errors import ClientError
from gateway.client.http import GatewayClient
from gateway.client.reviewdiff import print_samples
from gateway.client.session import add_arguments, connect

DEFAULT_WAIT = 600.0  # seconds `gateway query` waits for an approval
DEFAULT_POLL = 3.0
FINAL = frozenset({"rejected", "expired", "executing", "executed", "failed"})


def describe(review: dict[str, Any]) -> str:
    """A review in a few lines: id, state, statements with params, the dry run, the verdicts."""
    approvals = len([v for v in review["verdicts"] if v["verdict"] == "approve"])
    head = (
        f"review {review['id']}  {review['state']}  by {review['author']} on {review['target']} "
        f"(grant {review['grant']}), {approvals} of {review['min_approvals']} approvals, "
        f"expires {review['expires_at']}"
    )
    lines = [head]
    dry = review.get("dry_run") or {}
    for index, statement in enumerate(review["statements"]):
        counted = (dry.get("statements") or [{}] * len(review["statements"]))[index]
        effect = (
            f"dry run: {counted.get('rows_affected')} rows (rolled back)"
            if dry.get("executed")
            else "not run (DDL is never dry-run): " + ", ".join(counted.get("tables") or [])
        )
        lines.append(f"  {statement['sql']}   params {json.dumps(statement['params'])}   -> {effect}")
    if review.get("reason"):
        lines.append(f"  reason: {review['reason']}")
    lines.extend(f"  {v['verdict']}d by {v['name']}: {v['comment'] or ''}" for v in review["verdicts"])
    return "\n".join(lines)


def after_hold(
    client: GatewayClient,
    reply: dict[str, Any],
    *,
    wait: bool,
    timeout: float = DEFAULT_WAIT,
    poll: float = DEFAULT_POLL,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Print the held review; with ``wait``, poll until decided and execute it once approved."""
    review = reply["review"]
    print(f"Held for review: {review['id']} (nothing ran)", file=sys.stderr)
    print(describe(review), file=sys.stderr)
    if not wait:
        print(f"Run `gateway review execute {review['id']}` once it is approved.", file=sys.stderr)
        return 0
    deadline = clock() + timeout
    while review["state"] == "pending" and clock() < deadline:
        sleep(min(poll, max(deadline - clock(), 0.0)))
        review = client.call("GET", f"/v1/reviews/{review['id']}")["review"]
    if review["state"] == "approved":
        print(f"Approved; executing {review['id']}", file=sys.stderr)
        print(json.dumps(client.call("POST", f"/v1/reviews/{review['id']}/execute"), indent=2, sort_keys=True))
        return 0
    why = "no decision within the wait" if review["state"] == "pending" else review["state"]
    raise ClientError(f"review {review['id']}: {why}")


def _show(args: argparse.Namespace, result: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    for key in ("mine", "to_review"):
        if key in result:
            print(f"{'Your reviews' if key == 'mine' else 'Waiting for your review'}:")
            for review in result[key]:
                print(describe(review))
    if "review" in result:
        print(describe(result["review"]))
        print_samples(result["review"], Console())
    if "results" in result:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def cmd_reviews(args: argparse.Namespace) -> int:
    """Your reviews and those waiting for you."""
    with connect(args) as client:
        params = {"state": args.state} if args.state else {}
        return _show(args, client.call("GET", "/v1/reviews", params=params))


def cmd_review(args: argparse.Namespace) -> int:
    """Show / approve / reject / execute one review."""
    path = f"/v1/reviews/{args.id}"
    with connect(args) as client:
        if args.action == "show":
            return _show(args, client.call("GET", path))
        if args.action == "execute":
            return _show(args, client.call("POST", f"{path}/execute"))
        body = {"comment": args.comment} if args.comment else {}
        return _show(args, client.call("POST", f"{path}/{args.action}", json=body))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``reviews`` and ``review`` to ``gateway``'s subcommands."""
    reviews = add_arguments(sub.add_parser("reviews", help="your statement reviews and those waiting for you"))
    reviews.add_argument("--state")
    reviews.add_argument("--json", action="store_true")
    reviews.set_defaults(func=cmd_reviews)
    review = add_arguments(sub.add_parser("review", help="show, approve, reject or execute a statement review"))
    review.add_argument("action", choices=("show", "approve", "reject", "execute"))
    review.add_argument("id")
    review.add_argument("-m", "--comment", help="the reviewer's comment (needed to reject)")
    review.add_argument("--json", action="store_true")
    review.set_defaults(func=cmd_review)


def add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    """``gateway query``'s options for a statement held for review."""
    parser.add_argument("--reason", help="why: shown to reviewers if the statement is held for review")
    parser.add_argument("--no-wait", action="store_true", help="held for review: print it and return at once")
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT, help="held for review: seconds to wait")
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL, help=argparse.SUPPRESS)
