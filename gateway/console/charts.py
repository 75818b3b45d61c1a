"""Charts of the audit log, drawn on the server as SVG geometry (no JavaScript, no charting library).

:func:`summarise` counts a window of entries (the newest ones matching the
auditor's filters); :func:`timeline` and :func:`ranking` turn counts into
bars with coordinates, which ``charts.html`` draws as inline ``<svg>``
(labels go through the template's escaping like every other value, colours
come from the stylesheet). Each chart also has its numbers as a table, for
screen readers and for copying.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from gateway.audit.store import Entry

TOP = 10
WIDTH = 640
BAR_AREA = 180  # px of height for the timeline's bars
ROW = 22  # px per bar of a ranking
LABEL = 220  # px for a ranking's labels
HOURLY_UP_TO = 48  # hours a window may span and still be drawn per hour (else per day)


@dataclass(slots=True)
class Summary:
    """Counts over a window of audit entries."""

    scanned: int = 0
    first: str | None = None  # the oldest entry's time in the window
    last: str | None = None
    buckets: Counter[tuple[str, str]] = field(default_factory=Counter)  # (bucket, allow|deny) -> decisions
    denied_users: Counter[str] = field(default_factory=Counter)
    denied_targets: Counter[str] = field(default_factory=Counter)
    targets: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: its label, value, and place (x, y, width, height in px)."""

    label: str
    value: int
    x: float
    y: float
    width: float
    height: float
    kind: str = ""  # allow / deny for the timeline


@dataclass(frozen=True, slots=True)
class Chart:
    """Bars and the drawing's size."""

    bars: list[Bar]
    width: int
    height: int
    maximum: int


def _bucket(moment: str, *, hourly: bool) -> str:
    return moment[:13] + ":00" if hourly else moment[:10]


def summarise(entries: Iterable[Entry]) -> tuple[Summary, bool]:
    """Count ``entries`` (newest first); the second value says the buckets are hours (else days)."""
    window = list(entries)
    summary = Summary(scanned=len(window))
    if not window:
        return summary, True
    summary.last, summary.first = str(window[0].get("time")), str(window[-1].get("time"))
    hourly = _span_hours(summary.first, summary.last) <= HOURLY_UP_TO
    for entry in window:
        if entry.get("event") != "decision":
            continue
        decision, target, user = entry.get("decision"), entry.get("target"), entry.get("user")
        summary.buckets[
            (_bucket(str(entry.get("time")), hourly=hourly), "deny" if decision == "deny" else "allow")
        ] += 1
        if isinstance(target, str):
            summary.targets[target] += 1
        if decision == "deny":
            summary.denied_users[str(user) if user is not None else "(no valid token)"] += 1
            if isinstance(target, str):
                summary.denied_targets[target] += 1
    return summary, hourly


def _span_hours(first: str, last: str) -> float:
    try:
        return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds() / 3600
    except ValueError:
        return 0.0


def timeline(summary: Summary) -> Chart:
    """Decisions per bucket, allowed and denied stacked, oldest on the left."""
    keys = sorted({bucket for bucket, _ in summary.buckets})
    totals = {k: summary.buckets[(k, "allow")] + summary.buckets[(k, "deny")] for k in keys}
    maximum = max(totals.values(), default=0)
    step = WIDTH / max(len(keys), 1)
    bars: list[Bar] = []
    for i, key in enumerate(keys):
        base = float(BAR_AREA)
        for kind in ("allow", "deny"):
            value = summary.buckets[(key, kind)]
            height = BAR_AREA * value / maximum if maximum else 0.0
            base -= height
            bars.append(
                Bar(
                    key,
                    value,
                    round(i * step + 1, 1),
                    round(base, 1),
                    round(max(step - 2, 1), 1),
                    round(height, 1),
                    kind,
                )
            )
    return Chart(bars, WIDTH, BAR_AREA, maximum)


def ranking(counts: Counter[str]) -> Chart:
    """The top entries of ``counts`` as horizontal bars, largest first."""
    top = counts.most_common(TOP)
    maximum = top[0][1] if top else 0
    span = WIDTH - LABEL - 60
    bars = [
        Bar(label, value, LABEL, i * ROW + 2, round(span * value / maximum, 1) if maximum else 0.0, ROW - 6)
        for i, (label, value) in enumerate(top)
    ]
    return Chart(bars, WIDTH, max(len(bars), 1) * ROW, maximum)
