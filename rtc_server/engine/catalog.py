"""``ModelCatalog``: the models this server serves, by name, the default first.

Streams and ``/predict`` name a model (or take the default); the catalog turns the name
into a loaded detector, or says which names exist. Loading and choosing backends is not
its concern: it holds what the composition root loaded (``loader.load_catalog``), how each
model is served (``Serving``), and whether each has warmed up — what ``/models`` and
``/readyz`` report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .detector import Detector, ModelInfo


class UnknownModel(LookupError):
    """A client named a model this server does not serve; the message lists those it does."""

    def __init__(self, name: str, names: tuple[str, ...]) -> None:
        super().__init__(f"no model {name!r}; this server serves {', '.join(names)}")
        self.name, self.names = name, names


@dataclass(frozen=True)
class Serving:
    """How this server runs a model, beyond the file's own facts (``ModelInfo``)."""

    #: The largest model input, ``(height, width)``: ``imgsz x imgsz``; with the "rect"
    #: letterbox a frame runs at its own aspect within it (640x480 -> 480x640).
    input_size: tuple[int, int]
    #: "rect" or "square".
    letterbox: str


class ModelCatalog:
    def __init__(self, detectors: Mapping[str, Detector], serving: Mapping[str, Serving] | None = None) -> None:
        if not detectors:
            raise ValueError("a catalog needs at least one model")
        misnamed = [f"{name}: {d.info.name}" for name, d in detectors.items() if d.info.name != name]
        if misnamed:  # results name their model by ModelInfo: it must be the name clients use
            raise ValueError(f"catalog names differ from the models' own: {', '.join(misnamed)}")
        self._detectors = dict(detectors)
        self._serving = dict(serving or {})
        self._ready: set[str] = set()
        self._failed: dict[str, str] = {}

    @classmethod
    def of(cls, *detectors: Detector) -> ModelCatalog:
        """A catalog of loaded detectors under their own names, the first the default."""
        return cls({d.info.name: d for d in detectors})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._detectors)

    @property
    def default(self) -> str:
        return next(iter(self._detectors))

    def get(self, name: str | None = None) -> Detector:
        """The named detector (None: the default); ``UnknownModel`` for any other name."""
        key = self.default if name is None else name
        try:
            return self._detectors[key]
        except KeyError:
            raise UnknownModel(key, self.names) from None

    def info(self, name: str | None = None) -> ModelInfo:
        return self.get(name).info

    def check(self, name: str | None) -> str | None:
        """``name`` if the catalog has it (None passes: the default); else ``UnknownModel``."""
        if name is not None:
            self.get(name)
        return name

    def serving(self, name: str | None = None) -> Serving | None:
        """How the named model is served; None when the catalog was built from bare detectors."""
        return self._serving.get(self.default if name is None else name)

    # ----- warm-up state (set by whoever runs the warm-up, read by /readyz and /models) -----
    def mark_ready(self, name: str) -> None:
        self.get(name)
        self._ready.add(name)

    def mark_failed(self, name: str, reason: str) -> None:
        self.get(name)
        self._failed[name] = reason

    def is_ready(self, name: str) -> bool:
        return name in self._ready

    def failure(self, name: str) -> str | None:
        """Why the model failed its warm-up, or None."""
        return self._failed.get(name)

    def __iter__(self) -> Iterator[Detector]:
        return iter(self._detectors.values())

    def __len__(self) -> int:
        return len(self._detectors)
