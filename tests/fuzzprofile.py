"""Hypothesis settings shared by the fuzz tests (``pytest -m fuzz``).

Two profiles, picked with ``HYPOTHESIS_PROFILE``:

* ``ci`` (the default): derandomized, so every run tries the same examples and
  a CI failure reproduces on a laptop; no example database, so nothing is
  written to the working tree.
* ``deep``: random, ten times the examples, failures saved under
  ``.hypothesis/`` (git-ignored) and replayed first on the next run. For a
  longer hunt on a developer machine: ``HYPOTHESIS_PROFILE=deep pytest -m fuzz``.

Each test names its own example count with ``budget(n)``: ``n`` in ``ci``,
``10 * n`` in ``deep``.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

__all__ = ["PROFILE", "budget"]

# A generous bound per example: a statement or policy file of a few hundred
# characters is analysed in milliseconds, so seconds means something hangs.
DEADLINE = timedelta(seconds=5)
# Strategies here build inputs from many small parts; that is slow to generate
# on a busy 2-core machine but is not a problem with the test.
SLOW_DATA = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=DEADLINE,
    suppress_health_check=SLOW_DATA,
    print_blob=False,
)
settings.register_profile(
    "deep",
    derandomize=False,
    database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
    deadline=DEADLINE,
    suppress_health_check=SLOW_DATA,
    print_blob=True,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def budget(examples: int) -> int:
    """The number of examples a test runs under the current profile."""
    return examples * 10 if PROFILE == "deep" else examples
