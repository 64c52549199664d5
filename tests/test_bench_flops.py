"""FLOP and byte counting from ONNX graphs, and the device peak table (no torch, no timing)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lgfa_deploy.device_info import Peaks, gpu_peaks, slug
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.flops import model_cost


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _f32(*shape) -> np.ndarray:
    return np.ones(shape, dtype=np.float32)


def conv_model() -> onnx.ModelProto:
    """x[b,4,8,8] -> Conv 3x3 (8 out, bias) -> ConvTranspose s2 (8->2, 3x3) -> Add -> Relu -> Reshape."""
    inits = {
        "w": _f32(8, 4, 3, 3),
        "bias": _f32(8),
        "wt": _f32(8, 2, 3, 3),
        "raw": _f32(2, 1, 1),
        "two": np.array(2.0, dtype=np.float32),
        "shape": np.array([0, -1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "bias"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["c", "wt"], ["t"], kernel_shape=[3, 3], strides=[2, 2]),
        # A constant subgraph: folded once, not counted as per-run work.
        helper.make_node("Mul", ["raw", "two"], ["offset"]),
        helper.make_node("Add", ["t", "offset"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return _model(nodes, [x], [y], inits)


def test_conv_graph_flops_and_bytes_by_hand() -> None:
    cost = model_cost(conv_model(), batch=2)
    conv_macs = 2 * 8 * 8 * 8 * 4 * 9  # outputs x (Cin/group * k * k)
    conv_bias = 2 * 8 * 8 * 8
    tconv_macs = 2 * 8 * 8 * 8 * 2 * 9  # every input pixel through Cout/group * k * k
    t_out = 2 * 2 * 17 * 17  # (8 - 1) * 2 + 3 = 17
    assert cost.by_op["Conv"].macs == conv_macs
    assert cost.by_op["ConvTranspose"].macs == tconv_macs
    assert cost.macs == conv_macs + tconv_macs
    assert cost.flops == 2 * cost.macs + conv_bias + t_out + t_out  # + Add + Relu, one per element
    assert "Mul" not in cost.by_op, "the constant Mul is folded, not per-run work"
    weights = 4 * (8 * 4 * 9 + 8 + 8 * 2 * 9 + 2)  # w, bias, wt, the folded offset
    assert cost.weight_bytes == weights
    x, c, t = 4 * 2 * 4 * 64, 4 * 2 * 8 * 64, 4 * t_out
    assert cost.activation_bytes_written == c + t + t + t  # Conv, ConvTranspose, Add, Relu (Reshape is a view)
    assert cost.activation_bytes_read == x + c + t + t
    assert cost.bytes == cost.weight_bytes + cost.activation_bytes_written + cost.activation_bytes_read
    assert cost.io_bytes == x + t and cost.min_bytes == weights + x + t


def test_costs_scale_with_batch_and_weights_do_not() -> None:
    one, four = model_cost(conv_model(), batch=1), model_cost(conv_model(), batch=4)
    assert four.flops == 4 * one.flops
    assert four.weight_bytes == one.weight_bytes
    assert four.activation_bytes_written == 4 * one.activation_bytes_written


def test_matmul_gemm_and_shape_folding() -> None:
    inits = {"b": _f32(16, 32), "gw": _f32(8, 32), "gb": _f32(8), "idx": np.array(0, dtype=np.int64)}
    nodes = [
        helper.make_node("MatMul", ["x", "b"], ["m"]),  # [batch, 5, 16] x [16, 32]
        helper.make_node("Shape", ["m"], ["s"]),  # static once batch is fixed: folded
        helper.make_node("Gather", ["s", "idx"], ["n"]),
        helper.make_node("ReduceMean", ["m"], ["r"], axes=[1], keepdims=0),  # [batch, 32]
        helper.make_node("Gemm", ["r", "gw", "gb"], ["y"], transB=1),  # [batch, 8]
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    n = helper.make_tensor_value_info("n", TensorProto.INT64, None)
    cost = model_cost(_model(nodes, [x], [y, n], inits), batch=3)
    assert cost.by_op["MatMul"].macs == 3 * 5 * 32 * 16
    assert cost.by_op["Gemm"].macs == 3 * 8 * 32 and cost.by_op["Gemm"].flops == 2 * 3 * 8 * 32 + 3 * 8
    assert cost.by_op["ReduceMean"].flops == 3 * 5 * 32
    assert "Shape" not in cost.by_op and "Gather" not in cost.by_op


def test_unknown_dynamic_axis_is_a_clear_error() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y], {})
    with pytest.raises(LgfaError, match="length"):
        model_cost(model, batch=1)
    assert model_cost(model, batch=2, dims={"length": 10}).flops == 20


@pytest.mark.parametrize(
    "name, bandwidth",
    [
        ("NVIDIA H100 80GB HBM3", 3350.0),
        ("NVIDIA H100 PCIe", 2000.0),
        ("NVIDIA H100 NVL", 3900.0),
        ("NVIDIA H200", 4800.0),
        ("NVIDIA A100-SXM4-80GB", 2039.0),
        ("NVIDIA A100 80GB PCIe", 1935.0),
        ("NVIDIA A100-PCIE-40GB", 1555.0),
        ("NVIDIA L4", 300.0),
        ("NVIDIA L40S", 864.0),
        ("NVIDIA A10", 600.0),
        ("Tesla T4", 320.0),
        ("NVIDIA GeForce RTX 4090", 1008.0),
    ],
)
def test_gpu_peak_table(name: str, bandwidth: float) -> None:
    peaks = gpu_peaks(name)
    assert isinstance(peaks, Peaks) and peaks.bandwidth_gbps == bandwidth
    assert peaks.fp16_tflops > peaks.fp32_tflops > 0
    assert peaks.source.startswith(("spec sheet", "whitepaper"))


def test_unknown_gpu_has_no_peaks_and_slugs_are_file_safe() -> None:
    assert gpu_peaks("NVIDIA L40") is None and gpu_peaks("Quadro P1000") is None
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slug("cpu-AMD EPYC 7B13 64-Core Processor") == "cpu-amd-epyc-7b13-64-core-processor"
