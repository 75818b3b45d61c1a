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
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy
import pytest
from asyncmy import errors as db_errors
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


def _write_tls(directory: Path) -> Path:
    """A test CA and a server certificate for 127.0.0.1/localhost; return the CA file."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway iam test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # noqa: FBT003
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    shutil.chown(directory / "server.key", "mysql", "mysql")
    (directory / "server.key").chmod(0o600)
    return directory / "ca.pem"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], error_log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = error_log.read_text(encoding="utf-8", errors="replace")[-2000:] if error_log.exists() else ""
            pytest.fail(f"private MariaDB exited ({proc.returncode}):\n{log}", pytrace=False)
        if path.exists():
            try:
                asyncio.run(_ping(path))
            except (OSError, db_errors.MySQLError):
                pass
            else:
                return
        time.sleep(0.1)
    pytest.fail("private MariaDB did not start within 60 s", pytrace=False)


async def _ping(path: Path) -> None:
    conn = await asyncmy.connect(unix_socket=str(path), user="root", password="")
    conn.close()


LEFTOVER_AGE = 3600


def _remove_leftovers() -> None:
    """Clean up after an interrupted run over an hour old: its server, PAM file and directory."""
    for base in Path("/tmp").glob("gwiam-*-*"):  # noqa: S108 - where running_iam_mariadb puts them
        try:
            if time.time() - base.stat().st_mtime < LEFTOVER_AGE:
                continue
            pid_file = base / "run" / "mysqld.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text(encoding="utf-8").strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
                if str(base).encode() in cmdline:  # only the server this directory belongs to
                    os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue
        rand = base.name.split("-")[1]
        (PAM_DIR / f"gwtest-iam-{rand}").unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


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
    base = Path(tempfile.mkdtemp(prefix=f"gwiam-{rand}-", dir="/tmp"))
    base.chmod(0o755)
    data, run, tls, verify = base / "data", base / "run", base / "tls", base / "verify"
    for d in (data, run, tls, verify):
        d.mkdir(mode=0o755)
    for d in (data, run):
        shutil.chown(d, "mysql", "mysql")
        d.chmod(0o700)
    ca_file = _write_tls(tls)
    port = _free_port()
    verifier_log = run / "verifier.log"
    # The verifier and its config are root-owned and not writable by others:
    # PAM runs them with the server's privileges for every login.
    shutil.copy(VERIFIER, verify / "iamverifier.py")
    (verify / "iamverifier.py").chmod(0o644)
    config = verify / "config.json"
    config.write_text(
        json.dumps(
            {
                "host_port": f"127.0.0.1:{port}",
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
    pam_file = PAM_DIR / service
    proc: subprocess.Popen[bytes] | None = None
    try:
        pam_file.write_text(
            f"auth required pam_exec.so expose_authtok quiet {SYSTEM_PYTHON} {verify / 'iamverifier.py'} {config}\n"
            "account required pam_permit.so\n",
            encoding="utf-8",
        )
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        error_log = run / "error.log"
        sock = run / "mysqld.sock"
        proc = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={data}",
                "--user=mysql",
                "--bind-address=127.0.0.1",
                f"--port={port}",
                f"--socket={sock}",
                f"--pid-file={run / 'mysqld.pid'}",
                f"--log-error={error_log}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--max-connections=100",
                "--plugin-load-add=auth_pam_v1",
                "--pam-use-cleartext-plugin=ON",
                f"--ssl-ca={ca_file}",
                f"--ssl-cert={tls / 'server.pem'}",
                f"--ssl-key={tls / 'server.key'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_socket(sock, proc, error_log)
        db = IamMariaDB(
            host="127.0.0.1",
            port=port,
            socket=sock,
            ca_file=ca_file,
            service=service,
            verifier_log=verifier_log,
            database=DATABASE,
            reader="gwiam_reader",
            writer="gwiam_writer",
        )
        asyncio.run(_provision(db))
        yield db
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        pam_file.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


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
