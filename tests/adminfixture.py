"""Two gateways (replicas) sharing one policies directory and the MariaDB audit store.

Each replica is its own app with its own pools and policy store, served by
uvicorn on its own loopback port; they share the policies directory (as
several pods mounting one volume) and the shared audit store, as in
production. Analysts get a 60 s
statement timeout here so a revocation, not the timeout, ends a long query.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from auditfixture import scratch_audit_db
from conftest import RunningGateway, ScratchDatabase, free_port, gateway_settings, start_gateway, stop_gateway
from oidcfixture import OidcProvider

from gateway.settings import ListenSettings

__all__ = ["Replicas", "etag", "replicas"]


@dataclass
class Replicas:
    """Two running gateways on one policies directory."""

    first: RunningGateway
    second: RunningGateway


def etag(http: httpx.Client) -> str:
    """The current policy revision, as the ETag of ``GET /v1/policy`` (admin client)."""
    reply = http.get("/v1/policy")
    assert reply.status_code == 200, reply.text
    return reply.headers["etag"]


def edit(http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send a policy edit with a fresh If-Match."""
    return http.request(method, url, headers={"If-Match": etag(http)}, **kwargs)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider, test_db: ScratchDatabase
) -> Iterator[Replicas]:
    """Two gateways sharing a policies directory and one MariaDB audit store."""
    tmp = tmp_path_factory.mktemp("replicas")
    with scratch_audit_db() as audit_db:
        yield from _replicas(tmp, idp, test_db, {"store": "mariadb", "mariadb": audit_db.model_dump()})


def _replicas(tmp: Path, idp: OidcProvider, test_db: ScratchDatabase, audit: dict[str, Any]) -> Iterator[Replicas]:
    settings = gateway_settings(tmp, idp, test_db, admin={"state_dir": tmp / "state"}, audit=audit)
    policy = settings.policies_dir / "policy.yaml"
    text = policy.read_text(encoding="utf-8").replace("statement_timeout: 2s", "statement_timeout: 60s")
    policy.write_text("# Hand-written policy; admins' comments must survive API edits.\n" + text, encoding="utf-8")
    second = settings.model_copy(
        update={
            "listen": ListenSettings(host="127.0.0.1", port=free_port()),
        }
    )
    first_gw = start_gateway(settings, idp, test_db)
    try:
        second_gw = start_gateway(second, idp, test_db)
    except BaseException:
        stop_gateway(first_gw)
        raise
    yield Replicas(first_gw, second_gw)
    stop_gateway(second_gw)
    stop_gateway(first_gw)
