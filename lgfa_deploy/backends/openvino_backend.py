"""The OpenVINO backend: a bundle's ONNX graphs compiled for the CPU, one static shape per batch size.

OpenVINO reads the bundle's FP32 ONNX files as they are and lowers the precision itself
(``INFERENCE_PRECISION_HINT``). A reduced precision the CPU cannot compute natively is refused
rather than run as something else: OpenVINO quietly runs such a model in fp32, so the backend asks
the compiled model what it runs and says so in :attr:`OpenVinoBackend.executed`.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from lgfa_deploy import device_info
from lgfa_deploy.backends.base import Backend, check_graph_io
from lgfa_deploy.backends.precision_policy import keeps_fp32
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.errors import LgfaError

log = logging.getLogger(__name__)

OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
"""Our precision names -> OpenVINO's element types for ``INFERENCE_PRECISION_HINT``."""
CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}
"""The OPTIMIZATION_CAPABILITIES entry that says the CPU computes a reduced precision natively."""
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
PRECISION_GRAPHS = ("synthesis",)
"""Graphs compiled at the requested precision; the small text, motion, mapping and photo graphs
stay fp32 (their embeddings are compared by cosine, and they are a few percent of the work)."""
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "MatMul", "FullyConnected", "Subgraph")
"""Runtime layer types whose precision decides speed and fidelity (:attr:`OpenVinoBackend.executed`)."""
KEEP_FP32_KEY = "precise_0"
"""rt_info key of ``ov::disable_fp16_compression`` (class ``DisableFP16Compression``, RTTI name
"precise", version "0"): OpenVINO's CPU plugin keeps such a node in its original fp32 whatever the
inference precision, bf16 as well as f16."""


def default_cache_root() -> Path:
    """``$LGFA_CACHE_DIR``, else ``$XDG_CACHE_HOME/lgfa``, else ``~/.cache/lgfa``."""
    if os.environ.get("LGFA_CACHE_DIR"):
        return Path(os.environ["LGFA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lgfa"


def cache_key(graph_sha256: str, cpu: dict[str, Any]) -> str:
    """The cache folder name of one graph: its hash, the OpenVINO version and the CPU (model and flags)."""
    machine = f"{cpu['model']}|{','.join(cpu['vector_extensions'])}|{','.join(cpu.get('openvino_capabilities') or [])}"
    version = device_info.slug(ov.get_version().split("-")[0])
    return f"{graph_sha256[:16]}-ov{version}-{hashlib.sha256(machine.encode()).hexdigest()[:12]}"


class OpenVinoBackend(Backend):
    """Runs a bundle's ONNX graphs with OpenVINO's CPU plugin.

    Options: ``threads`` (INFERENCE_NUM_THREADS, default OpenVINO's choice), ``hint`` (latency |
    throughput: PERFORMANCE_HINT, default latency), ``cache_dir`` (folder of compiled models, default
    :func:`default_cache_root` / "openvino"; ``None`` or "" turns the cache off) and ``fp32_from``
    (bf16 / fp16 synthesis: the style and demodulation vectors and every ToRGB always stay fp32, see
    :mod:`lgfa_deploy.backends.precision_policy`; layers at least ``fp32_from`` pixels wide too;
    default 0, none: emulated, that keeps 43 dB at 256 px and 39 dB at 1024 px, and
    ``fp32_from=1024`` adds 1 dB at 1024 px, keeping its two widest convolutions fp32). Each graph is
    read once and compiled once per batch size, on first use, with that static shape. Compiled models are cached on disk in a folder
    keyed by the graph's hash, the OpenVINO version and the CPU (:func:`cache_key`), under which
    OpenVINO's own CACHE_DIR keys them by model and settings.
    """

    name = "openvino"

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        hint: str = "latency",
        cache_dir: str | os.PathLike[str] | None = "default",
        fp32_from: int = 0,
    ) -> None:
        if device not in ("auto", "cpu"):
            raise LgfaError(f"the openvino backend runs on the CPU; use --device cpu (got {device})")
        if precision not in OV_PRECISIONS:
            raise LgfaError(f"openvino runs {', '.join(OV_PRECISIONS)}; got precision {precision!r}")
        if hint not in HINTS:
            raise LgfaError(f"openvino hint {hint!r} is unknown; choose {', '.join(HINTS)}")
        if threads is not None and int(threads) < 1:
            raise LgfaError(f"openvino threads must be at least 1, got {threads}")
        super().__init__(bundle, "cpu", precision)
        self.core = ov.Core()
        self.capabilities = [str(c) for c in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
        if precision in CAPABILITY and CAPABILITY[precision] not in self.capabilities:
            flags = " or ".join(device_info.CPU_FEATURES[f] for f in device_info.NATIVE_PRECISION_FLAGS[precision])
            raise LgfaError(
                f"this CPU has no native {precision} (OpenVINO finds {', '.join(self.capabilities)}; {precision} needs "
                f"{flags}), so OpenVINO would run fp32 instead; use --precision fp32"
            )
        self.fp32_from = int(fp32_from)
        self._config: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[hint]}
        if threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self._cache_root = None if cache_dir in (None, "") else (
            default_cache_root() / "openvino" if cache_dir == "default" else Path(cache_dir)
        )
        self._cpu = device_info.cpu_description()
        self._models: dict[str, ov.Model] = {}
        self._compiled: dict[tuple[str, int], tuple[ov.CompiledModel, ov.InferRequest, threading.Lock]] = {}
        self._lock = threading.Lock()
        self.executed: dict[str, dict[str, Any]] = {}
        """Per graph: the INFERENCE_PRECISION_HINT the compiled model reports, and how many compute
        layers (:data:`COMPUTE_LAYERS`) run at each precision, from its runtime model."""

    def graph_precision(self, graph: str) -> str:
        """The precision ``graph`` is compiled at: the requested one for synthesis, fp32 for the rest."""
        return self.precision if graph in PRECISION_GRAPHS else "fp32"

    def _model(self, graph: str) -> ov.Model:
        """The FP32 ONNX graph as read by OpenVINO, once per graph (the caller holds the lock)."""
        if graph not in self._models:
            path = self.bundle.graph_path(graph, "fp32")
            try:
                model = self.core.read_model(str(path))
            except RuntimeError as exc:
                text = str(exc).strip().splitlines()
                raise LgfaError(
                    f"openvino cannot read {path} ({text[0][:160] if text else type(exc).__name__}); "
                    "the file is truncated or damaged: re-export the bundle"
                ) from None
            outputs = sorted({name for o in model.outputs for name in o.get_names()})
            check_graph_io(path, self.spec(graph), [i.get_any_name() for i in model.inputs], outputs)
            self._models[graph] = model
        return self._models[graph]

    def _compile(self, graph: str, batch: int) -> tuple[ov.CompiledModel, ov.InferRequest, threading.Lock]:
        """The compiled model of ``graph`` at the static ``batch``, compiled on first use."""
        with self._lock:
            key = (graph, batch)
            if key not in self._compiled:
                spec = self.spec(graph)
                model = self._model(graph).clone()
                model.reshape({t.name: list(t.concrete(batch)) for t in spec.inputs})
                precision = self.graph_precision(graph)
                kept = self._keep_fp32(model) if precision != "fp32" else 0
                config = {**self._config, "INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision]}
                folder = self._cache_folder(graph)
                if folder is not None:
                    config["CACHE_DIR"] = str(folder)
                log.debug("openvino: compiling %s at batch %d, %s (%d layers kept fp32)", graph, batch, precision, kept)
                compiled = self.core.compile_model(model, "CPU", config)
                self._record(graph, compiled, precision, kept)
                self._compiled[key] = (compiled, compiled.create_infer_request(), threading.Lock())
            return self._compiled[key]

    def _keep_fp32(self, model: ov.Model) -> int:
        """Mark the layers :func:`keeps_fp32` names to stay fp32; returns how many were marked."""
        kept = 0
        for op in model.get_ops():
            if op.get_output_size() != 1 or op.get_type_name() in ("Constant", "Parameter", "Result"):
                continue
            shape = op.get_output_partial_shape(0)
            if shape.is_static and keeps_fp32(tuple(shape.to_shape()), self.fp32_from):
                op.get_rt_info()[KEEP_FP32_KEY] = ""
                kept += 1
        return kept

    def _cache_folder(self, graph: str) -> Path | None:
        if self._cache_root is None:
            return None
        entry = self.bundle.manifest["graphs"][graph]["files"]["fp32"]
        folder = self._cache_root / cache_key(entry["sha256"], self._cpu)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LgfaError(f"cannot create the openvino cache folder {folder} ({exc.strerror}); pass cache_dir=None to run without it") from None
        return folder

    def _record(self, graph: str, compiled: ov.CompiledModel, precision: str, kept: int) -> None:
        """What the compiled model runs; a reduced precision that came back fp32 is an error, never silent."""
        hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        layers: collections.Counter[str] = collections.Counter()
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "layerType" in info and info["layerType"].astype(str) in COMPUTE_LAYERS:
                layers[info["runtimePrecision"].astype(str)] += 1
        self.executed[graph] = {"requested": precision, "hint": hint,
                                "layers": dict(sorted(layers.items())), "kept_fp32": kept}
        wanted = OV_PRECISIONS[precision]
        if precision != "fp32" and wanted not in layers:
            raise LgfaError(
                f"openvino compiled {graph} for {precision} but runs it as {', '.join(layers) or hint}; "
                "use --precision fp32 on this CPU"
            )

    @property
    def executed_precision(self) -> str | None:
        """Synthesis as it runs, e.g. "bf16" or "bf16+f32" (mixed), None before it compiled."""
        info = self.executed.get("synthesis")
        return None if info is None else "+".join(info["layers"]) or info["hint"]

    def _run(self, graph: str, batch: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        compiled, request, lock = self._compile(graph, batch)
        spec = self.spec(graph)
        with lock:
            try:
                request.infer(inputs)
            except RuntimeError as exc:
                raise LgfaError(f"openvino failed to run graph {graph}: {str(exc).strip()[:200]}") from None
            # The request reuses its output memory on the next call: copy out.
            return {t.name: np.array(request.get_tensor(t.name).data, dtype=t.dtype) for t in spec.outputs}

    def close(self) -> None:
        self._compiled.clear()
        self._models.clear()
