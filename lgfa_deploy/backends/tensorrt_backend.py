"""The TensorRT backend: TensorRT 10 engines from the bundle, device buffers and streams through cuda-python.

Engines are chosen from the manifest's ``engines`` entries (graph, file, sha256, tensorrt_version,
device_name, compute_capability, precision, profile) for this GPU and TensorRT version; an engine
built elsewhere is refused in one line that says how to rebuild, and so is an engine whose inputs
and outputs are not the ones its graph declares. Each graph gets device buffers sized for its
largest batch, pinned host buffers for the copies, one CUDA stream, and one execution context per
batch size actually used; the contexts of an engine share one block of activation memory (they run
one at a time, in order, on that stream). Each context's work is captured once into a CUDA graph
(in thread-local capture mode, after a synchronised warm-up run) and replayed from then on; a
capture that fails is ended, its error cleared, and that batch size runs without a graph. The
synthesis engine also computes the uint8 BGR frames on the device (``lgfa build-engines`` adds that
output), so :meth:`TensorRTBackend.frames` copies 3 bytes a pixel to the host. Work is enqueued
from whichever thread calls (a stream's producer thread included), so each call first makes the
backend's GPU current in that thread. Every engine is chosen (and refused) when the backend opens;
the photo graphs' engines are deserialised on first use, so a seed-only run never holds e4e's.
``tensorrt`` and cuda-python are imported when the backend opens, never before.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from lgfa_deploy.backends.base import Backend, missing_package
from lgfa_deploy.backends.tensorrt_runtime import (
    FRAMES_OUTPUT,
    Cuda,
    find_gpu,
    import_cudart,
    import_tensorrt,
    logger_severity,
    name_slug,
)
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
    bundle: Bundle, graph: str, precision: str, tensorrt_version: str, compute_capability: str, device_name: str
) -> dict[str, Any]:
    """The manifest's engine entry for ``graph`` at ``precision`` built for this GPU and TensorRT.

    Raises :class:`LgfaError` in one line when the bundle has no engine for the graph, none at the
    precision, or only engines built for another GPU (name or compute capability) or TensorRT version.
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
    wanted = (name_slug(device_name), _capability(compute_capability), _version_key(tensorrt_version))
    for entry in at_precision:
        found = (
            name_slug(str(entry.get("device_name", ""))),
            _capability(entry.get("compute_capability")),
            _version_key(entry.get("tensorrt_version", "")),
        )
        if found == wanted:
            return entry
    entry = at_precision[0]
    raise LgfaError(
        f"the {graph} engine {entry.get('file')} was built for {entry.get('device_name', 'an unnamed GPU')} "
        f"(compute capability {_capability(entry.get('compute_capability'))}) with TensorRT "
        f"{entry.get('tensorrt_version')}, but this machine has {device_name} (compute capability "
        f"{_capability(compute_capability)}) with TensorRT {tensorrt_version}; {rebuild}"
    )


def _import_runtime() -> tuple[Any, Any]:
    """``tensorrt`` 10 and cuda-python's runtime module, or the install hint."""
    try:
        return import_tensorrt(), import_cudart()
    except LgfaError as exc:
        package = "TensorRT 10 (the tensorrt package)" if "TensorRT" in str(exc) else "cuda-python"
        raise missing_package("tensorrt", package) from None


def engine_io(trt: Any, engine: Any) -> tuple[list[str], list[str]]:
    """An engine's input and output tensor names, in its order."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    return inputs, [n for n in names if n not in inputs]


def check_engine_io(path: str, spec: GraphSpec, inputs: list[str], outputs: list[str]) -> None:
    """The engine must take the declared inputs and give the declared outputs (synthesis may add the frames)."""
    extra = {FRAMES_OUTPUT} if spec.name == "synthesis" else set()
    if set(inputs) != set(spec.input_names) or not set(spec.output_names) <= set(outputs) <= set(spec.output_names) | extra:
        raise LgfaError(
            f"the TensorRT engine {path} has inputs {inputs} and outputs {outputs}, but the manifest declares "
            f"{spec.input_names} -> {spec.output_names}; rebuild it with 'lgfa build-engines'"
        )


class _Pinned:
    """One page-locked host buffer, viewed as numpy arrays of any shape and dtype."""

    def __init__(self, cuda: Cuda, nbytes: int) -> None:
        self.cuda, self.nbytes = cuda, max(int(nbytes), 1)
        self.address = int(cuda(cuda.rt.cudaMallocHost(self.nbytes)))

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_uint8 * count).from_address(self.address)
        return np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape)

    def free(self) -> None:
        self.cuda(self.cuda.rt.cudaFreeHost(self.address))


class _Engine:
    """One deserialised engine: buffers for its largest batch, shared activation memory, a context and
    CUDA graph per batch."""

    def __init__(self, trt: Any, cuda: Cuda, runtime: Any, path: str, spec: GraphSpec, profile: dict,
                 stream: Any, cuda_graphs: bool) -> None:
        self.trt, self.cuda, self.spec, self.stream, self.path = trt, cuda, spec, stream, path
        self.stream_handle = int(stream)
        with open(path, "rb") as f:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise LgfaError(
                f"TensorRT cannot load {path}: it was built for another GPU or TensorRT version, or is damaged; "
                "rebuild engines with 'lgfa build-engines'"
            )
        inputs, outputs = engine_io(trt, self.engine)
        check_engine_io(path, spec, inputs, outputs)
        self.has_frames = FRAMES_OUTPUT in outputs
        self.min_batch, self.max_batch = int(profile["min"]), int(profile["max"])
        self.cuda_graphs = cuda_graphs
        self.dtypes = {name: np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))) for name in (*inputs, *outputs)}
        self.shapes = {t.name: t.concrete for t in (*spec.inputs, *spec.outputs)}
        if self.has_frames:
            resolution = spec.outputs[0].concrete(1)[-1]
            self.shapes[FRAMES_OUTPUT] = lambda batch: (batch, resolution, resolution, 3)
        self.device: dict[str, int] = {}
        self.host: dict[str, _Pinned] = {}
        self.activations = 0
        # batch -> (execution context, CUDA graph or None, its executable instance or None)
        self.contexts: dict[int, tuple[Any, Any, Any]] = {}
        try:
            for name, shape in self.shapes.items():
                nbytes = int(np.prod(shape(self.max_batch))) * self.dtypes[name].itemsize
                self.device[name] = int(cuda(cuda.rt.cudaMalloc(nbytes)))
                self.host[name] = _Pinned(cuda, nbytes)
            self.activation_bytes = self._activation_bytes()
            self.activations = int(cuda(cuda.rt.cudaMalloc(max(self.activation_bytes, 256))))
        except BaseException:
            self.close()
            raise

    def _activation_bytes(self) -> int:
        """The activation memory any of this engine's contexts needs: the larger of the engine's and its profile's."""
        engine = self.engine
        sizes = [int(getattr(engine, "device_memory_size_v2", 0) or getattr(engine, "device_memory_size", 0))]
        if hasattr(engine, "get_device_memory_size_for_profile_v2"):
            sizes += [int(engine.get_device_memory_size_for_profile_v2(i)) for i in range(engine.num_optimization_profiles)]
        return max(sizes)

    def _context(self, batch: int) -> tuple[Any, Any, Any]:
        entry = self.contexts.get(batch)
        if entry is not None:
            return entry
        context = self.engine.create_execution_context(self.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise RuntimeError(f"TensorRT could not create an execution context for {self.path}")
        if hasattr(context, "set_device_memory"):
            context.set_device_memory(self.activations, max(self.activation_bytes, 256))
        else:  # TensorRT 10.0
            context.device_memory = self.activations
        for tensor in self.spec.inputs:
            shape = tensor.concrete(batch)
            if not context.set_input_shape(tensor.name, shape):
                raise LgfaError(
                    f"the TensorRT engine {self.path} refuses shape {list(shape)} for input {tensor.name} "
                    f"(its profile runs batches {self.min_batch} to {self.max_batch}); rebuild it with 'lgfa build-engines'"
                )
        for name, address in self.device.items():
            context.set_tensor_address(name, address)
        graph = instance = None
        if self.cuda_graphs:
            graph, instance = self._capture(context, batch)
        self.contexts[batch] = (context, graph, instance)
        return self.contexts[batch]

    def _capture(self, context: Any, batch: int) -> tuple[Any, Any]:
        """(graph, executable graph) of one run of ``context``, or (None, None) where capture fails."""
        rt, cuda = self.cuda.rt, self.cuda
        # A plain run first, finished before the capture: TensorRT does its lazy set-up outside it.
        self._execute(context)
        cuda(rt.cudaStreamSynchronize(self.stream))
        cuda(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            enqueued = context.execute_async_v3(self.stream_handle)
        except Exception as exc:  # noqa: BLE001 - reported below; the capture must be ended first
            enqueued, reason = False, str(exc)
        else:
            reason = "TensorRT could not enqueue the run"
        err, graph = rt.cudaStreamEndCapture(self.stream)  # always ended, or the stream stays unusable
        instance = None
        if enqueued and err == rt.cudaError_t.cudaSuccess:
            err, instance = rt.cudaGraphInstantiate(graph, 0)
            if err != rt.cudaError_t.cudaSuccess:
                instance, reason = None, f"instantiation failed ({cuda.error_name(err)})"
        elif err != rt.cudaError_t.cudaSuccess:
            reason, graph = f"capture failed ({cuda.error_name(err)})", None
        if instance is None:
            cuda.clear_error()
            if graph is not None:
                rt.cudaGraphDestroy(graph)
            log.warning("%s: no CUDA graph for batch %d (%s); it runs without one", self.path, batch, reason)
            return None, None
        return graph, instance

    def _execute(self, context: Any) -> None:
        if not context.execute_async_v3(self.stream_handle):
            raise RuntimeError(f"TensorRT failed to run {self.path}")

    def run(self, batch: int, inputs: dict[str, np.ndarray], outputs: Iterable[str]) -> dict[str, np.ndarray]:
        """Copy ``inputs`` in through pinned memory, run the batch, copy the named ``outputs`` back."""
        if not self.min_batch <= batch <= self.max_batch:
            raise LgfaError(
                f"the TensorRT engine {self.path} runs batches of {self.min_batch} to {self.max_batch}, got {batch}; "
                "choose a micro-batch inside that range or rebuild the engine with a larger profile"
            )
        rt, cuda = self.cuda.rt, self.cuda
        context, _, instance = self._context(batch)
        for name, array in inputs.items():
            staged = self.host[name].view(array.shape, self.dtypes[name])
            np.copyto(staged, array, casting="same_kind")
            cuda(rt.cudaMemcpyAsync(self.device[name], self.host[name].address, staged.nbytes,
                                    rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        if instance is not None:
            cuda(rt.cudaGraphLaunch(instance, self.stream))
        else:
            self._execute(context)
        results = {}
        for name in outputs:
            results[name] = self.host[name].view(self.shapes[name](batch), self.dtypes[name])
            cuda(rt.cudaMemcpyAsync(self.host[name].address, self.device[name], results[name].nbytes,
                                    rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        cuda(rt.cudaStreamSynchronize(self.stream))
        return {name: array.copy() for name, array in results.items()}  # the pinned buffers are reused

    def close(self) -> None:
        rt = self.cuda.rt
        for _, graph, instance in self.contexts.values():
            if instance is not None:
                self.cuda(rt.cudaGraphExecDestroy(instance))
                self.cuda(rt.cudaGraphDestroy(graph))
        self.contexts.clear()  # contexts go before the memory they use
        for address in (*self.device.values(), self.activations):
            if address:
                self.cuda(rt.cudaFree(address))
        for pinned in self.host.values():
            pinned.free()
        self.device.clear()
        self.host.clear()
        self.activations = 0
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
        cuda = Cuda(cudart)
        gpu = find_gpu(cuda, device_id)
        super().__init__(bundle, "cuda", precision)
        self.gpu = gpu
        chosen = {
            g: select_engine(bundle, g, precision, trt.__version__, gpu.compute_capability, gpu.name)
            for g in bundle.graph_names
        }
        self._trt, self._cuda, self._cuda_graphs = trt, cuda, cuda_graphs
        self._chosen = chosen
        self._engines: dict[str, _Engine] = {}
        self._lock = threading.RLock()
        self._stream = None
        self._use_device()
        self._stream = cuda(cudart.cudaStreamCreate())
        self._runtime = trt.Runtime(trt.Logger(logger_severity(trt)))
        try:
            for graph in chosen:
                if graph not in PHOTO_GRAPHS:
                    self._engine(graph)
        except BaseException:
            self.close()
            raise

    def _use_device(self) -> None:
        """Make this backend's GPU current in the calling thread (the CUDA device is per thread)."""
        self._cuda(self._cuda.rt.cudaSetDevice(self.gpu.index))

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
        spec = self.spec(graph)
        with self._lock:
            self._use_device()
            outputs = self._engine(graph).run(batch, inputs, spec.output_names)
        return {t.name: outputs[t.name].astype(t.dtype, copy=False) for t in spec.outputs}

    def frames(self, latents: np.ndarray) -> np.ndarray:
        """uint8 BGR frames converted on the device, where the engine has that output."""
        batch, checked = self.check_inputs("synthesis", {"latents": latents})
        with self._lock:
            self._use_device()
            engine = self._engine("synthesis")
            if not engine.has_frames:
                return super().frames(checked["latents"])
            return engine.run(batch, checked, [FRAMES_OUTPUT])[FRAMES_OUTPUT]

    def close(self) -> None:
        with self._lock:
            if self._engines or self._stream is not None:
                self._use_device()
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
            if self._stream is not None:
                self._cuda(self._cuda.rt.cudaStreamDestroy(self._stream))
                self._stream = None
