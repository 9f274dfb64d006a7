"""Model artifacts on disk: their hashes, where the INT8 IR of a model sits, the cache folders.

The bottom of the engine: it imports nothing of ours (only the standard library), so the
model sources, the loader, auto selection, the models CLI and the Dockerfile's model
stage (which runs ``python -m rtc_server.models fetch`` with the standard library alone)
can all share these few facts without importing each other.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Suffix of the INT8 OpenVINO IR that ``python -m rtc_server.models quantize`` writes
#: next to ``<model>.onnx``: ``<model>.int8.xml`` + ``<model>.int8.bin``.
INT8_SUFFIX = ".int8.xml"


def sha256_of(path: Path) -> str:
    """The hex sha256 of one file, read in 1 MiB chunks (model files are large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_sha256(path: Path) -> str:
    """sha256 of a model artifact: the file, or an OpenVINO IR's ``.xml`` then its ``.bin``."""
    digest = hashlib.sha256()
    parts = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    for part in parts:
        with part.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def int8_path(model: Path) -> Path:
    """Where the INT8 IR of ``model`` lives (next to it; git-ignored under models/)."""
    return model.with_name(model.stem + INT8_SUFFIX)


def _cache_root() -> Path:
    """``$XDG_CACHE_HOME/rtc-yolo``, else ``~/.cache/rtc-yolo``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rtc-yolo"


def model_cache_dir() -> Path:
    """Downloaded models (``https://``, ``gs://`` sources): ``<cache>/rtc-yolo/models``
    (``RTC_MODEL_CACHE`` overrides it)."""
    return _cache_root() / "models"


def backend_cache_dir() -> Path:
    """Auto's choice and OpenVINO's compiled models: ``<cache>/rtc-yolo/backends``
    (``RTC_BACKEND_CACHE`` overrides it)."""
    return _cache_root() / "backends"
