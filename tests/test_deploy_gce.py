"""deploy/gce/startup.sh, run for real with stand-ins for the VM's tools (the metadata
server's curl, docker, docker-credential-gcr), and the coturn config it writes run by the
real coturn: ``TURN=yes`` wires the server and the page to the VM's coturn with short-lived
credentials, and coturn refuses to relay into private ranges or to the metadata server,
except to the server itself."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice import stun

from rtc_server.config import load_settings
from rtc_server.webrtc.turn import turn_credential

from .browser_env import loopback_only_network
from .coturn import Coturn, close_allocation, local_files, missing
from .helpers import ROOT, cannot_run, require_root_tools

STARTUP = ROOT / "deploy" / "gce" / "startup.sh"
PRIVATE_IP, PUBLIC_IP = "10.128.0.5", "203.0.113.7"
SECRET = "a-generated-turn-secret"
IMAGE = "us-central1-docker.pkg.dev/proj/rtc-yolo/server:v1"

FAKE_CURL = """#!/bin/sh
# The metadata server: answers from $FAKE_METADATA/<path>, else fails like curl -f (exit 22).
for last; do :; done
path=${last#http://metadata.google.internal/computeMetadata/v1/}
[ -f "$FAKE_METADATA/$path" ] || exit 22
cat "$FAKE_METADATA/$path"
"""
FAKE_RECORDER = """#!/bin/sh
# Records each call: one line, arguments separated by tabs.
printf '%s' "$(basename "$0")" >> "$FAKE_CALLS"
for arg; do printf '\\t%s' "$arg" >> "$FAKE_CALLS"; done
echo >> "$FAKE_CALLS"
[ "$1" = run ] && echo 0123456789ab
exit 0
"""


PROJECT = "proj"
SECRET_MANAGER = f"https:/secretmanager.googleapis.com/v1/projects/{PROJECT}/secrets"
OPERATOR = "an-operator-token-from-secret-manager"


def run_startup(tmp: Path, attributes: dict[str, str],
                secrets: dict[str, str] | None = None) -> tuple[Path, list[list[str]]]:
    """Run startup.sh as the VM would; (its state folder, the docker calls it made).
    ``secrets``: Secret Manager's (name -> latest value), served at its REST URL by the fake curl."""
    bin_dir, metadata, state = tmp / "bin", tmp / "metadata", tmp / "state"
    bin_dir.mkdir(parents=True)
    for name, text in {"curl": FAKE_CURL, "docker": FAKE_RECORDER, "docker-credential-gcr": FAKE_RECORDER}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    values = {"instance/network-interfaces/0/ip": PRIVATE_IP,
              "instance/network-interfaces/0/access-configs/0/external-ip": PUBLIC_IP,
              **{f"instance/attributes/{k}": v for k, v in attributes.items()}}
    values["project/project-id"] = PROJECT
    values["instance/service-accounts/default/token"] = '{"access_token":"ya29.fake","expires_in":3599}'
    for name, value in (secrets or {}).items():
        payload = base64.b64encode(value.encode()).decode()
        values[f"{SECRET_MANAGER}/{name}/versions/latest:access"] = \
            f'{{"name": "projects/1/secrets/{name}/versions/1", "payload": {{"data": "{payload}"}}}}'
    for path, value in values.items():
        (metadata / path).parent.mkdir(parents=True, exist_ok=True)
        (metadata / path).write_text(value)
    calls = tmp / "calls"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_METADATA": str(metadata),
           "FAKE_CALLS": str(calls), "RTC_STATE_DIR": str(state)}
    proc = subprocess.run(["bash", str(STARTUP)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docker = [line.split("\t")[1:] for line in calls.read_text().splitlines() if line.startswith("docker\t")]
    return state, docker


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def container(docker: list[list[str]], name: str) -> list[str] | None:
    return next((call for call in docker if call[:3] == ["run", "-d", "--name"] and call[3] == name), None)


def test_turn_yes_wires_the_server_and_the_page_to_the_vms_coturn(tmp_path: Path) -> None:
    state, docker = run_startup(tmp_path, {"rtc-image": IMAGE, "rtc-turn": "yes"},
                                {"rtc-turn-secret": SECRET, "rtc-operator-token": OPERATOR})
    server = container(docker, "rtc-yolo")
    assert server is not None and server[-1] == IMAGE and "--network" in server
    env = env_file(Path(server[server.index("--env-file") + 1]))
    settings = load_settings([], env)  # the server accepts exactly this environment
    assert settings.turn_secret == SECRET
    assert settings.turn_urls == (f"turn:{PUBLIC_IP}:3478?transport=udp", f"turn:{PUBLIC_IP}:3478?transport=tcp")
    assert settings.public_address == PUBLIC_IP and settings.ice_addresses == (PRIVATE_IP,)
    assert settings.udp_ports == (40000, 40100) and settings.host == "0.0.0.0"
    assert (state / "rtc.env").stat().st_mode & 0o077 == 0, "the secret is for root's eyes only"
    # Tokens from Secret Manager (issue 20): the operator API is usable, publishing public,
    # and the server answers for the address clients use.
    assert settings.operator_token == (OPERATOR,) and settings.auth_token == ()
    assert settings.public_hosts == (PUBLIC_IP,)
    coturn = container(docker, "coturn")
    assert coturn is not None and coturn[-2:] == ["-c", "/etc/coturn/turnserver.conf"]
    mount = coturn[coturn.index("-v") + 1]
    assert mount == f"{state}/turnserver.conf:/etc/coturn/turnserver.conf:ro"
    conf = (state / "turnserver.conf").read_text()
    assert f"static-auth-secret={SECRET}" in conf and "use-auth-secret" in conf and "lt-cred-mech" not in conf
    assert f"allowed-peer-ip={PRIVATE_IP}" in conf and f"external-ip={PUBLIC_IP}/{PRIVATE_IP}" in conf


def test_with_a_domain_the_server_trusts_caddy_and_turn_uses_the_name(tmp_path: Path) -> None:
    _, docker = run_startup(tmp_path, {"rtc-image": IMAGE, "rtc-turn": "yes", "rtc-domain": "rtc.example.com"},
                            {"rtc-turn-secret": SECRET, "rtc-operator-token": OPERATOR})
    server = container(docker, "rtc-yolo")
    assert server is not None
    settings = load_settings([], env_file(Path(server[server.index("--env-file") + 1])))
    assert settings.host == "127.0.0.1" and [str(n) for n in settings.trusted_proxies] == ["127.0.0.1/32"]
    assert settings.public_hosts == ("rtc.example.com",) and settings.operator_token == (OPERATOR,)
    assert settings.turn_urls[0] == "turn:rtc.example.com:3478?transport=udp"
    caddy = container(docker, "caddy")
    assert caddy is not None and caddy[-3:] == ["rtc.example.com", "--to", "127.0.0.1:8080"]


def test_tokens_come_from_secret_manager_never_from_metadata(tmp_path: Path) -> None:
    """A publish token in Secret Manager makes the page private; a token left in metadata
    (where every project viewer reads it) is not used; TURN=yes without its secret fails."""
    _, docker = run_startup(tmp_path / "a", {"rtc-image": IMAGE, "rtc-turn-secret": "from-metadata"},
                            {"rtc-operator-token": OPERATOR, "rtc-publish-token": "publish-from-sm"})
    server = container(docker, "rtc-yolo")
    assert server is not None
    settings = load_settings([], env_file(Path(server[server.index("--env-file") + 1])))
    assert settings.auth_token == ("publish-from-sm",) and settings.operator_token == (OPERATOR,)
    assert not settings.turn_secret
    with pytest.raises(AssertionError, match="rtc-turn-secret in Secret Manager"):
        run_startup(tmp_path / "b", {"rtc-image": IMAGE, "rtc-turn": "yes", "rtc-turn-secret": SECRET})
    text = (ROOT / "deploy" / "gce" / "create-vm.sh").read_text()
    assert "rtc-turn-secret=" not in text and "gcloud" in text and "secrets create" in text


def test_without_turn_no_coturn_and_no_turn_settings(tmp_path: Path) -> None:
    _, docker = run_startup(tmp_path, {"rtc-image": IMAGE})
    server = container(docker, "rtc-yolo")
    assert server is not None and container(docker, "coturn") is None
    settings = load_settings([], env_file(Path(server[server.index("--env-file") + 1])))
    assert not settings.turn_secret and not settings.turn_urls and settings.ice_servers == ()


@pytest.fixture
def gce_coturn(tmp_path: Path) -> Iterator[tuple[Coturn, str]]:
    """The real coturn with the config startup.sh wrote, in a private loopback namespace."""
    require_root_tools("ip")
    reason = missing()
    if reason:
        cannot_run(reason)
    state, docker = run_startup(tmp_path, {"rtc-image": IMAGE, "rtc-turn": "yes"},
                                {"rtc-turn-secret": SECRET, "rtc-operator-token": OPERATOR})
    server = container(docker, "rtc-yolo")
    assert server is not None
    secret = load_settings([], env_file(Path(server[server.index("--env-file") + 1]))).turn_secret
    folder = tmp_path / "coturn"
    folder.mkdir()
    # The config as written, plus where this test keeps coturn's files (not /var/lib/turn).
    config = (state / "turnserver.conf").read_text() + local_files(folder)
    try:
        with loopback_only_network():
            # The VM's private address, on this namespace's loopback (as tests/test_nat.py does).
            subprocess.run(["ip", "addr", "add", f"{PRIVATE_IP}/32", "dev", "lo"], check=True)
            turn = Coturn(config, folder, port=3478, host=PRIVATE_IP).start()
            try:
                yield turn, secret
            finally:
                turn.stop()
    except PermissionError as exc:
        cannot_run(f"no private network namespace: {exc}")


async def test_the_generated_coturn_config_runs_and_refuses_private_peers(gce_coturn: tuple[Coturn, str]) -> None:
    turn, secret = gce_coturn
    log = turn.log
    assert "Bad configuration" not in log and "CONFIG ERROR" not in log, log[-3000:]
    # The server's secret is coturn's: a credential the server would hand out is accepted.
    protocol = await turn.allocate(*turn_credential(secret, "page-probe", ttl=60))
    try:
        channel = 0x4000
        for peer in ("169.254.169.254", "10.0.0.9", "172.16.3.4", "192.168.1.1", "127.0.0.1", "100.64.0.1",
                     "0.0.0.1"):
            with pytest.raises(stun.TransactionFailed) as refused:
                await protocol.channel_bind(channel, (peer, 80))
            assert refused.value.response.error_code == 403, peer
            channel += 1
        # The server itself (its private address) and a public peer are relayed to.
        for peer in (PRIVATE_IP, "198.51.100.20"):
            await protocol.channel_bind(channel, (peer, 40000))
            channel += 1
    finally:
        await close_allocation(protocol)
    assert await turn.refusal(*turn_credential("another-secret", "page-probe", ttl=60)) == 401
