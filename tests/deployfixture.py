"""Reading ``deploy/`` for the deployment tests: manifests, kustomize output, the Dockerfile, metrics.

No cluster and no container engine: the manifests are parsed (and rendered
with ``kubectl kustomize``, which works offline, where kubectl is installed),
the Dockerfile is parsed by instruction, and the metric names come from the
gateway's own ``Metrics`` registry.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.audit.log import AuditLog
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.db.connector import ConnectStats
from gateway.db.driftstate import AccountState, DriftState
from gateway.db.pools import ConnectionPool
from gateway.http.metrics import Metrics
from gateway.policy.store import PolicyStore
from gateway.settings import PoolSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
IAM_OVERLAY = KUBERNETES / "overlays" / "iam"
KUSTOMIZATIONS = {"base": BASE, "iam": IAM_OVERLAY}
KUBECTL = shutil.which("kubectl")

Obj = dict[str, Any]


def yaml_docs(path: Path) -> list[Obj]:
    """Every non-empty YAML document in ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def kustomization(directory: Path) -> Obj:
    """The ``kustomization.yaml`` of ``directory``."""
    (doc,) = yaml_docs(directory / "kustomization.yaml")
    return doc


def kustomize(directory: Path) -> list[Obj]:
    """``kubectl kustomize directory`` (offline); skips the test where kubectl is missing."""
    if KUBECTL is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]


def base_objects() -> list[Obj]:
    """The base's objects as kustomize renders them, or the listed files as written without kubectl."""
    if KUBECTL is not None:
        return kustomize(BASE)
    return [doc for name in kustomization(BASE)["resources"] for doc in yaml_docs(BASE / name)]


def rendered(name: str) -> list[Obj]:
    """The objects of kustomization ``name`` (``base`` or ``iam``)."""
    return base_objects() if name == "base" else kustomize(KUSTOMIZATIONS[name])


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    """The single object of ``kind`` (and ``name``)."""
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[Obj]) -> Obj:
    """The Deployment's pod spec."""
    spec: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj]) -> Obj:
    """The gateway container."""
    containers: list[Obj] = [c for c in pod_spec(objects)["containers"] if c["name"] == "gateway"]
    (found,) = containers
    return found


def gateway_yaml(objects: list[Obj]) -> str:
    """The gateway config text the Deployment mounts (the ConfigMap behind the ``config`` volume)."""
    volume = volume_named(objects, "config")
    return str(one(objects, "ConfigMap", volume["configMap"]["name"])["data"]["gateway.yaml"])


def volume_named(objects: list[Obj], name: str) -> Obj:
    """The pod volume called ``name``."""
    volumes: list[Obj] = [v for v in pod_spec(objects)["volumes"] if v["name"] == name]
    (found,) = volumes
    return found


def mount_for(objects: list[Obj], path: Path) -> tuple[Obj, Obj, Path] | None:
    """The container's volume mount holding ``path``, its volume, and the path inside it (longest match)."""
    best: tuple[Obj, Obj, Path] | None = None
    for mount in container(objects)["volumeMounts"]:
        mount_path = Path(mount["mountPath"])
        inside = path == mount_path or mount_path in path.parents
        if inside and (best is None or len(mount_path.parts) > len(Path(best[0]["mountPath"]).parts)):
            best = (mount, volume_named(objects, mount["name"]), path.relative_to(mount_path))
    return best


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a ``matchLabels`` selector selects objects carrying ``labels``."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def shell_commands(text: str) -> list[str]:
    """Shell command lines in ``text`` (Markdown or YAML comments), backslash continuations joined."""
    lines = [re.sub(r"^\s*#\s?", "", line) for line in text.splitlines()]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [line.strip() for line in joined.splitlines() if "kubectl" in line]


def documented_secret_keys(text: str, name: str) -> list[set[str]]:
    """For each documented ``kubectl create secret generic NAME`` command, the keys it creates."""
    return [
        set(re.findall(r"--from-(?:file|literal)=([A-Za-z0-9_.-]+)=", command))
        for command in shell_commands(text)
        if re.search(rf"create secret generic {re.escape(name)}(\s|$)", command)
    ]


def documented_configmap_keys(text: str, name: str) -> list[set[str]]:
    """For each documented ``kubectl create configmap NAME`` command, the keys it creates."""
    return [
        set(re.findall(r"--from-file=([A-Za-z0-9_.-]+)=", command))
        for command in shell_commands(text)
        if re.search(rf"create configmap {re.escape(name)}(\s|$)", command)
    ]


# --- quantities ---------------------------------------------------------------

_SUFFIX = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | float) -> float:
    """A Kubernetes resource quantity (``250m``, ``1``, ``256Mi``) as a number."""
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi|Ti)?", str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match.group(1)) * _SUFFIX[match.group(2) or ""]


# --- Dockerfile ---------------------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` stage: its base, name and instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages(text: str) -> list[Stage]:
    """Parse a Dockerfile into stages (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, flags=re.IGNORECASE)
            assert match, f"unreadable FROM: {args}"
            stages.append(Stage(match.group(1), match.group(2)))
        elif stages:
            stages[-1].instructions.append((instruction, args))
        else:
            assert instruction == "ARG", f"{instruction} before the first FROM"
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of ENTRYPOINT/CMD."""
    value = json.loads(args)
    assert isinstance(value, list), args
    return [str(v) for v in value]


# --- metrics ------------------------------------------------------------------


class _CountingConnector:
    """A connector that is never called: it only carries connect counts for the pool collector."""

    def __init__(self) -> None:
        self.stats = ConnectStats(results={"ok": 1, "connect_error": 1})

    async def __call__(self) -> Any:  # pragma: no cover - never called
        raise AssertionError("the metrics test never connects")


def exported_series(policies_dir: Path, targets: list[str]) -> dict[str, set[str]]:
    """Every series name the gateway's ``/metrics`` exposes, with its label names.

    The real ``Metrics`` registry, with one request counted and timed, a real
    (never connected) pool and a real policy store watched, as in ``create_app``.
    """
    metrics = Metrics()
    metrics.requests.labels("/v1/query", "200").inc()
    metrics.latency.labels("/v1/query").observe(0.01)
    pool = ConnectionPool("shop/gw_reader", _CountingConnector(), PoolSettings(), clock=lambda: 0.0)
    metrics.watch_pools(lambda: {("shop", "gw_reader"): pool})
    metrics.watch_policies(PolicyStore(policies_dir, targets))
    drift = DriftState()
    drift.record("shop", "gw_reader", AccountState("clean"))  # an account checked once, as dbdrift records it
    metrics.watch_privileges(drift)
    metrics.audit_write.observe(0.001)
    with tempfile.TemporaryDirectory() as scratch:
        audit = AuditLog(SQLiteAuditStore(Path(scratch) / "audit.db"))
        try:
            metrics.watch_audit(audit, {("allow", "allowed"): 1})
            series: dict[str, set[str]] = {}
            for family in metrics.registry.collect():
                for sample in family.samples:
                    series.setdefault(sample.name, set()).update(sample.labels)
        finally:
            asyncio.run(audit.close())
    return series


def walk_yaml(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every ``(path, key, value)`` of a parsed YAML tree (list items have their index as key)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk_yaml(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield path, index, value
            yield from walk_yaml(value, f"{path}[{index}]")
