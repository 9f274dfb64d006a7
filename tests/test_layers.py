"""One composition root above everything (issue 19): read from the code's own imports,
function-local ones included, so a hidden import cannot make an edge back up.

``__main__`` → ``app`` (with ``wiring``, the Settings → component-config mapping) →
``signaling`` (the HTTP face) → ``webrtc``, ``ingest`` → ``streams`` → ``engine``. Only the
root reads ``Settings``; no component imports ``config`` or the root, and nothing below the
root reaches the HTTP face.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .helpers import ROOT

PACKAGE = ROOT / "rtc_server"
#: The composition root and the entry points: the only modules that may read Settings.
ROOT_MODULES = frozenset({"rtc_server.app", "rtc_server.wiring", "rtc_server.__main__", "rtc_server.healthcheck"})
#: What only the root may import.
ABOVE_COMPONENTS = ("rtc_server.config", "rtc_server.app", "rtc_server.wiring", "rtc_server.__main__")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (absolute names; ``from x import y``
    counts as ``x`` and ``x.y``, since ``y`` may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_one_top_level_package() -> None:
    """The HTTP face lives inside the runtime package: no second package to form a cycle with."""
    assert not (ROOT / "signaling").exists()
    assert (PACKAGE / "signaling" / "__init__.py").is_file()


def test_no_component_imports_config_or_the_root() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name in ROOT_MODULES or name == "rtc_server.config":
            continue
        for imported in imports_of(path):
            if any(within(imported, above) for above in ABOVE_COMPONENTS):
                offenders.append((name, imported))
    assert not offenders, offenders


def test_only_the_root_reaches_the_http_face() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name in ROOT_MODULES or within(name, "rtc_server.signaling"):
            continue
        offenders += [(name, i) for i in imports_of(path)
                      if within(i, "rtc_server.signaling") or within(i, "signaling")]
    assert not offenders, offenders
