"""A one-line progress bar on stderr for long CLI work (export, verify); silent off a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

_WIDTH = 30


class Progress:
    """Call with the running count; :meth:`finish` ends the line.

    With a ``total`` it draws ``label [#####-----]  52%  5200/10000``,
    without one ``label 5200``. Redraws at most every ``interval`` seconds.
    ``enabled`` defaults to whether ``stream`` is a terminal.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._interval = interval
        self._clock = clock
        self._shown = float("-inf")
        self._drawn = False

    def line(self, count: int) -> str:
        """The text shown for ``count``."""
        if not self.total:
            return f"{self.label} {count}"
        share = min(count / self.total, 1.0)
        filled = round(share * _WIDTH)
        return f"{self.label} [{'#' * filled}{'-' * (_WIDTH - filled)}] {share:4.0%}  {count}/{self.total}"

    def __call__(self, count: int) -> None:
        """Show ``count`` if the last redraw is old enough."""
        now = self._clock()
        if not self.enabled or now - self._shown < self._interval:
            return
        self._shown = now
        self._drawn = True
        self.stream.write(f"\r{self.line(count)}")
        self.stream.flush()

    def finish(self, count: int) -> None:
        """Show the final count and end the line."""
        if self.enabled:
            self.stream.write(f"\r{self.line(count)}\n")
            self.stream.flush()
