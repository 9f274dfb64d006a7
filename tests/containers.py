"""A private Docker daemon and a registry-free base image, for building the real image here.

No image registry is reachable from CI (so ``FROM python:3.11-slim`` cannot be pulled), but
a root machine with overlay mounts can still build and run the project's Dockerfile:

* a base image made with ``debootstrap`` (Debian bookworm minbase + python3, python3-venv)
  from the Debian mirror apt already uses, imported with ``docker import``; the rootfs
  tarball is cached per day outside the repository so a second run skips the ~35 s step;
* a private ``dockerd`` with its own data root and socket, no bridge and no iptables
  (containers use host networking), stopped by its PID at the end; its data root (images,
  BuildKit's layer cache) is thrown away, unless ``RTC_CONTAINER_LAYERS`` names a folder
  to keep it in between runs (CI's cache, ``.ci/run``), one per key of the Dockerfile and
  requirements.lock: a later build then reuses the layers whose inputs did not change, as
  Docker's own cache would on a developer's machine;
* BuildKit through the distro client ``/usr/bin/docker`` (the legacy builder rejects
  ``RUN --mount``), with this machine's CA bundle handed to pip as the secret ``pipca``.

``unavailable()`` says why this machine cannot do it (the caller skips with that reason).
See ``../shared/notes/containers-here.md`` for the measured route.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

DOCKER = "/usr/bin/docker"
BASE_TAG = "local/py311-base:bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CACHE = Path(os.environ.get("RTC_CONTAINER_CACHE", Path.home() / ".cache" / "rtc-yolo"))
INSTALL_HINT = "apt-get install -y docker.io debootstrap (.ci/run does it)"
#: A folder to keep the private daemon's data root in between runs (None: a fresh one each run).
LAYERS = os.environ.get("RTC_CONTAINER_LAYERS") or None


def kept_data_root(context: Path) -> Path | None:
    """The data root kept under ``LAYERS`` for this Dockerfile and lock (older keys' are
    removed: a changed Dockerfile or lock starts from nothing); None when nothing is kept."""
    if LAYERS is None:
        return None
    digest = hashlib.sha256()
    for name in ("Dockerfile", "requirements.lock"):
        digest.update((context / name).read_bytes())
    folder = Path(LAYERS)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = folder / f"data-{digest.hexdigest()[:16]}"
    for old in folder.glob("data-*"):
        if old != wanted:
            shutil.rmtree(old, ignore_errors=True)
    return wanted


def unavailable() -> str | None:
    """Why a private daemon cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to run dockerd and debootstrap"
    for tool in (DOCKER, "dockerd", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: {INSTALL_HINT}"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel offers no overlay filesystem for dockerd's overlay2 driver"
    return None


def debian_mirror() -> str:
    """The Debian mirror apt already uses (deb822 ``URIs:`` line, else sources.list)."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        match = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.MULTILINE)
        if match and "security" not in match.group(1):
            return match.group(1)
    listing = Path("/etc/apt/sources.list")
    if listing.is_file():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", listing.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def base_rootfs_tarball() -> Path:
    """Today's debootstrap rootfs as a tarball, built once a day and cached in CACHE."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"base-bookworm-{datetime.date.today():%Y%m%d}.tar"
    if tarball.is_file():
        return tarball
    for stale in CACHE.glob("base-bookworm-*.tar"):
        stale.unlink()
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        _run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
              "bookworm", str(rootfs), debian_mirror()], timeout=600)
        partial = Path(work) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300)
        partial.replace(tarball)
    return tarball


def _run(command: Sequence[str], timeout: float, env: dict[str, str] | None = None,
         stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(command, capture_output=True, timeout=timeout, env=env, input=stdin)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).decode(errors="replace")[-4000:]
        raise RuntimeError(f"{' '.join(command[:4])} … failed ({proc.returncode}):\n{tail}")
    return proc


class PrivateDocker:
    """A ``dockerd`` of our own: own data root, socket and PID; nothing else is touched."""

    def __init__(self, data_root: Path | None = None) -> None:
        # A short path: the socket's path must fit in sun_path (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="rtcd-", dir="/tmp"))
        #: Images and build cache: under ``root`` (removed at the end), or a kept folder.
        self.data_root = data_root or self.root / "data"
        self.socket = self.root / "docker.sock"
        self.log_path = self.root / "dockerd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1"}

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.root / "exec"),
                 "--pidfile", str(self.root / "dockerd.pid"), "--host", f"unix://{self.socket}",
                 "--bridge=none", "--iptables=false", "--ip6tables=false", "--storage-driver=overlay2"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self._proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def docker(self, *args: str, check: bool = True, timeout: float = 120.0,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        command = [DOCKER, *args]
        if check:
            return _run(command, timeout, env=self.env, stdin=stdin)
        return subprocess.run(command, capture_output=True, timeout=timeout, env=self.env, input=stdin)

    def import_base(self) -> str:
        """Import today's debootstrap rootfs as ``BASE_TAG``; returns the tag. A kept data
        root that has it already (its comment names the tarball) keeps that image: imported
        again it would get a new id, and every layer built on it would be built anew."""
        tarball = base_rootfs_tarball()
        found = self.docker("image", "inspect", "-f", "{{.Comment}}", BASE_TAG, check=False)
        if found.returncode == 0 and found.stdout.decode().strip() == tarball.name:
            return BASE_TAG
        self.docker("import", "--change", "ENV LANG=C.UTF-8", "--message", tarball.name, str(tarball), BASE_TAG,
                    timeout=300)
        return BASE_TAG

    def build(self, context: Path, tag: str, build_args: dict[str, str] | None = None,
              timeout: float = 900.0, target: str | None = None) -> str:
        """``docker build`` with BuildKit and host networking; the CA bundle goes in as a secret."""
        args = ["build", "--network", "host", "--progress", "plain", "-t", tag]
        if target:
            args += ["--target", target]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        if CA_BUNDLE.is_file():
            args += ["--secret", f"id=pipca,src={CA_BUNDLE}"]
        self.docker(*args, str(context), timeout=timeout)
        return tag

    def stop(self) -> None:
        """Stop our daemon by its PID and remove its data root."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        # dockerd leaves its netns bind mount (and, if killed, overlays) behind: unmount
        # whatever is still mounted under our root (and a kept data root), deepest first,
        # then delete our root.
        prefixes = (str(self.root) + "/", str(self.data_root) + "/")
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(prefixes)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
