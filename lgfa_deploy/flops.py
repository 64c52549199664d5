"""Work and memory traffic of an ONNX graph, counted from the graph itself (no torch).

The graph is prepared the way a runtime sees it at one batch size: the ``batch`` axis is fixed,
every node whose inputs are all constant is folded (weight statistics such as the demodulation
sums are computed once, at load time, not per frame), then ONNX shape inference gives every
tensor's shape and type. Each remaining node is costed:

FLOPs
    Conv, ConvTranspose, MatMul and Gemm: 2 x multiply-accumulates (+1 per output for a bias);
    a transposed convolution scatters every *input* pixel through the kernel, so its MACs are
    counted on the input side (zero-inserted positions cost nothing). Elementwise operators:
    one FLOP per output element (a few for composite ones, see ``ELEMENTWISE_FLOPS``); reductions:
    one per input element. Copies and views (Transpose, Concat, Reshape...) do no arithmetic.
Bytes (the memory model)
    ``weight_bytes``: every initializer a runtime node reads, once per run (at batch B it is
    shared by B frames). ``activation_bytes_written``/``_read``: each operator writes its outputs
    to memory and reads its non-constant inputs from memory (views move nothing). Their sum is
    the traffic of an unfused execution, an upper model; ``min_bytes`` (weights + graph inputs +
    outputs) is what a perfectly fused execution must still move, the lower bound.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lgfa_deploy.errors import LgfaError

log = logging.getLogger(__name__)

MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# FLOPs per output element of elementwise operators (composite ones count their main steps).
ELEMENTWISE_FLOPS: dict[str, int] = {
    **{op: 1 for op in (
        "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Tanh",
        "Sigmoid", "Relu", "LeakyRelu", "PRelu", "Clip", "Max", "Min", "Erf", "Where", "Round", "Floor",
        "Ceil", "Sin", "Cos", "Sign", "Mod", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
        "Not", "And", "Or", "Xor", "Elu", "Selu", "Softplus", "Softsign", "HardSigmoid", "Celu", "Mish",
        "Sum", "Mean", "IsNaN", "IsInf",
    )},
    "HardSwish": 3,
    "Gelu": 8,
    "BatchNormalization": 2,
    "Softmax": 3,
    "LogSoftmax": 4,
    "LayerNormalization": 5,
    "InstanceNormalization": 5,
    "GroupNormalization": 5,
}
REDUCE_OPS = (
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin", "GlobalAveragePool",
    "GlobalMaxPool",
)
# Operators that only relabel a tensor's shape: no arithmetic, no memory traffic.
VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Size", "Dropout")
# Operators that copy data: no arithmetic, but their reads and writes count.
COPY_OPS = (
    "Transpose", "Concat", "Slice", "Gather", "GatherElements", "GatherND", "Pad", "Expand", "Tile",
    "DepthToSpace", "SpaceToDepth", "Split", "Cast", "ScatterND", "ScatterElements", "Resize",
    "Upsample", "ConstantOfShape", "Range", "NonZero", "TopK", "CumSum", "Trilu", "OneHot",
)
# Copies that read only the part of their data input they output.
SELECT_OPS = ("Gather", "GatherElements", "GatherND", "Slice")
_SMALL_CONSTANT = 64  # initializers up to this many elements stay values during shape inference
_NONDETERMINISTIC = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli")


@dataclass
class OpCost:
    """Totals for one operator type."""

    nodes: int = 0
    flops: int = 0
    macs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "nodes": self.nodes,
            "flops": self.flops,
            "macs": self.macs,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
        }


@dataclass
class GraphCost:
    """What one run of a graph at ``batch`` computes and moves (see the module docstring)."""

    graph: str
    batch: int
    flops: int = 0
    macs: int = 0
    weight_bytes: int = 0
    activation_bytes_written: int = 0
    activation_bytes_read: int = 0
    io_bytes: int = 0
    by_op: dict[str, OpCost] = field(default_factory=dict)
    unmodelled_ops: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Traffic of an unfused run: weights once, every activation written and read."""
        return self.weight_bytes + self.activation_bytes_written + self.activation_bytes_read

    @property
    def min_bytes(self) -> int:
        """Traffic of a perfectly fused run: weights once, graph inputs and outputs."""
        return self.weight_bytes + self.io_bytes

    def per_item(self, value: int) -> float:
        return value / self.batch

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "batch": self.batch,
            "flops": self.flops,
            "macs": self.macs,
            "flops_per_frame": self.flops / self.batch,
            "weight_bytes": self.weight_bytes,
            "activation_bytes_written": self.activation_bytes_written,
            "activation_bytes_read": self.activation_bytes_read,
            "io_bytes": self.io_bytes,
            "bytes": self.bytes,
            "bytes_per_frame": self.bytes / self.batch,
            "min_bytes": self.min_bytes,
            "min_bytes_per_frame": self.min_bytes / self.batch,
            "arithmetic_intensity": self.flops / self.bytes if self.bytes else None,
            "by_op": {k: v.to_dict() for k, v in sorted(self.by_op.items(), key=lambda kv: -kv[1].flops)},
            "unmodelled_ops": self.unmodelled_ops,
            "model": (
                "FLOPs: 2 x MACs for Conv/ConvTranspose/MatMul/Gemm (+bias), 1 per output element for "
                "elementwise ops, 1 per input element for reductions; constant subgraphs folded. "
                "bytes: weights read once per run + every activation written once and read by each consumer "
                "(unfused); min_bytes: weights + graph inputs and outputs (perfectly fused)"
            ),
        }


def _onnx():
    try:
        import onnx
    except ImportError:
        raise LgfaError("counting FLOPs needs the onnx package: pip install 'lgfa-deploy[cpu]'") from None
    return onnx


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


class _Graph:
    """A model prepared for costing: batch fixed, constants folded, shapes inferred."""

    def __init__(self, model: Any, batch: int, dims: dict[str, int] | None = None) -> None:
        onnx = _onnx()
        self.onnx = onnx
        self.model = model
        self.batch = batch
        dims = {"batch": batch, **(dims or {})}
        graph = model.graph
        self.initializers = {i.name for i in graph.initializer}
        self.inputs = [i for i in graph.input if i.name not in self.initializers]
        for value in self.inputs:
            for d in value.type.tensor_type.shape.dim:
                if d.dim_param:
                    if d.dim_param not in dims:
                        raise LgfaError(
                            f"graph input {value.name} has dynamic axis {d.dim_param!r}; give its size to count FLOPs"
                        )
                    d.dim_value = dims[d.dim_param]
        self.types: dict[str, tuple[tuple[int, ...] | None, int]] = {}
        # Folding a Shape needs its input's shape, which inference gives: alternate until stable.
        self._infer()
        for _ in range(8):
            if not self._fold_constants():
                break
            self._infer()

    # -- preparation ---------------------------------------------------------------------------
    def _fold_constants(self) -> int:
        """Evaluate every node whose inputs are all known (a Shape: whose input shape is), in order.

        Returns how many nodes were folded into initializers.
        """
        from onnx import numpy_helper

        graph = self.model.graph
        originals = {i.name: i for i in graph.initializer}
        known = {name: numpy_helper.to_array(i) for name, i in originals.items()}
        runtime_nodes = []
        shapes = {name: shape for name, (shape, _) in self.types.items() if shape is not None}
        shapes.update({v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in self.inputs})
        for node in graph.node:
            inputs = [i for i in node.input if i]
            if node.op_type == "Shape" and inputs and inputs[0] in shapes:
                known[node.output[0]] = self._shape_value(node, shapes[inputs[0]])
                continue
            if node.op_type not in _NONDETERMINISTIC and node.domain in ("", "ai.onnx") and all(
                i in known for i in inputs
            ):
                try:
                    values = self._evaluate(node, known)
                except Exception as exc:  # an operator the reference evaluator lacks: keep it as work
                    log.debug("cannot fold %s (%s): %s", node.name, node.op_type, exc)
                else:
                    known.update(values)
                    continue
            runtime_nodes.append(node)
        folded = len(graph.node) - len(runtime_nodes)
        # Rebuild the graph: runtime nodes only; every constant they read becomes an initializer.
        used = {i for n in runtime_nodes for i in n.input if i} | {o.name for o in graph.output}
        initializers = [
            originals[name] if name in originals else numpy_helper.from_array(np.asarray(value), name)
            for name, value in known.items()
            if name in used
        ]
        del graph.node[:]
        graph.node.extend(runtime_nodes)
        del graph.initializer[:]
        graph.initializer.extend(initializers)
        self.initializers = {i.name for i in graph.initializer}
        del graph.value_info[:]
        return folded

    @staticmethod
    def _shape_value(node: Any, shape: tuple[int, ...]) -> np.ndarray:
        attrs = {a.name: a.i for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return np.array(shape[start:end], dtype=np.int64)

    def _evaluate(self, node: Any, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        onnx = self.onnx
        from onnx import helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        if node.op_type == "Constant":
            attr = node.attribute[0]
            if attr.name == "value":
                return {node.output[0]: numpy_helper.to_array(attr.t)}
            value = helper.get_attribute_value(attr)
            return {node.output[0]: np.asarray(value)}
        feeds = {i: known[i] for i in node.input if i}
        inputs = [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
            for name, value in feeds.items()
        ]
        outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o]
        opset = [o for o in self.model.opset_import if o.domain in ("", "ai.onnx")]
        single = helper.make_model(
            helper.make_graph([node], "fold", inputs, outputs), opset_imports=opset, ir_version=self.model.ir_version
        )
        results = ReferenceEvaluator(single).run(None, feeds)
        return {o: np.asarray(r) for o, r in zip([o for o in node.output if o], results)}

    def _infer(self) -> None:
        """Shapes and types of every tensor, by ONNX shape inference.

        Inference runs on a light copy of the graph in which large initializers are declared
        inputs (type and shape only), so hundreds of MB of weights are not serialised for it.
        """
        onnx = self.onnx
        graph = self.model.graph
        light = onnx.ModelProto()
        light.ir_version = self.model.ir_version
        light.opset_import.extend(self.model.opset_import)
        light.graph.name = graph.name
        light.graph.node.extend(graph.node)
        light.graph.input.extend(graph.input)
        light.graph.output.extend(graph.output)
        declared = {i.name for i in graph.input}
        for init in graph.initializer:
            if _numel(tuple(init.dims)) <= _SMALL_CONSTANT:
                light.graph.initializer.append(init)
            elif init.name not in declared:
                light.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        try:
            inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
        except Exception as exc:  # onnx raises InferenceError and others
            raise LgfaError(f"ONNX shape inference failed on graph ({str(exc).splitlines()[0][:160]})") from None
        self.types: dict[str, tuple[tuple[int, ...] | None, int]] = {}
        inferred_graph = inferred.graph
        for value in (*inferred_graph.input, *inferred_graph.value_info, *inferred_graph.output):
            tensor = value.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            shape = dims if tensor.HasField("shape") and all(d >= 0 for d in dims) else None
            self.types[value.name] = (shape, tensor.elem_type)
        for init in graph.initializer:
            self.types[init.name] = (tuple(init.dims), init.data_type)

    # -- costing -------------------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        shape, _ = self.types.get(name, (None, 0))
        if shape is None:
            raise LgfaError(f"cannot infer the shape of tensor {name!r}; the graph has dynamic shapes this counter cannot resolve")
        return shape

    def nbytes(self, name: str) -> int:
        shape, elem_type = self.types.get(name, (None, 0))
        if shape is None:
            return 0
        itemsize = np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize if elem_type else 4
        return _numel(shape) * itemsize


def _attrs(onnx: Any, node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _node_macs(g: _Graph, node: Any) -> tuple[int, int]:
    """(MACs, extra FLOPs such as bias adds) of a Conv, ConvTranspose, MatMul or Gemm node."""
    op = node.op_type
    attrs = _attrs(g.onnx, node)
    if op in ("Conv", "ConvTranspose"):
        # The weight's second axis is already per group: Cin/group (Conv) or Cout/group (ConvTranspose).
        x, w, y = g.shape(node.input[0]), g.shape(node.input[1]), g.shape(node.output[0])
        kernel = _numel(w[2:])
        bias = _numel(y) if len(node.input) > 2 and node.input[2] else 0
        if op == "Conv":  # w: [Cout, Cin/group, k...]: every output through Cin/group * k taps
            return _numel(y) * w[1] * kernel, bias
        # ConvTranspose, w: [Cin, Cout/group, k...]: every input pixel goes through Cout/group * k taps.
        return _numel(x) * w[1] * kernel, bias
    if op == "MatMul":  # [..., M, K] x [..., K, N]
        a, y = g.shape(node.input[0]), g.shape(node.output[0])
        return _numel(y) * (a[-1] if a else 1), 0
    # Gemm: Y[M, N] = alpha * A' B' + beta * C
    a, y = g.shape(node.input[0]), g.shape(node.output[0])
    k = a[0] if attrs.get("transA", 0) else a[-1]
    bias = _numel(y) if len(node.input) > 2 and node.input[2] else 0
    return _numel(y) * k, bias


def model_cost(model: Any, batch: int = 1, name: str = "graph", dims: dict[str, int] | None = None) -> GraphCost:
    """Cost of one run of an ONNX ``ModelProto`` (it is copied, not changed) at ``batch``."""
    onnx = _onnx()
    if batch < 1:
        raise LgfaError(f"batch must be at least 1, got {batch}")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    g = _Graph(copy, batch, dims)
    cost = GraphCost(name, batch)
    weights_read: set[str] = set()
    unmodelled: set[str] = set()
    for node in g.model.graph.node:
        op = node.op_type
        entry = cost.by_op.setdefault(op, OpCost())
        entry.nodes += 1
        if op in VIEW_OPS:
            continue
        macs, extra = 0, 0
        if op in MAC_OPS:
            macs, extra = _node_macs(g, node)
        elif op in ELEMENTWISE_FLOPS:
            extra = ELEMENTWISE_FLOPS[op] * sum(_numel(g.shape(o)) for o in node.output if o)
        elif op in REDUCE_OPS:
            extra = _numel(g.shape(node.input[0]))
        elif op not in COPY_OPS:
            unmodelled.add(op)
        flops = 2 * macs + extra
        read = 0
        for i in node.input:
            if not i:
                continue
            if i in g.initializers:
                weights_read.add(i)
            else:
                read += g.nbytes(i)
        written = sum(g.nbytes(o) for o in node.output if o)
        if op in SELECT_OPS:  # reads only what it selects
            read = min(read, written)
        entry.flops += flops
        entry.macs += macs
        entry.bytes_read += read
        entry.bytes_written += written
        cost.flops += flops
        cost.macs += macs
        cost.activation_bytes_read += read
        cost.activation_bytes_written += written
    cost.weight_bytes = sum(g.nbytes(w) for w in weights_read)
    cost.io_bytes = sum(g.nbytes(v.name) for v in g.inputs) + sum(g.nbytes(o.name) for o in g.model.graph.output)
    cost.unmodelled_ops = sorted(unmodelled)
    if unmodelled:
        log.debug("%s: no FLOP model for %s (counted as data movement)", name, ", ".join(cost.unmodelled_ops))
    return cost


def graph_cost(path: str | os.PathLike, batch: int = 1, dims: dict[str, int] | None = None) -> GraphCost:
    """Cost of one run of the ONNX graph at ``path`` at ``batch`` (see the module docstring)."""
    onnx = _onnx()
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise LgfaError(f"{path} does not exist") from None
    except Exception as exc:  # DecodeError and friends for a file that is not a graph
        raise LgfaError(f"{path} is not a readable ONNX graph ({type(exc).__name__}); re-export it") from None
    return model_cost(model, batch, name=os.path.splitext(os.path.basename(str(path)))[0], dims=dims)
