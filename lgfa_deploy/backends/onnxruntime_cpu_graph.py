"""Rewrites of the synthesis graph for onnxruntime's CPU execution provider.

A bundle's graphs are written for every runtime, and TensorRT chooses its own convolution
algorithms; onnxruntime's CPU provider runs each ``Conv`` as given, so the onnxruntime backend
rewrites the synthesis graph in memory before it creates a CPU session (the file is untouched):

``winograd``
    3x3 convolutions (stride 1, padding 1) over wide, small images become Winograd F(4x4, 3x3)
    (Lavin and Gray, 2016): each 6x6 input tile is transformed (one depthwise convolution), one
    batched MatMul per tile position multiplies by the transformed weights, and the result is
    transformed back to a 4x4 output tile (a MatMul, then ``DepthToSpace``). That is 4x fewer
    multiply-adds than the direct convolution, for some memory traffic; it pays where channels
    are many and images small (at 256 px: 512 channels at 32 and 64 px, 256 at 128 px).
``fold_gain``
    ``LeakyRelu(x * d + noise + bias) * sqrt(2)`` becomes ``LeakyRelu(x * (d sqrt 2) + C)``
    with ``C = sqrt(2) (noise + bias)`` one constant: three passes over the activation, not five.

Both are exact in real arithmetic; in FP32 they move the image by about 1e-5.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WINOGRAD_MIN_CHANNELS = 256
"""Input channels from which a 3x3 convolution is rewritten (measured on a 2-core AVX2 CPU)."""
WINOGRAD_MIN_SIZE = 16
"""Smallest image side rewritten: below it the direct convolution costs less than the extra ops."""
DISABLED_OPTIMIZERS = ["MatmulTransposeFusion"]
"""onnxruntime passes to switch off for a rewritten graph: fusing the tile-major Transpose into the
Winograd MatMul halves that MatMul's speed on the CPU."""

# Winograd F(4x4, 3x3) with interpolation points 0, 1, -1, 2, -2 and infinity: Y = A^T [(G g G^T) * (B^T d B)] A.
_BT = np.array([
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
], dtype=np.float64)
_G = np.array([
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
], dtype=np.float64)
_AT = np.array([
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
], dtype=np.float64)
_TILE, _OUT = 6, 4


def attributes(node: Any) -> dict[str, Any]:
    """A node's attributes as plain Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def replace_nodes(model: Any, nodes: list[Any], initializers: list[Any]) -> None:
    """Make ``nodes`` the graph's nodes, add ``initializers``, and drop the initializers nothing reads any more."""
    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    keep = [i for i in [*graph.initializer, *initializers] if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _static_shapes(model: Any) -> dict[str, list[int | None]]:
    """Tensor name -> dims (None where symbolic), from onnx shape inference on a copy of ``model``."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in values
    }


def winograd_conv3x3(
    model: Any, min_channels: int = WINOGRAD_MIN_CHANNELS, min_size: int = WINOGRAD_MIN_SIZE
) -> int:
    """Rewrite eligible 3x3 ``Conv`` nodes of ``model`` (in place) as Winograd F(4x4, 3x3); returns how many.

    Eligible: constant weight, no bias, group 1, stride 1, dilation 1, padding 1 on every side,
    static height and width that are multiples of 4 and at least ``min_size``, and at least
    ``min_channels`` input channels. The batch may stay symbolic.
    """
    shapes = _static_shapes(model)
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes, added, count = [], [], 0
    for node in graph.node:
        weight = _eligible_weight(node, weights, shapes.get(node.input[0]), min_channels, min_size)
        if weight is None:
            nodes.append(node)
            continue
        height, width = shapes[node.input[0]][2:]
        replacement, constants = _winograd_nodes(node.input[0], node.output[0], weight, height, width)
        nodes.extend(replacement)
        added.extend(constants)
        count += 1
    replace_nodes(model, nodes, added)
    return count


def _winograd_nodes(source: str, target: str, weight: np.ndarray, height: int, width: int) -> tuple[list[Any], list[Any]]:
    """Nodes and initializers computing ``target = Conv(source, weight, pads=1)`` as Winograd F(4x4, 3x3)."""
    from onnx import helper, numpy_helper

    out_ch, in_ch = weight.shape[:2]
    rows, cols = height // _OUT, width // _OUT
    tiles = rows * cols
    prefix = f"{target}/winograd"
    nodes: list[Any] = []
    added: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        added.append(numpy_helper.from_array(value, prefix + name))
        return prefix + name

    def op(kind: str, inputs: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(kind, inputs, [prefix + name], name=prefix + name, **attrs))
        return prefix + name

    # Input transform V = B^T d B of every 6x6 tile (stride 4): a depthwise convolution with 36
    # filters per channel, outputs channel-major [B, C*36, rows, cols].
    tile_filters = np.einsum("ir,jc->ijrc", _BT, _BT).reshape(36, 1, _TILE, _TILE)
    v = op("Conv", [source, const("/input_transform", np.tile(tile_filters, (in_ch, 1, 1, 1)).astype(np.float32))],
           "/v", group=in_ch, kernel_shape=[_TILE, _TILE], strides=[_OUT, _OUT], pads=[1, 1, 1, 1])
    v = op("Reshape", [v, const("/v_shape", np.array([0, in_ch, 36, tiles], np.int64))], "/v4")
    v = op("Transpose", [v], "/v_by_position", perm=[2, 0, 1, 3])  # [36, B, C, tiles]
    # One MatMul per tile position with the transformed weights U = G g G^T: [36, 1, K, C].
    u = np.einsum("ir,kcrs,js->ijkc", _G, weight.astype(np.float64), _G).reshape(36, 1, out_ch, in_ch)
    m = op("MatMul", [const("/weight_transform", u.astype(np.float32)), v], "/m")  # [36, B, K, tiles]
    m = op("Reshape", [m, const("/m_shape", np.array([36, -1], np.int64))], "/m2")
    # Output transform Y = A^T m A: [16, 36] @ [36, B*K*tiles], then the 4x4 tiles back into place.
    back = np.einsum("ai,bj->abij", _AT, _AT).reshape(_OUT * _OUT, 36).astype(np.float32)
    y = op("MatMul", [const("/output_transform", back), m], "/y")
    y = op("Reshape", [y, const("/y_shape", np.array([_OUT * _OUT, -1, out_ch, rows, cols], np.int64))], "/y5")
    y = op("Transpose", [y], "/y_by_sample", perm=[1, 0, 2, 3, 4])
    y = op("Reshape", [y, const("/d2s_shape", np.array([-1, _OUT * _OUT * out_ch, rows, cols], np.int64))], "/y4")
    nodes.append(helper.make_node("DepthToSpace", [y], [target], name=prefix + "/d2s", blocksize=_OUT, mode="DCR"))
    return nodes, added


def _eligible_weight(
    node: Any, weights: dict[str, Any], shape: list[int | None] | None, min_channels: int, min_size: int
) -> np.ndarray | None:
    """The [K, C, 3, 3] weight of a Conv that :func:`winograd_conv3x3` may rewrite, else None."""
    from onnx import numpy_helper

    if node.op_type != "Conv" or len(node.input) != 2 or node.input[1] not in weights:
        return None
    attrs = attributes(node)
    if (
        attrs.get("group", 1) != 1
        or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
        or list(attrs.get("strides", [1, 1])) != [1, 1]
        or list(attrs.get("dilations", [1, 1])) != [1, 1]
        or list(attrs.get("pads", [0, 0, 0, 0])) != [1, 1, 1, 1]
    ):
        return None
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        return None
    channels, height, width = shape[1:]
    if channels < min_channels or min(height, width) < min_size or height % _OUT or width % _OUT:
        return None
    weight = numpy_helper.to_array(weights[node.input[1]])
    if weight.dtype != np.float32 or weight.shape[1:] != (channels, 3, 3):
        return None
    return weight


def fold_gain(model: Any) -> int:
    """``LeakyRelu(Mul(x, d) + n + b) * g`` with constant n, b and g > 0 -> ``LeakyRelu(Mul(x, d g) + g (n + b))``.

    Rewrites ``model`` in place; returns how many activations were folded. ``x`` must come from a
    convolution (``Conv``, ``ConvTranspose`` or a Winograd rewrite's ``DepthToSpace``) and ``d``
    is the per-channel demodulation factor.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {o: n for n in graph.node for o in n.output}
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def single_user(name: str) -> Any:
        found = users.get(name, [])
        return found[0] if len(found) == 1 else None

    def const_operand(node: Any, other: str) -> np.ndarray | None:
        if node.op_type not in ("Add", "Mul") or len(node.input) != 2:
            return None
        a, b = node.input
        name = b if a == other else a if b == other else None
        return consts.get(name)

    removed: set[int] = set()
    added, replacements, count = [], {}, 0
    for gain_mul in graph.node:
        if gain_mul.op_type != "Mul":
            continue
        relu = producer.get(gain_mul.input[0]) or producer.get(gain_mul.input[1])
        if relu is None or relu.op_type != "LeakyRelu" or single_user(relu.output[0]) is not gain_mul:
            continue
        gain = const_operand(gain_mul, relu.output[0])
        if gain is None or gain.size != 1 or float(gain.reshape(())) <= 0:
            continue
        g = float(gain.reshape(()))
        # Walk up from the activation through Adds of constants (bias, noise) to the demodulation Mul.
        chain, total = [], None
        node = producer.get(relu.input[0])
        while node is not None and node.op_type == "Add":
            operand = next((i for i in node.input if i in consts), None)
            other = next((i for i in node.input if i != operand), None)
            if operand is None or other is None or single_user(node.output[0]) is None:
                break
            total = consts[operand] if total is None else total + consts[operand]
            chain.append(node)
            node = producer.get(other)
        demod = node
        if not chain or demod is None or demod.op_type != "Mul" or single_user(demod.output[0]) is None:
            continue
        conv_ops = ("Conv", "ConvTranspose", "DepthToSpace")
        first, second = (producer.get(i) for i in demod.input)
        if first is not None and first.op_type in conv_ops:
            activation, scale = demod.input
        elif second is not None and second.op_type in conv_ops:
            scale, activation = demod.input
        else:
            continue
        prefix = gain_mul.output[0] + "/folded"
        added.append(numpy_helper.from_array(np.array(g, dtype=np.float32), prefix + "/gain"))
        added.append(numpy_helper.from_array((total * g).astype(np.float32), prefix + "/offset"))
        replacements[id(demod)] = [
            helper.make_node("Mul", [scale, prefix + "/gain"], [prefix + "/scale"], name=prefix + "/scale"),
            helper.make_node("Mul", [activation, prefix + "/scale"], [prefix + "/mul"], name=prefix + "/mul"),
            helper.make_node("Add", [prefix + "/mul", prefix + "/offset"], [prefix + "/add"], name=prefix + "/add"),
            helper.make_node("LeakyRelu", [prefix + "/add"], [gain_mul.output[0]], name=prefix + "/lrelu",
                             alpha=attributes(relu).get("alpha", 0.01)),
        ]
        removed.update(id(n) for n in (*chain, relu, gain_mul))
        count += 1
    nodes = []
    for node in graph.node:
        if id(node) in replacements:
            nodes.extend(replacements[id(node)])
        elif id(node) not in removed:
            nodes.append(node)
    replace_nodes(model, nodes, added)
    return count


def rewrite_for_cpu(
    path: Path, min_channels: int = WINOGRAD_MIN_CHANNELS, min_size: int = WINOGRAD_MIN_SIZE
) -> tuple[bytes, dict[str, int]]:
    """The graph at ``path`` with both rewrites applied, serialised, and how often each applied.

    Raises whatever ``onnx.load`` raises for an unreadable file.
    """
    import onnx

    model = onnx.load(str(path))
    counts = {
        "winograd": winograd_conv3x3(model, min_channels, min_size),
        "fold_gain": fold_gain(model),
    }
    return model.SerializeToString(), counts
