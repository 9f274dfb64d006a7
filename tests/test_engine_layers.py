"""The engine is a one-way stack, read from its source (function-local imports count).

Each engine module imports only modules below it in ``LAYERS``; none imports anything of
``rtc_server`` outside ``rtc_server/engine`` (the models CLI, config, streams, the package
root for ``__version__``): the engine is a library the rest of the server and the tools use.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .helpers import ROOT

ENGINE = ROOT / "rtc_server" / "engine"
#: Bottom to top: a module may import those before it, never one after it.
LAYERS = ("artifacts", "host", "accuracy", "yolo", "images", "backends", "backends.onnxruntime",
          "backends.openvino", "detector", "model_sources", "opening", "autoselect", "catalog", "loader",
          "frames", "scheduler")


def _module(path: Path) -> str:
    parts = path.relative_to(ENGINE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``rtc_server`` module ``path`` imports, anywhere in it, as absolute names."""
    package = ".".join(["rtc_server", "engine", *path.relative_to(ENGINE).parent.parts])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "rtc_server" or n.startswith("rtc_server.")}


def _existing(name: str) -> str | None:
    """The engine module (``LAYERS`` name) ``name`` refers to, if it is one."""
    relative = name.removeprefix("rtc_server.engine").lstrip(".")
    return relative if relative in LAYERS else None


def test_every_engine_module_has_a_layer() -> None:
    modules = {_module(p) for p in ENGINE.rglob("*.py")} - {""}
    assert modules == set(LAYERS), f"add new engine modules to LAYERS: {sorted(modules ^ set(LAYERS))}"


def test_engine_imports_point_down_only() -> None:
    offenders = []
    for path in ENGINE.rglob("*.py"):
        me = _module(path)
        for name in sorted(_imports(path)):
            if name != "rtc_server.engine" and not name.startswith("rtc_server.engine."):
                offenders.append(f"{me or '__init__'} imports {name}: outside the engine")
                continue
            target = _existing(name)
            if target is not None and me and LAYERS.index(target) >= LAYERS.index(me) and target != me:
                offenders.append(f"{me} imports {target}, a layer above it")
    assert not offenders, "\n".join(offenders)


def test_the_models_cli_sits_above_the_server() -> None:
    """``rtc_server/models/`` (fetch, quantize, evaluate, accuracy) is a tool: no module of
    the running server imports it."""
    offenders = []
    for path in [*(ROOT / "rtc_server").rglob("*.py"), *(ROOT / "signaling").rglob("*.py")]:
        if (ROOT / "rtc_server" / "models") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: resolve against the module's package
                    package = path.relative_to(ROOT).parent.parts
                    module = ".".join([*package[: len(package) - node.level + 1], *([module] if module else [])])
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)} imports {n}" for n in names
                          if n == "rtc_server.models" or n.startswith("rtc_server.models.")]
    assert not offenders, "\n".join(offenders)


def test_model_specs_and_the_settings_load_no_runtime() -> None:
    """``config`` parses model specs (``model_sources``, which names ``BACKENDS``); the
    container's HEALTHCHECK imports ``config`` every few seconds: none of it loads numpy or
    a backend runtime."""
    import subprocess
    import sys

    code = ("import sys, rtc_server.healthcheck, rtc_server.engine.model_sources; "
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'openvino', 'cv2') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]"]
