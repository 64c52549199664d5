"""The onnxruntime backend: one InferenceSession per graph, CPU or CUDA, I/O binding to device buffers on the GPU."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from lgfa_deploy.backends.base import Backend, check_graph_io, missing_package
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import GraphSpec

log = logging.getLogger(__name__)

# What onnxruntime raises for a graph file it cannot read or run.
_LOAD_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
"""``optimization`` option -> onnxruntime's graph optimisation level (the CPU study in
benchmarks/results found ORT_ENABLE_ALL best at 256 and 1024 px)."""
EAGER_GRAPHS = ("text_encoder", "motion", "mapping", "synthesis")
"""Graphs every animation needs, loaded when the backend opens; the photo graphs load on first use."""
PRECISION_GRAPHS = ("synthesis",)
"""Graphs run at the requested precision; the others always run fp32."""
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def _first_line(exc: BaseException, limit: int) -> str:
    """The first line of an exception's message (its type where the message is empty), cut to ``limit``."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _damaged(path: Path, exc: BaseException) -> LgfaError:
    """The one-line error for a graph file onnx or onnxruntime cannot read."""
    return LgfaError(
        f"onnxruntime cannot load {path} ({_first_line(exc, 160)}); the file is truncated or damaged: re-export the bundle"
    )


class DeviceBinding:
    """One session's inputs and outputs bound to buffers on a device, for one batch size.

    The buffers are made once; each :meth:`run` copies the host inputs into them, runs, and copies
    the outputs back to the host, so onnxruntime allocates nothing per call.
    """

    def __init__(self, session: ort.InferenceSession, spec: GraphSpec, batch: int, device: str, device_id: int) -> None:
        self.session = session
        self.binding = session.io_binding()
        self.inputs: dict[str, ort.OrtValue] = {}
        types = {value.name: _ORT_TYPES.get(value.type, np.float32) for value in (*session.get_inputs(), *session.get_outputs())}
        for tensor in spec.inputs:
            self.inputs[tensor.name] = ort.OrtValue.ortvalue_from_shape_and_type(
                list(tensor.concrete(batch)), types[tensor.name], device, device_id
            )
            self.binding.bind_ortvalue_input(tensor.name, self.inputs[tensor.name])
        self.outputs: list[ort.OrtValue] = []
        for tensor in spec.outputs:
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(tensor.concrete(batch)), types[tensor.name], device, device_id)
            self.binding.bind_ortvalue_output(tensor.name, value)
            self.outputs.append(value)

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Host inputs (the session's dtypes) -> host outputs, in the declaration's order."""
        for name, array in feed.items():
            self.inputs[name].update_inplace(np.ascontiguousarray(array))
        self.session.run_with_iobinding(self.binding)
        return [value.numpy() for value in self.outputs]


class OnnxRuntimeBackend(Backend):
    """Runs a bundle's ONNX graphs with onnxruntime.

    Options: ``threads`` (intra-op threads, default: onnxruntime's choice), ``device_id`` (CUDA),
    ``optimization`` (disable | basic | extended | all, default all), ``session_config``
    (onnxruntime session config entries, e.g. ``{"session.intra_op.allow_spinning": "0"}``) and
    ``cpu_rewrites`` (default True: on the CPU, fp32 synthesis runs the graph rewritten by
    :mod:`lgfa_deploy.backends.onnxruntime_cpu_graph`, Winograd convolutions and folded gains).
    On CUDA every session must really run on the CUDA provider (onnxruntime falls back to the CPU
    silently when the CUDA or cuDNN libraries are missing; that is refused in one line), and each
    graph and batch size gets device buffers once (:class:`DeviceBinding`): a call copies its inputs
    into them and its outputs out of them, and onnxruntime allocates nothing. ``precision="fp16"``
    applies to synthesis, nearly all of the work; the small text, motion and mapping graphs and the
    photo graphs (run once per photo) stay fp32, as in the torch backend (and onnxruntime 1.32's CPU
    provider crashes optimising the fp16 text encoder).
    """

    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        device_id: int = 0,
        optimization: str = "all",
        session_config: dict[str, str] | None = None,
        cpu_rewrites: bool = True,
    ) -> None:
        available = ort.get_available_providers()
        has_cuda = "CUDAExecutionProvider" in available
        if device == "auto":
            device = "cuda" if has_cuda else "cpu"
        if device == "cuda" and not has_cuda:
            raise missing_package(self.name, "onnxruntime-gpu (CUDAExecutionProvider)", extra="gpu")
        super().__init__(bundle, device, precision)
        self.device_id = device_id
        if device == "cuda":
            # use_tf32 off: "fp32" computes in FP32 (TF32 convolutions would be another precision).
            self._providers: list = [("CUDAExecutionProvider", {"device_id": device_id, "use_tf32": "0"}),
                                     "CPUExecutionProvider"]
        else:
            self._providers = ["CPUExecutionProvider"]
        self._options = ort.SessionOptions()
        if optimization not in OPTIMIZATION_LEVELS:
            raise LgfaError(f"onnxruntime optimization {optimization!r} is unknown; choose {', '.join(OPTIMIZATION_LEVELS)}")
        self._options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
        for key, value in (session_config or {}).items():
            self._options.add_session_config_entry(str(key), str(value))
        self._options.log_severity_level = 3
        if threads is not None:
            self._options.intra_op_num_threads = threads
        self._cpu_rewrites = bool(cpu_rewrites) and device == "cpu" and precision == "fp32"
        self.rewrites: dict[str, int] = {}
        """How often each CPU rewrite applied to synthesis (empty when none ran)."""
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._input_types: dict[str, dict[str, type]] = {}
        self._bindings: dict[tuple[str, int], DeviceBinding] = {}
        self.providers: dict[str, list[str]] = {}
        """Graph -> the execution providers its session really runs on, in onnxruntime's order."""
        self._lock = threading.Lock()
        for graph in EAGER_GRAPHS:
            if graph in bundle.graph_names:
                self._session(graph)

    def _session(self, graph: str) -> ort.InferenceSession:
        """The session of ``graph``, created on first use: a seed-only run never loads the photo graphs."""
        with self._lock:
            if graph not in self._sessions:
                path = self.bundle.graph_path(graph, self.precision if graph in PRECISION_GRAPHS else "fp32")
                session = self._load_rewritten(path) if graph == "synthesis" and self._cpu_rewrites else self._load(path)
                inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
                check_graph_io(path, self.spec(graph), inputs, outputs)
                self._input_types[graph] = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in session.get_inputs()}
                self.providers[graph] = session.get_providers()
                self._sessions[graph] = session
            return self._sessions[graph]

    def _load(self, path: Path) -> ort.InferenceSession:
        try:
            session = ort.InferenceSession(str(path), self._options, providers=self._providers)
        except _LOAD_ERRORS as exc:
            raise _damaged(path, exc) from None
        if self.device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise LgfaError(
                f"onnxruntime could not start its CUDA provider for {path.name} (it would run on the CPU): "
                "install the CUDA 12 and cuDNN 9 libraries onnxruntime-gpu needs, or use --device cpu"
            )
        return session

    def _load_rewritten(self, path: Path) -> ort.InferenceSession:
        """A CPU session of ``path`` after :func:`rewrite_for_cpu`; the plain graph where onnx is missing."""
        try:
            import onnx  # noqa: F401 - the rewrites need it, the runtime does not
            from google.protobuf.message import DecodeError
            from onnx.shape_inference import InferenceError

            from lgfa_deploy.backends.onnxruntime_cpu_graph import (
                DISABLED_OPTIMIZERS,
                rewrite_for_cpu,
            )
        except ImportError:
            log.warning("the onnx package is missing: synthesis runs without the CPU rewrites (pip install onnx)")
            return self._load(path)
        try:
            model, self.rewrites = rewrite_for_cpu(path)
        except (DecodeError, InferenceError, OSError, ValueError) as exc:
            raise _damaged(path, exc) from None
        log.info("synthesis rewritten for the CPU: %s", ", ".join(f"{k} x{v}" for k, v in self.rewrites.items()))
        try:
            return ort.InferenceSession(model, self._options, providers=self._providers, disabled_optimizers=DISABLED_OPTIMIZERS)
        except _LOAD_ERRORS as exc:
            raise LgfaError(f"onnxruntime cannot load the CPU rewrite of {path}: {_first_line(exc, 160)}") from None

    def _run(self, graph: str, batch: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session(graph)
        spec = self.spec(graph)
        feed = {name: array.astype(self._input_types[graph][name], copy=False) for name, array in inputs.items()}
        try:
            if self.device == "cuda":
                values = self._binding(graph, batch).run(feed)
            else:
                values = session.run(spec.output_names, feed)
        except _LOAD_ERRORS as exc:
            raise LgfaError(f"onnxruntime failed to run graph {graph}: {_first_line(exc, 200)}") from None
        return {
            tensor.name: np.asarray(value).astype(tensor.dtype, copy=False)
            for tensor, value in zip(spec.outputs, values)
        }

    def _binding(self, graph: str, batch: int) -> DeviceBinding:
        """The device buffers of ``graph`` at ``batch``, made on first use."""
        key = (graph, batch)
        if key not in self._bindings:
            self._bindings[key] = DeviceBinding(self._session(graph), self.spec(graph), batch, "cuda", self.device_id)
        return self._bindings[key]

    def close(self) -> None:
        self._bindings.clear()
        self._sessions.clear()

