"""``GET /models``: the models this server serves, the default first, and the one check
every route uses for a client-named model (an unknown name is a 400 naming those there are).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rtc_server.engine.catalog import ModelCatalog, UnknownModel
from rtc_server.engine.detector import ModelInfo

from .context import INFERENCE
from .errors import ClientError


def backend_of(info: ModelInfo) -> tuple[str, str]:
    """``(backend, precision)`` a loaded model really runs (what its backend reported)."""
    return info.backend, info.precision


def describe(catalog: ModelCatalog, name: str) -> dict[str, Any]:
    info = catalog.info(name)
    serving = catalog.serving(name)
    backend, precision = backend_of(info)
    entry: dict[str, Any] = {
        "name": name,
        "default": name == catalog.default,
        "version": info.version,
        "sha256": info.sha256,
        "backend": backend,
        "precision": precision,
        "input_size": list(serving.input_size) if serving else None,
        "letterbox": serving.letterbox if serving else None,
        "class_names": list(info.class_names),
        "ready": catalog.is_ready(name),
    }
    failure = catalog.failure(name)
    if failure is not None:
        entry["error"] = failure
    return entry


def check_model(catalog: ModelCatalog, name: str | None) -> str | None:
    """``name`` if the server serves it (None: the default); else 400 ``unknown_model``."""
    try:
        return catalog.check(name)
    except UnknownModel as exc:
        raise ClientError(400, "unknown_model", f"{exc}; GET /models lists them") from exc


async def list_models(request: web.Request) -> web.Response:
    """``{"models": [{"name", "version", "sha256", "backend", "precision", "input_size",
    "class_names", "ready", ...}, ...]}``, the default first."""
    catalog = request.app[INFERENCE].models
    return web.json_response({"models": [describe(catalog, name) for name in catalog.names]})
