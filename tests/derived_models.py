"""Model files the tests derive from the real YOLO11n (never committed, never downloaded).

- ``class_subset``: the same network keeping only its first ``keep`` classes (a Slice on
  the output: ``[B, 4 + keep, anchors]``) with matching ``names`` metadata — a genuinely
  different model (another class count) for A/B tests.
- ``fails_at_run``: a YOLO-shaped graph that loads (one ``[B, 3, H, W]`` input, one
  ``[B, 84, N]`` output) but cannot run: its Reshape needs a size no real image has.
- ``static_copy``: Ultralytics' default export shape, input fixed to ``[1, 3, 640, 640]``.
- ``fp16_copy``: an FP16 export (float16 weights, input and output), as ``half=True`` makes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

COCO_FIRST = ("person", "bicycle", "car", "motorcycle", "airplane", "bus")


def class_subset(src: Path, dst: Path, keep: int = 3, names: dict[int, str] | None = None) -> Path:
    """``names`` overrides the metadata (to derive a model whose names disagree with its head)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    graph = model.graph
    output = graph.output[0]
    for node in graph.node:
        node.output[:] = ["raw_" + o if o == output.name else o for o in node.output]
    graph.initializer.extend([
        helper.make_tensor("subset_starts", onnx.TensorProto.INT64, [1], [0]),
        helper.make_tensor("subset_ends", onnx.TensorProto.INT64, [1], [4 + keep]),
        helper.make_tensor("subset_axes", onnx.TensorProto.INT64, [1], [1]),
    ])
    graph.node.append(helper.make_node("Slice", ["raw_" + output.name, "subset_starts", "subset_ends", "subset_axes"],
                                       [output.name], name="class_subset"))
    output.type.tensor_type.shape.dim[1].dim_value = 4 + keep
    names = names if names is not None else {i: COCO_FIRST[i] for i in range(keep)}
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = repr(names)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def fails_at_run(dst: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 84, "anchors"])
    # 3*H*W values into rows of 84 * 1000003 (a prime): no image of any size fits.
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [-1, 84, 1000003])
    graph = helper.make_graph([helper.make_node("Reshape", ["images", "shape"], ["output0"], name="reshape")],
                              "loads_but_cannot_run", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def _set_dims(value_info, dims: list[int]) -> None:
    shape = value_info.type.tensor_type.shape
    for dim, size in zip(shape.dim, dims, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size


def static_copy(src: Path, dest: Path, hw: tuple[int, int] = (640, 640)) -> Path:
    """Ultralytics' default export: input fixed to ``[1, 3, 640, 640]`` (as ``dynamic=False``)."""
    import onnx

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
    import onnx
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
