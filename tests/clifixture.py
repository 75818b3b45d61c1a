"""Running the `gateway` client as a user would: in a subprocess, with its own config home.

``device_login`` runs ``gateway login`` and approves it through the provider's
own pages (``devicefixture.approve``), so the token cache is filled by the
real device flow.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

from conftest import RunningGateway
from devicefixture import approve

__all__ = ["cli_env", "device_login", "gateway_cli"]

WAIT = 60.0  # seconds a CLI subprocess may take, at most
URL_LINE = re.compile(r"To sign in, open (\S+)")


def cli_env(gateway: RunningGateway, config_home: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: its own config dir and the gateway URL, no inherited token."""
    env = {k: v for k, v in os.environ.items() if k not in {"GATEWAY_TOKEN", "GATEWAY_URL"}}
    env.update(XDG_CONFIG_HOME=str(config_home), GATEWAY_URL=gateway.url, PYTHONPATH=os.pathsep.join(sys.path))
    env.update(extra)
    return env


def gateway_cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``gateway ARGS`` as a separate process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def device_login(gateway: RunningGateway, config_home: Path, account: str) -> subprocess.CompletedProcess[str]:
    """``gateway login`` in a subprocess, approved by the test through the provider's own pages."""
    env = cli_env(gateway, config_home)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", "login", "--issuer", gateway.idp.issuer, "--scope",
         "openid email offline_access gateway"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stderr is not None
    stderr = process.stderr

    def pump() -> None:
        for line in stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        while (line := lines.get(timeout=WAIT)) is not None:
            seen.append(line)
            if match := URL_LINE.search(line):
                approve(match.group(1), account)
                break
        out, _ = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    while not lines.empty():
        seen.append(lines.get() or "")
    return subprocess.CompletedProcess(process.args, process.returncode, out, "".join(seen))
