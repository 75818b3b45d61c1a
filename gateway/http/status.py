"""``/healthz``, ``/readyz``, and the caller's own view: ``/v1/me`` and ``/v1/targets``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.http import readiness
from gateway.http.deps import Caller, ClockDep, PoliciesDep, ServicesDep, SettingsDep, authenticate, context_of
from gateway.http.problems import JSONResponse
from gateway.policy import views
from gateway.policy.decide import roles_of

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request, services: ServicesDep) -> Response:
    """Ready (200) or not (503) for anyone; the checks behind it only for a caller with the admin role.

    The details name files, grants, hosts and accounts (SECURITY rule 31), so
    a probe without a token learns only the status. A token, if sent, is
    validated like on every route (an invalid one is a 401); a valid one
    without the admin role gets the status alone.
    """
    checks = await readiness.check(services.policies, services.key_sources, services.pools, services.audit)
    ready = readiness.is_ready(checks)
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
    if "authorization" in request.headers:
        caller = await authenticate(request, services.pipeline, context_of(request))
        if "admin" in roles_of(caller, services.policies.current):
            body.update(ready=ready, checks=checks)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/v1/me")
async def me(caller: Caller, policies: PoliciesDep, clock: ClockDep) -> JSONResponse:
    """Who the caller is, their roles and effective grants."""
    return JSONResponse(views.me(caller, policies.current, clock()))


@router.get("/v1/targets")
async def targets(caller: Caller, policies: PoliciesDep, clock: ClockDep, settings: SettingsDep) -> JSONResponse:
    """Targets the caller can use, with the access level."""
    return JSONResponse({"targets": views.targets(caller, policies.current, clock(), settings.targets)})
