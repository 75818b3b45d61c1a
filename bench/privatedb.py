"""A private, throwaway mariadbd for the benchmark: own datadir, port, socket and TLS files.

Every app in the benchmark talks to this one server, so they share the same
MariaDB, and nothing the benchmark does (256 naive connections at once, a
write-heavy case) touches a server other people use. It is stopped and its
directory removed when the context exits.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class PrivateServer:
    """Where the private server listens and its TLS files."""

    port: int
    socket: Path
    ca_file: Path
    directory: Path


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost (RSA 2048, as most servers use)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("gateway-bench CA"))
        .issuer_name(_name("gateway-bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
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
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def _binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit(f"{name} not found: install Debian's mariadb-server (make bench does)")


@contextlib.contextmanager
def private_mariadb(*, max_connections: int = 2000) -> Iterator[PrivateServer]:
    """Start a private mariadbd with TLS on a free loopback port; stop and remove it after."""
    directory = Path(tempfile.mkdtemp(prefix="gwbench-db-"))
    datadir, sock, port = directory / "data", directory / "mysqld.sock", free_port()
    user = ["--user=root"] if os.geteuid() == 0 else []
    ca, cert, key = write_tls_files(directory)
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [_binary("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}", *user,
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
        process = subprocess.Popen(
            [_binary("mariadbd"), "--no-defaults", f"--datadir={datadir}", f"--socket={sock}", f"--port={port}",
             "--bind-address=127.0.0.1", f"--pid-file={directory / 'mysqld.pid'}",
             f"--log-error={directory / 'error.log'}", f"--max-connections={max_connections}",
             "--innodb-buffer-pool-size=256M", f"--ssl-ca={ca}", f"--ssl-cert={cert}", f"--ssl-key={key}", *user],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not sock.exists() or not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = (directory / "error.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"private mariadbd did not start:\n{log}")
            time.sleep(0.2)
        yield PrivateServer(port=port, socket=sock, ca_file=ca, directory=directory)
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(directory, ignore_errors=True)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
