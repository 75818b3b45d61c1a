"""``deploy/``: the image, the Kubernetes manifests, the IRSA overlay and the Prometheus files.

No cluster runs here: every manifest is checked against the Kubernetes
OpenAPI schemas bundled in ``kubernetes-validate`` (offline), and the
properties that make the deployment safe are asserted on the parsed objects,
using the gateway's own settings, policy loader, app and metrics registry.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml
from deployfixture import (
    DEPLOY,
    IAM_OVERLAY,
    KUSTOMIZATIONS,
    ROOT,
    Obj,
    base_objects,
    container,
    dockerfile_stages,
    documented_configmap_keys,
    documented_secret_keys,
    exec_form,
    exported_series,
    gateway_yaml,
    kustomization,
    kustomize,
    labels_match,
    mount_for,
    one,
    pod_spec,
    quantity,
    rendered,
    volume_named,
    walk_yaml,
    yaml_docs,
)
from starlette.routing import Match

from gateway import errors
from gateway.http.app import create_app
from gateway.policy.files import load_policies
from gateway.settings import Settings, load_settings

# The oldest Kubernetes the manifests promise to fit, and the newest schema bundled.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
PROMETHEUS_TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
PROMETHEUS_OWN_SERIES = {"up"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``GATEWAY_*`` variable of the test run leaks into the settings under test."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def settings_of(objects: list[Obj], tmp_path: Path, env: pytest.MonkeyPatch) -> Settings:
    """Load the mounted gateway.yaml exactly as the pod would: the real loader plus the container's env."""
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(objects), encoding="utf-8")
    for var in container(objects).get("env", []):
        if var["name"].startswith("GATEWAY_"):
            env.setenv(var["name"], var["value"])
    return load_settings(path)


def serves(app: Any, path: str) -> bool:
    """Whether the app has a GET route for ``path`` (matched as Starlette routes it; no lifespan, no database)."""
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "path_params": {}, "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


def policy_files(objects: list[Obj], tmp_path: Path) -> Path:
    """Write the policies ConfigMap's files into a directory, as the kubelet mounts them."""
    directory = tmp_path / "policies"
    directory.mkdir()
    volume = volume_named(objects, "policies")
    for name, text in one(objects, "ConfigMap", volume["configMap"]["name"])["data"].items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


# --- kustomize and schemas -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kustomization_lists_every_file_and_only_existing_ones(name: str) -> None:
    """Every file a kustomization names exists, and every YAML file beside it is used (none forgotten)."""
    directory = KUSTOMIZATIONS[name]
    kust = kustomization(directory)
    named = list(kust.get("resources", []))
    named += [p["path"] for p in kust.get("patches", []) if "path" in p]
    named += [f for g in kust.get("configMapGenerator", []) for f in g.get("files", [])]
    local = [n for n in named if not n.startswith("..")]
    for entry in named:
        assert (directory / entry).exists(), f"{name}: {entry} is listed but missing"
    on_disk = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(local), f"{name}: files not listed: {on_disk - set(local)}"


def test_every_yaml_file_under_deploy_parses() -> None:
    """Each YAML file in deploy/ is valid YAML whose documents are mappings."""
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        docs = yaml_docs(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), path


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_manifests_match_the_kubernetes_schema(name: str, version: str) -> None:
    """Every rendered object passes the strict OpenAPI schema of its kind (no unknown field, right types)."""
    objects = rendered(name)
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"}
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {list(exc.path)}: {exc.message}")


def test_schema_check_rejects_a_misspelled_field() -> None:
    """The schema check is live: the real Deployment with ``readinesProbe`` (a typo) or a string replica count fails."""
    deployment = one(base_objects(), "Deployment")
    typo = copy.deepcopy(deployment)
    gateway = typo["spec"]["template"]["spec"]["containers"][0]
    gateway["readinesProbe"] = gateway.pop("readinessProbe")
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "3"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


# --- the Deployment ----------------------------------------------------------------


def test_deployment_runs_several_replicas_and_rolls_without_losing_one() -> None:
    """At least two replicas, and a rolling update never takes one away before its successor is ready."""
    spec = one(base_objects(), "Deployment")["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["template"]["spec"]["topologySpreadConstraints"], "replicas must be spread over nodes"


def test_pod_runs_non_root_read_only_with_no_privileges() -> None:
    """Non-root uid from the image, read-only root filesystem, no privilege escalation, every capability dropped."""
    objects = base_objects()
    pod = pod_spec(objects)
    ctx = container(objects)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx.get("privileged", False) is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert not ctx["capabilities"].get("add")
    assert pod["automountServiceAccountToken"] is False, "the gateway never calls the Kubernetes API"
    runtime = dockerfile_stages((DEPLOY / "Dockerfile").read_text())[-1]
    user = [args for ins, args in runtime.instructions if ins == "USER"][-1]
    assert user.split(":")[0] == str(pod["securityContext"]["runAsUser"]), "pod uid and image uid differ"


def test_probes_hit_healthz_and_readyz_on_the_serving_port(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Liveness and startup probe /healthz, readiness /readyz, on the port the gateway listens on; both routes exist."""
    objects = base_objects()
    gateway = container(objects)
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    settings = settings_of(objects, tmp_path, clean_env)
    probes = {kind: gateway[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        port = ports.get(probe["port"], probe["port"])
        assert port == settings.listen.port, f"probe port {probe['port']} is not the listening port"
    app = create_app(settings)
    assert serves(app, "/healthz")
    assert serves(app, "/readyz")
    assert not serves(app, "/healthz-typo"), "route matching must be able to say no"


def test_container_has_resource_requests_and_limits() -> None:
    """CPU and memory are both requested and capped, and no request exceeds its limit."""
    resources = container(base_objects())["resources"]
    for kind in ("cpu", "memory"):
        request, limit = resources["requests"][kind], resources["limits"][kind]
        assert 0 < quantity(request) <= quantity(limit), kind


def test_grace_period_covers_the_prestop_pause_and_the_drain() -> None:
    """TerminationGracePeriodSeconds outlasts the preStop sleep plus uvicorn's graceful shutdown (from cli.py)."""
    objects = base_objects()
    pre_stop = container(objects)["lifecycle"]["preStop"]
    sleep = pre_stop["sleep"]["seconds"] if "sleep" in pre_stop else int(pre_stop["exec"]["command"][-1])
    tree = ast.parse((ROOT / "gateway" / "cli" / "main.py").read_text())
    drains = [
        k.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for k in node.keywords
        if k.arg == "timeout_graceful_shutdown"
        and isinstance(k.value, ast.Constant)
        and isinstance(k.value.value, int | float)
    ]
    assert len(drains) == 1, "uvicorn's timeout_graceful_shutdown not found in gateway/cli/main.py"
    assert pod_spec(objects)["terminationGracePeriodSeconds"] > sleep + drains[0]


def test_disruption_budget_selects_the_gateway_pods_and_lets_a_drain_proceed() -> None:
    """The PDB selects exactly the Deployment's pods and keeps fewer than all of them, so node drains can proceed."""
    objects = base_objects()
    deployment = one(objects, "Deployment")
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert labels_match(pdb["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    assert 1 <= pdb["minAvailable"] < deployment["spec"]["replicas"]


def test_service_and_network_policy_reach_the_gateway_port() -> None:
    """The Service and the NetworkPolicy select the pods and point at the container's serving port."""
    objects = base_objects()
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    service = one(objects, "Service")["spec"]
    assert labels_match(service["selector"], labels)
    assert all(p["targetPort"] in ports or p["targetPort"] in ports.values() for p in service["ports"])
    policy = one(objects, "NetworkPolicy")["spec"]
    assert labels_match(policy["podSelector"]["matchLabels"], labels)
    assert {"Ingress", "Egress"} <= set(policy["policyTypes"])
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} <= set(ports.values())


# --- the gateway's config and policies in the ConfigMaps -----------------------------


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_config_loads_with_the_gateway_settings(name: str, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The mounted gateway.yaml (plus the container's GATEWAY_* env) passes the real Settings, production-safe."""
    objects = rendered(name)
    settings = settings_of(objects, tmp_path, clean_env)
    assert settings.dev_mode is False
    assert settings.listen.host == "0.0.0.0"  # noqa: S104 - inside the pod, behind the Service
    assert settings.issuers, "production needs a real IdP"
    assert all(t.tls.enabled and t.tls.verify_hostname for t in settings.targets.values())
    assert settings.audit.store == "mariadb", "replicas share the MariaDB audit store"
    assert settings.state.store == "mariadb", "replicas share the MariaDB state store (admin edits, requests)"
    state = settings.state.mariadb
    assert state is not None
    assert state.secret.file is not None, "the state store's password comes from the mounted Secret"
    assert state.tls.enabled
    assert state.tls.verify_hostname
    assert settings.metrics_public, "the Prometheus scrape needs /metrics"


def test_config_is_mounted_where_the_image_reads_it() -> None:
    """The config ConfigMap's gateway.yaml is mounted at the path the image's ENTRYPOINT passes to --config."""
    objects = base_objects()
    runtime = dockerfile_stages((DEPLOY / "Dockerfile").read_text())[-1]
    entrypoint = exec_form([args for ins, args in runtime.instructions if ins == "ENTRYPOINT"][-1])
    config_path = Path(entrypoint[entrypoint.index("--config") + 1])
    found = mount_for(objects, config_path)
    assert found is not None, f"nothing is mounted at {config_path}"
    mount, volume, _ = found
    assert volume["configMap"]["name"] == "db-gateway-config"
    assert mount.get("subPath") == "gateway.yaml"
    assert mount["readOnly"] is True


def test_policies_configmap_is_mounted_at_policies_dir(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The policies ConfigMap is a read-only directory mount (no subPath, so updates arrive) at policies_dir."""
    objects = base_objects()
    settings = settings_of(objects, tmp_path, clean_env)
    mounts = [m for m in container(objects)["volumeMounts"] if m["name"] == "policies"]
    assert len(mounts) == 1
    assert Path(mounts[0]["mountPath"]) == settings.policies_dir
    assert "subPath" not in mounts[0], "a subPath mount never sees ConfigMap updates"
    assert mounts[0]["readOnly"] is True
    assert volume_named(objects, "policies")["configMap"]["name"] == "db-gateway-policies"


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_policies_pass_the_gateway_policy_loader(name: str, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The policies ConfigMap loads with the gateway's own loader against the config's targets, no problem at all."""
    objects = rendered(name)
    settings = settings_of(objects, tmp_path, clean_env)
    policy = load_policies(policy_files(objects, tmp_path), known_targets=settings.targets.keys())
    assert policy.grants
    assert policy.roles["admin"], "someone must be able to administer the gateway"


def test_policies_configmap_is_a_copy_of_the_repository_policies(tmp_path: Path) -> None:
    """The ConfigMap's files are byte for byte the repository's policies/ (they are documented as copies)."""
    mounted = policy_files(base_objects(), tmp_path)
    repository = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "policies").glob("*.yaml")}
    assert {p.name: p.read_text(encoding="utf-8") for p in mounted.iterdir()} == repository


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_db_user_in_the_policies_has_credentials(
    name: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Each grant's (target, db_user) has a pool: a secret file in secret mode, an IAM account in iam mode."""
    objects = rendered(name)
    settings = settings_of(objects, tmp_path, clean_env)
    policy = load_policies(policy_files(objects, tmp_path), known_targets=settings.targets.keys())
    for grant in policy.grants:
        assert grant.db_user in settings.targets[grant.target].db_users(), f"{grant.name}: no pool for {grant.db_user}"


def _files_read(settings: Settings) -> list[Path]:
    files: list[Path] = []
    for target in settings.targets.values():
        files += [s.file for s in target.secrets.values() if s.file is not None]
        files += [target.tls.ca_file] if target.tls.ca_file else []
    for db in (settings.audit.mariadb, settings.state.mariadb):
        if db is not None:
            files += [db.secret.file] if db.secret.file else []
            files += [db.tls.ca_file] if db.tls.ca_file else []
    signing_key = settings.audit.checkpoints.signing_key
    files += [signing_key.file] if signing_key is not None and signing_key.file is not None else []
    return files


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_file_the_config_reads_is_mounted(name: str, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Secret files and CA bundles the config names lie in a read-only mount of the Secret or ConfigMap holding them."""
    objects = rendered(name)
    files = _files_read(settings_of(objects, tmp_path, clean_env))
    assert files
    for path in files:
        found = mount_for(objects, path)
        assert found is not None, f"{path} is not on any volume"
        mount, volume, inside = found
        assert mount["readOnly"] is True, path
        source = volume.get("secret") or volume.get("configMap")
        assert source is not None, f"{path} is on neither a Secret nor a ConfigMap"
        if "items" in source:
            assert str(inside) in {i["path"] for i in source["items"]}, f"{path} is not projected"


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_paths_the_gateway_writes_are_on_writable_volumes(
    name: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """With a read-only root filesystem, the state directory (and a SQLite audit file) and /tmp sit on emptyDirs."""
    objects = rendered(name)
    settings = settings_of(objects, tmp_path, clean_env)
    runtime = dockerfile_stages((DEPLOY / "Dockerfile").read_text())[-1]
    workdir = Path([args for ins, args in runtime.instructions if ins == "WORKDIR"][-1])
    written = [workdir / settings.admin.state_dir, Path("/tmp")]  # noqa: S108 - the pod's own tmpfs
    written += [workdir / settings.audit.path] if settings.audit.store == "sqlite" else []
    for path in written:
        found = mount_for(objects, path)
        assert found is not None, f"{path} would be on the read-only root filesystem"
        mount, volume, _ = found
        assert not mount.get("readOnly", False), path
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume, path


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_referenced_secrets_and_configmaps_exist_or_are_documented(
    name: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Each Secret/ConfigMap the pod uses is in the manifests, or its creation (with every key read) is documented."""
    objects = rendered(name)
    docs = (DEPLOY / "README.md").read_text(encoding="utf-8")
    if name != "base":
        docs = (KUSTOMIZATIONS[name] / "kustomization.yaml").read_text(encoding="utf-8")
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    needed: dict[tuple[str, str], set[str]] = {}
    for volume in pod_spec(objects)["volumes"]:
        if "secret" in volume:
            needed[("Secret", volume["secret"]["secretName"])] = set()
        if "configMap" in volume:
            keys = {i["key"] for i in volume["configMap"].get("items", [])}
            needed[("ConfigMap", volume["configMap"]["name"])] = keys
    for path in _files_read(settings_of(objects, tmp_path, clean_env)):
        _, volume, inside = mount_for(objects, path) or pytest.fail(f"{path} unmounted")
        if "secret" in volume:
            needed[("Secret", volume["secret"]["secretName"])].add(str(inside))
    for (kind, obj_name), keys in needed.items():
        if (kind, obj_name) in present:
            continue
        assert kind != "Secret" or not any(o["kind"] == "Secret" for o in objects), "no Secret belongs in git"
        documented = (documented_secret_keys if kind == "Secret" else documented_configmap_keys)(docs, obj_name)
        assert documented, f"{kind} {obj_name} is neither in the manifests nor documented as created out of band"
        assert any(keys <= created for created in documented), f"{kind} {obj_name}: keys {keys} not all documented"


_SECRET_KEY = re.compile(r"(?i)(^|_)(password|passwd|pwd|secret_?key|access_?key|private_?key|api_?key|token)$")
_SECRET_TEXT = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)\bpassword\s*[:=]\s*['\"]?[A-Za-z0-9!@#$%^&*+/=_-]{4,}"),
]


def _secret_literals(tree: Any, where: str) -> list[str]:
    found = []
    for path, key, value in walk_yaml(tree):
        if isinstance(key, str) and _SECRET_KEY.search(key) and isinstance(value, str) and value:
            found.append(f"{where}: {path}.{key} holds a literal")
        is_env = isinstance(value, dict) and "value" in value and path.endswith(".env")
        if is_env and re.search(r"(?i)pass|secret|token|key", str(value.get("name"))):
            found.append(f"{where}: env {value['name']} has a literal value")
    if isinstance(tree, dict) and tree.get("kind") == "Secret" and (tree.get("data") or tree.get("stringData")):
        found.append(f"{where}: a Secret with data is committed")
    return found


def test_no_password_or_key_literal_anywhere_in_deploy() -> None:
    """No manifest, embedded gateway.yaml, env var, Secret, policy JSON or Dockerfile line holds a credential."""
    problems: list[str] = []
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".md"):
        text = path.read_text(encoding="utf-8")
        problems += [f"{path}: {rx.pattern}" for rx in _SECRET_TEXT if rx.search(text)]
        if path.suffix == ".yaml":
            for doc in yaml_docs(path):
                problems += _secret_literals(doc, str(path))
                for key, value in (doc.get("data") or {}).items() if doc.get("kind") == "ConfigMap" else ():
                    if key.endswith((".yaml", ".yml")):
                        problems += _secret_literals(yaml.safe_load(value), f"{path}:{key}")
    for stage in dockerfile_stages((DEPLOY / "Dockerfile").read_text()):
        for ins, args in stage.instructions:
            if ins in {"ENV", "ARG"} and re.search(r"(?i)pass|secret|token|_key\b", args):
                problems.append(f"Dockerfile: {ins} {args}")
    assert problems == []


def test_secret_literal_check_catches_a_planted_password() -> None:
    """The literal check is live: a password in a target, an env value or a committed Secret is reported."""
    planted = [
        {"targets": {"shop": {"password": "hunter22"}}},
        {"spec": {"containers": [{"env": [{"name": "DB_PASSWORD", "value": "hunter22"}]}]}},
        {"kind": "Secret", "stringData": {"gw_reader": "hunter22"}},
    ]
    for tree in planted:
        assert _secret_literals(tree, "planted"), tree
    assert any(rx.search("password: hunter22") for rx in _SECRET_TEXT)


# --- the IRSA overlay and the AWS policies ---------------------------------------------


def test_iam_overlay_patch_annotates_the_service_account() -> None:
    """The overlay's ServiceAccount patch carries eks.amazonaws.com/role-arn with a role ARN (parsed, no kubectl)."""
    patches = [yaml_docs(IAM_OVERLAY / p["path"])[0] for p in kustomization(IAM_OVERLAY)["patches"]]
    (account,) = [p for p in patches if p["kind"] == "ServiceAccount"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", role)
    base_account = one(base_objects(), "ServiceAccount")
    assert account["metadata"]["name"] == base_account["metadata"]["name"]
    assert "eks.amazonaws.com/role-arn" not in (base_account["metadata"].get("annotations") or {}), (
        "base is secret mode"
    )


def test_iam_overlay_renders_irsa_role_region_and_keeps_the_pod_hardened(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Rendered: the pod's ServiceAccount has the role, the container the AWS region env, and nothing else loosened."""
    objects = kustomize(IAM_OVERLAY)
    pod = pod_spec(objects)
    account = one(objects, "ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    env = {v["name"]: v.get("value") for v in container(objects).get("env", [])}
    settings = settings_of(objects, tmp_path, clean_env)
    regions = {t.iam.region for t in settings.targets.values() if t.iam is not None}
    assert env["AWS_REGION"] in regions
    assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), "IRSA, never static AWS keys"
    # The webhook's projected token does not need the API token: the hardening stays.
    assert pod["automountServiceAccountToken"] is False
    assert pod_spec(base_objects())["securityContext"] == pod["securityContext"]
    assert container(base_objects())["securityContext"] == container(objects)["securityContext"]


def test_iam_overlay_config_uses_iam_tokens_over_verified_tls(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """In the overlay every target authenticates with RDS IAM tokens, over TLS with hostname checks, no secrets."""
    settings = settings_of(kustomize(IAM_OVERLAY), tmp_path, clean_env)
    for name, target in settings.targets.items():
        assert target.auth_mode == "iam", name
        assert target.iam is not None
        assert target.iam.db_users
        assert not target.secrets
        assert target.tls.enabled
        assert target.tls.verify_hostname


def test_rds_connect_policy_covers_exactly_the_iam_db_users(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The IAM policy allows rds-db:connect as each configured IAM db_user, in its region, and nothing wider."""
    settings = settings_of(kustomize(IAM_OVERLAY), tmp_path, clean_env)
    policy = json.loads((DEPLOY / "aws" / "rds-connect-policy.json").read_text())
    allowed: set[tuple[str, str]] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert statement["Action"] in ("rds-db:connect", ["rds-db:connect"])
        for arn in statement["Resource"]:
            match = re.fullmatch(
                r"arn:aws:rds-db:([a-z0-9-]+):\d{12}:dbuser:(db-[A-Z0-9]+|cluster-[A-Z0-9]+)/(\w+)", arn
            )
            assert match, f"not a specific dbuser ARN: {arn}"
            allowed.add((match.group(1), match.group(3)))
    wanted = {(t.iam.region, u) for t in settings.targets.values() if t.iam for u in t.iam.db_users}
    assert allowed == wanted


def test_irsa_trust_policy_names_the_gateway_service_account() -> None:
    """The role trusts only the gateway's ServiceAccount, for the STS audience, in the account of the annotated role."""
    objects = kustomize(IAM_OVERLAY)
    pod = pod_spec(objects)
    account = one(objects, "ServiceAccount", pod["serviceAccountName"])
    namespace = account["metadata"]["namespace"]
    trust = json.loads((DEPLOY / "aws" / "irsa-trust-policy.json").read_text())
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    conditions = statement["Condition"]["StringEquals"]
    subjects = [v for k, v in conditions.items() if k.endswith(":sub")]
    audiences = [v for k, v in conditions.items() if k.endswith(":aud")]
    assert subjects == [f"system:serviceaccount:{namespace}:{account['metadata']['name']}"]
    assert audiences == ["sts.amazonaws.com"]
    role_account = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].split(":")[4]
    assert statement["Principal"]["Federated"].split(":")[4] == role_account


# --- the image ----------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runs_as_a_numeric_non_root_user() -> None:
    """At least two stages, the last copies from an earlier one, and its final USER is a numeric uid (and gid) > 0."""
    stages = dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    assert len(stages) >= 2
    runtime = stages[-1]
    users = [args for ins, args in runtime.instructions if ins == "USER"]
    assert users, "the runtime stage never drops root"
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), f"USER {users[-1]} is not a numeric non-root id"
    last_user_at = max(i for i, (ins, _) in enumerate(runtime.instructions) if ins == "USER")
    assert not [ins for ins, _ in runtime.instructions[last_user_at:] if ins == "RUN"], "RUN after USER"
    earlier = {s.name for s in stages[:-1]}
    copied_from = {
        m.group(1) for ins, a in runtime.instructions if ins == "COPY" and (m := re.search(r"--from=(\S+)", a))
    }
    assert copied_from & earlier, "the runtime stage copies nothing from the build stage"
    assert not [a for ins, a in runtime.instructions if ins in {"COPY", "ADD"} and re.search(r"\.env|secret|\.pw", a)]


def test_dockerfile_parser_sees_a_root_single_stage_image() -> None:
    """The image checks can fail: a one-stage image running as root is read as such."""
    stages = dockerfile_stages("FROM python:3.11\nRUN pip install . \\\n  && true\nUSER root\n")
    assert len(stages) == 1
    assert stages[0].instructions == [("RUN", "pip install .  && true"), ("USER", "root")]


# --- Prometheus ------------------------------------------------------------------------


def _scrape_job() -> Obj:
    (config,) = yaml_docs(DEPLOY / "prometheus" / "scrape.yaml")
    jobs: list[Obj] = [j for j in config["scrape_configs"] if j["job_name"] == "db-gateway"]
    (job,) = jobs
    return job


def _prometheus_keep(rule: Obj, values: dict[str, str]) -> bool:
    source = (rule.get("separator", ";")).join(values.get(label, "") for label in rule["source_labels"])
    return re.fullmatch(rule.get("regex", "(.*)"), source) is not None  # Prometheus anchors its regexes


def test_scrape_job_keeps_the_gateway_pods_http_port(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The pod discovery job keeps the gateway pods' `http` port and scrapes the route the app serves."""
    objects = base_objects()
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    job = _scrape_job()
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    assert sd["namespaces"]["names"] == [deployment["metadata"]["namespace"]]
    for selector in sd.get("selectors", []):
        key, _, value = selector["label"].partition("=")
        assert labels.get(key) == value
    meta = {f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v for k, v in labels.items()}
    keeps = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keeps
    # The real ports, plus one the job must leave alone (a sidecar's, say).
    for port in [*container(objects)["ports"], {"name": "admin"}]:
        target = meta | {
            "__meta_kubernetes_pod_container_name": container(objects)["name"],
            "__meta_kubernetes_pod_container_port_name": port["name"],
        }
        assert all(_prometheus_keep(r, target) for r in keeps) == (port["name"] == "http"), port["name"]
    other = meta | {"__meta_kubernetes_pod_label_app_kubernetes_io_name": "something-else"}
    assert not all(_prometheus_keep(r, other) for r in keeps), "the job would scrape other pods"
    settings = settings_of(objects, tmp_path, clean_env)
    assert serves(create_app(settings), job["metrics_path"])


def _alert_rules() -> list[Obj]:
    (config,) = yaml_docs(DEPLOY / "prometheus" / "scrape.yaml")
    rules = []
    for name in config["rule_files"]:
        (doc,) = yaml_docs(DEPLOY / "prometheus" / name)
        rules += [r for group in doc["groups"] for r in group["rules"]]
    return rules


def _unknown_series(expr: str, series: dict[str, set[str]], extra_labels: set[str]) -> list[str]:
    """Series and labels an expression uses that the gateway (or Prometheus itself) does not produce."""
    problems: list[str] = []
    used: list[tuple[str, set[str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            used.append((node.name or "", {m.name for m in node.matchers.matchers}))
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            used.append(("", set(node.modifier.labels)))

    promql_parser.walk(promql_parser.parse(expr), visit)
    names = [name for name, _ in used if name]
    known = set().union(*(series.get(n, set()) for n in names)) | extra_labels
    for name, labels in used:
        if name and name not in series and name not in PROMETHEUS_OWN_SERIES:
            problems.append(f"unknown series {name}")
        problems += [f"unknown label {label}" for label in sorted(labels - known - {"__name__"})]
    return problems


def test_alert_rules_use_only_series_the_gateway_exports(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Every alert parses as PromQL and uses only series (and labels) the gateway's real registry exposes."""
    objects = base_objects()
    settings = settings_of(objects, tmp_path, clean_env)
    series = exported_series(policy_files(objects, tmp_path), list(settings.targets))
    job = _scrape_job()
    relabelled = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    rules = _alert_rules()
    assert len(rules) >= 5
    for rule in rules:
        assert _unknown_series(rule["expr"], series, PROMETHEUS_TARGET_LABELS | relabelled) == [], rule["alert"]
        for value in re.findall(r'job\s*=\s*"([^"]*)"', rule["expr"]):
            assert value == job["job_name"], rule["alert"]


def test_series_check_catches_an_invented_metric_and_label(tmp_path: Path) -> None:
    """The metric check is live: a series the gateway never registers, or a label it lacks, is reported."""
    series = exported_series(tmp_path, ["shop"])
    assert "gateway_requests_total" in series
    assert series["gateway_pool_waiting"] == {"pool"}
    assert _unknown_series("rate(gateway_invented_seconds_count[5m]) > 1", series, set()) == [
        "unknown series gateway_invented_seconds_count"
    ]
    assert _unknown_series('sum by (tenant) (gateway_requests_total{code="503"})', series, set()) == [
        "unknown label tenant"
    ]


def test_alert_rules_are_complete_and_uniquely_named() -> None:
    """Each alert has a unique name, a parseable `for`, a severity and a summary."""
    rules = _alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_docs_name_only_metrics_the_gateway_exports(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Metric names quoted in the operations docs and deploy/ exist (sample or family names)."""
    series = exported_series(tmp_path, ["shop"])
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in series} | set(series)
    base = settings_of(base_objects(), tmp_path, clean_env)
    for store in (base.audit.mariadb, base.state.mariadb):  # gateway_audit, gateway_state: databases, not metrics
        families |= {store.database} if store else set()
    texts = [ROOT / "docs" / "operations.md", DEPLOY / "README.md", *sorted((DEPLOY / "prometheus").glob("*.yaml"))]
    for path in texts:
        for name in set(re.findall(r"\bgateway_[a-z_]+[a-z]\b", path.read_text(encoding="utf-8"))):
            assert name in families or name.rstrip("_") in families, f"{path.name}: {name} is not exported"


def test_docs_quote_the_real_status_code_and_retry_after() -> None:
    """Each `STATUS code` (and `Retry-After: N`) the operations docs quote is what gateway/errors.py answers."""
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.GatewayError)]
    by_code = {c.code: c for c in classes}
    quoted = 0
    for path in (ROOT / "docs" / "operations.md", DEPLOY / "README.md"):
        text = " ".join(path.read_text(encoding="utf-8").split())
        for status, code, retry in re.findall(r"`(\d{3}) ([a-z_]+)`(?:, `Retry-After: (\d+)`)?", text):
            assert code in by_code, f"{path.name}: no error has code {code}"
            assert by_code[code].status == int(status), f"{path.name}: {code} is {by_code[code].status}, not {status}"
            if retry:
                assert getattr(by_code[code], "retry_after", None) == int(retry), f"{path.name}: {code} Retry-After"
            quoted += 1
    assert quoted >= 8


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_replicas_sign_audit_checkpoints_with_a_mounted_key(
    name: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Each replica keeps its own chain (the pod's host name) and signs checkpoints with a key from a Secret file."""
    objects = rendered(name)
    audit = settings_of(objects, tmp_path, clean_env).audit
    assert audit.store == "mariadb"
    assert "replica_id" not in yaml.safe_load(gateway_yaml(objects))["audit"]  # default: the pod's name
    checkpoints = audit.checkpoints
    assert checkpoints.signing_key is not None
    assert checkpoints.signing_key.file is not None
    assert checkpoints.key_id in checkpoints.public_keys
    _, volume, _ = mount_for(objects, checkpoints.signing_key.file) or pytest.fail("the signing key is not mounted")
    assert volume["secret"]["secretName"] == "db-gateway-audit-checkpoint-key"
