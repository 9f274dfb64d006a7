"""The engine: YOLO geometry, detectors (model backends) and the inference service.

It knows no streams, peers, HTTP or aiortc: images and thresholds in, results out.
"""
