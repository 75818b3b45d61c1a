"""A private, throwaway ``mariadbd``: own datadir, loopback port, socket and (optional) TLS files.

One helper for every test and benchmark that needs a MariaDB of its own
instead of the shared server on 3306: the IAM tests (PAM plugin, TLS), the
fault tests (stopped, killed and restarted by the test) and ``make bench``
(``bench/privatedb.py``). ``running_mariadb`` makes the directory, runs
``mariadb-install-db``, starts the server and, when the block ends, stops it
and removes the directory. ``MariaDBServer.stop``/``start`` restart the same
server on the same datadir and port.

Failures raise ``MariaDBStartError`` with the tail of the server's error log;
callers turn it into ``pytest.fail`` or ``SystemExit``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pymysql
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
LEFTOVER_AGE = 3600


class MariaDBStartError(RuntimeError):
    """The private server could not be initialised or did not come up."""


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary(name: str) -> str:
    """Path of a MariaDB program (``mariadbd`` lives in /usr/sbin, often off PATH)."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise MariaDBStartError(f"{name} is not installed (Debian's mariadb-server has it)")


def write_tls_files(directory: Path, *, key_type: Literal["ec", "rsa"] = "ec") -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1/localhost; return (ca, cert, key) paths."""
    now = dt.datetime.now(dt.UTC)

    def new_key() -> Any:
        return ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else rsa.generate_private_key(65537, 2048)

    ca_key, key = new_key(), new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway test CA")])
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
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # noqa: FBT003 - KeyUsage takes nine positional flags
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
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
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o600)
    return paths


@dataclass
class MariaDBServer:
    """One private server: where it listens, its files, and its process (start/stop/restart)."""

    directory: Path
    port: int
    args: tuple[str, ...]
    ca_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """The server listens on loopback only."""
        return "127.0.0.1"

    @property
    def datadir(self) -> Path:
        """The server's own datadir."""
        return self.directory / "data"

    @property
    def socket(self) -> Path:
        """The unix socket root logs in over (no password)."""
        return self.directory / "run" / "mysqld.sock"

    @property
    def error_log(self) -> Path:
        """The server's error log."""
        return self.directory / "run" / "error.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the error log (for failure messages)."""
        return self.error_log.read_text(encoding="utf-8", errors="replace")[-chars:] if self.error_log.exists() else ""

    def root(self, **kwargs: Any) -> Any:
        """A root connection over the unix socket (autocommit)."""
        return pymysql.connect(unix_socket=str(self.socket), user="root", password="", autocommit=True, **kwargs)

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as root and return its rows."""
        conn = self.root()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server on its datadir and port; return once root can log in."""
        if self.running:
            return
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [binary("mariadbd"), *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MariaDBStartError(f"private MariaDB exited ({self.process.returncode}):\n{self.log_tail()}")
            if self.socket.exists():
                with contextlib.suppress(pymysql.Error):
                    self.root(connect_timeout=2).close()
                    return
            time.sleep(0.05)
        raise MariaDBStartError(f"private MariaDB did not start within {timeout:g} s:\n{self.log_tail()}")

    def stop(self, *, kill: bool = False, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server: a clean shutdown (SIGTERM) or a crash (``kill=True``, SIGKILL)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def _owned_by(user: str | None, *paths: Path) -> None:
    if user is None or user == "root":
        return
    for path in paths:
        shutil.chown(path, user, user)


@contextlib.contextmanager
def running_mariadb(
    prefix: str,
    *,
    user: str | None = None,
    tls: Literal["ec", "rsa"] | None = None,
    args: Sequence[str] = (),
    keep: bool = False,
    before_start: Callable[[MariaDBServer], None] | None = None,
) -> Iterator[MariaDBServer]:
    """Initialise and start a private server in ``/tmp/<prefix>...``; stop and remove it after.

    ``user`` is the OS account mariadbd runs as (default: root when root, else
    the current user); ``args`` are extra server options; ``before_start`` may
    add files (a PAM service) once the directory exists.
    """
    if user is None and os.geteuid() == 0:
        user = "root"
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    directory.chmod(0o755)
    data, run = directory / "data", directory / "run"
    for path in (data, run):
        path.mkdir(mode=0o700)
    _owned_by(user, data, run)
    as_user = [f"--user={user}"] if user else []
    ca_file = None
    tls_args: list[str] = []
    if tls is not None:
        (directory / "tls").mkdir()
        ca_file, cert, key = write_tls_files(directory / "tls", key_type=tls)
        _owned_by(user, key)
        tls_args = [f"--ssl-ca={ca_file}", f"--ssl-cert={cert}", f"--ssl-key={key}"]
    port = free_port()
    server = MariaDBServer(
        directory=directory,
        port=port,
        ca_file=ca_file,
        args=(
            "--no-defaults",
            f"--datadir={data}",
            *as_user,
            "--bind-address=127.0.0.1",
            f"--port={port}",
            f"--socket={run / 'mysqld.sock'}",
            f"--pid-file={run / 'mysqld.pid'}",
            f"--log-error={run / 'error.log'}",
            "--skip-log-bin",
            *tls_args,
            *args,
        ),
    )
    try:
        install = subprocess.run(
            [binary("mariadb-install-db"), "--no-defaults", f"--datadir={data}", *as_user,
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=False, capture_output=True, timeout=120,
        )  # fmt: skip
        if install.returncode != 0:
            raise MariaDBStartError(f"mariadb-install-db failed:\n{install.stderr.decode(errors='replace')[-2000:]}")
        if before_start is not None:
            before_start(server)
        server.start()
        yield server
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def remove_leftovers(prefix: str, also: Callable[[Path], None] | None = None) -> None:
    """Clean up after interrupted runs over an hour old: stop their servers, remove their directories."""
    for base in Path("/tmp").glob(f"{prefix}*"):  # noqa: S108 - where running_mariadb puts them
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
        if also is not None:
            also(base)
        shutil.rmtree(base, ignore_errors=True)
