"""What this host and installation are: the facts that make timings and results differ.

``auto`` keys its cached choice on them and the accuracy record notes them beside each
measurement. Versions come from package metadata, never from importing the runtimes
(importing onnxruntime just to key a cache would cost a start that runs OpenVINO ~0.1 s),
and this package's own version too: importing ``rtc_server`` for ``__version__`` would be
an arrow from the engine up to the package root.
"""

from __future__ import annotations

import contextlib
import os
from importlib import metadata
from pathlib import Path
from typing import Any

#: The distribution this package is installed as (``setup.cfg``).
DISTRIBUTION = "rtc-yolo"


def package_version() -> str:
    """This package's installed version, or "unknown" when run from a bare checkout."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def machine() -> dict[str, Any]:
    """What makes timings differ between machines: CPU model, the flags that pick kernels, cores."""
    name, flags = "unknown", set[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "avx2", "fma")))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": name, "flags": wanted, "cores": cores}


def versions() -> dict[str, str]:
    """Installed versions of this package and of the runtimes, read from package metadata."""
    out = {"rtc_yolo": package_version()}
    for name, dists in (("onnxruntime", ("onnxruntime", "onnxruntime-gpu")), ("openvino", ("openvino",))):
        out[name] = "absent"
        for dist in dists:
            try:
                out[name] = f"{dist} {metadata.version(dist)}"
                break
            except metadata.PackageNotFoundError:
                continue
    return out
