"""Model files the tests derive from the real YOLO11n (never committed, never downloaded).

- ``class_subset``: the same network keeping only its first ``keep`` classes (a Slice on
  the output: ``[B, 4 + keep, anchors]``) with matching ``names`` metadata — a genuinely
  different model (another class count) for A/B tests.
- ``fails_at_run``: a YOLO-shaped graph that loads (one ``[B, 3, H, W]`` input, one
  ``[B, 84, N]`` output) but cannot run: its Reshape needs a size no real image has.
"""

from __future__ import annotations

from pathlib import Path

COCO_FIRST = ("person", "bicycle", "car", "motorcycle", "airplane", "bus")


def class_subset(src: Path, dst: Path, keep: int = 3) -> Path:
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
    names = {i: COCO_FIRST[i] for i in range(keep)}
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
