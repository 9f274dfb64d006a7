"""``ModelCatalog``: the models this server serves, by name, the default first.

Streams and ``/predict`` name a model (or take the default); the catalog turns the name
into a loaded detector, or says which names exist. Loading and choosing backends is not
its concern: it holds what the composition root loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .detector import Detector, ModelInfo


class UnknownModel(LookupError):
    """A client named a model this server does not serve; the message lists those it does."""

    def __init__(self, name: str, names: tuple[str, ...]) -> None:
        super().__init__(f"no model {name!r}; this server serves {', '.join(names)}")
        self.name, self.names = name, names


class ModelCatalog:
    def __init__(self, detectors: Mapping[str, Detector]) -> None:
        if not detectors:
            raise ValueError("a catalog needs at least one model")
        self._detectors = dict(detectors)

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

    def __iter__(self) -> Iterator[Detector]:
        return iter(self._detectors.values())

    def __len__(self) -> int:
        return len(self._detectors)
