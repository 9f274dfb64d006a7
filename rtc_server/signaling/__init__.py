"""The HTTP face: ``/offer``, ``/whip``, ``/streams``, ``/sessions``, ``/predict``, probes,
metrics, the page; errors, auth, CORS, limits.

It only registers handlers on what the composition root built and set on the app
(``context.py``: its ``ApiConfig``, the scheduler, the registry, rate limits, tokens,
snapshots); it reads no ``Settings`` and reaches no private attribute of aiortc,
onnxruntime or OpenVINO.
"""

from .routes import setup_routes

__all__ = ["setup_routes"]
