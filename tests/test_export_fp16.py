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


def test_fp16_synthesis_graph_stays_finite_with_large_weights(tmp_path: Path) -> None:
    """The FP16 graph of a generator whose demodulated layers have large raw weights and styles: finite
    frames matching FP32 (the guards are in the exported graph, so the FP16 conversion keeps them)."""
    import torch

    from export.onnx_export import SynthesisGraph, export_onnx
    from lgfa_deploy.graphs import graph_specs
    from tests.test_stylegan2 import TINY, _large_weights
    from training.stylegan2 import Generator

    torch.manual_seed(0)
    generator = _large_weights(Generator(**TINY).eval())
    spec = graph_specs(embed_dim=16, n_latent=generator.n_latent, style_dim=TINY["style_dim"], resolution=TINY["size"],
                       frames=4, max_batch=2)["synthesis"]
    latents = torch.randn(2, generator.n_latent, TINY["style_dim"])
    fp32 = export_onnx(SynthesisGraph(generator), spec, (latents,), tmp_path / "synthesis.onnx")
    fp16 = convert_to_fp16(onnx.load(str(tmp_path / "synthesis.onnx")))
    # onnx's reference evaluator computes FP16 tensors in numpy float16, as a GPU stores them;
    # onnxruntime's CPU provider would run the unsupported FP16 kernels in FP32 and hide an overflow.
    from onnx.reference import ReferenceEvaluator

    images = {name: ReferenceEvaluator(model).run(["image"], {"latents": latents.numpy()})[0]
              for name, model in (("fp32", fp32), ("fp16", fp16))}
    assert np.isfinite(images["fp16"]).all()
    ok, detail = compare(images["fp32"], images["fp16"], "psnr", THRESHOLDS["fp16"])
    assert ok, detail
