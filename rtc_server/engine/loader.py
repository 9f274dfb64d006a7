"""The loader: the top of the engine, and the one way the server (and tools, tests) get models.

``load_detector``: a model file + backend + precision -> a ``YoloDetector`` whose backend
runs exactly what was asked, or a ``ModelError`` saying what cannot run and why (the
server then exits 1). ``backend="auto"`` hands the choice to ``autoselect``: the fastest
path on this machine among those the accuracy record documents as within bounds; an
explicit backend is opened directly (``opening.open_detector``).

``load_catalog``: model specs in, a ``ModelCatalog`` of loaded, verified models out. For
each configured model (``RTC_MODEL``, or every entry of ``RTC_MODELS``, in order): resolve
its source to a verified local file (``model_sources.resolve``: a path, or a cached
download whose sha256 matched), load it with its own input size and letterbox, and put it
in the catalog under its configured name, the first the default. Any failure raises
before the server listens: ``ModelSourceError`` (fetching, verifying) or ``ModelError``
(loading), each naming the model and what is wrong.

The stack, each layer importing only those below it: ``artifacts`` (hashes, INT8 paths,
cache folders) and ``accuracy`` (the record) -> ``backends`` -> ``detector`` -> ``opening``
-> ``autoselect`` -> this module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import backend_cache_dir, model_cache_dir, sha256_of
from .autoselect import choose
from .backends import BACKENDS, PRECISIONS
from .catalog import ModelCatalog, Serving
from .detector import Detector, ModelError
from .model_sources import DEFAULT_TIMEOUT, ModelSpec, resolve
from .opening import open_detector

log = logging.getLogger(__name__)


def load_detector(
    model: Path,
    *,
    backend: str = "auto",
    precision: str = "auto",
    imgsz: int = 640,
    rect: bool = True,
    threads: int = 0,
    providers: Sequence[str] = (),
    cache_dir: Path | None = None,
    name: str | None = None,
) -> Detector:
    """Load ``model`` (an ONNX file, or an OpenVINO IR ``.xml``) to run on ``backend`` in
    ``precision``; ``threads`` is the backend's thread count (0: its own default, one per
    core); ``providers`` are onnxruntime execution providers (empty: the CPU);
    ``cache_dir`` keeps auto's choice and compiled models (None: no cache)."""
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"model file not found: {model} (run `make model` or set RTC_MODEL)")
    if backend not in ("auto", *BACKENDS):
        raise ModelError(f"unknown backend {backend!r}; use auto, {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    sha256 = sha256_of(model)
    if backend == "auto" and providers:
        backend = "onnxruntime"  # execution providers are onnxruntime's: naming any picks it
    if backend != "auto":
        detector = open_detector(model, backend, precision, sha256=sha256, imgsz=imgsz, rect=rect,
                                 threads=threads, providers=providers, cache_dir=cache_dir, name=name)
    else:
        detector = choose(model, precision, sha256=sha256, imgsz=imgsz, rect=rect, threads=threads,
                          providers=providers, cache_dir=cache_dir, name=name)
    info = detector.info
    log.info("model %s: %s %s on %s (sha256 %s…)", info.name, info.backend, info.precision,
             ", ".join(info.providers), info.sha256[:12])
    return detector


@dataclass(frozen=True)
class LoadOptions:
    """Server-wide defaults; a spec's own options win over them."""

    imgsz: int = 640
    letterbox: str = "rect"
    threads: int = 0
    cache_dir: Path = field(default_factory=model_cache_dir)
    fetch_timeout: float = DEFAULT_TIMEOUT
    #: ``RTC_BACKEND``/``RTC_PRECISION`` (a spec's ``backend=``/``precision=`` win),
    #: ``RTC_PROVIDERS``, and where ``auto`` caches its choice (None: nowhere).
    backend: str = "auto"
    precision: str = "auto"
    providers: tuple[str, ...] = ()
    backend_cache: Path | None = field(default_factory=backend_cache_dir)


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
    """The one place a detector is made from a verified file: ``load_detector`` with this
    model's backend and precision (its spec's, else the server's), named by the spec —
    the same file may be served under two names, e.g. at two input sizes."""
    return load_detector(path, backend=spec.backend or options.backend, precision=spec.precision or options.precision,
                         imgsz=imgsz, rect=letterbox == "rect", threads=options.threads, providers=options.providers,
                         cache_dir=options.backend_cache, name=spec.name)
