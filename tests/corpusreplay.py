"""The attack corpus as data (``tests/attacks/*.yaml``): load and check it, replay its requests, judge the replies.

One file per class; each case has an ``id``, a one-line ``description`` of the
attack, a ``request`` and what must refuse it (``expect``). ``load_corpus``
refuses malformed data (unknown class, layer or code; duplicate ids; missing
fields). ``Replayer.send`` turns a request into HTTP against the corpus
gateway and returns what came back; ``refusal_problems`` says what is wrong
with an outcome (empty: refused as expected, by the expected layer).

Strings in requests and expectations may name ``{db}`` (the target's
database) and ``{second}`` (the schema no grant names); ``{TEXT*N}`` repeats
TEXT N times. Tokens are forged from recipes by ``corpustokens.forge``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from corpustokens import forge
from joserfc.jwk import RSAKey
from oidcfixture import OidcProvider
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gateway.audit.sqlite import SQLiteAuditStore
from gateway.requestids import client_request_id

ATTACKS = Path(__file__).parent / "attacks"
# Which layer refuses, and the problem codes (with their HTTP status) each layer answers with.
LAYERS: dict[str, dict[str, int]] = {
    "identity": {"unauthenticated": 401, "payload_too_large": 413},  # the token check (an 8 KB+ token: 413)
    # The lexer, parser and classifier; the SQL size cap; placeholders against parameters.
    "analysis": {"statement_rejected": 400, "payload_too_large": 413, "invalid_request": 422},
    "policy": {"forbidden": 403, "revoked": 403, "unknown_target": 404},  # grants, tables, functions, revocations
    "http": {"payload_too_large": 413, "headers_too_large": 431, "invalid_request": 422, "not_found": 404},
    "admin": {
        "forbidden": 403,
        "invalid_request": 422,
        "policy_invalid": 422,
        "precondition_required": 428,
        "precondition_failed": 412,
        "not_found": 404,
    },
    "audit": {"forbidden": 403, "unauthenticated": 401, "invalid_request": 422, "details_withheld": 200},
}
# Refusals the gateway must have recorded (a deny record with the same code) before answering.
RECORDED = frozenset(
    {"unauthenticated", "statement_rejected", "forbidden", "revoked", "unknown_target"}
    | {"payload_too_large", "headers_too_large"}
)
CLASSES = frozenset(
    {"tokens", "identity", "parser", "placeholders", "tables", "views", "kinds", "functions", "transactions"}
    | {"http", "admin", "audit"}
)
REQUEST_KEYS = frozenset(
    {"as", "token", "authorization", "method", "path", "sql", "params", "stream", "statements", "json", "body"}
    | {"body_latin1", "headers", "if_match", "setup", "target", "max_rows", "client_request_id"}
)
EXPECT_KEYS = frozenset({"refused_by", "code", "detail", "reason"})
USERS = ("reader", "writer", "admin", "mallory", "nobody")
_NAMES = re.compile(r"\{(db|second)\}")


@dataclass(frozen=True)
class Case:
    """One attack: where it is, what it sends, and who must refuse it."""

    cls: str
    id: str
    description: str
    request: Mapping[str, Any]
    refused_by: str
    code: str
    detail: str | None
    reason: str | None

    @property
    def status(self) -> int:
        """The HTTP status the refusal must have."""
        return LAYERS[self.refused_by][self.code]


def load_corpus(directory: Path = ATTACKS) -> list[Case]:
    """Every case of every ``<class>.yaml``; ``ValueError`` naming every problem in the data."""
    cases: list[Case] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
        except YAMLError as error:
            problems.append(f"{path.name}: not YAML: {error}")
            continue
        if path.stem not in CLASSES:
            problems.append(f"{path.name}: unknown class {path.stem!r} (known: {', '.join(sorted(CLASSES))})")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            problems.append(f"{path.name}: expected a mapping with a 'cases' list")
            continue
        for index, raw in enumerate(data["cases"]):
            case = _case(path.stem, raw, f"{path.name}[{index}]", problems)
            if case is not None:
                cases.append(case)
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            problems.append(f"duplicate id {case.id!r}")
        seen.add(case.id)
    if problems:
        raise ValueError("the attack corpus is malformed:\n" + "\n".join(problems))
    return cases


def _case(cls: str, raw: object, where: str, problems: list[str]) -> Case | None:
    if not isinstance(raw, dict) or set(raw) != {"id", "description", "request", "expect"}:
        problems.append(f"{where}: a case has exactly id, description, request and expect")
        return None
    ident, description, request, expect = raw["id"], raw["description"], raw["request"], raw["expect"]
    before = len(problems)
    if not isinstance(ident, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{2,79}", ident):
        problems.append(f"{where}: id {ident!r} is not 3-80 of [a-z0-9-]")
    if not isinstance(description, str) or not description.strip() or "\n" in description.strip():
        problems.append(f"{where}: description must be one non-empty line")
    problems += [f"{where}: {problem}" for problem in _request_problems(request)]
    if not isinstance(expect, dict) or set(expect) - EXPECT_KEYS or "refused_by" not in expect:
        problems.append(f"{where}: expect needs refused_by and only {sorted(EXPECT_KEYS)}")
        return None
    layer = expect["refused_by"]
    if layer not in LAYERS:
        problems.append(f"{where}: refused_by {layer!r} is not one of {sorted(LAYERS)}")
        return None
    code = expect.get("code", next(iter(LAYERS[layer])))
    if code not in LAYERS[layer]:
        problems.append(f"{where}: code {code!r} is not one {layer} answers with ({sorted(LAYERS[layer])})")
    if len(problems) > before:
        return None
    return Case(cls, ident, description.strip(), request, layer, code, expect.get("detail"), expect.get("reason"))


def _request_problems(request: object) -> list[str]:
    if not isinstance(request, dict) or set(request) - REQUEST_KEYS:
        unknown = sorted(set(request) - REQUEST_KEYS) if isinstance(request, dict) else request
        return [f"request keys {unknown} are unknown"]
    if request.get("as", "reader") not in (*USERS, "none"):
        return [f"as {request.get('as')!r} is not one of {USERS} or none"]
    if len({"as", "token", "authorization"} & set(request)) > 1:
        return ["a request has one of as, token and authorization"]
    return []


def substitute(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with ``{db}`` and ``{second}`` replaced in every string."""
    if isinstance(value, str):
        return _NAMES.sub(lambda m: names[m.group(1)], value)
    if isinstance(value, list):
        return [substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, names) for k, v in value.items()}
    return value


@dataclass
class Outcome:
    """What the gateway answered to one case."""

    status: int
    body: Any
    request_id: str | None
    sent_request_id: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def code(self) -> str | None:
        """The problem's ``code`` (None when the body is not a problem)."""
        return self.body.get("code") if isinstance(self.body, dict) else None


def attach_records(outcomes: Mapping[str, Outcome], path: Path) -> None:
    """Give each outcome the audit records its request left in the SQLite store at ``path``."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    store = SQLiteAuditStore(path, readonly=True)
    try:
        for entry in store.iter_entries():
            by_id.setdefault(str(entry.get("request_id")), []).append(entry)
    finally:
        store.close()
    for outcome in outcomes.values():
        outcome.records = by_id.get(str(outcome.request_id), [])


def refusal_problems(case: Case, outcome: Outcome, names: Mapping[str, str]) -> list[str]:
    """What is wrong with ``outcome`` as ``case``'s refusal (nothing: refused as expected, by the right layer)."""
    if case.code == "details_withheld":
        ok = outcome.status in {200, 503} and isinstance(outcome.body, dict) and set(outcome.body) == {"status"}
        return [] if ok else [f"expected only a status, got {outcome.status} {outcome.body!r}"]
    found: list[str] = []
    if (outcome.status, outcome.code) != (case.status, case.code):
        found.append(f"expected {case.status} {case.code} ({case.refused_by}), got {outcome.status} {outcome.code}")
    detail = str(outcome.body.get("detail", "")) if isinstance(outcome.body, dict) else ""
    if case.detail is not None and substitute(case.detail, names) not in detail:
        found.append(f"detail {detail!r} lacks {substitute(case.detail, names)!r}")
    found += _request_id_problems(outcome)
    denials = [r for r in outcome.records if r.get("decision") == "deny"]
    if any(r.get("decision") == "allow" for r in outcome.records):
        found.append("the audit log has an allow decision for this request")
    recorded = case.code in RECORDED or case.refused_by in {"identity", "analysis", "policy"}
    if recorded and not any(r.get("code") == case.code for r in denials):
        found.append(f"no deny record with code {case.code} (records: {outcome.records!r})")
    if case.reason is not None:
        reasons = [str(r.get("reason", "")) for r in denials]
        if not any(substitute(case.reason, names) in reason for reason in reasons):
            found.append(f"no deny record's reason holds {substitute(case.reason, names)!r} (reasons: {reasons!r})")
    return found


def _request_id_problems(outcome: Outcome) -> list[str]:
    """The reply's id is the gateway's (rule 30); a caller's sane id comes back apart, as ``client_request_id``."""
    found = []
    if not re.fullmatch(r"[0-9a-f]{32}", outcome.request_id or "") or outcome.request_id == outcome.sent_request_id:
        found.append(f"the reply's request id {outcome.request_id!r} is not the gateway's own")
    if (
        isinstance(outcome.body, dict)
        and "request_id" in outcome.body
        and outcome.body["request_id"] != outcome.request_id
    ):
        found.append("the problem's request_id is not the X-Request-ID the gateway answered with")
    offered = client_request_id(outcome.sent_request_id) if outcome.sent_request_id else None
    if isinstance(outcome.body, dict) and outcome.body.get("client_request_id") != offered and "code" in outcome.body:
        found.append(f"client_request_id {outcome.body.get('client_request_id')!r} is not the caller's {offered!r}")
    return found


def encode_body(request: Mapping[str, Any]) -> bytes | None:
    """The body a request sends: raw text, Latin-1 code points as bytes, or JSON."""
    if "body" in request:
        return str(request["body"]).encode("utf-8", "surrogatepass")
    if "body_latin1" in request:
        return str(request["body_latin1"]).encode("latin-1")
    if "json" in request:
        return json.dumps(request["json"], ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
    return None


_REPEAT = re.compile(r"\{([^{}*]{1,8})\*(\d{1,7})\}")


def expand(value: Any) -> Any:
    """``value`` with every ``{TEXT*N}`` in its strings replaced by ``TEXT`` repeated ``N`` times."""
    if isinstance(value, str):
        return _REPEAT.sub(lambda m: m.group(1) * int(m.group(2)), value)
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    return value


class Replayer:
    """Sends corpus requests to a gateway as the request data says, with real or forged tokens."""

    def __init__(self, url: str, idp: OidcProvider, names: Mapping[str, str]) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self.idp = idp
        self.names = dict(names)
        self._tokens: dict[str, tuple[str, float]] = {}
        # Not the provider's key, but named like it: a signature that cannot verify.
        self._stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"})

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()

    def token(self, user: str) -> str:
        """A real token of ``user`` from the provider, reused while it is young."""
        token, issued = self._tokens.get(user, ("", 0.0))
        if time.monotonic() - issued > 120:  # tokens live 300 s: never send one near its end
            token = self.idp.token(user)
            self._tokens[user] = (token, time.monotonic())
        return token

    def authorization(self, who: Mapping[str, Any] | str) -> str | None:
        """The Authorization header for a user name, ``none``, or a request's ``token``/``authorization``."""
        if isinstance(who, str):
            return None if who == "none" else f"Bearer {self.token(who)}"
        if "authorization" in who:
            return str(who["authorization"]).replace("{reader-token}", self.token("reader"))
        if "token" in who:
            return f"Bearer {forge(self.idp, who['token'], self._stranger)}"
        return self.authorization(str(who.get("as", "reader")))

    def etag(self) -> str:
        """The current policy revision (``ETag`` of ``GET /v1/policy``, as an admin)."""
        reply = self.http.get("/v1/policy", headers={"Authorization": f"Bearer {self.token('admin')}"})
        reply.raise_for_status()
        return reply.headers["etag"]

    def _setup(self, setup: Mapping[str, Any]) -> dict[str, str]:
        for who in setup.get("seen", []):  # tokens validated first: the alias registry learns their names
            auth = self.authorization(who)
            reply = self.http.get("/v1/me", headers={"Authorization": auth or ""})
            if reply.status_code not in {200, 403}:
                raise RuntimeError(f"setup token refused: {reply.status_code} {reply.text}")
        found: dict[str, str] = {}
        if "access_request" in setup:
            body = {"target": "shop", "access": "read", "duration": "1h", "reason": "attack corpus"}
            auth = self.authorization(setup["access_request"])
            reply = self.http.post("/v1/access-requests", json=body, headers={"Authorization": auth or ""})
            if reply.status_code != 201:
                raise RuntimeError(f"setup access request refused: {reply.status_code} {reply.text}")
            found["access_request"] = reply.json()["id"]
        return found

    def send(self, case: Case) -> Outcome:
        """Replay ``case``; never raises for what the gateway answers."""
        request = expand(substitute(dict(case.request), self.names))
        names = self._setup(request.get("setup", {}))
        headers: dict[str, str] = {str(k): str(v) for k, v in request.get("headers", {}).items()}
        auth = self.authorization(request)
        if auth is not None:
            headers["Authorization"] = auth
        if request.get("stream"):
            headers["Accept"] = "application/x-ndjson"
        if "client_request_id" in request:
            headers["X-Request-ID"] = str(request["client_request_id"])
        if request.get("if_match") == "current":
            headers["If-Match"] = self.etag()
        elif "if_match" in request:
            headers["If-Match"] = str(request["if_match"])
        body = encode_body(_statement_body(request))
        path = _NAMES_ANY.sub(lambda m: names.get(m.group(1), m.group(0)), str(request.get("path", _path(request))))
        method = str(request.get("method", "POST" if body is not None else "GET"))
        reply = self.http.request(
            method,
            path,
            content=body,
            headers={k.encode("ascii"): v.encode("utf-8", "surrogatepass") for k, v in headers.items()},
        )
        try:
            parsed: Any = reply.json()
        except ValueError:
            parsed = reply.text
        return Outcome(reply.status_code, parsed, reply.headers.get("x-request-id"), headers.get("X-Request-ID"))


_NAMES_ANY = re.compile(r"\{([a-z_]+)\}")


def _path(request: Mapping[str, Any]) -> str:
    return "/v1/transaction" if "statements" in request else "/v1/query"


def _statement_body(request: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request with ``sql``/``statements`` turned into the JSON body of a query or transaction."""
    if "sql" in request:
        body: dict[str, Any] = {"target": request.get("target", "shop"), "sql": request["sql"]}
        if "params" in request:
            body["params"] = request["params"]
        if "max_rows" in request:
            body["max_rows"] = request["max_rows"]
        return {"json": body}
    if "statements" in request:
        statements = [s if isinstance(s, dict) else {"sql": s} for s in request["statements"]]
        return {"json": {"target": request.get("target", "shop"), "statements": statements}}
    return request
