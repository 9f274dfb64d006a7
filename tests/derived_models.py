"""Models users bring, derived here from the real YOLO11n (never committed): a static
640x640 export, an FP16 export and a model with another class count."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import onnx
from onnx import helper


def _set_dims(value_info: onnx.ValueInfoProto, dims: list[int]) -> None:
    shape = value_info.type.tensor_type.shape
    for dim, size in zip(shape.dim, dims, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size


def static_copy(src: Path, dest: Path, hw: tuple[int, int] = (640, 640)) -> Path:
    """Ultralytics' default export: input fixed to ``[1, 3, 640, 640]`` (as ``dynamic=False``)."""
    model = onnx.load(str(src))
    _set_dims(model.graph.input[0], [1, 3, *hw])
    anchors = sum((hw[0] // s) * (hw[1] // s) for s in (8, 16, 32))
    _set_dims(model.graph.output[0], [1, 84, anchors])
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return dest


def fp16_copy(src: Path, dest: Path) -> Path:
    """An FP16 export as Ultralytics makes one (``half=True``, static 640x640): weights and
    the input/output tensors in float16. The static copy is constant-folded first
    (onnxruntime's basic graph optimisations turn the anchor-grid shape arithmetic into
    constants), then converted by onnxconverter-common."""
    import onnxruntime as ort
    from onnxconverter_common import float16

    static = static_copy(src, dest.with_name(dest.stem + "-static32.onnx"))
    folded = dest.with_name(dest.stem + "-folded32.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(static), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(folded))
    del model.graph.value_info[:]  # stale annotations would contradict the inserted casts
    with warnings.catch_warnings():  # "float32 number 2.6e-11 will be truncated": tiny weights
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(model, keep_io_types=False)
    onnx.save(model, str(dest))
    return dest


def fewer_classes(src: Path, dest: Path, keep: int = 3, names: dict[int, str] | None = None) -> Path:
    """A model whose head knows only the first ``keep`` classes: the output sliced to
    ``4 + keep`` channels, metadata ``names`` to match (or ``names`` as given, to test a
    mismatch)."""
    model = onnx.load(str(src))
    graph = model.graph
    old = graph.output[0].name
    sliced = old + "_sliced"
    consts = {"starts": [0], "ends": [4 + keep], "axes": [1]}
    for name, value in consts.items():
        graph.initializer.append(helper.make_tensor(f"slice_{name}", onnx.TensorProto.INT64, [1], value))
    graph.node.append(helper.make_node("Slice", [old, "slice_starts", "slice_ends", "slice_axes"], [sliced],
                                       name="head_slice"))
    out = helper.make_tensor_value_info(sliced, onnx.TensorProto.FLOAT, ["batch", 4 + keep, "anchors"])
    del graph.output[:]
    graph.output.append(out)
    meta = {p.key: p for p in model.metadata_props}
    full = ast.literal_eval(meta["names"].value)  # Ultralytics" dict literal
    wanted = names if names is not None else {i: full[i] for i in range(keep)}
    meta["names"].value = repr(wanted)
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return dest
