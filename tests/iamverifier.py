"""Check an RDS IAM auth token the way RDS does; run by pam_exec for the test MariaDB.

Usage (PAM): ``auth required pam_exec.so expose_authtok quiet <this> <config.json>``.
pam_exec passes the password (the token) on stdin, NUL-terminated, and the
account name in ``PAM_USER``. The config holds what RDS would know: the test
access key and its secret, the region and the ``host:port`` the token must
name. Exit 0 accepts the login; anything else refuses it. Standard library
only: it runs under the system Python as the database server's user, and is
deliberately independent of botocore, which minted the token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import sys
from urllib.parse import parse_qsl, quote

MAX_EXPIRES = 900
CLOCK_SKEW = 300
REQUIRED = (
    "Action",
    "DBUser",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def expected_signature(secret: str, host_port: str, params: dict[str, str]) -> str:
    """SigV4 query signature of ``GET https://host:port/?params`` (all but the signature)."""
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()) if k != "X-Amz-Signature"
    )
    canonical = "\n".join(["GET", "/", query, f"host:{host_port}", "", "host", hashlib.sha256(b"").hexdigest()])
    _, date, region, service, terminal = params["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/{terminal}"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(f"AWS4{secret}".encode(), date)
    for part in (region, service, terminal):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def check(token: str, user: str, config: dict[str, str], now: dt.datetime) -> str | None:  # noqa: PLR0911 - one reason per check
    """Return why ``token`` is refused for ``user``, or None when RDS would accept it."""
    host_port, sep, query = token.partition("/?")
    if not sep or host_port != config["host_port"]:
        return "wrong host:port"
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    params = dict(pairs)
    if len(params) != len(pairs) or sorted(params) != sorted(REQUIRED):
        return "unexpected or duplicate parameters"
    if params["Action"] != "connect" or params["DBUser"] != user:
        return "wrong action or user"
    if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256" or params["X-Amz-SignedHeaders"] != "host":
        return "wrong algorithm"
    parts = params["X-Amz-Credential"].split("/")
    if len(parts) != 5 or parts[0] != config["access_key"] or parts[2:] != [config["region"], "rds-db", "aws4_request"]:
        return "wrong credential scope"
    signed_at = dt.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    if parts[1] != params["X-Amz-Date"][:8]:
        return "credential date differs from X-Amz-Date"
    expires = int(params["X-Amz-Expires"])
    if not 0 < expires <= MAX_EXPIRES:
        return "bad expiry"
    age = (now - signed_at).total_seconds()
    if age < -CLOCK_SKEW or age > expires:
        return "expired"
    if not hmac.compare_digest(expected_signature(config["secret_key"], host_port, params), params["X-Amz-Signature"]):
        return "bad signature"
    return None


def main() -> int:
    """Read the token from stdin, check it, exit 0 only when it is good."""
    with open(sys.argv[1], encoding="utf-8") as handle:  # noqa: PTH123 - keep it minimal
        config = json.load(handle)
    token = sys.stdin.buffer.read(4096).split(b"\0")[0].decode("ascii", "replace").strip()
    try:
        reason = check(token, os.environ.get("PAM_USER", ""), config, dt.datetime.now(dt.UTC))
    except (ValueError, KeyError):
        reason = "malformed token"
    if reason is not None and config.get("log"):
        with open(config["log"], "a", encoding="utf-8") as log:  # noqa: PTH123 - the PAM module passes a plain path string
            log.write(f"refused {os.environ.get('PAM_USER', '')}: {reason}\n")
    elif config.get("log"):
        with open(config["log"], "a", encoding="utf-8") as log:  # noqa: PTH123 - the PAM module passes a plain path string
            log.write(f"accepted {os.environ.get('PAM_USER', '')} {params_date(token)}\n")
    return 0 if reason is None else 1


def params_date(token: str) -> str:
    """The token's X-Amz-Date (to tell tokens apart in the log without writing them)."""
    return dict(parse_qsl(token.partition("/?")[2])).get("X-Amz-Date", "?")


if __name__ == "__main__":
    sys.exit(main())
