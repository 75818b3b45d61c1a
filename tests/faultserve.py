"""The real ``gateway serve`` as a subprocess, for SIGTERM and the soak: its pid, RSS and open files.

``served_gateway`` writes the settings as a YAML config, runs ``python -m
gateway.cli.main serve --config ...`` from this checkout (``PYTHONPATH``), waits
until it answers, and on exit stops it with SIGTERM (then SIGKILL after a
bound). Output goes to ``gateway.log`` beside the config.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 40.0  # uvicorn's graceful shutdown is 30 s, then the lifespan closes pools and the audit log


@dataclass
class ServedGateway:
    """A running ``gateway serve`` process."""

    process: subprocess.Popen[bytes]
    url: str
    config: Path
    log: Path

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def rss_kb(self) -> int:
        """Resident memory now, in KiB (``VmRSS``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def open_files(self) -> int:
        """File descriptors open now."""
        return sum(1 for _ in Path(f"/proc/{self.pid}/fd").iterdir())

    def terminate(self) -> None:
        """Send SIGTERM (what an orchestrator does to stop a replica)."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit; return its exit code (kill it past the bound and fail)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            pytest.fail(f"gateway did not exit within {timeout:g} s of SIGTERM", pytrace=False)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the gateway's output."""
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:] if self.log.exists() else ""


def write_config(settings: Settings, path: Path) -> Path:
    """Write ``settings`` as the YAML config ``gateway serve --config`` reads."""
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def served_gateway(
    settings: Settings, directory: Path, env: dict[str, str], token: str, *, quiet: bool = False
) -> Iterator[ServedGateway]:
    """Run ``gateway serve`` on ``settings`` until the block ends; ready once a query with ``token`` succeeds.

    ``quiet`` drops the gateway's output (a soak's audit events would fill the disk).
    """
    config = write_config(settings, directory / "gateway.yaml")
    log = directory / "gateway.log"
    url = f"http://{settings.listen.host}:{settings.listen.port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "serve", "--config", str(config)],
            cwd=directory,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.DEVNULL if quiet else out,
            stderr=subprocess.DEVNULL if quiet else subprocess.STDOUT,
        )
    served = ServedGateway(process, url, config, log)
    try:
        _wait_ready(served, token)
        yield served
    finally:
        if process.poll() is None:
            served.terminate()
            served.wait()


def _wait_ready(served: ServedGateway, token: str) -> None:
    body = {"target": "shop", "sql": "SELECT id FROM items WHERE id = ?", "params": [1]}
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            pytest.fail(f"gateway exited at start-up:\n{served.log_tail()}", pytrace=False)
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.post(
                f"{served.url}/v1/query",
                json=body,
                headers={"Authorization": f"Bearer {token}", "X-Request-ID": "ready-probe"},
                timeout=5,
            )
            if response.status_code == httpx.codes.OK:
                return
        time.sleep(0.1)
    pytest.fail(f"gateway not ready within {START_TIMEOUT:g} s:\n{served.log_tail()}", pytrace=False)


def audit_verify(config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``gateway audit verify --config CONFIG`` (from this checkout) and return what it said."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "audit", "verify", "--config", str(config)],
        cwd=config.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
