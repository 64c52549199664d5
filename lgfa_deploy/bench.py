"""Latency and throughput of a bundle per backend, precision, batch and pipeline stage.

Every configuration runs in one process, one after the other, on the same inputs, so that their
ratios are fair. The baseline is PyTorch eager FP32 at batch 1 in the reference formulation, the way
the reference implementation (rosinality's StyleGAN2) runs: per-sample modulated weights, one grouped
convolution per layer, its native upfirdn2d on the CPU. It is always its own run, before the
compared configurations, and every row, the torch ones included, states its ratio to it.

Stages (a "call" processes ``batch`` texts or frames):

========== =============================================================================
tokenize     CLIP BPE of ``batch`` sentences
text_encoder tokens -> text embeddings
motion       text embeddings -> per-frame W+ offsets (T frames each)
synthesis    W+ -> float images, ``batch`` frames (``backend.run``)
frames       W+ -> uint8 BGR frames as the pipeline calls it (``backend.frames``: synthesis plus
             the conversion, on the device for GPU backends)
postprocess  float images -> uint8 BGR on the host
encode       ``batch`` uint8 frames appended to an H.264 mp4 (:class:`lgfa_deploy.video.VideoSink`, as lgfa writes)
first_frame  a new sentence -> its first frame, through :meth:`Animator.stream_frames` (latency)
stream       sustained frames/s of :meth:`Animator.stream` over ``--frames`` frames, micro-batch
             ``batch`` (percentiles: the interval between frames)
stream_encode the same, each frame written to an mp4 through the same VideoSink
========== =============================================================================

Timing: ``time.perf_counter`` around each call. Backends return host arrays, so the device work of
a call has finished when it returns; for the torch backend on a GPU the region also ends with
``torch.cuda.synchronize()``. Percentiles are numpy's linear interpolation over ``iters`` calls
after ``warmup`` untimed ones. ``fps`` is frames per second: ``items_per_call * 1000 / p50_ms``
(for text stages, the frames a call's texts become: ``batch * T``), and for the stream stages
frames over the wall time from the first to the last frame. ``ratio`` is ``fps / baseline fps``
of the same stage (``baseline p50 / p50`` for first_frame, a latency).
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lgfa_deploy import device_info
from lgfa_deploy.backends import open_backend, to_uint8_bgr
from lgfa_deploy.backends.base import Backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.errors import LgfaError

log = logging.getLogger(__name__)

SCHEMA = "lgfa-bench/1"
STAGES = (
    "tokenize",
    "text_encoder",
    "motion",
    "synthesis",
    "frames",
    "postprocess",
    "encode",
    "first_frame",
    "stream",
    "stream_encode",
)
PHOTO_STAGES = ("photo_detect", "photo_landmarks", "photo_align", "photo_e4e", "photo_clip_image")
"""The photo path, per photo: dlib detection, 68 landmarks, the FFHQ crop, e4e inversion, CLIP image tower."""
LATENCY_STAGES = ("first_frame",)
"""Stages that measure a latency, not a rate: no fps; their ratio compares p50 latencies."""
FRAME_STAGES = ("synthesis", "frames")
"""Stages whose work is the synthesis network: they get achieved FLOP/s and bandwidth."""
DEFAULT_TEXTS = (
    "The person is smiling.",
    "The person is angry.",
    "The person is surprised.",
    "The person is talking.",
)
BASELINE = {
    "backend": "torch",
    "precision": "fp32",
    "batch": 1,
    "formulation": "reference",
    "description": "rosinality's way: per-sample weights, grouped convolution, native upfirdn2d on the CPU",
}
BASELINE_LABEL = "torch eager fp32, reference formulation (baseline)"


def sig(value: float | None, digits: int = 6) -> float | None:
    """``value`` rounded to ``digits`` significant digits (None stays None)."""
    return None if value is None else float(f"{value:.{digits}g}")


@dataclass
class BenchConfig:
    """What to measure."""

    bundle: Path
    backends: list[str]
    batches: list[int]
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    frames: int = 64
    iters: int = 20
    warmup: int = 3
    device: str = "auto"
    threads: int | None = None
    texts: list[str] = field(default_factory=lambda: list(DEFAULT_TEXTS))
    seed: int = 0
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: bool = True
    measure_cpu_peak: bool = True
    stages: tuple[str, ...] = STAGES
    image: Path | None = None  # a photo: also time the photo path's stages (PHOTO_STAGES) at batch 1


@dataclass
class Timing:
    """Latencies of one stage in milliseconds."""

    samples_ms: list[float]
    items_per_call: int
    fps: float | None = None  # when not simply items_per_call / p50 (the stream stages)
    extra: dict[str, Any] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    def row(self) -> dict[str, Any]:
        p50 = self.percentile(50)
        fps = self.fps if self.fps is not None else (self.items_per_call * 1000.0 / p50 if p50 > 0 else None)
        return {
            "p50_ms": sig(p50),
            "p90_ms": sig(self.percentile(90)),
            "p99_ms": sig(self.percentile(99)),
            "mean_ms": sig(float(np.mean(self.samples_ms))),
            "fps": None if fps is None else sig(fps),
            "items_per_call": self.items_per_call,
            "samples": len(self.samples_ms),
            **self.extra,
        }


# ----------------------------------------------------------------------------------------------



def _synchronizer(backend: Backend) -> Callable[[], None]:
    """What ends a timed region on ``backend``'s device (a no-op where results are host arrays)."""
    torch = sys.modules.get("torch")
    if backend.device == "cuda" and torch is not None and torch.cuda.is_available():
        return torch.cuda.synchronize
    return lambda: None


def time_calls(fn: Callable[[], Any], iters: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Milliseconds of ``iters`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


class GpuMemory:
    """Peak device memory of this process while a backend runs, in MiB.

    torch: its caching allocator's peak reservation. Other backends: what nvidia-smi reports for
    this process, sampled after every stage (onnxruntime's and TensorRT's allocations persist, so
    the last sample is close to the peak).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.peak: float | None = None
        self.method: str | None = None
        if backend.device != "cuda":
            return
        torch = sys.modules.get("torch")
        if backend.name == "torch" and torch is not None:
            torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_reserved"
        else:
            self.method = "nvidia-smi used_memory of this process"

    def sample(self) -> None:
        if self.method is None:
            return
        if self.method.startswith("torch"):
            value = sys.modules["torch"].cuda.max_memory_reserved() / 2**20
        else:
            value = _process_gpu_memory_mib()
        if value is not None:
            self.peak = max(self.peak or 0.0, value)


def _process_gpu_memory_mib() -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()):
            try:
                return float(parts[1])
            except ValueError:
                return None
    return None


# ----------------------------------------------------------------------------------------------
# One backend at one precision


class StageRunner:
    """Measures every stage of one opened backend at a batch size."""

    def __init__(self, bundle: Bundle, backend: Backend, config: BenchConfig, workdir: Path) -> None:
        from lgfa_deploy.pipeline import Animator

        self.bundle = bundle
        self.backend = backend
        self.config = config
        self.workdir = workdir
        self.sync = _synchronizer(backend)
        self.memory = GpuMemory(backend)
        self.animator_cls = Animator
        probe = Animator(bundle, backend, micro_batch=1)
        self.tokenizer = probe.tokenizer
        # Realistic per-frame W+: the first text's clip for the first seed; tiled to any batch.
        self.clip_latents = probe.latents(config.texts[0], seed=config.seed)
        self.T = bundle.frames

    def _texts(self, batch: int) -> list[str]:
        return [self.config.texts[i % len(self.config.texts)] for i in range(batch)]

    def _latents(self, batch: int) -> np.ndarray:
        reps = math.ceil(batch / len(self.clip_latents))
        return np.ascontiguousarray(np.concatenate([self.clip_latents] * reps)[:batch])

    def _motion_inputs(self, embedding: np.ndarray) -> dict[str, np.ndarray]:
        """The motion graph's inputs for text alone: the text embedding, zeros for any other (the photo's)."""
        spec = self.bundle.graph("motion")
        batch = len(embedding)
        return {
            t.name: embedding if t.name == "text_embedding" else np.zeros(t.concrete(batch), dtype=t.dtype)
            for t in spec.inputs
        }

    def _timed(self, fn: Callable[[], Any], items: int) -> Timing:
        samples = time_calls(fn, self.config.iters, self.config.warmup, self.sync)
        self.memory.sample()
        return Timing(samples, items)

    def measure(self, batch: int) -> dict[str, Timing]:
        """Timings of every configured stage at ``batch``."""
        cfg = self.config
        backend = self.backend
        texts = self._texts(batch)
        tokens = self.tokenizer(texts)
        embedding = backend.run("text_encoder", {"tokens": tokens})["text_embedding"]
        motion_inputs = self._motion_inputs(embedding)
        latents = self._latents(batch)
        images = backend.run("synthesis", {"latents": latents})["image"]
        frames = to_uint8_bgr(images)
        stages: dict[str, Callable[[], Timing]] = {
            "tokenize": lambda: self._timed(lambda: self.tokenizer(texts), batch * self.T),
            "text_encoder": lambda: self._timed(lambda: backend.run("text_encoder", {"tokens": tokens}), batch * self.T),
            "motion": lambda: self._timed(lambda: backend.run("motion", motion_inputs), batch * self.T),
            "synthesis": lambda: self._timed(lambda: backend.run("synthesis", {"latents": latents}), batch),
            "frames": lambda: self._timed(lambda: backend.frames(latents), batch),
            "postprocess": lambda: self._timed(lambda: to_uint8_bgr(images), batch),
            "encode": lambda: self._encode(frames),
            "first_frame": lambda: self._first_frame(batch),
            "stream": lambda: self._stream(batch, encode=False),
            "stream_encode": lambda: self._stream(batch, encode=True),
        }
        out: dict[str, Timing] = {}
        for stage, measure in stages.items():
            if stage in cfg.stages:
                started = time.perf_counter()
                out[stage] = measure()
                # Where a long run spends its time, warm-ups and autotuning included.
                log.info("bench:   %s: p50 %.3g ms (%.1f s)", stage, out[stage].percentile(50), time.perf_counter() - started)
        return out

    def measure_photo(self, photo: np.ndarray) -> dict[str, Timing]:
        """Timings of the photo path's stages for one photo (uint8 BGR), one face at a time."""
        from lgfa_deploy.align import face_landmarks, ffhq_crop, ffhq_quad, find_faces
        from lgfa_deploy.pipeline import clip_pixels, face_pixels

        bundle, backend = self.bundle, self.backend
        rgb, boxes = find_faces(photo)
        if not boxes:
            raise LgfaError("--image: no face found in the photo; use a photo of a face seen from the front")
        box = max(boxes, key=lambda b: (b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))[0]
        landmarks = face_landmarks(rgb, box)
        face = ffhq_crop(photo, *ffhq_quad(landmarks), bundle.face_size)
        return {
            "photo_detect": self._timed(lambda: find_faces(photo), 1),
            "photo_landmarks": self._timed(lambda: face_landmarks(rgb, box), 1),
            "photo_align": self._timed(lambda: ffhq_crop(photo, *ffhq_quad(landmarks), bundle.face_size), 1),
            "photo_e4e": self._timed(lambda: backend.run("image_encoder", {"face": face_pixels(face)}), 1),
            "photo_clip_image": self._timed(
                lambda: backend.run(
                    "clip_image", {"pixels": clip_pixels(face, bundle.clip_image_size, bundle.clip_mean, bundle.clip_std)}
                ),
                1,
            ),
        }

    def _encode(self, frames: np.ndarray) -> Timing:
        from lgfa_deploy.video import VideoSink

        height, width = frames.shape[1:3]
        with VideoSink(self.workdir / "encode.mp4", 25.0, (width, height)) as sink:

            def write() -> None:
                for frame in frames:
                    sink.write(frame)

            timing = self._timed(write, len(frames))
        return timing

    def _first_frame(self, batch: int) -> Timing:
        """A sentence not seen before -> its first frame (text encoder, motion, mapping, one synthesis)."""
        animator = self.animator_cls(self.bundle, self.backend, micro_batch=batch, cache_texts=0)
        text = self.config.texts[0]

        def first() -> None:
            stream = animator.stream_frames([text], seed=self.config.seed)
            try:
                next(stream)
            finally:
                stream.close()

        samples = []
        for i in range(self.config.warmup + self.config.iters):
            start = time.perf_counter()
            first()
            self.sync()
            elapsed = (time.perf_counter() - start) * 1000.0
            # Untimed: wait for the producer's batch in flight (mapping takes the backend lock).
            animator.content(self.config.seed)
            if i >= self.config.warmup:
                samples.append(elapsed)
        self.memory.sample()
        return Timing(samples, 1, extra={"clip_frames": self.T})

    def _stream_texts(self) -> list[str]:
        count = 1 + max(0, math.ceil((self.config.frames - self.T) / max(self.T - 1, 1)))
        return [self.config.texts[i % len(self.config.texts)] for i in range(count)]

    def _stream(self, batch: int, encode: bool) -> Timing:
        """Sustained frames/s of ``Animator.stream`` with micro-batch ``batch``, optionally into an mp4."""
        from lgfa_deploy.video import VideoSink

        animator = self.animator_cls(self.bundle, self.backend, micro_batch=batch)
        texts = self._stream_texts()
        resolution = self.bundle.resolution

        def run(limit: int) -> list[float]:
            stamps = [time.perf_counter()]
            sink = VideoSink(self.workdir / "stream.mp4", 25.0, (resolution, resolution)) if encode else None
            stream = animator.stream(texts, seed=self.config.seed)
            try:
                for count, frame in enumerate(stream, start=1):
                    if sink is not None:
                        sink.write(frame)
                    stamps.append(time.perf_counter())
                    if count >= limit:
                        break
            finally:
                stream.close()
                if sink is not None:
                    sink.close()
            animator.content(self.config.seed)  # waits for a batch still in flight (untimed)
            return stamps

        if self.config.warmup:  # every micro-batch size the stream will use, outside the timed run
            animator.warm_up()
        stamps = run(self.config.frames)
        self.memory.sample()
        intervals = list(np.diff(stamps[1:]) * 1000.0) or [(stamps[-1] - stamps[0]) * 1000.0]
        frames = len(stamps) - 1
        sustained = (frames - 1) / (stamps[-1] - stamps[1]) if frames > 1 and stamps[-1] > stamps[1] else None
        return Timing(
            intervals,
            1,
            fps=sustained,
            extra={
                "frames_streamed": frames,
                "wall_ms": sig((stamps[-1] - stamps[0]) * 1000.0),
                "first_frame_ms": sig((stamps[1] - stamps[0]) * 1000.0),
            },
        )


# ----------------------------------------------------------------------------------------------
# The whole run


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _set_torch_threads(threads: int | None) -> None:
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


def _open(
    name: str, bundle: Bundle, device: str, precision: str, options: dict[str, Any], threads: int | None
) -> Backend:
    opts = dict(options)
    if name == "torch":
        _set_torch_threads(threads)
    elif name in ("onnxruntime", "openvino") and threads is not None and device != "cuda":
        opts.setdefault("threads", threads)
    return open_backend(name, bundle, device=device, precision=precision, **opts)


def _baseline_options(device: str) -> dict[str, Any]:
    """The torch backend as the reference runs: its formulation, eager, no CUDA graphs, default memory layout,
    PyTorch's default cuDNN algorithm choice (no benchmarking)."""
    options: dict[str, Any] = {"formulation": BASELINE["formulation"]}
    if device == "cuda":
        options.update(cuda_graphs=False, channels_last=False, compile=False, cudnn_benchmark=False)
    return options


def _cuda_runtime_finds_gpu() -> bool:
    """True when cuda-python is installed and the CUDA runtime sees a GPU (how TensorRT finds one)."""
    from lgfa_deploy.backends.tensorrt_runtime import import_cudart

    try:
        cudart = import_cudart()
    except LgfaError:
        return False
    err, count = cudart.cudaGetDeviceCount()
    return err == cudart.cudaError_t.cudaSuccess and count > 0


def _resolve_device(name: str, backends: list[str]) -> str:
    """``auto`` -> "cuda" when a compared backend finds a GPU, else "cpu"; TensorRT alone is always "cuda"
    (it runs nowhere else: without a GPU it says so itself)."""
    if name != "auto":
        return name
    if "tensorrt" in backends and (set(backends) == {"tensorrt"} or _cuda_runtime_finds_gpu()):
        return "cuda"
    if "onnxruntime" in backends:
        try:
            import onnxruntime

            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                return "cuda"
        except ImportError:
            pass
    if "torch" in backends:
        try:
            import torch
        except ImportError:
            return "cpu"
        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def check_config(config: BenchConfig, bundle: Bundle) -> None:
    """Bad settings raise :class:`LgfaError` before anything is opened."""
    spec = bundle.graph("synthesis").batch
    text_spec = bundle.graph("text_encoder").batch
    for batch in config.batches:
        if not spec.min <= batch <= spec.max or batch > text_spec.max:
            raise LgfaError(
                f"batch {batch} is outside what bundle {bundle.root} declares "
                f"(synthesis {spec.min}-{spec.max}, text encoder {text_spec.min}-{text_spec.max})"
            )
    for name, value in (("iters", config.iters), ("frames", config.frames)):
        if value < 1:
            raise LgfaError(f"--{name} must be at least 1, got {value}")
    if config.warmup < 0:
        raise LgfaError(f"--warmup must be 0 or more, got {config.warmup}")
    if config.threads is not None and config.threads < 1:
        raise LgfaError(f"--threads must be at least 1, got {config.threads}")
    unknown = sorted(set(config.stages) - set(STAGES))
    if unknown:
        raise LgfaError(f"unknown stage {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if not config.texts or not all(t.strip() for t in config.texts):
        raise LgfaError("give at least one non-empty --text")


def bundle_description(bundle: Bundle) -> dict[str, Any]:
    """Preset, resolution and weight provenance of a bundle, for the results file."""
    return {
        "path": str(bundle.root),
        "preset": bundle.preset,
        "resolution": bundle.resolution,
        "n_latent": bundle.n_latent,
        "style_dim": bundle.style_dim,
        "frames": bundle.frames,
        "random_init": bundle.random_init,
        "provenance": bundle.manifest.get("provenance", {}),
        "exporter": bundle.manifest.get("exporter", {}),
        "created": bundle.manifest.get("created"),
        "graphs": {
            name: {p: entry["sha256"] for p, entry in bundle.manifest["graphs"][name]["files"].items()}
            for name in bundle.graph_names
        },
    }


def synthesis_costs(bundle: Bundle, precisions: list[str], batches: list[int]) -> dict[str, dict[str, Any]]:
    """FLOPs and bytes of the synthesis graph per precision, at batch 1 and per frame at each batch.

    The cost is linear in the batch (weights are read once per run, activations scale), so it is
    counted at batches 1 and 2 and extended to the others.
    """
    from lgfa_deploy.flops import graph_cost

    costs: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        graph_precision = precision if precision in bundle.precisions("synthesis") else "fp32"
        path = bundle.graph_path("synthesis", graph_precision)
        one = graph_cost(path, batch=1)
        two = graph_cost(path, batch=2)
        per_batch = {}
        for b in sorted(set(batches) | {1}):
            flops = one.flops + (b - 1) * (two.flops - one.flops)
            nbytes = one.bytes + (b - 1) * (two.bytes - one.bytes)
            min_bytes = one.min_bytes + (b - 1) * (two.min_bytes - one.min_bytes)
            per_batch[str(b)] = {
                "flops_per_frame": flops / b,
                "bytes_per_frame": nbytes / b,
                "min_bytes_per_frame": min_bytes / b,
            }
        costs[precision] = {"graph": path.name, "graph_precision": graph_precision, "batch_1": one.to_dict(), "per_frame": per_batch}
    return costs


def _physical(row: dict[str, Any], costs: dict[str, Any], peaks: dict[str, Any]) -> dict[str, Any]:
    """Achieved FLOP/s and bytes/s of a synthesis row and their fractions of the device peaks."""
    cost = costs.get(row["precision"])
    if cost is None or row.get("fps") is None:
        return {}
    per_frame = cost["per_frame"][str(row["batch"])]
    fps = row["fps"]
    achieved_tflops = per_frame["flops_per_frame"] * fps / 1e12
    achieved_gbps = per_frame["bytes_per_frame"] * fps / 1e9
    # The peak of the arithmetic that ran (row "math"): none is tabulated for TF32.
    peak_key = {"fp16": "fp16_tflops", "fp32": "fp32_tflops"}.get(row.get("math", row["precision"]))
    peak_tflops = peaks.get(peak_key) if peak_key else None
    bandwidth = peaks.get("bandwidth_gbps")
    bounds = []
    if peak_tflops:
        bounds.append(peak_tflops * 1e12 / per_frame["flops_per_frame"])
    if bandwidth:
        bounds.append(bandwidth * 1e9 / per_frame["bytes_per_frame"])
    return {
        "flops_per_frame": per_frame["flops_per_frame"],
        "bytes_per_frame": per_frame["bytes_per_frame"],
        "achieved_tflops": sig(achieved_tflops),
        "flops_fraction": sig(achieved_tflops / peak_tflops) if peak_tflops else None,
        "peak_used": peak_key if peak_tflops else None,
        "achieved_gbps": sig(achieved_gbps),
        "bandwidth_fraction": sig(achieved_gbps / bandwidth) if bandwidth else None,
        "roofline_fps": sig(min(bounds)) if bounds else None,
    }


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Give every row its ratio to the baseline row of the same stage (None where there is none)."""
    baseline = {r["stage"]: r for r in results if r.get("baseline")}
    for row in results:
        base = baseline.get(row["stage"])
        if base is None:
            row["ratio"] = None
        elif row["stage"] in LATENCY_STAGES or row.get("fps") is None or not base.get("fps"):
            row["ratio"] = sig(base["p50_ms"] / row["p50_ms"]) if row["p50_ms"] > 0 else None
        else:
            row["ratio"] = sig(row["fps"] / base["fps"])


def _rows(
    backend: str, precision: str, batch: int, timings: dict[str, Timing], options: dict[str, Any], baseline: bool
) -> list[dict[str, Any]]:
    rows = []
    for stage, timing in timings.items():
        row = {"backend": backend, "precision": precision, "batch": batch, "stage": stage, **timing.row()}
        if stage in LATENCY_STAGES:
            row["fps"] = None
        row["options"] = options
        row["baseline"] = baseline
        rows.append(row)
    return rows


def run_bench(
    config: BenchConfig, on_partial: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Measure every configuration of ``config`` in this process; returns the results document.

    ``on_partial`` gets a partial document (``"complete": false``: the rows so far with their ratios,
    no physical limits) after each batch size, so that a run stopped part-way keeps its figures.
    """
    bundle = Bundle.open(config.bundle)
    check_config(config, bundle)
    photo = None
    if config.image is not None:
        from lgfa_deploy.align import read_image

        bundle.require_photo()
        photo = read_image(config.image)
    device = _resolve_device(config.device, config.backends)
    threads = config.threads
    if threads is None and device == "cpu":
        threads = device_info.cpu_description()["usable_cpus"]
    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = _load_average()
    # CPU peaks are measured before the backends load and again at the end; the best is kept.
    early_peaks = device_info.measure_cpu_peaks(threads) if device == "cpu" and config.measure_cpu_peak else None
    log.info("bench: bundle %s (%s, %d px) on %s, %s threads", bundle.root, bundle.preset, bundle.resolution, device, threads)

    plan: list[tuple[str, str, dict[str, Any], list[int], bool]] = []
    baseline_options = _baseline_options(device)
    if config.baseline:
        plan.append(("torch", "fp32", baseline_options, [1], True))
    for name in config.backends:
        for precision in config.precisions:
            plan.append((name, precision, config.backend_options.get(name, {}), list(config.batches), False))

    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    memory: list[dict[str, Any]] = []

    head: dict[str, Any] = {  # what a partial document and the finished one share
        "schema": SCHEMA,
        "complete": False,
        "created": started.isoformat(timespec="seconds"),
        "command": None,
        "device": None,
        "bundle": bundle_description(bundle),
        "settings": {
            "device": device,
            "threads": threads,
            "iters": config.iters,
            "warmup": config.warmup,
            "batches": config.batches,
            "precisions": config.precisions,
            "backends": config.backends,
            "stream_frames": config.frames,
            "texts": config.texts,
            "seed": config.seed,
            "backend_options": config.backend_options,
        },
        "baseline": {**BASELINE, "options": baseline_options},
        "gpu_memory": memory,
        "skipped": skipped,
    }

    def partial() -> dict[str, Any]:
        if head["device"] is None:  # described once, without the CPU peak measurement that ends the run
            head["device"] = device_info.describe_device(device, measure_cpu=False, threads=threads)
        rows = [dict(row) for row in results]
        add_ratios(rows)
        return {**head, "results": rows}

    with tempfile.TemporaryDirectory(prefix="lgfa-bench-") as tmp:
        for name, precision, options, batches, is_baseline in plan:
            try:
                backend = _open(name, bundle, device, precision, options, threads)
            except LgfaError as exc:
                if is_baseline:
                    raise LgfaError(
                        f"the baseline (torch eager fp32, reference formulation) cannot run: {exc}; or pass --no-baseline"
                    ) from None
                log.warning("skipping %s %s: %s", name, precision, exc)
                skipped.append({"backend": name, "precision": precision, "reason": str(exc)})
                continue
            label = BASELINE_LABEL if is_baseline else f"{name} {precision}"
            try:
                runner = StageRunner(bundle, backend, config, Path(tmp))
                for batch in batches:
                    log.info("bench: %s, batch %d", label, batch)
                    timings = runner.measure(batch)
                    if photo is not None and batch == min(batches):
                        timings.update(runner.measure_photo(photo))
                    rows = _rows(name, precision, batch, timings, options, is_baseline)
                    rewrites = getattr(backend, "rewrites", None)
                    executed = getattr(backend, "executed", None)
                    for row in rows:
                        row["math"] = getattr(backend, "math", precision)
                        row["peak_gpu_memory_mib"] = runner.memory.peak
                        if rewrites:
                            row["cpu_rewrites"] = rewrites
                        if executed:  # what OpenVINO compiled: precision hint and layers per precision
                            row["executed_precision"] = backend.executed_precision
                            row["executed"] = executed
                    results.extend(rows)
                    if on_partial is not None:
                        on_partial(partial())
                memory.append({"backend": name, "precision": precision, "baseline": is_baseline,
                               "peak_gpu_memory_mib": runner.memory.peak, "method": runner.memory.method})
            finally:
                backend.close()
    if not any(not r["baseline"] for r in results):
        raise LgfaError("no backend could run; see the warnings above")

    add_ratios(results)
    device_doc = device_info.describe_device(
        device, measure_cpu=config.measure_cpu_peak, threads=threads, earlier=early_peaks
    )
    costs = synthesis_costs(bundle, sorted({r["precision"] for r in results}), config.batches)
    for row in results:
        if row["stage"] in FRAME_STAGES:
            row.update(_physical(row, costs, device_doc["peaks"]))
    if any((r.get("flops_fraction") or 0) > 1 for r in results) and device == "cpu":
        log.warning(
            "a row exceeds the measured CPU peak: its backend needs fewer multiply-adds than the direct convolutions "
            "counted (onnxruntime's Winograd rewrite), or other work on this machine disturbed the peak measurement"
        )
    return {
        **head,  # "command" is filled in by the CLI
        "complete": True,
        "device": device_doc,
        "physical_limit": {"peaks": device_doc["peaks"], "synthesis": costs},
        "peak_host_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # 1/5/15-minute load averages: other work on the machine disturbs CPU timings.
        "load_average": {"before": load_before, "after": _load_average()},
        "definitions": {
            "p50_ms": "median latency of one call of the stage at this batch (stream stages: between frames)",
            "fps": "frames per second: items_per_call * 1000 / p50_ms; stream stages: (frames - 1) / "
            "(last frame - first frame); none for first_frame",
            "ratio": "fps / baseline fps of the same stage (first_frame: baseline p50 / p50); "
            "baseline: torch eager fp32 batch 1 in the reference formulation, its own run in this process",
            "flops_fraction": "achieved FLOP/s of synthesis / the device's peak at this precision; the FLOPs are "
            "those of the graph's direct convolutions, so a backend that needs fewer (onnxruntime on the CPU runs "
            "wide 3x3 convolutions as Winograd F(4x4, 3x3), see cpu_rewrites) can pass 1",
            "bandwidth_fraction": "achieved bytes/s (unfused memory model, see physical_limit) / peak bandwidth",
            "math": "the arithmetic synthesis ran in: fp32 (TF32 off), tf32 (FP32 storage, TF32 convolutions) or fp16",
            "peak_used": "the device peak flops_fraction divides by (none for tf32: no TF32 peak is tabulated)",
        },
        "results": results,
    }
