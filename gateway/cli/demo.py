"""``gateway demo seed``: the newcomer's demo database, accounts and dev config.

Connects as the local MariaDB administrator (``GATEWAY_DEMO_ROOT_USER``,
default ``root``; password from ``GATEWAY_DEMO_ROOT_PASSWORD``, default empty,
as Debian's socket-less test set-up has it), recreates the ``shop`` database
and the accounts the example policies name (``gw_reader``, ``gw_writer``,
``gw_ddl``) the recommended way: created with no privileges, then given the
GRANT statements ``gateway db plan`` derives from the policies, so MariaDB
itself enforces what they allow. It writes each random password to its own
0600 file under the state directory (the ``secret`` mode's file source) and a
dev-mode gateway config that points at them.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncmy

from gateway.db.provision import Account, provision
from gateway.policy.files import load_policies

DEMO_DATABASE = "shop"
DEMO_PREFIX = "gw"


def _config(
    state: Path, port: int, host: str, db_port: int, secrets: dict[str, Path], *, database: str, policies: Path
) -> str:
    lines = [
        "# Written by `gateway demo seed`: a dev-mode gateway for the demo database.",
        "dev_mode: true",
        f"listen: {{host: 127.0.0.1, port: {port}}}",
        f"policies_dir: {policies}",
        "targets:",
        "  shop:",
        f"    host: {host}",
        f"    port: {db_port}",
        f"    database: {database}",
        "    pool: {max_size: 10, min_size: 1}",
        "    secrets:",
        *[f"      {user}: {{file: {path}}}" for user, path in secrets.items()],
        "audit:",
        f"  path: {state / 'audit.db'}",
        "dev:",
        f"  key_file: {state / 'dev-issuer-key.json'}",
        "admin:",
        f"  state_dir: {state / 'state'}",  # access requests and the alias registry
    ]
    return "\n".join(lines) + "\n"


async def seed(
    state_dir: Path,
    *,
    port: int = 8080,
    policies: Path = Path("policies"),
    database: str = DEMO_DATABASE,
    prefix: str = DEMO_PREFIX,
) -> tuple[Path, dict[str, Account]]:
    """Recreate the demo database and accounts from ``policies``' plan; return the config's path and the accounts.

    ``policies`` name the database as target ``shop``; ``database`` and
    ``prefix`` (accounts ``{prefix}_reader`` ...) are for tests on a scratch name.
    """
    plan_policy = load_policies(policies, known_targets={"shop"})
    host = os.environ.get("GATEWAY_DEMO_DB_HOST", "127.0.0.1")
    db_port = int(os.environ.get("GATEWAY_DEMO_DB_PORT", "3306"))
    root = await asyncmy.connect(
        host=host,
        port=db_port,
        user=os.environ.get("GATEWAY_DEMO_ROOT_USER", "root"),
        password=os.environ.get("GATEWAY_DEMO_ROOT_PASSWORD", ""),
        autocommit=True,
    )
    try:
        accounts = await provision(root, database, prefix, policy=lambda _db, _accounts: plan_policy)
    finally:
        root.close()
    secrets_dir = state_dir / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)
    paths: dict[str, Path] = {}
    for account in accounts.values():
        path = secrets_dir / account.user
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(account.password)
        paths[account.user] = path
    config = state_dir / "gateway.yaml"
    text = _config(state_dir, port, host, db_port, paths, database=database, policies=policies)
    config.write_text(text, encoding="utf-8")
    return config, accounts
