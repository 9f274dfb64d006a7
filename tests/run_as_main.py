"""Run modules as ``python -m <name> <args>`` would, each in a fork of one interpreter.

``python -m tests.run_as_main --args=--help bench.a bench.b ...`` imports the heavy
third-party libraries once (numpy, scipy, OpenCV, PyAV, aiohttp, aiortc, the runtimes,
SQLAlchemy: most of a bench's start-up CPU), then forks one child per module. The child runs
the module with ``runpy.run_module(name, run_name="__main__", alter_sys=True)``: what ``-m``
does, with ``sys.argv`` set as ``-m`` sets it. No module of this project is imported before
the fork, so each module's own import order (and any import error or cycle in it) is what a
fresh ``python -m`` meets. Prints one JSON line: ``[[name, exit code, output], ...]``.

Why: ``tests/test_bench_cli.py`` runs every bench's ``--help``; as 25 fresh interpreters that
was some 30 CPU seconds of importing the same libraries 25 times.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import sys
import tempfile
import traceback
from pathlib import Path

#: Third-party libraries the benches and the server import (absent ones are skipped: a
#: module that needs one fails in its child, as it would alone).
PRELOAD = ("numpy", "scipy.optimize", "cv2", "av", "aiohttp", "aiohttp.web", "aiortc", "aioice", "psutil",
           "sqlalchemy", "sqlalchemy.orm", "alembic", "onnxruntime", "openvino", "prometheus_client",
           "cryptography.x509", "yaml")


def run_child(name: str, args: list[str], out: int) -> None:
    """In the child: the module as ``__main__``; exit with its status. Never returns."""
    code = 0
    try:
        os.dup2(out, 1)
        os.dup2(out, 2)
        sys.argv = [name, *args]  # runpy replaces [0] with the module's file, as -m does
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:  # the child reports whatever ended it, as python -m would
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--args", default="", help="arguments for every module, space-separated")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="children at once")
    parser.add_argument("modules", nargs="+")
    options = parser.parse_args()
    for library in PRELOAD:
        try:
            importlib.import_module(library)
        except ImportError:
            pass
    args = options.args.split()
    results: dict[str, tuple[int, str]] = {}
    running: dict[int, tuple[str, Path]] = {}
    pending = list(options.modules)
    with tempfile.TemporaryDirectory(prefix="run-as-main-") as folder:
        while pending or running:
            while pending and len(running) < max(1, options.jobs):
                name = pending.pop(0)
                log = Path(folder) / f"{name}.log"
                out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    run_child(name, args, out)
                os.close(out)
                running[pid] = (name, log)
            pid, status = os.wait()
            if pid in running:
                name, log = running.pop(pid)
                results[name] = (os.waitstatus_to_exitcode(status), log.read_text(errors="replace"))
    print(json.dumps([[name, *results[name]] for name in options.modules]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
