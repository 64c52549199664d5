"""TensorRT readiness without TensorRT: the operator table check, engine naming and profiles, the install hint."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from export.tensorrt_build import (
    INSTALL_HINT,
    add_uint8_frames,
    batch_profile,
    is_built,
    plan_engines,
    profile_shapes,
)
from export.tensorrt_ops import (
    check_operators,
    check_opset,
    load_operator_table,
    operator_table_path,
)
from lgfa_deploy.backends import to_uint8_bgr
from lgfa_deploy.backends.tensorrt_runtime import Gpu
from lgfa_deploy.bundle import Bundle, file_entry
from lgfa_deploy.cli import main
from lgfa_deploy.errors import LgfaError
from tests.helpers import TINY_MAX_BATCH, copy_bundle

REPO = Path(__file__).resolve().parents[1]
A10 = Gpu(0, "NVIDIA A10", "8.6")


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _errors(model: onnx.ModelProto) -> list[str]:
    return [str(i) for i in check_operators(model) if i.severity == "error"]


def test_operator_table_is_shipped_and_read() -> None:
    shipped = REPO / "export" / "data" / "tensorrt10-onnx-operators.tsv"
    assert shipped.is_file()
    assert operator_table_path().name == shipped.name
    table = load_operator_table(shipped)
    assert table["Conv"].supported and "FP16" in table["Conv"].types
    assert not table["BitShift"].supported and not table["Col2Im"].supported
    assert "INT64" in table["ConstantOfShape"].types  # the source spells it INF64


def test_unsupported_operator_is_reported() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    image_shape = onnx.numpy_helper.from_array(np.array([5, 5], dtype="int64"), "image_shape")
    block_shape = onnx.numpy_helper.from_array(np.array([2, 2], dtype="int64"), "block_shape")
    model = _model([helper.make_node("Col2Im", ["x", "image_shape", "block_shape"], ["y"], name="fold")], [x], [y],
                   [image_shape, block_shape], opset=18)
    errors = _errors(model)
    assert errors == ["Col2Im (fold): not supported by TensorRT 10's ONNX parser"]


def test_restriction_violations_are_reported() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], name="sum"),  # axes computed at run time
        helper.make_node("Cast", ["s"], ["d"], name="to_double", to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["d"], ["y"], name="back", to=TensorProto.FLOAT),
    ]
    errors = _errors(_model(nodes, [x, axes], [y]))
    assert any(e.startswith("ReduceSum (sum): `axes` must be an initializer") for e in errors)
    assert any(e.startswith("Cast (to_double)") and "FP64" in e for e in errors)
    constant_axes = onnx.numpy_helper.from_array(np.array([1], dtype="int64"), "axes")
    ok = _model([helper.make_node("ReduceSum", ["x", "axes"], ["y"])], [x], [y], [constant_axes])
    assert _errors(ok) == []


def test_maxpool_indices_and_custom_domain_are_reported() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    i = helper.make_tensor_value_info("i", TensorProto.INT64, None)
    pool = helper.make_node("MaxPool", ["x"], ["y", "i"], name="pool", kernel_shape=[2, 2])
    assert any("Indices" in e for e in _errors(_model([pool], [x], [y, i])))
    custom = helper.make_node("Fancy", ["x"], ["y"], name="fancy", domain="com.example")
    model = _model([custom], [x], [y])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    assert any("plugin" in e for e in _errors(model))
    assert any("plugin" in p for p in check_opset(model))


def test_opset_outside_9_to_20_is_reported() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], opset=21)
    assert check_opset(model) == ["opset 21 is outside TensorRT 10's 9-20"]
    model.opset_import[0].version = 17
    assert check_opset(model) == []


def test_build_engines_without_tensorrt_says_how_to_install(
    tiny_bundle: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # importing it now fails, installed or not
    assert main(["build-engines", str(tiny_bundle), "--fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and INSTALL_HINT in err[0]


def test_engine_plans_names_keys_and_profiles(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = Bundle.open(copy_bundle(tiny_bundle, tmp_path))
    plans = {p.graph: p for p in plan_engines(bundle, fp16=True, max_batch=None, tensorrt_version="10.3.0", gpu=A10)}
    synthesis = plans["synthesis"]
    assert synthesis.source_precision == "fp16" and synthesis.strongly_typed
    assert synthesis.profile == (1, TINY_MAX_BATCH, TINY_MAX_BATCH)
    assert synthesis.file == f"tensorrt/synthesis.nvidia-a10.sm86.trt10.3.0.fp16.b1-4-{TINY_MAX_BATCH}.plan"
    sha = bundle.manifest["graphs"]["synthesis"]["files"]["fp16"]["sha256"]
    assert synthesis.key == f"synthesis:{sha[:16]}:trt10.3.0:nvidia-a10:sm8.6:fp16:b1-4-{TINY_MAX_BATCH}"
    assert profile_shapes(bundle.graph("synthesis"), synthesis.profile) == {
        "latents": ((1, 8, 64), (4, 8, 64), (TINY_MAX_BATCH, 8, 64))
    }
    assert profile_shapes(bundle.graph("text_encoder"), (1, 1, 2)) == {"tokens": ((1, 77), (1, 77), (2, 77))}
    fp32 = plan_engines(bundle, fp16=False, max_batch=2, tensorrt_version="10.3.0", gpu=Gpu(0, "NVIDIA H100 80GB HBM3", "9.0"))
    assert {p.precision for p in fp32} == {"fp32"} and not any(p.strongly_typed for p in fp32)
    assert {p.profile for p in fp32 if p.graph == "synthesis"} == {(1, 2, 2)}
    assert {p.file.split(".")[1] for p in fp32} == {"nvidia-h100-80gb-hbm3"}
    with pytest.raises(LgfaError, match="below"):
        batch_profile(bundle.graph("motion"), 0)

    # An engine counts as built only when recorded and intact.
    assert not is_built(bundle, synthesis)
    engine = bundle.root / synthesis.file
    engine.parent.mkdir()
    engine.write_bytes(b"serialized engine")
    bundle.manifest["engines"][synthesis.key] = synthesis.manifest_entry(bundle.root)
    assert is_built(bundle, synthesis)
    assert bundle.manifest["engines"][synthesis.key]["profile"] == {"min": 1, "opt": 4, "max": TINY_MAX_BATCH}
    assert bundle.manifest["engines"][synthesis.key] | file_entry(bundle.root, synthesis.file) == bundle.manifest["engines"][synthesis.key]
    engine.write_bytes(b"damaged")
    assert not is_built(bundle, synthesis)


def test_uint8_frames_output_matches_the_host_conversion(tiny_bundle: Path) -> None:
    """The output build-engines adds to synthesis equals to_uint8_bgr (run here by onnxruntime)."""
    import onnxruntime as ort

    bundle = Bundle.open(tiny_bundle)
    model = add_uint8_frames(onnx.load(str(bundle.graph_path("synthesis"))))
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    latents = np.random.default_rng(0).standard_normal((3, bundle.n_latent, bundle.style_dim)).astype(np.float32)
    image, frames = session.run(["image", "frames"], {"latents": latents * 3})
    assert frames.dtype == np.uint8 and frames.shape == (3, bundle.resolution, bundle.resolution, 3)
    assert 0 < (frames == 255).mean() + (frames == 0).mean() < 1  # the clip is exercised, not everything saturates
    np.testing.assert_array_equal(frames, to_uint8_bgr(image))
