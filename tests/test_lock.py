"""requirements.lock: the runtime dependencies pinned with hashes, what the tests run on and
what the image installs — so an image built next month has the dependencies tested today."""

from __future__ import annotations

import configparser
import re
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .helpers import ROOT

LOCK = ROOT / "requirements.lock"


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from the lock file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if match:
            pins[canonicalize_name(match[1])] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


#: The extras the image installs on top of install_requires (Makefile LOCK_EXTRAS).
IMAGE_EXTRAS = ("gcs",)


def install_requires() -> list[Requirement]:
    """install_requires and the image's extras: everything the image installs from the lock."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].split("\n")
    for extra in IMAGE_EXTRAS:
        lines += config["options.extras_require"][extra].split("\n")
    return [Requirement(line) for line in lines if line.strip()]


def test_every_runtime_dependency_is_pinned_with_hashes() -> None:
    """A dependency added to setup.cfg without `make lock` fails here (and the image build
    would lack it)."""
    pins = locked()
    assert pins and all(hashes for _, hashes in pins.values()), "every pin carries its sha256 hashes"
    for requirement in install_requires():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name][0]}, outside setup.cfg's {requirement}: run `make lock`"


def test_the_tested_environment_is_the_locked_one() -> None:
    """`make install` installs the lock: the versions under test are the ones the image gets."""
    for name, (version, _) in locked().items():
        assert metadata.version(name) == version, f"{name} {metadata.version(name)} installed, {version} locked"


def test_the_image_installs_the_lock_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock" in dockerfile
    assert re.search(r"pip install .*--require-hashes -r requirements\.lock", dockerfile)
    assert re.search(r"pip install .*--no-deps /src", dockerfile), "the package itself adds no unlocked dependency"
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text()
    assert re.search(r"^lock:", (ROOT / "Makefile").read_text(), re.M), "`make lock` refreshes it"
