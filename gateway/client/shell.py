r"""``gateway shell -t TARGET``: an interactive SQL shell over the gateway.

Statements may span lines and end with ``;``. Backslash commands (alone on a
line): ``\targets``, ``\format table|json|ndjson|csv|tsv``, ``\target NAME``,
``\help``, ``\q``. Each statement's result is followed by its row count and
timing (gateway-side and round trip); a gateway error shows its code, detail
and the request id to quote to an admin. History is kept (0600) beside the
token cache when the input is a terminal.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from gateway.client import tokencache
from gateway.client.commands import print_targets, run_query
from gateway.client.errors import ProblemError
from gateway.client.http import GatewayClient, HeldForReview, QueryRequest
from gateway.client.render import FORMATS, summary
from gateway.client.reviews import describe

HISTORY_FILE = "history"
HISTORY_LENGTH = 2000
HELP = """\
End a statement with ; (it may span lines).
  \\targets          targets you can use
  \\target NAME      switch target
  \\format FORMAT    table, json, ndjson, csv or tsv
  \\help             this text
  \\q                quit (or Ctrl-D)"""


class Shell:
    """Reads statements, runs them through the gateway, prints results."""

    def __init__(
        self,
        client: GatewayClient,
        target: str,
        fmt: str = "table",
        *,
        read: Callable[[str], str] = input,
        console: Console | None = None,
    ) -> None:
        self.client = client
        self.target = target
        self.format = fmt
        self._read = read
        self._console = console or Console()
        self._interactive = sys.stdin.isatty()

    def run(self) -> int:
        """Loop until end of input or the quit command; the exit status is 0."""
        if self._interactive:
            self._setup_history()
            self._console.print(f"Connected to target [bold]{self.target}[/bold]. \\help for help.", highlight=False)
        buffer: list[str] = []
        while True:
            prompt = f"{self.target}> " if not buffer else " " * len(self.target) + "-> "
            try:
                line = self._read(prompt if self._interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                buffer.clear()
                print(file=sys.stderr)
                continue
            if not self._feed(line, buffer):
                break
        if buffer:
            self._console.print("[dim](unterminated statement discarded)[/dim]")
        return 0

    def _feed(self, line: str, buffer: list[str]) -> bool:
        """Take one input line; run the statement it completes. False means quit."""
        stripped = line.strip()
        if not buffer and stripped.startswith("\\"):
            return self._command(stripped)
        if not stripped and not buffer:
            return True
        buffer.append(line)
        if stripped.endswith(";"):
            sql = "\n".join(buffer).strip().rstrip(";").strip()
            buffer.clear()
            if sql:
                self.execute(sql)
        return True

    def _command(self, text: str) -> bool:
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        if name in {"\\q", "\\quit", "\\exit"}:
            return False
        if name == "\\help":
            self._console.print(HELP, highlight=False, markup=False)
        elif name == "\\targets":
            try:
                print_targets(self._console, self.client.targets())
            except ProblemError as exc:
                self._error(exc)
        elif name == "\\format":
            if arg in FORMATS:
                self.format = arg
                self._console.print(f"format: {arg}")
            else:
                self._console.print(f"formats: {', '.join(FORMATS)} (now {self.format})", markup=False)
        elif name == "\\target" and arg:
            self.target = arg
            self._console.print(f"target: {arg}")
        else:
            self._console.print(f"unknown command {name}; \\help lists them", markup=False)
        return True

    def execute(self, sql: str) -> dict[str, Any] | None:
        """Run one statement and print its result and timing."""
        started = time.perf_counter()
        try:
            trailer = run_query(self.client, QueryRequest(self.target, sql), self.format, self._console)
        except ProblemError as exc:
            self._error(exc)
            return None
        except HeldForReview as held:  # nothing ran: say where the review is, and carry on
            review = held.reply["review"]
            self._console.print(describe(review), highlight=False, markup=False)
            self._console.print(f"held for review; `gateway review execute {review['id']}` once approved", markup=False)
            return None
        round_trip = (time.perf_counter() - started) * 1000
        if self.format != "table":
            self._console.print(f"[dim]{summary(trailer)}[/dim]", highlight=False)
        self._console.print(f"[dim]round trip {round_trip:.1f} ms[/dim]", highlight=False)
        return trailer

    def _error(self, exc: ProblemError) -> None:
        # The same text as any command's error (gateway.cli.main), in red; the shell carries on.
        self._console.print(exc.text(), style="bold red", highlight=False, markup=False)

    def _setup_history(self) -> None:
        try:
            import readline  # noqa: PLC0415 - only on a terminal, and not on every platform
        except ImportError:
            return
        path = tokencache.config_dir() / HISTORY_FILE
        with contextlib.suppress(OSError):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
            readline.read_history_file(path)
        readline.set_history_length(HISTORY_LENGTH)

        def save() -> None:
            with contextlib.suppress(OSError):
                readline.write_history_file(path)
                path.chmod(0o600)

        atexit.register(save)
