"""Fault suite: broken policy files dropped into the watched directory under load."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import start_gateway, stop_gateway
from faultfixture import Measure, PrivateDatabase, fault_settings, records_lost
from faultload import READ_SQL, Job, Reply, drive, malformed, mixed, tally
from oidcfixture import OidcProvider

pytestmark = pytest.mark.faults

RELOAD_BOUND = 5.0  # seconds: the watcher polls every second

# Each would change who may do what if it were loaded; none may be.
BROKEN = {
    "zz-syntax.yaml": "version: 1\ngrants:\n  - name: [unclosed\n",
    "zz-unknown-target.yaml": (
        "version: 1\ngrants:\n  - name: nobody-everything\n    subjects: ['user:nobody@example.com']\n"
        "    target: elsewhere\n    access: ddl\n    db_user: root\n"
    ),
    "zz-duplicate.yaml": (
        "version: 1\ngrants:\n  - name: analysts-read\n    subjects: ['user:nobody@example.com']\n"
        "    target: shop\n    access: write\n    db_user: gwf_writer\n"
    ),
    "zz-binary.yaml": "\x00\x01\x02 not yaml \xff",
}


def _ready_checks(url: str, admin_token: str) -> dict[str, Any]:
    """The policies check of /readyz (its details are for admins only)."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    checks: dict[str, Any] = httpx.get(f"{url}/readyz", headers=headers, timeout=10).json()["checks"]["policies"]
    return checks


def _wait_policy(url: str, admin_token: str, *, blaming: str | None, not_blaming: str | None = None) -> float:
    """Wait until /readyz shows the reload error naming ``blaming`` (None: no error); return the seconds."""
    started = time.monotonic()
    while time.monotonic() - started < RELOAD_BOUND:
        error = _ready_checks(url, admin_token)["last_reload_error"]
        if blaming is None and error is None:
            return time.monotonic() - started
        if blaming is not None and error and blaming in error and not (not_blaming and not_blaming in error):
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"the policy reload error did not become {blaming!r} within {RELOAD_BOUND} s")


def test_broken_policy_files_keep_last_good(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
    """Broken policy files (bad YAML, unknown target, duplicate grant, binary, a truncated main file) change nothing.

    Under load, each broken state keeps the last good policy in force
    (readers read, writers write, denials stay denied, ``nobody`` still gets
    nothing), shows in /readyz and the metrics, and never turns into an error
    reply; once the files are fixed, a good edit (revoking a user) takes
    effect within seconds again.
    """
    gw = start_gateway(fault_settings(tmp_path, idp, private_db), idp, private_db.db)
    policies = tmp_path / "policies"
    good = (policies / "policy.yaml").read_text(encoding="utf-8")
    tokens = {name: idp.token(name) for name in ("reader", "writer", "nobody", "admin")}
    base = mixed(tokens)

    def pick(n: int, request_id: str) -> Job:
        if n % 10 == 9:  # a grant for nobody sits in every broken file: it must never apply
            return Job("nobody", tokens["nobody"], {"target": "shop", "sql": READ_SQL, "params": [1]})
        return base(n, request_id)

    states: dict[str, list[Reply]] = {}
    reload_s: dict[str, float] = {}

    def under_load(name: str) -> None:
        states[name] = asyncio.run(drive(gw.url, pick, clients=4, prefix=f"policy-{name}", per_client=5))

    try:
        under_load("good")
        previous = None
        for name, text in BROKEN.items():  # one broken file replaces the next: the error names each in turn
            (policies / name).write_text(text, encoding="utf-8")
            if previous is not None:
                (policies / previous).unlink()
            reload_s[name] = _wait_policy(gw.url, tokens["admin"], blaming=name, not_blaming=previous)
            under_load(name)
            previous = name
        (policies / "policy.yaml").write_text(good[: len(good) // 2], encoding="utf-8")  # a half-written file
        assert previous is not None  # the last broken file of the loop
        (policies / previous).unlink()
        reload_s["truncated"] = _wait_policy(gw.url, tokens["admin"], blaming="policy.yaml", not_blaming=previous)
        metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
        under_load("truncated")
        revoked = good.replace('subject: "user:mallory@example.com"', 'subject: "user:reader@example.com"')
        (policies / "policy.yaml").write_text(revoked, encoding="utf-8")
        reload_s["fixed"] = _wait_policy(gw.url, tokens["admin"], blaming=None)
        states["reader revoked"] = asyncio.run(drive(gw.url, base, clients=2, prefix="policy-revoked", per_client=10))
    finally:
        stop_gateway(gw)
    everything = [r for replies in states.values() for r in replies]
    fault_report.requests = len(everything)
    fault_report.replies = tally(everything)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", everything)
    fault_report.notes["broken_states"] = len(BROKEN) + 1
    fault_report.notes["max_reload_s"] = round(max(reload_s.values()), 2)
    assert malformed(everything) == []
    assert "gateway_policy_reload_failed 1.0" in metrics
    for name, replies in states.items():
        if name == "reader revoked":
            continue
        by_job = {(r.job, r.label) for r in replies}
        assert by_job == {
            ("read", "200 ok"),
            ("write", "200 ok"),
            ("denied", "403 forbidden"),
            ("nobody", "403 forbidden"),
        }, name
    assert {(r.job, r.label) for r in states["reader revoked"]} == {
        ("read", "403 revoked"),
        ("denied", "403 revoked"),
        ("write", "200 ok"),
    }
    assert fault_report.records_lost == 0
