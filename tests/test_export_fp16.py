"""The FP16 conversion: statistics stay FP32, I/O stays FP32, results match FP32 within the verify marks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.fp16 import convert_to_fp16
from export.verify import THRESHOLDS, compare


def _pixel_norm_model() -> onnx.ModelProto:
    """y = (x * rsqrt(mean(x^2) + 1e-8)) @ W: PixelNorm then a linear layer, as the mappers start."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "weight")
    constants = [
        helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0, np.float32))),
        helper.make_node("Constant", [], ["eps"], value=numpy_helper.from_array(np.array(1e-8, np.float32))),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1.0, np.float32))),
    ]
    nodes = [
        *constants,
        helper.make_node("Pow", ["x", "two"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Add", ["mean", "eps"], ["shifted"]),
        helper.make_node("Sqrt", ["shifted"], ["root"]),
        helper.make_node("Div", ["one", "root"], ["scale"]),
        helper.make_node("Mul", ["x", "scale"], ["normed"]),
        helper.make_node("MatMul", ["normed", "weight"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "pixel_norm", [x], [y], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_statistics_stay_fp32_and_zero_input_stays_finite() -> None:
    fp32 = _pixel_norm_model()
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    x[0] = 0.0  # mean(x^2) = 0: the 1e-8 must survive, or 1/sqrt(0) is inf and 0 * inf is NaN
    expected = _run(fp32, x)
    fp16 = convert_to_fp16(_pixel_norm_model())
    onnx.checker.check_model(fp16, full_check=True)
    got = _run(fp16, x)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    ok, detail = compare(expected, got, "cosine", THRESHOLDS["fp16"])
    assert ok, detail
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(fp16).graph.value_info}
    by_op = {n.op_type: n for n in fp16.graph.node}
    for op in ("Pow", "ReduceMean", "Add", "Sqrt", "Div"):
        assert types[by_op[op].output[0]] == TensorProto.FLOAT, op
    assert types[by_op["MatMul"].input[0]] == TensorProto.FLOAT16
    weights = {i.name: i.data_type for i in fp16.graph.initializer}
    assert weights["weight__fp16"] == TensorProto.FLOAT16 and "weight" not in weights
    assert weights["eps"] == TensorProto.FLOAT


def test_fp16_bundle_graphs_match_fp32(tiny_bundle: Path) -> None:
    latents = np.random.default_rng(2).standard_normal((2, 8, 64)).astype(np.float32)
    images = {}
    for name in ("synthesis.onnx", "synthesis.fp16.onnx"):
        session = ort.InferenceSession(str(tiny_bundle / name), providers=["CPUExecutionProvider"])
        images[name] = session.run(["image"], {"latents": latents})[0]
    assert images["synthesis.fp16.onnx"].dtype == np.float32
    ok, detail = compare(images["synthesis.onnx"], images["synthesis.fp16.onnx"], "psnr", THRESHOLDS["fp16"])
    assert ok, detail
    fp32_bytes = (tiny_bundle / "synthesis.onnx").stat().st_size
    assert (tiny_bundle / "synthesis.fp16.onnx").stat().st_size < 0.7 * fp32_bytes
