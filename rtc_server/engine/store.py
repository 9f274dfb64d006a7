"""The model store: specs in, a ``ModelCatalog`` of loaded, verified models out.

For each configured model (``RTC_MODEL``, or every entry of ``RTC_MODELS``, in order):
resolve its source to a verified local file (``sources.resolve``: a path, or a cached
download whose sha256 matched), load it with its own input size and letterbox, and put
it in the catalog under its configured name, the first the default. Any failure raises
before the server listens: ``SourceError`` (fetching, verifying) or ``ModelError``
(loading), each naming the model and what is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import ModelCatalog, Serving
from .detector import Detector, ModelError
from .loader import default_cache_dir as default_backend_cache
from .loader import load_detector
from .sources import DEFAULT_TIMEOUT, ModelSpec, default_cache_dir, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """Server-wide defaults; a spec's own options win over them."""

    imgsz: int = 640
    letterbox: str = "rect"
    threads: int = 0
    cache_dir: Path = field(default_factory=default_cache_dir)
    fetch_timeout: float = DEFAULT_TIMEOUT
    #: ``RTC_BACKEND``/``RTC_PRECISION`` (a spec's ``backend=``/``precision=`` win),
    #: ``RTC_PROVIDERS``, and where ``auto`` caches its choice (None: nowhere).
    backend: str = "auto"
    precision: str = "auto"
    providers: tuple[str, ...] = ()
    backend_cache: Path | None = field(default_factory=default_backend_cache)


def load_catalog(specs: Sequence[ModelSpec], options: LoadOptions) -> ModelCatalog:
    """Every model of ``specs``, loaded once, the first the default."""
    if not specs:
        raise ModelError("no model configured (set RTC_MODEL or RTC_MODELS)")
    detectors: dict[str, Detector] = {}
    serving: dict[str, Serving] = {}
    for spec in specs:
        path = resolve(spec, options.cache_dir, options.fetch_timeout)
        imgsz = spec.imgsz or options.imgsz
        letterbox = spec.letterbox or options.letterbox
        detectors[spec.name] = _make_detector(spec, path, imgsz=imgsz, letterbox=letterbox, options=options)
        serving[spec.name] = Serving(input_size=(imgsz, imgsz), letterbox=letterbox)
        info = detectors[spec.name].info
        log.info("model %s: %s (version %s, sha256 %s, %d classes, input up to %dx%d, %s letterbox)",
                 spec.name, spec.display, info.version, info.sha256[:12], len(info.class_names), imgsz, imgsz,
                 letterbox)
    return ModelCatalog(detectors, serving)


def _make_detector(spec: ModelSpec, path: Path, *, imgsz: int, letterbox: str, options: LoadOptions) -> Detector:
    """The one place a detector is made from a verified file: ``loader.load_detector`` with
    this model's backend and precision (its spec's, else the server's), named by the spec —
    the same file may be served under two names, e.g. at two input sizes."""
    return load_detector(path, backend=spec.backend or options.backend, precision=spec.precision or options.precision,
                         imgsz=imgsz, rect=letterbox == "rect", threads=options.threads, providers=options.providers,
                         cache_dir=options.backend_cache, name=spec.name)
