"""One interface over every runtime: open a bundle's graphs, run named host arrays to named host arrays.

A backend checks every call against the graph declarations in the bundle's manifest (input names,
shapes, the batch range) and hides its speed tricks (I/O binding, CUDA graphs, FP16) behind
:meth:`Backend.run` and :meth:`Backend.frames`. Backends are found by name and imported only when
opened, so that ``lgfa_deploy`` runs without the packages of the backends it does not use.
"""
from __future__ import annotations

import abc
import importlib
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lgfa_deploy.bundle import PRECISIONS, Bundle
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import GraphSpec

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
RUNTIME_PRECISIONS = (*PRECISIONS, "bf16")
"""Precisions a backend may run: the bundle's graph precisions, and bf16, which OpenVINO derives
from the FP32 graphs on CPUs that compute it natively (other backends refuse what they cannot run)."""


@dataclass(frozen=True)
class BackendInfo:
    """Where a backend lives and which pip extra installs what it needs."""

    module: str
    cls: str
    packages: tuple[str, ...]  # top-level import names whose absence means "install the extra"
    extra: str
    precisions: tuple[str, ...] = PRECISIONS


BACKENDS: dict[str, BackendInfo] = {
    "onnxruntime": BackendInfo(
        "lgfa_deploy.backends.onnxruntime_backend", "OnnxRuntimeBackend", ("onnxruntime",), "cpu"
    ),
    "openvino": BackendInfo(
        "lgfa_deploy.backends.openvino_backend", "OpenVinoBackend", ("openvino",), "openvino", ("fp32", "bf16", "fp16")
    ),
    "tensorrt": BackendInfo(
        "lgfa_deploy.backends.tensorrt_backend", "TensorRTBackend", ("tensorrt", "cuda"), "tensorrt"
    ),
    "torch": BackendInfo(
        "lgfa_deploy.backends.torch_backend", "TorchBackend", ("torch", "training", "open_clip", "safetensors"), "train"
    ),
}


def missing_package(backend: str, package: str, extra: str | None = None) -> LgfaError:
    """The one-line error for a backend whose package is not installed."""
    extra = extra or BACKENDS[backend].extra
    return LgfaError(
        f"the {backend} backend needs {package}, which is not installed; "
        f"install it with: pip install 'lgfa-deploy[{extra}]'"
    )


def check_graph_io(path: object, spec: GraphSpec, inputs: list[str], outputs: list[str]) -> None:
    """A graph file must take the declared inputs, in order, and give at least the declared outputs."""
    if inputs != spec.input_names or not set(spec.output_names) <= set(outputs):
        raise LgfaError(
            f"{path} has inputs {inputs} and outputs {outputs}, but the manifest declares "
            f"{spec.input_names} -> {spec.output_names}; re-export the bundle"
        )


def to_uint8_bgr(images: np.ndarray) -> np.ndarray:
    """Images [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] in OpenCV's BGR order (round half to even)."""
    pixels = np.rint(np.clip((images.astype(np.float32, copy=False) + 1) * 127.5, 0, 255)).astype(np.uint8)
    return np.ascontiguousarray(pixels[:, ::-1].transpose(0, 2, 3, 1))


class Backend(abc.ABC):
    """A bundle's graphs opened on one runtime and device, at one precision."""

    name: ClassVar[str]

    def __init__(self, bundle: Bundle, device: str, precision: str) -> None:
        self.bundle = bundle
        self.device = device
        self.precision = precision
        self.specs: dict[str, GraphSpec] = {name: bundle.graph(name) for name in bundle.graph_names}

    def spec(self, graph: str) -> GraphSpec:
        """The declaration of ``graph``; an unknown name raises :class:`LgfaError`."""
        spec = self.specs.get(graph)
        if spec is None:
            raise LgfaError(f"bundle {self.bundle.root} has no graph {graph!r}; it has {', '.join(self.specs)}")
        return spec

    def check_inputs(self, graph: str, inputs: dict[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
        """Batch size and the inputs as contiguous arrays of the declared dtypes; anything else is an LgfaError."""
        spec = self.spec(graph)
        if set(inputs) != set(spec.input_names):
            raise LgfaError(f"graph {graph} takes inputs {spec.input_names}, got {sorted(inputs)}")
        batch = None
        checked: dict[str, np.ndarray] = {}
        for tensor in spec.inputs:
            array = np.asarray(inputs[tensor.name])
            batch = array.shape[0] if batch is None and array.ndim else batch
            expected = tensor.concrete(batch or 0)
            if array.shape != expected:
                raise LgfaError(
                    f"input {tensor.name} of graph {graph} must have shape {list(tensor.shape)}, got {list(array.shape)}"
                )
            checked[tensor.name] = np.ascontiguousarray(array, dtype=tensor.dtype)
        if batch is None or not spec.batch.min <= batch <= spec.batch.max:
            raise LgfaError(
                f"graph {graph} runs batches of {spec.batch.min} to {spec.batch.max}, got {batch}; "
                "choose a micro-batch inside that range"
            )
        return batch, checked

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``graph`` on host arrays; returns its outputs as float32 (or declared dtype) host arrays."""
        batch, checked = self.check_inputs(graph, inputs)
        return self._run(graph, batch, checked)

    @abc.abstractmethod
    def _run(self, graph: str, batch: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run checked inputs; outputs in the declared dtypes."""

    def frames(self, latents: np.ndarray) -> np.ndarray:
        """W+ latents [B, L, S] -> uint8 BGR frames [B, H, W, 3]; GPU backends convert on the device."""
        return to_uint8_bgr(self.run("synthesis", {"latents": latents})["image"])

    def close(self) -> None:
        """Release sessions, engines and device memory; the backend is unusable afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{self.name} backend on {self.device}, {self.precision}, bundle {self.bundle.root}>"


def open_backend(
    name: str,
    bundle: Bundle,
    device: str = "auto",
    precision: str = "auto",
    **options: Any,
) -> Backend:
    """Open ``bundle`` on backend ``name`` ("auto", "onnxruntime", "openvino", "tensorrt" or "torch").

    ``device`` is "cpu", "cuda" or "auto" (CUDA when the backend finds a GPU); ``precision`` "fp32",
    "fp16", "bf16" (openvino) or "auto" (``auto`` backend: its choice, see
    :mod:`lgfa_deploy.backends.choice`; any other backend: fp32); ``options`` go to the backend (see each backend's class). An unknown backend, a missing
    package, an unavailable device or precision raise :class:`LgfaError`.
    """
    if device not in DEVICES:
        raise LgfaError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if precision not in (*RUNTIME_PRECISIONS, "auto"):
        raise LgfaError(f"unknown precision {precision!r}; choose one of: auto, {', '.join(RUNTIME_PRECISIONS)}")
    if name == "auto":
        from lgfa_deploy.backends.choice import choose_backend

        choice = choose_backend(bundle, device, precision)
        log.info("backend auto: %s %s (%s)", choice.backend, choice.precision, choice.reason)
        name, precision = choice.backend, choice.precision
    elif precision == "auto":
        precision = "fp32"
    info = BACKENDS.get(name)
    if info is None:
        raise LgfaError(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    if precision not in info.precisions:
        able = [n for n, i in BACKENDS.items() if precision in i.precisions]
        raise LgfaError(
            f"the {name} backend runs {', '.join(info.precisions)}, not {precision}; {precision} runs on --backend {' or '.join(able)}"
        )
    try:
        module = importlib.import_module(info.module)
    except ImportError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in info.packages:
            raise
        raise missing_package(name, root) from None
    backend_cls: type[Backend] = getattr(module, info.cls)
    backend = backend_cls(bundle, device=device, precision=precision, **options)
    log.debug("opened %r", backend)
    return backend
