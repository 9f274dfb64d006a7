"""rtc-yolo: real-time YOLO11 object detection on live WebRTC video.

Data path: signaling (``signaling/``) -> ``PeerSession`` -> ``FrameMailbox`` ->
``InferenceService`` -> ``Detector`` -> detection message on the data channel.
"""

__version__ = "0.1.0"
