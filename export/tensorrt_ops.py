"""Does TensorRT 10's ONNX parser accept a graph? Operators, their data types and restrictions, opset.

The facts come from ``tensorrt10-onnx-operators.tsv`` (onnx-tensorrt's ``docs/operators.md`` as a
table: operator, supported Y/N, data types, restrictions), read from ``<repo>/../shared/`` when that
workspace copy exists and otherwise from the copy shipped in ``export/data/``. Restrictions that a
graph can break statically (an ``axes`` input that is not an initializer, a pooling ``Indices``
output, an unsupported ``Resize`` mode...) are checked by rule; any other restriction of an operator
in the graph is reported as a warning for a person to read, so that none passes unseen.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

TSV_NAME = "tensorrt10-onnx-operators.tsv"
OPSET_MIN, OPSET_MAX = 9, 20
"""The ONNX opsets TensorRT 10's parser supports."""

_DEFAULT_DOMAINS = ("", "ai.onnx")
_TOP_K_LIMIT = 3840
# onnx-tensorrt's table spells INT64 "INF64" in one row (ConstantOfShape).
_TYPE_ALIASES = {"INF64": "INT64"}
_TYPE_NAMES = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.FLOAT8E4M3FN: "FP8",
    onnx.TensorProto.INT4: "INT4",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.BOOL: "BOOL",
}
# Operators whose output type is chosen by an attribute: their output is checked as well as input 0.
_OUTPUT_TYPED = frozenset({"Cast", "CastLike", "ConstantOfShape", "EyeLike"})


@dataclass(frozen=True)
class OperatorSupport:
    """One row of the TensorRT operator table."""

    name: str
    supported: bool
    types: frozenset[str]
    restrictions: str


@dataclass(frozen=True)
class OperatorIssue:
    """A node TensorRT rejects (``error``) or a restriction to read by hand (``warning``)."""

    op_type: str
    node: str
    message: str
    severity: str  # "error" or "warning"

    def __str__(self) -> str:
        return f"{self.op_type} ({self.node or 'unnamed'}): {self.message}"


def operator_table_path() -> Path:
    """The workspace's shared table when present, otherwise the copy shipped with this package."""
    package_dir = Path(__file__).resolve().parent
    shared = package_dir.parent.parent / "shared" / TSV_NAME
    return shared if shared.is_file() else package_dir / "data" / TSV_NAME


def load_operator_table(path: Path | None = None) -> dict[str, OperatorSupport]:
    """Parse the operator table (``#`` lines are comments)."""
    table: dict[str, OperatorSupport] = {}
    for line in (path or operator_table_path()).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = (line.split("\t") + ["", "", ""])[:4]
        name, supported, types, restrictions = (f.strip() for f in fields)
        type_set = frozenset(_TYPE_ALIASES.get(t.strip(), t.strip()) for t in types.split(",") if t.strip())
        table[name] = OperatorSupport(name, supported == "Y", type_set, restrictions)
    return table


def check_opset(model: onnx.ModelProto) -> list[str]:
    """Problems with the model's opset imports: the default domain must be within 9-20, no custom domains."""
    problems = []
    for opset in model.opset_import:
        if opset.domain in _DEFAULT_DOMAINS:
            if not OPSET_MIN <= opset.version <= OPSET_MAX:
                problems.append(f"opset {opset.version} is outside TensorRT 10's {OPSET_MIN}-{OPSET_MAX}")
        else:
            problems.append(f"custom operator domain {opset.domain!r} needs a TensorRT plugin")
    return problems


class _GraphFacts:
    """Element types of every tensor and the constant tensors of a graph (and its subgraphs)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        inferred = onnx.shape_inference.infer_shapes(model)
        self.types: dict[str, int] = {}
        self.constants: dict[str, onnx.TensorProto] = {}
        for graph in _graphs(inferred.graph):
            for value in (*graph.input, *graph.output, *graph.value_info):
                if value.type.HasField("tensor_type"):
                    self.types[value.name] = value.type.tensor_type.elem_type
            for init in graph.initializer:
                self.types[init.name] = init.data_type
                self.constants[init.name] = init
            for node in graph.node:
                if node.op_type == "Constant":
                    for attr in node.attribute:
                        if attr.name == "value":
                            self.constants[node.output[0]] = attr.t
                            self.types[node.output[0]] = attr.t.data_type

    def type_name(self, tensor: str) -> str | None:
        elem = self.types.get(tensor)
        if elem is None or elem == onnx.TensorProto.UNDEFINED:
            return None
        return _TYPE_NAMES.get(elem, onnx.TensorProto.DataType.Name(elem))

    def value(self, tensor: str) -> np.ndarray | None:
        """The value of a constant input; ``None`` when it is computed at run time (or has no data here)."""
        proto = self.constants.get(tensor)
        if proto is None:
            return None
        try:
            return numpy_helper.to_array(proto)
        except (ValueError, TypeError, OSError):  # external data not loaded
            return None


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """A graph and, recursively, the subgraphs of its If/Loop/Scan nodes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


# -- restriction rules: each returns error messages for one node ---------------------------------

Rule = Callable[[onnx.NodeProto, _GraphFacts], list[str]]


def _constant_input(index: int, what: str) -> Rule:
    def rule(node: onnx.NodeProto, facts: _GraphFacts) -> list[str]:
        name = _input(node, index)
        if name and name not in facts.constants:
            return [f"`{what}` must be an initializer (it is computed at run time)"]
        return []

    return rule


def _dilations_one(node: onnx.NodeProto, facts: _GraphFacts) -> list[str]:
    dilations = _attr(node, "dilations", [])
    return [] if all(d == 1 for d in dilations) else [f"`dilations` must be empty or all ones, got {list(dilations)}"]


def _pooling(node: onnx.NodeProto, facts: _GraphFacts) -> list[str]:
    problems = _dilations_one(node, facts)
    kernel = _attr(node, "kernel_shape", [])
    if len(kernel) not in (2, 3):
        problems.append(f"only 2D or 3D pooling, got a {len(kernel)}D kernel")
    if node.op_type == "MaxPool" and _any_named_from(node.output, 1):
        problems.append("the `Indices` output is unsupported")
    return problems


def _any_named_from(names, index: int) -> bool:
    return len(names) > index and any(names[index:])


def _first_output_only(node: onnx.NodeProto, facts: _GraphFacts) -> list[str]:
    return ["only the first output `Y` is supported"] if _any_named_from(node.output, 1) else []


def _constant_attributes(node: onnx.NodeProto, facts: _GraphFacts) -> list[str]:
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    return [f"attribute `{bad[0]}` is unsupported"] if bad else []


def _dropout(node: onnx.NodeProto, facts: _GraphFacts) -> list[str]:
    name = _input(node, 2)
    if not name:
        return []
    value = facts.value(name)
    if value is None:
        return ["`training_mode` must be an initializer"]
    return ["`training_mode` must be False"] if bool(np.asarray(value).item()) else []


def _top_k(node: onnx.NodeProto, facts: _GraphFacts) -> list[str]:
    problems = [] if _attr(node, "sorted", 1) == 1 else ["`sorted` must be 1"]
    k = facts.value(_input(node, 1))
    if k is None:
        problems.append("`K` must be a build-time constant below 3840")
    elif int(np.asarray(k).reshape(-1)[0]) >= _TOP_K_LIMIT:
        problems.append(f"`K` must be less than {_TOP_K_LIMIT}")
    return problems


def _zero_point(index: int, what: str) -> Rule:
    def rule(node: onnx.NodeProto, facts: _GraphFacts) -> list[str]:
        name = _input(node, index)
        if not name:
            return []
        value = facts.value(name)
        if value is None or np.any(np.asarray(value) != 0):
            return [f"`{what}` must be a zero initializer"]
        return []

    return rule


_RESIZE_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
_RESIZE_NEAREST = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")


def _resize(node: onnx.NodeProto, facts: _GraphFacts) -> list[str]:
    def text(name: str, default: str) -> str:
        value = _attr(node, name, default)
        return value.decode() if isinstance(value, bytes) else value

    problems = []
    if text("coordinate_transformation_mode", "half_pixel") not in _RESIZE_TRANSFORMS:
        problems.append(f"coordinate transformation {text('coordinate_transformation_mode', '')!r} is unsupported")
    if text("mode", "nearest") not in ("nearest", "linear"):
        problems.append(f"mode {text('mode', '')!r} is unsupported")
    if text("nearest_mode", "round_prefer_floor") not in _RESIZE_NEAREST:
        problems.append(f"nearest mode {text('nearest_mode', '')!r} is unsupported")
    if text("keep_aspect_ratio_policy", "stretch") != "stretch":
        problems.append("only the `stretch` aspect ratio policy is supported")
    if _attr(node, "antialias", 0):
        problems.append("antialiasing is unsupported")
    return problems


def _reduce_rules() -> dict[str, Rule]:
    names = ("L1", "L2", "LogSum", "LogSumExp", "Max", "Mean", "Min", "Prod", "Sum", "SumSquare")
    return {f"Reduce{n}": _constant_input(1, "axes") for n in names}


RULES: dict[str, Rule] = {
    **_reduce_rules(),
    "Slice": _constant_input(3, "axes"),
    "Squeeze": _constant_input(1, "axes"),
    "Unsqueeze": _constant_input(1, "axes"),
    "Pad": _constant_input(3, "axes"),
    "CumSum": _constant_input(1, "axis"),
    "OneHot": _constant_input(1, "depth"),
    "AveragePool": _pooling,
    "MaxPool": _pooling,
    "LpPool": _dilations_one,
    "LayerNormalization": _first_output_only,
    "Constant": _constant_attributes,
    "Dropout": _dropout,
    "TopK": _top_k,
    "Resize": _resize,
    "QuantizeLinear": _zero_point(2, "y_zero_point"),
    "DequantizeLinear": _zero_point(2, "x_zero_point"),
}
"""Machine checks of the table's restrictions, per operator."""


def _node_problems(node: onnx.NodeProto, support: OperatorSupport | None, facts: _GraphFacts) -> list[str]:
    """Why TensorRT would reject one node (empty when it accepts it)."""
    if node.domain not in _DEFAULT_DOMAINS:
        return [f"custom domain {node.domain!r} needs a TensorRT plugin"]
    if support is None:
        return ["not in TensorRT 10's operator list"]
    if not support.supported:
        return ["not supported by TensorRT 10's ONNX parser"]
    problems = []
    typed = [_input(node, 0) or (node.output[0] if node.output else "")]
    if node.op_type in _OUTPUT_TYPED and node.output:
        typed.append(node.output[0])
    for tensor in typed:
        type_name = facts.type_name(tensor) if tensor else None
        if type_name is not None and support.types and type_name not in support.types:
            problems.append(f"tensor {tensor!r} is {type_name}; TensorRT takes {', '.join(sorted(support.types))}")
    rule = RULES.get(node.op_type)
    if rule is not None:
        problems.extend(rule(node, facts))
    return problems


def check_operators(model: onnx.ModelProto, table: dict[str, OperatorSupport] | None = None) -> list[OperatorIssue]:
    """Every node of ``model`` (subgraphs included) against TensorRT 10's operator table.

    ``model`` may be loaded without its external data; constant values are then only read when
    stored inline.
    """
    table = load_operator_table() if table is None else table
    facts = _GraphFacts(model)
    issues: list[OperatorIssue] = []
    unchecked: dict[str, str] = {}
    for graph in _graphs(model.graph):
        for node in graph.node:
            support = table.get(node.op_type)
            problems = _node_problems(node, support, facts)
            issues.extend(OperatorIssue(node.op_type, node.name, p, "error") for p in problems)
            if not problems and node.op_type not in RULES and support.restrictions:
                unchecked[node.op_type] = support.restrictions
    for op_type, restrictions in sorted(unchecked.items()):
        issues.append(OperatorIssue(op_type, "", f"check by hand: {restrictions}", "warning"))
    return issues
