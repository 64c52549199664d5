"""FP32 ONNX graph -> FP16 graph for GPU execution providers, statistics and normalisations kept in FP32.

The conversion works on the exported FP32 graph, so it needs no PyTorch model and handles every
graph the same way. Each node is given a precision:

* statistics (``Pow``, ``Reduce*``: sums of squares and means) run in FP32 and their results stay
  FP32, so everything computed from them alone (the demodulation factor ``rsqrt(s^2 @ W^2 + eps)``,
  PixelNorm's and the embedding's norms) follows in FP32;
* normalisations (``LayerNormalization``, ``Softmax``...) run in FP32 and hand FP16 on;
* any other node runs in FP32 when all its computed floating inputs are FP32, otherwise in FP16.

Initializers used in FP16 are stored in FP16 (finite values clipped to +-65504), ``Cast`` nodes are
inserted where a tensor changes precision, and graph inputs and outputs stay FP32 so that both
precisions of a graph share one I/O description. onnxruntime's CPU execution provider runs the
result (it computes unsupported FP16 kernels in FP32), which is how the conversion is tested
without a GPU.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP32, FP16 = "fp32", "fp16"
STATISTICS_OPS = frozenset(
    {"Pow", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp"}
)
NORMALISATION_OPS = frozenset(
    {"LayerNormalization", "Softmax", "LogSoftmax", "InstanceNormalization", "GroupNormalization"}
)
_FP16_MAX = float(np.finfo(np.float16).max)
_ELEM = {FP32: TensorProto.FLOAT, FP16: TensorProto.FLOAT16}


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor, inferred on a copy without the float weights' data (cheap for any
    size; integer initializers keep theirs, as shape inference reads them)."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    for init in skeleton.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        dims, data_type, name = list(init.dims), init.data_type, init.name
        init.Clear()
        init.name, init.data_type = name, data_type
        init.dims.extend(dims)
    del skeleton.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(skeleton)
    types = {init.name: init.data_type for init in model.graph.initializer}
    for value in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        types[value.name] = value.type.tensor_type.elem_type
    return types


def _simplify_constants(graph: onnx.GraphProto) -> None:
    """Turn ``Constant`` nodes holding a tensor into initializers and drop ``Identity`` nodes of
    initializers (the exporter's way of sharing equal weights), so all constants are handled alike."""
    kept = []
    aliases: dict[str, str] = {}
    initializers = {init.name for init in graph.initializer}
    outputs = {value.name for value in graph.output}
    for node in graph.node:
        node.input[:] = [aliases.get(i, i) for i in node.input]
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            initializers.add(tensor.name)
        elif node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            aliases[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _to_fp16_tensor(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    values = numpy_helper.to_array(tensor)
    finite = np.isfinite(values)
    values = np.where(finite, np.clip(values, -_FP16_MAX, _FP16_MAX), values)
    return numpy_helper.from_array(values.astype(np.float16), name)


class _Converter:
    """One pass over a topologically sorted graph, rewriting it node by node."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        _simplify_constants(self.graph)
        self.types = _float_types(model)
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.precision: dict[str, str] = {}  # computed float tensor -> its precision
        self.available: dict[tuple[str, str], str] = {}  # (tensor, precision) -> name holding it
        self.nodes: list[onnx.NodeProto] = []
        self.used_fp32_constants: set[str] = set()
        self.fp16_constants: list[onnx.TensorProto] = []

    def is_float(self, name: str) -> bool:
        return bool(name) and self.types.get(name) == TensorProto.FLOAT

    def cast(self, source: str, target: str, precision: str) -> None:
        self.nodes.append(helper.make_node("Cast", [source], [target], name=f"{target}/cast", to=_ELEM[precision]))

    def get(self, name: str, precision: str) -> str:
        """The name of tensor ``name`` at ``precision``, adding a Cast or an FP16 initializer when needed."""
        if name in self.initializers:
            if precision == FP32:
                self.used_fp32_constants.add(name)
                return name
            key = (name, FP16)
            if key not in self.available:
                converted = _to_fp16_tensor(self.initializers[name], f"{name}__fp16")
                self.fp16_constants.append(converted)
                self.available[key] = converted.name
            return self.available[key]
        key = (name, precision)
        if key not in self.available:
            other = FP32 if precision == FP16 else FP16
            target = f"{name}__{precision}"
            self.cast(self.available[(name, other)], target, precision)
            self.available[key] = target
        return self.available[key]

    def node_precision(self, node: onnx.NodeProto) -> str:
        if node.op_type in STATISTICS_OPS or node.op_type in NORMALISATION_OPS:
            return FP32
        computed = [i for i in node.input if self.is_float(i) and i not in self.initializers]
        if computed and all(self.precision[i] == FP32 for i in computed):
            return FP32
        if computed and not any(self.is_float(o) for o in node.output):
            return self.precision[computed[0]]  # Shape, ArgMax, comparisons: no float result to place
        return FP16

    def convert_node(self, node: onnx.NodeProto) -> None:
        if node.op_type == "Cast" and self.is_float(node.input[0]) and self.is_float(node.output[0]):
            # FLOAT -> FLOAT: a no-op the exporter leaves (a module casting back to its input's type).
            source, alias = node.input[0], node.output[0]
            self.precision[alias] = self.precision.get(source, FP16)
            for precision in (FP32, FP16):
                if (source, precision) in self.available or source in self.initializers:
                    self.available[(alias, precision)] = self.get(source, precision)
            return
        precision = self.node_precision(node)
        for index, name in enumerate(node.input):
            if self.is_float(name):
                node.input[index] = self.get(name, precision)
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = _ELEM[precision]
            if node.op_type == "ConstantOfShape" and attr.name == "value" and precision == FP16:
                if attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(_to_fp16_tensor(attr.t, attr.t.name))
        self.nodes.append(node)
        for index, name in enumerate(node.output):
            if not self.is_float(name):
                continue
            if node.op_type in NORMALISATION_OPS:
                full = f"{name}__fp32"
                node.output[index] = full
                self.cast(full, name, FP16)
                self.available[(name, FP32)] = full
                self.record(name, FP16)
            else:
                self.record(name, precision)

    def record(self, name: str, precision: str) -> None:
        self.precision[name] = precision
        self.available[(name, precision)] = name

    def run(self) -> None:
        for value in self.graph.input:
            if self.is_float(value.name):
                self.precision[value.name] = FP16
                self.available[(value.name, FP32)] = value.name
                self.get(value.name, FP16)
        for node in list(self.graph.node):
            self.convert_node(node)
        self.finish_outputs()
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        del self.graph.value_info[:]
        initializers = self.graph.initializer
        for index in reversed(range(len(initializers))):
            init = initializers[index]
            if init.data_type == TensorProto.FLOAT and init.name not in self.used_fp32_constants:
                del initializers[index]
        initializers.extend(self.fp16_constants)

    def finish_outputs(self) -> None:
        """Graph outputs stay FP32 under their declared names, cast back where computed in FP16."""
        for value in self.graph.output:
            name = value.name
            if not self.is_float(name) or self.available.get((name, FP32)) == name:
                continue
            internal = f"{name}__internal"
            for node in self.nodes:
                node.input[:] = [internal if i == name else i for i in node.input]
                node.output[:] = [internal if o == name else o for o in node.output]
            self.available = {k: internal if v == name else v for k, v in self.available.items()}
            if (name, FP32) in self.available:
                self.nodes.append(helper.make_node("Identity", [self.available[(name, FP32)]], [name], name=f"{name}/identity"))
            else:
                self.cast(self.available[(name, FP16)], name, FP32)


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite an FP32 model (with its initializer data loaded) to FP16 in place and return it.

    Raises ``ValueError`` when the graph is not topologically sorted.
    """
    converter = _Converter(model)
    try:
        converter.run()
    except KeyError as exc:
        raise ValueError(f"tensor {exc} is used before it is computed; is the graph topologically sorted?") from None
    return model
