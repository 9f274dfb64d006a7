"""rtc-yolo: real-time YOLO11 object detection on live WebRTC video.

Data path: sources (``webrtc/``: a peer from ``/offer``) -> ``streams/`` (a ``Stream``:
newest-frame mailbox, settings, messages) -> ``engine/`` (inference service, detector,
YOLO geometry) -> detection message -> sinks (the peer's data channel). ``signaling/`` is
the HTTP face; ``app.py`` wires everything.
"""

__version__ = "0.1.0"
