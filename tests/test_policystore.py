"""The live policy's watcher: off the event loop, never ended by a loader bug, never behind an admin edit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from test_policyedit import COMMENTED, _write

from gateway.policy.files import load_policies
from gateway.policy.store import PolicyStore
from gateway.policy.types import PolicySet


def _names(store: PolicyStore) -> set[str]:
    return {g.name for g in store.current.grants}


@pytest.mark.anyio
async def test_watch_survives_a_loader_bug(tmp_path: Path) -> None:
    """An unexpected exception from the loader is logged and counted; the next change still loads."""
    path = _write(tmp_path)
    calls = {"n": 0}

    def flaky(directory: Path, **kwargs: Collection[str] | None) -> PolicySet:
        calls["n"] += 1
        if calls["n"] == 2:  # the watcher's first reload
            raise RecursionError("a loader bug")
        return load_policies(directory, **kwargs)

    store = PolicyStore(tmp_path, {"shop"}, loader=flaky)
    store.load()
    with capture_logs() as logs:
        watcher = asyncio.create_task(store.watch(interval=0.02))
        try:
            path.write_text(COMMENTED.replace("shop-read", "shop-reed"), encoding="utf-8")
            for _ in range(200):
                await asyncio.sleep(0.02)
                if "shop-reed" in _names(store):
                    break
        finally:
            watcher.cancel()
    assert "shop-reed" in _names(store)
    assert store.reload_failures == 1
    assert [e["event"] for e in logs if e["event"] == "policy_watch_failed"] == ["policy_watch_failed"]


@pytest.mark.anyio
async def test_a_slow_reload_never_replaces_a_newer_admin_load(tmp_path: Path) -> None:
    """What a watcher thread read before an admin edit is dropped if the edit was applied while it parsed."""
    path = _write(tmp_path)
    parsed, release = threading.Event(), threading.Event()

    def slow_in_threads(directory: Path, **kwargs: Collection[str] | None) -> PolicySet:
        policy = load_policies(directory, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            parsed.set()
            assert release.wait(10)
        return policy

    store = PolicyStore(tmp_path, {"shop"}, loader=slow_in_threads)
    store.load()
    path.write_text(COMMENTED.replace("shop-read", "shop-old"), encoding="utf-8")
    polling = asyncio.create_task(store.poll_in_thread())
    assert await asyncio.to_thread(parsed.wait, 10)
    path.write_text(COMMENTED.replace("shop-read", "shop-new"), encoding="utf-8")
    store.load()  # the admin API's reload after its edit, on the loop
    release.set()
    assert await polling is True
    assert "shop-new" in _names(store)
    assert "shop-old" not in _names(store)
