"""The engine: YOLO geometry, detectors (model backends) and the inference service.

It knows no streams, peers, HTTP or aiortc: images and thresholds in, results out.

A one-way stack; each module imports only those listed before it (function-local imports
included), and nothing of ``rtc_server`` outside this package:

- ``artifacts`` (hashes, INT8 paths, cache folders), ``host`` (machine and versions),
  ``accuracy`` (reads the accuracy record), ``yolo`` (geometry), ``images`` (encoded stills)
- ``backends`` (one module per runtime; ``BACKENDS``, ``PRECISIONS``) -> ``detector``
- ``model_sources`` (model specs; fetching and verifying model files)
- ``opening`` (one explicit backend x precision) -> ``autoselect`` (``auto``) -> ``loader``
  (``load_detector``, ``load_catalog``: the top for models)
- ``catalog`` (models by name) -> ``frames`` (frames, requests, lanes) -> ``scheduler``

The models CLI (``rtc_server/models/``: fetch, quantize, evaluate, accuracy) sits above
the engine; the engine never imports it.
"""
