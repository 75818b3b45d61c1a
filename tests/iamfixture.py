"""A private MariaDB that checks RDS IAM auth tokens itself, for the ``iam`` mode tests.

The fixture starts its own ``mariadbd`` (own datadir, loopback port, socket
and TLS files made here; the shared server on 3306 is never touched) with
the PAM auth plugin. Accounts are ``IDENTIFIED VIA pam USING '<service>'
REQUIRE SSL``; the PAM service runs ``iamverifier.py`` through ``pam_exec``,
which checks each token as RDS would (SigV4 with the test key, ``connect``,
``DBUser``, ``host:port``, expiry). Everything it adds to the system (the
``/etc/pam.d`` file, the temporary directory, the server process) is removed
afterwards.

Why ``auth_pam_v1`` and not ``auth_pam``: the v2 plugin runs PAM through the
setuid helper ``auth_pam_tool_dir/auth_pam_tool``, which Debian's package
lists but which is absent from this machine's image; v1 runs PAM inside the
server process, so the verifier runs as the ``mysql`` user instead of root.
It must still be root-owned and not writable by others, and so is its
directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy
import pytest
from privatemariadb import MariaDBServer, MariaDBStartError, remove_leftovers, running_mariadb

PLUGIN_DIR = Path("/usr/lib/mysql/plugin")
PAM_EXEC_GLOBS = ("*/security/pam_exec.so", "security/pam_exec.so")  # under /lib or /usr/lib
SYSTEM_PYTHON = Path("/usr/bin/python3")
PAM_DIR = Path("/etc/pam.d")
VERIFIER = Path(__file__).with_name("iamverifier.py")

# Static test credentials: pam_exec passes at most 512 bytes of password, and a
# session token would make the IAM token longer than that.
ACCESS_KEY = "AKIAGWTESTEXAMPLE001"
SECRET_KEY = "gwtest/secret/key/only/for/the/iam/fixture0"
REGION = "eu-west-1"
DATABASE = "gwiam"


@dataclass(frozen=True)
class IamMariaDB:
    """What the tests need to reach the private, token-checking MariaDB."""

    host: str
    port: int
    socket: Path
    ca_file: Path
    service: str
    verifier_log: Path
    database: str
    reader: str
    writer: str

    async def root_query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as root over the private server's unix socket."""
        conn = await asyncmy.connect(unix_socket=str(self.socket), user="root", password="", autocommit=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, args)
                return list(await cur.fetchall())
        finally:
            conn.close()

    def verifier_lines(self) -> list[str]:
        """What the verifier logged (accepted/refused, user, token date; never a token)."""
        if not self.verifier_log.exists():
            return []
        return self.verifier_log.read_text(encoding="utf-8").splitlines()


def missing_prerequisites() -> str | None:
    """Say why the private PAM MariaDB cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (it writes a PAM service file under /etc/pam.d)"
    for path in (PLUGIN_DIR / "auth_pam_v1.so", SYSTEM_PYTHON):
        if not path.exists():
            return f"{path} is missing (scripts/ensure-iam-test-deps.sh installs it)"
    if not any(any(Path(root).glob(pattern)) for root in ("/lib", "/usr/lib") for pattern in PAM_EXEC_GLOBS):
        return "pam_exec.so is missing (scripts/ensure-iam-test-deps.sh installs libpam-modules)"
    for tool in ("mariadbd", "mariadb-install-db"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed"
    return None


def _remove_leftovers() -> None:
    """Clean up after an interrupted run over an hour old: its server, PAM file and directory."""

    def pam_file(base: Path) -> None:
        rand = base.name.split("-")[1]
        (PAM_DIR / f"gwtest-iam-{rand}").unlink(missing_ok=True)

    remove_leftovers("gwiam-", also=pam_file)


def _add_verifier(server: MariaDBServer, service: str, verifier_log: Path) -> None:
    """The PAM service running the token verifier; root-owned, not writable by others."""
    verify = server.directory / "verify"
    verify.mkdir(mode=0o755)
    shutil.copy(VERIFIER, verify / "iamverifier.py")
    (verify / "iamverifier.py").chmod(0o644)
    config = verify / "config.json"
    config.write_text(
        json.dumps(
            {
                "host_port": f"127.0.0.1:{server.port}",
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
                "region": REGION,
                "log": str(verifier_log),
            }
        ),
        encoding="utf-8",
    )
    shutil.chown(config, "root", "mysql")
    config.chmod(0o640)
    (PAM_DIR / service).write_text(
        f"auth required pam_exec.so expose_authtok quiet {SYSTEM_PYTHON} {verify / 'iamverifier.py'} {config}\n"
        "account required pam_permit.so\n",
        encoding="utf-8",
    )


@contextlib.contextmanager
def running_iam_mariadb() -> Iterator[IamMariaDB]:
    """Start the private MariaDB with a token-checking PAM service; remove it all after."""
    reason = missing_prerequisites()
    if reason:
        # In CI the proof must run: a missing prerequisite fails rather than skips.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"private PAM MariaDB unavailable: {reason}")
    _remove_leftovers()
    rand = secrets.token_hex(4)
    service = f"gwtest-iam-{rand}"
    logs: list[Path] = []

    def before_start(server: MariaDBServer) -> None:
        logs.append(server.directory / "run" / "verifier.log")
        _add_verifier(server, service, logs[0])

    try:
        with running_mariadb(
            f"gwiam-{rand}-",
            user="mysql",  # PAM (v1, inside the server) runs the verifier as the server's user
            tls="ec",
            args=(
                "--innodb-buffer-pool-size=16M",
                "--max-connections=100",
                "--plugin-load-add=auth_pam_v1",
                "--pam-use-cleartext-plugin=ON",
            ),
            before_start=before_start,
        ) as server:
            assert server.ca_file is not None
            db = IamMariaDB(
                host=server.host,
                port=server.port,
                socket=server.socket,
                ca_file=server.ca_file,
                service=service,
                verifier_log=logs[0],
                database=DATABASE,
                reader="gwiam_reader",
                writer="gwiam_writer",
            )
            asyncio.run(_provision(db))
            yield db
    except MariaDBStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        (PAM_DIR / service).unlink(missing_ok=True)


async def _provision(db: IamMariaDB) -> None:
    for sql in (
        f"CREATE DATABASE {db.database}",
        f"CREATE TABLE {db.database}.items (id INT PRIMARY KEY, name VARCHAR(40))",
        f"INSERT INTO {db.database}.items VALUES (1, 'pen'), (2, 'ink'), (3, 'pad')",
        f"CREATE USER '{db.reader}'@'%' IDENTIFIED VIA pam USING '{db.service}' REQUIRE SSL",
        f"GRANT SELECT ON {db.database}.* TO '{db.reader}'@'%'",
        f"CREATE USER '{db.writer}'@'%' IDENTIFIED VIA pam USING '{db.service}' REQUIRE SSL",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {db.database}.* TO '{db.writer}'@'%'",
    ):
        await db.root_query(sql)


@pytest.fixture(scope="session")
def iam_mariadb() -> Iterator[IamMariaDB]:
    """The private token-checking MariaDB, for the whole session."""
    with running_iam_mariadb() as db:
        yield db


@pytest.fixture
def aws_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static test AWS credentials in the environment; no instance metadata lookups."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
