"""bench/ is one tool: every bench imports, and runs as ``python -m bench.<name> --help``.

Cheap checks (no model, no server, no benchmark run) that fail on what makes a bench decay
quietly: a broken import after the tree moved, a ``sys.path`` hack creeping back, or a doc
or Makefile line that invokes a bench some other way or names one that is gone.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT

BENCH = ROOT / "bench"


def _modules() -> list[str]:
    """Every module under bench/ (experiments included), as ``bench.x`` / ``bench.experiments.x``."""
    names = []
    for path in sorted(BENCH.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] != "__init__":
            names.append(".".join(parts))
    return names


def _runnable(name: str) -> bool:
    """A module with an entry point (``if __name__ == "__main__"``), not a library of the benches."""
    path = ROOT.joinpath(*name.split(".")).with_suffix(".py")
    return 'if __name__ == "__main__":' in path.read_text()


MODULES = _modules()
RUNNABLE = [name for name in MODULES if _runnable(name)]


def test_the_benches_are_found() -> None:
    for expected in ("bench.common", "bench.model_floor", "bench.backends", "bench.cold_start", "bench.scheduler",
                     "bench.webrtc_e2e", "bench.whip_latency", "bench.consumers", "bench.soak",
                     "bench.alternatives", "bench.batch_sizes", "bench.container",
                     "bench.experiments.scheduler_before_after"):
        assert expected in MODULES
    assert "bench.model_floor" in RUNNABLE and "bench.common" not in RUNNABLE


@pytest.mark.parametrize("name", MODULES)
def test_every_bench_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_every_bench_runs_as_a_module_with_help(tmp_path: Path) -> None:
    """``python -m bench.<name> --help`` exits 0 and prints a usage line, for each: run as
    ``-m`` runs them (``runpy``, ``__main__``), each in its own fork of one interpreter that
    imported the third-party libraries once (``tests/run_as_main.py``), not 25 cold starts."""
    # The probe server opens its file before rtc_server parses --help.
    env = {**os.environ, "BENCH_PROBE_FILE": str(tmp_path / "probe.jsonl")}
    proc = subprocess.run([sys.executable, "-m", "tests.run_as_main", "--args=--help", *RUNNABLE], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    assert [name for name, _, _ in results] == RUNNABLE
    failed = [f"{name} (exit {code}):\n{output[-1500:]}" for name, code, output in results
              if code != 0 or "usage:" not in output]
    assert not failed, "\n\n".join(failed)


def test_no_sys_path_hacks_in_bench_or_drivers() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for folder in ("bench", "drivers") for path in sorted((ROOT / folder).rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"\bsys\.path\b", line)]
    assert not offenders, "run benches as `python -m bench.<name>` instead:\n" + "\n".join(offenders)


def _docs() -> list[Path]:
    return [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md")),
            BENCH / "experiments" / "README.md"]


def test_docs_and_makefile_invoke_benches_one_way_and_name_real_ones() -> None:
    """Each ``python -m bench.<name>`` (and each Makefile ``bench_run,<name>``) names a module that
    exists, and nothing runs a bench as a script (``python bench/x.py``)."""
    problems = []
    for doc in _docs():
        text = doc.read_text()
        names = re.findall(r"-m (bench(?:\.\w+)+)(?![.\w<])", text)  # not the bench.<name> placeholders
        names += [f"bench.{n}" for n in re.findall(r"bench_run,(\w+)", text)]
        problems += [f"{doc.relative_to(ROOT)}: {name} does not exist" for name in names if name not in MODULES]
        problems += [f"{doc.relative_to(ROOT)}: `{m}`: use python -m bench.<name>"
                     for m in re.findall(r"python\S* +bench/\S+\.py", text)]
    assert not problems, "\n".join(problems)
