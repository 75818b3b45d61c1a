"""What routes take, declared once: ``Annotated`` dependencies over the app's :class:`Services`.

Every dependency here is ``async`` so FastAPI runs it inline on the event loop
(a plain ``def`` dependency costs a thread hop per request for a lookup).
Identity: ``Caller`` (any valid token; a refusal is audited by the pipeline),
``Admin`` and ``Auditor`` (the role, or a recorded 403).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import RouteDenied
from gateway.audit.store import AuditStore
from gateway.errors import Forbidden
from gateway.http.problems import client_request_id_of, request_id_of
from gateway.http.services import Services
from gateway.identity.aliases import AliasRegistry
from gateway.identity.tokens import Identity
from gateway.pipeline import Pipeline
from gateway.policy.decide import roles_of
from gateway.policy.edit import PolicyEditor
from gateway.policy.requests import AccessRequests
from gateway.policy.reviews import ReviewStore
from gateway.policy.store import PolicyStore
from gateway.settings import Settings


def services_of(request: Request) -> Services:
    """The app's services (built in the lifespan)."""
    services: Services = request.app.state.services  # Starlette's state is untyped
    return services


def context_of(request: Request) -> RequestContext:
    """What the audit log records of the HTTP request."""
    client = request.client.host if request.client else None
    return RequestContext(
        request_id_of(request),
        client,
        request.headers.get("user-agent"),
        client_request_id=client_request_id_of(request),
    )


async def authenticate(request: Request, pipeline: Pipeline, ctx: RequestContext) -> Identity:
    """The caller's identity from the bearer token (the pipeline audits a refusal)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else None
    return await pipeline.authenticate(bearer, ctx)


async def _services(request: Request) -> Services:
    return services_of(request)


async def _context(request: Request) -> RequestContext:
    return context_of(request)


async def _identity(request: Request) -> Identity:
    return await authenticate(request, services_of(request).pipeline, context_of(request))


async def _settings(request: Request) -> Settings:
    return services_of(request).settings


async def _pipeline(request: Request) -> Pipeline:
    return services_of(request).pipeline


async def _recorder(request: Request) -> Recorder:
    return services_of(request).recorder


async def _policies(request: Request) -> PolicyStore:
    return services_of(request).policies


async def _editor(request: Request) -> PolicyEditor:
    return services_of(request).editor


async def _access_requests(request: Request) -> AccessRequests:
    return services_of(request).access_requests


async def _reviews(request: Request) -> ReviewStore:
    return services_of(request).reviews


async def _aliases(request: Request) -> AliasRegistry:
    return services_of(request).aliases


async def _clock(request: Request) -> Callable[[], datetime]:
    return services_of(request).clock


async def _audit_reader(request: Request) -> AuditStore:
    return services_of(request).audit_reader


ServicesDep = Annotated[Services, Depends(_services)]
Context = Annotated[RequestContext, Depends(_context)]
Caller = Annotated[Identity, Depends(_identity)]
SettingsDep = Annotated[Settings, Depends(_settings)]
PipelineDep = Annotated[Pipeline, Depends(_pipeline)]
RecorderDep = Annotated[Recorder, Depends(_recorder)]
PoliciesDep = Annotated[PolicyStore, Depends(_policies)]
EditorDep = Annotated[PolicyEditor, Depends(_editor)]
AccessRequestsDep = Annotated[AccessRequests, Depends(_access_requests)]
ReviewsDep = Annotated[ReviewStore, Depends(_reviews)]
AliasesDep = Annotated[AliasRegistry, Depends(_aliases)]
ClockDep = Annotated[Callable[[], datetime], Depends(_clock)]
AuditReaderDep = Annotated[AuditStore, Depends(_audit_reader)]


def require_role(role: str) -> Callable[[Request, Identity], Awaitable[Identity]]:
    """A dependency that lets only callers holding ``role`` (admin, auditor) through."""

    async def check(request: Request, caller: Caller) -> Identity:
        services = services_of(request)
        if role not in roles_of(caller, services.policies.current):
            # A refused admin or auditor call is a decision too: recorded before the 403.
            reason = f"the {role} role is required"
            who = services.recorder.who(context_of(request), caller)
            route = f"{request.method} {request.url.path}"
            await services.recorder.decision(RouteDenied(who=who, code="forbidden", reason=reason, route=route))
            raise Forbidden(reason)
        return caller

    return check


Admin = Annotated[Identity, Depends(require_role("admin"))]
Auditor = Annotated[Identity, Depends(require_role("auditor"))]
