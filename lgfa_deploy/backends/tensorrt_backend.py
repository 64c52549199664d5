"""The TensorRT backend: TensorRT 10 engines from the bundle, device buffers and streams through cuda-python.

Engines are chosen from the manifest's ``engines`` entries (graph, file, sha256, tensorrt_version,
compute_capability, precision, profile) for this GPU and TensorRT version; an engine built
elsewhere is refused in one line that says how to rebuild. Each graph gets device buffers sized for
its largest batch, one CUDA stream, and one execution context per batch size actually used, whose
work is captured once into a CUDA graph and replayed from then on (the shapes are static per
context). Every engine is chosen (and refused) when the backend opens; the photo graphs' engines
are deserialised on first use, so a seed-only run never holds e4e's. ``tensorrt`` and cuda-python
are imported when the backend opens, never before.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from lgfa_deploy.backends.base import Backend, missing_package
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import PHOTO_GRAPHS, GraphSpec

log = logging.getLogger(__name__)


def _version_key(version: str) -> tuple[str, ...]:
    """TensorRT engines are tied to major.minor.patch; the build number does not matter."""
    return tuple(str(version).split(".")[:3])


def _capability(value: Any) -> str:
    """A compute capability as "major.minor", from "8.9", 8.9, [8, 9] or (8, 9)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{int(value[0])}.{int(value[1])}"
    return str(value)


def select_engine(
    bundle: Bundle, graph: str, precision: str, tensorrt_version: str, compute_capability: str
) -> dict[str, Any]:
    """The manifest's engine entry for ``graph`` at ``precision`` built for this GPU and TensorRT.

    Raises :class:`LgfaError` in one line when the bundle has no engine for the graph, none at the
    precision, or only engines built for another compute capability or TensorRT version.
    """
    fp16 = " --fp16" if precision == "fp16" else ""
    rebuild = f"build engines for this machine with 'lgfa build-engines {bundle.root}{fp16}'"
    entries: Iterable[dict[str, Any]] = bundle.manifest.get("engines", {}).values()
    for_graph = [e for e in entries if e.get("graph") == graph]
    if not for_graph:
        raise LgfaError(f"bundle {bundle.root} has no TensorRT engine for graph {graph}; {rebuild}")
    at_precision = [e for e in for_graph if e.get("precision") == precision]
    if not at_precision:
        have = ", ".join(sorted({str(e.get("precision")) for e in for_graph}))
        raise LgfaError(f"bundle {bundle.root} has {graph} engines in {have}, none in {precision}; {rebuild}")
    wanted_cc, wanted_version = _capability(compute_capability), _version_key(tensorrt_version)
    for entry in at_precision:
        if (
            _capability(entry.get("compute_capability")) == wanted_cc
            and _version_key(entry.get("tensorrt_version", "")) == wanted_version
        ):
            return entry
    entry = at_precision[0]
    raise LgfaError(
        f"the {graph} engine {entry.get('file')} was built for compute capability "
        f"{_capability(entry.get('compute_capability'))} with TensorRT {entry.get('tensorrt_version')}, "
        f"but this machine has compute capability {wanted_cc} with TensorRT {tensorrt_version}; {rebuild}"
    )


def _import_runtime() -> tuple[Any, Any]:
    """``tensorrt`` (10 or newer) and cuda-python's runtime module, or the install hint."""
    try:
        import tensorrt as trt
    except ImportError:
        raise missing_package("tensorrt", "TensorRT 10 (the tensorrt package)") from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise LgfaError(f"the tensorrt backend needs TensorRT 10 or newer, found {trt.__version__}; "
                        "install it with: pip install 'lgfa-deploy[tensorrt]'")
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6
        except ImportError:
            raise missing_package("tensorrt", "cuda-python") from None
    return trt, cudart


class _Cuda:
    """cuda-python runtime calls that raise on failure instead of returning error codes."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def __call__(self, result: tuple) -> Any:
        err = result[0]
        if err != self.rt.cudaError_t.cudaSuccess:
            name = self.rt.cudaGetErrorName(err)[1]
            raise RuntimeError(f"CUDA call failed: {name.decode() if isinstance(name, bytes) else name}")
        return result[1] if len(result) == 2 else result[1:] or None


class _Engine:
    """One deserialised engine: device buffers for its largest batch, one context and CUDA graph per batch."""

    def __init__(self, trt: Any, cuda: _Cuda, runtime: Any, path: str, spec: GraphSpec, profile: dict,
                 stream: Any, cuda_graphs: bool) -> None:
        self.trt, self.cuda, self.spec, self.stream = trt, cuda, spec, stream
        self.path = path
        with open(path, "rb") as f:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise LgfaError(
                f"TensorRT cannot load {path}: it was built for another GPU or TensorRT version, or is damaged; "
                "rebuild engines with 'lgfa build-engines'"
            )
        self.min_batch, self.max_batch = int(profile["min"]), int(profile["max"])
        self.cuda_graphs = cuda_graphs
        self.dtypes = {t.name: np.dtype(trt.nptype(self.engine.get_tensor_dtype(t.name)))
                       for t in (*spec.inputs, *spec.outputs)}
        self.buffers: dict[str, int] = {}
        for tensor in (*spec.inputs, *spec.outputs):
            nbytes = int(np.prod(tensor.concrete(self.max_batch))) * self.dtypes[tensor.name].itemsize
            self.buffers[tensor.name] = cuda(cuda.rt.cudaMalloc(nbytes))
        # batch -> (execution context, CUDA graph, its executable instance or None)
        self.contexts: dict[int, tuple[Any, Any, Any]] = {}

    def _context(self, batch: int) -> tuple[Any, Any, Any]:
        entry = self.contexts.get(batch)
        if entry is not None:
            return entry
        context = self.engine.create_execution_context()
        for tensor in self.spec.inputs:
            context.set_input_shape(tensor.name, tensor.concrete(batch))
        for name, address in self.buffers.items():
            context.set_tensor_address(name, int(address))
        graph = instance = None
        if self.cuda_graphs:
            # One plain run first: TensorRT finishes its lazy set-up outside the capture.
            self._execute(context)
            cudart = self.cuda.rt
            self.cuda(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            self._execute(context)
            graph = self.cuda(cudart.cudaStreamEndCapture(self.stream))
            instance = self.cuda(cudart.cudaGraphInstantiate(graph, 0))
        self.contexts[batch] = (context, graph, instance)
        return self.contexts[batch]

    def _execute(self, context: Any) -> None:
        if not context.execute_async_v3(self.stream):
            raise RuntimeError(f"TensorRT failed to run {self.path}")

    def run(self, batch: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.min_batch <= batch <= self.max_batch:
            raise LgfaError(
                f"the TensorRT engine {self.path} runs batches of {self.min_batch} to {self.max_batch}, got {batch}; "
                "choose a micro-batch inside that range or rebuild the engine with a larger profile"
            )
        cudart = self.cuda.rt
        host_inputs = {n: np.ascontiguousarray(a, dtype=self.dtypes[n]) for n, a in inputs.items()}
        for name, array in host_inputs.items():
            self.cuda(cudart.cudaMemcpyAsync(self.buffers[name], array.ctypes.data, array.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        context, _, instance = self._context(batch)
        if instance is not None:
            self.cuda(cudart.cudaGraphLaunch(instance, self.stream))
        else:
            self._execute(context)
        outputs = {t.name: np.empty(t.concrete(batch), self.dtypes[t.name]) for t in self.spec.outputs}
        for name, array in outputs.items():
            self.cuda(cudart.cudaMemcpyAsync(array.ctypes.data, self.buffers[name], array.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        self.cuda(cudart.cudaStreamSynchronize(self.stream))
        return {t.name: outputs[t.name].astype(t.dtype, copy=False) for t in self.spec.outputs}

    def close(self) -> None:
        cudart = self.cuda.rt
        for _, graph, instance in self.contexts.values():
            if instance is not None:
                self.cuda(cudart.cudaGraphExecDestroy(instance))
                self.cuda(cudart.cudaGraphDestroy(graph))
        self.contexts.clear()
        for address in self.buffers.values():
            self.cuda(cudart.cudaFree(address))
        self.buffers.clear()
        self.engine = None


class TensorRTBackend(Backend):
    """Runs a bundle's TensorRT engines on one NVIDIA GPU.

    Options: ``device_id`` (default 0), ``cuda_graphs`` (default True).
    """

    name = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        precision: str = "fp32",
        device_id: int = 0,
        cuda_graphs: bool = True,
    ) -> None:
        if device == "cpu":
            raise LgfaError("the tensorrt backend runs on an NVIDIA GPU only; use --backend onnxruntime on the CPU")
        trt, cudart = _import_runtime()
        cuda = _Cuda(cudart)
        count = cudart.cudaGetDeviceCount()
        if count[0] != cudart.cudaError_t.cudaSuccess or count[1] <= device_id:
            raise LgfaError("the tensorrt backend finds no usable CUDA GPU (is the NVIDIA driver installed?)")
        super().__init__(bundle, "cuda", precision)
        cuda(cudart.cudaSetDevice(device_id))
        props = cuda(cudart.cudaGetDeviceProperties(device_id))
        capability = f"{props.major}.{props.minor}"
        chosen = {g: select_engine(bundle, g, precision, trt.__version__, capability) for g in bundle.graph_names}
        self._trt, self._cuda, self._cuda_graphs = trt, cuda, cuda_graphs
        self._chosen = chosen
        self._stream = cuda(cudart.cudaStreamCreate())
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self._engines: dict[str, _Engine] = {}
        self._lock = threading.Lock()
        try:
            for graph in chosen:
                if graph not in PHOTO_GRAPHS:
                    self._engine(graph)
        except BaseException:
            self.close()
            raise

    def _engine(self, graph: str) -> _Engine:
        """The engine of ``graph``, deserialised on first use."""
        with self._lock:
            if graph not in self._engines:
                entry = self._chosen[graph]
                path = str(self.bundle.root / entry["file"])
                profile = entry.get("profile") or self.spec(graph).batch.to_dict()
                self._engines[graph] = _Engine(self._trt, self._cuda, self._runtime, path, self.spec(graph), profile,
                                               self._stream, self._cuda_graphs)
                log.debug("loaded TensorRT engine %s for %s", path, graph)
            return self._engines[graph]

    def _run(self, graph: str, batch: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._engine(graph).run(batch, inputs)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        if getattr(self, "_stream", None) is not None:
            self._cuda(self._cuda.rt.cudaStreamDestroy(self._stream))
            self._stream = None
