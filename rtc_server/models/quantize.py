"""INT8: an OpenVINO IR quantized from the ONNX model with NNCF post-training quantization.

``python -m rtc_server.models quantize --model models/yolo11n.onnx --images DIR`` writes
``models/yolo11n.int8.xml`` + ``.bin`` next to the model (git-ignored), which the openvino
backend runs as ``int8`` and ``auto`` considers once the accuracy record
(``python -m rtc_server.models accuracy --write``) documents that very file as within bounds.

Calibration images go through the service's own letterbox and blob (square 640, the
training geometry), so the activation ranges NNCF sees are those served frames produce.
Two ways to keep accuracy, as NNCF documents for YOLO:

- ``--keep head-math`` (Ultralytics' own export recipe): the Detect head's box decoding
  (Add/Sub/Mul/Div, DFL, Sigmoid) stays in float; its convolutions are quantized.
- ``--keep head``: the whole Detect head (``model.23``) stays in float; only the backbone
  and neck run int8 — slower, closer to FP32.
- ``--accuracy-control``: ``nncf.quantize_with_accuracy_control`` measures mAP50-95 on the
  images (pycocotools, labels beside them in YOLO layout) and reverts the layers that cost
  most until the drop is at most ``--max-drop``.

NNCF is heavy (scipy, scikit-learn, pandas): it lives in the ``quantize`` extra and is
imported only here. Quantizing is a tool, not run time: this module sits in the models
package above the engine and the server never imports it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..engine.artifacts import int8_path
from ..engine.backends import BackendInfo
from ..engine.detector import YoloDetector
from ..engine.yolo import Letterbox, letterbox_into
from .evaluate import evaluate, image_files, load_dataset, read_rgb

log = logging.getLogger(__name__)

HEAD = r".*model\.23"
KEEP: dict[str, dict[str, list[str]]] = {
    "head-math": dict(patterns=[HEAD + r"/(Add|Sub|Mul|Div).*", HEAD + r"/dfl/.*"], types=["Sigmoid", "Softmax"]),
    "head": dict(patterns=[HEAD + r"/.*"], types=[]),
    "none": dict(patterns=[], types=[]),
}


class QuantizeError(RuntimeError):
    pass


def calibration_blobs(images: Iterable[Path], imgsz: int = 640) -> list[np.ndarray]:
    blobs = []
    for path in images:
        rgb = read_rgb(path)
        lb = Letterbox.fit(rgb.shape[1], rgb.shape[0], imgsz, rect=False)
        blob = np.empty((1, 3, *lb.input_hw), np.float32)
        letterbox_into(rgb, lb, blob[0])  # the preprocessing the server runs
        blobs.append(blob)
    return blobs


def quantize(model: Path, images: Path, out: Path | None = None, *, subset: int = 300, keep: str = "head-math",
             accuracy_control: bool = False, max_drop: float = 0.005, imgsz: int = 640,
             seed: int = 0) -> Path:
    """Quantize ``model`` (ONNX) to an INT8 OpenVINO IR at ``out`` (default: next to it)."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise QuantizeError(f"quantizing needs NNCF: pip install 'rtc-yolo[quantize]' ({exc})") from exc
    files = image_files(images)
    if not files:
        raise QuantizeError(f"no images in {images}")
    random.Random(seed).shuffle(files)
    files = files[:subset]
    out = out or int8_path(model)
    from ..engine.backends.openvino import core  # the process's one Core (see there why); needs OpenVINO

    ov_model = core().read_model(str(model))
    blobs = calibration_blobs(files, imgsz)
    dataset = nncf.Dataset(blobs)
    spec = KEEP[keep]
    ignored = nncf.IgnoredScope(patterns=spec["patterns"], types=spec["types"], validate=False)
    log.info("quantizing %s on %d images from %s (keep %s in float%s)", model, len(blobs), images, keep,
             ", accuracy control" if accuracy_control else "")
    if accuracy_control:
        quantized = _with_accuracy_control(nncf, ov_model, dataset, files, images, ignored, max_drop)
    else:
        quantized = nncf.quantize(ov_model, dataset, preset=nncf.QuantizationPreset.MIXED,
                                  subset_size=len(blobs), ignored_scope=ignored)
    # Keep the ONNX metadata (class names, version) and say where this file came from.
    quantized.set_rt_info(f"NNCF {nncf.__version__} MIXED, keep {keep} in float, accuracy control "
                          f"{accuracy_control}, {len(blobs)} calibration images from {images.name}",
                          ["rtc_yolo", "quantization"])
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def _with_accuracy_control(nncf, ov_model, dataset, files, images, ignored, max_drop):
    """``quantize_with_accuracy_control`` with our mAP50-95 as the validation metric."""
    labelled = [item for item in load_dataset(images) if item.path in set(files)]
    if not any(len(item.boxes) for item in labelled):
        raise QuantizeError(f"accuracy control needs YOLO labels beside {images} (labels/ next to images/)")

    def validate(compiled_model, _data) -> float:
        request = compiled_model.create_infer_request()

        class _Runner:
            info = BackendInfo(name="openvino", precision="int8", device="CPU", input_shape=(None, 3, None, None),
                               input_dtype=np.dtype(np.float32), metadata=_metadata(ov_model))

            def run(self, blob: np.ndarray) -> np.ndarray:
                request.infer({0: blob})
                return np.array(request.get_output_tensor(0).data, dtype=np.float32)

        detector = YoloDetector(_Runner(), name="candidate", sha256="", imgsz=640, rect=True)
        return evaluate(detector, labelled).map50_95

    return nncf.quantize_with_accuracy_control(
        ov_model, calibration_dataset=dataset, validation_dataset=nncf.Dataset([0]), validation_fn=validate,
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(files), ignored_scope=ignored)


def _metadata(ov_model) -> dict[str, str]:
    from ..engine.backends.openvino import metadata_of

    return metadata_of(ov_model)
