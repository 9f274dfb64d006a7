"""Rules of the test suite itself, checked on its source: CI cannot go green on what it
skipped, test modules stay independent, and CI runs the linters."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT

TESTS = ROOT / "tests"
#: A skip that is not about a missing dependency (the machine has something extra, not less)
#: carries this marker on its line.
NOT_A_MISSING_DEPENDENCY = "# not a missing dependency"


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
            names += ["." * node.level + (node.module + "." if node.module else "") + a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def test_no_module_imports_a_test_module() -> None:
    offenders = []
    for path in [*TESTS.glob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        for name in _imports(path):
            if re.search(r"(^|\.)test_\w+$", name) and not name.endswith("test_utils"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "shared code belongs in tests/helpers.py (or a support module):\n" + "\n".join(offenders)


def test_essential_skips_go_through_cannot_run() -> None:
    """``pytest.skip``/``skipif``/``importorskip`` pass silently in CI; ``cannot_run`` fails there."""
    offenders = []
    for path in TESTS.glob("*.py"):
        if path.name in ("helpers.py", "test_suite_rules.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"pytest\.(skip\(|mark\.skipif|importorskip)", line) and NOT_A_MISSING_DEPENDENCY not in line:
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "use tests.helpers.cannot_run(reason):\n" + "\n".join(offenders)


def test_ci_is_strict_and_lints() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^export RTC_TESTS_STRICT=1$", ci, re.M), "CI must turn essential skips into failures"
    assert "make lint" in ci
    # A failed install is a failed CI run, not a pile of skips.
    assert "|| echo" not in ci
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile[makefile.index("\nlint:"):].split("\n\n")[0]
    assert "ruff check" in lint and "mypy" in lint


@pytest.mark.parametrize("strict", ["1", "0"])
def test_cannot_run_fails_under_strict_and_skips_otherwise(strict: str, tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("from tests.helpers import cannot_run\n\n"
                                        "def test_needs_a_browser():\n    cannot_run('no browser here')\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_x.py")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "RTC_TESTS_STRICT": strict},
                          timeout=120)
    if strict == "1":
        assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout
        assert "no browser here" in proc.stdout
    else:
        assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout


def test_modules_with_module_scoped_fixtures_stay_whole_under_xdist() -> None:
    """A module-scoped fixture (a server, a browser, derived models) is built once per worker
    that runs one of its tests: such modules are in ``conftest.XDIST_GROUPS``, one worker each."""
    from .conftest import XDIST_GROUPS

    offenders = [path.name for path in sorted(TESTS.glob("test_*.py"))
                 if re.search(r'scope="(module|class|package)"', path.read_text()) and path.name not in XDIST_GROUPS]
    assert not offenders, f"add them to tests/conftest.py XDIST_GROUPS: {offenders}"
    missing = [name for name in XDIST_GROUPS if not (TESTS / name).is_file()]
    assert not missing, f"XDIST_GROUPS names modules that do not exist: {missing}"
