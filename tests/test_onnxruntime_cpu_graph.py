"""The CPU rewrites of the synthesis graph: Winograd convolutions and folded gains, against the plain graph."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lgfa_deploy.backends import open_backend
from lgfa_deploy.backends.onnxruntime_cpu_graph import (
    DISABLED_OPTIMIZERS,
    fold_gain,
    rewrite_for_cpu,
    winograd_conv3x3,
)
from lgfa_deploy.bundle import Bundle


def _session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_OPTIMIZERS)


def _kernel(node: onnx.NodeProto) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)


def _conv_model(channels: int = 8, out: int = 5, height: int = 16, width: int = 12, bias: bool = False, **attrs) -> onnx.ModelProto:
    """One Conv with a constant weight and a symbolic batch."""
    rng = np.random.default_rng(0)
    group = attrs.get("group", 1)
    inits = [numpy_helper.from_array(rng.standard_normal((out, channels // group, 3, 3)).astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(out).astype(np.float32), "b"))
        inputs.append("b")
    attrs.setdefault("pads", [1, 1, 1, 1])
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["y"], kernel_shape=[3, 3], **attrs)],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, height, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("batch", [1, 3])
def test_winograd_equals_the_direct_convolution(batch: int) -> None:
    model = _conv_model()
    direct = _session(model)
    assert winograd_conv3x3(model, min_channels=1, min_size=4) == 1
    assert [_kernel(n) for n in model.graph.node if n.op_type == "Conv"] == [[6, 6]]  # the input transform
    x = np.random.default_rng(1).standard_normal((batch, 8, 16, 12)).astype(np.float32)
    want = direct.run(None, {"x": x})[0]
    got = _session(model).run(None, {"x": x})[0]
    assert got.shape == want.shape == (batch, 5, 16, 12)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize(
    "case, kwargs",
    [
        ("stride 2", {"strides": [2, 2]}),
        ("grouped", {"group": 2}),
        ("no padding", {"pads": [0, 0, 0, 0]}),
        ("height not a multiple of 4", {"height": 18}),
        ("with bias", {"bias": True}),
        ("too few channels", {"channels": 4, "out": 4}),
        ("too small", {"height": 8, "width": 8}),
    ],
)
def test_winograd_leaves_other_convolutions_alone(case: str, kwargs: dict) -> None:
    model = _conv_model(**kwargs)
    before = model.SerializeToString()
    assert winograd_conv3x3(model, min_channels=8, min_size=12) == 0, case
    assert model.SerializeToString() == before


def test_rewritten_synthesis_matches_the_bundle_graph(tiny_bundle: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    path = bundle.graph_path("synthesis", "fp32")
    plain = onnx.load(str(path))
    convs_3x3 = sum(1 for n in plain.graph.node if n.op_type == "Conv" and _kernel(n) == [3, 3])
    styled_convs = 2 * int(np.log2(bundle.resolution)) - 3
    data, counts = rewrite_for_cpu(path, min_channels=1, min_size=4)
    # Every non-up-sampling 3x3 convolution (the first, then one per resolution) and every activation.
    assert counts == {"winograd": convs_3x3, "fold_gain": styled_convs}
    assert convs_3x3 == int(np.log2(bundle.resolution)) - 1
    rewritten = _session(data)
    original = _session(plain)
    for batch in (1, 2):
        latents = np.random.default_rng(batch).standard_normal((batch, bundle.n_latent, bundle.style_dim)).astype(np.float32)
        want = original.run(None, {"latents": latents})[0]
        got = rewritten.run(None, {"latents": latents})[0]
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()))


def test_fold_gain_keeps_negative_gains() -> None:
    """``LeakyRelu(z) * g`` equals ``LeakyRelu(z * g)`` only for g > 0: other gains are left alone."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Mul", ["c", "d"], ["m"]),
        helper.make_node("Add", ["m", "bias"], ["a"]),
        helper.make_node("LeakyRelu", ["a"], ["r"], alpha=0.2),
        helper.make_node("Mul", ["r", "g"], ["y"]),
    ]
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((1, 2, 1, 1)).astype(np.float32), "bias"),
    ]
    graph = helper.make_graph(
        nodes, "act",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]),
         helper.make_tensor_value_info("d", TensorProto.FLOAT, [1, 2, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    feed = {"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32), "d": rng.standard_normal((1, 2, 1, 1)).astype(np.float32)}
    for gain, folded in ((1.5, 1), (-1.5, 0)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        model.graph.initializer.append(numpy_helper.from_array(np.array(gain, np.float32), "g"))
        want = _session(model).run(None, feed)[0]
        assert fold_gain(model) == folded
        np.testing.assert_allclose(_session(model).run(None, feed)[0], want, rtol=1e-5, atol=1e-6)


def test_backend_rewrites_synthesis_on_the_cpu_by_default(tiny_bundle: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    latents = np.random.default_rng(0).standard_normal((2, bundle.n_latent, bundle.style_dim)).astype(np.float32)
    rewritten = open_backend("onnxruntime", bundle, device="cpu", threads=1)
    plain = open_backend("onnxruntime", bundle, device="cpu", threads=1, cpu_rewrites=False)
    try:
        # The tiny generator is too narrow for Winograd at the default threshold; the gains fold.
        assert rewritten.rewrites == {"winograd": 0, "fold_gain": 2 * int(np.log2(bundle.resolution)) - 3}
        assert plain.rewrites == {}
        a, b = rewritten.frames(latents), plain.frames(latents)
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    finally:
        rewritten.close()
        plain.close()


def test_backend_runs_the_plain_graph_without_onnx(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """The runtime needs onnxruntime only: without the onnx package synthesis runs unrewritten, with a warning."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    with caplog.at_level("WARNING"):
        backend = open_backend("onnxruntime", Bundle.open(tiny_bundle), device="cpu", threads=1)
    try:
        assert backend.rewrites == {}
        assert "onnx package is missing" in caplog.text
        latents = np.zeros((1, backend.bundle.n_latent, backend.bundle.style_dim), np.float32)
        assert backend.frames(latents).shape == (1, backend.bundle.resolution, backend.bundle.resolution, 3)
    finally:
        backend.close()
