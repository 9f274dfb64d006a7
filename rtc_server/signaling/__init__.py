"""REST signaling and the other HTTP routes: ``/offer``, ``/predict``, probes, the page."""

from .routes import setup_routes

__all__ = ["setup_routes"]
