"""The machine a benchmark ran on: processor or GPU, driver, CUDA, library versions, and peak rates.

Peak throughput and memory bandwidth of GPUs come from NVIDIA's spec sheets (``GPU_PEAKS``,
dense figures, no structured sparsity). A CPU's peaks are unknown unless measured:
:func:`measure_cpu_peaks` times a numpy float32 matrix product and a large array copy, and the
result is labelled as measured. Nothing here imports torch.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LIBRARIES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "torch",
    "tensorrt",
    "cuda-python",
    "opencv-python-headless",
    "opencv-python",
    "open_clip_torch",
    "matplotlib",
)


@dataclass(frozen=True)
class Peaks:
    """Peak dense FP32 and FP16 throughput (TFLOP/s) and memory bandwidth (GB/s) of one device."""

    fp32_tflops: float | None
    fp16_tflops: float | None
    bandwidth_gbps: float | None
    source: str

    def tflops(self, precision: str) -> float | None:
        return self.fp16_tflops if precision == "fp16" else self.fp32_tflops

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Spec-sheet figures. FP16 is the dense Tensor Core rate (NVIDIA's sheets print the 2:4-sparse
# rate, twice this, with an asterisk); FP32 the CUDA-core rate; bandwidth the DRAM/HBM rate.
#   H100 SXM5 / PCIe / NVL: "NVIDIA H100 Tensor Core GPU" datasheet: FP32 67 / 51 / 60 TFLOPS,
#       FP16 Tensor 1,979 / 1,513 / 1,671 TFLOPS sparse, memory 3.35 / 2.0 / 3.9 TB/s.
#   H200 SXM / NVL: "NVIDIA H200 Tensor Core GPU" datasheet: FP32 67 / 60 TFLOPS,
#       FP16 Tensor 1,979 / 1,671 TFLOPS sparse, memory 4.8 TB/s.
#   A100: "NVIDIA A100 Tensor Core GPU" datasheet: FP32 19.5 TFLOPS, FP16 Tensor 312 TFLOPS
#       dense; memory 80GB SXM 2,039 GB/s, 80GB PCIe 1,935 GB/s, 40GB 1,555 GB/s.
#   L4: "NVIDIA L4 Tensor Core GPU" datasheet: FP32 30.3 TFLOPS, FP16 Tensor 242 TFLOPS sparse, 300 GB/s.
#   L40S: "NVIDIA L40S" datasheet: FP32 91.6 TFLOPS, FP16 Tensor 733 TFLOPS sparse, 864 GB/s.
#   A10: "NVIDIA A10 Tensor Core GPU" datasheet: FP32 31.2 TFLOPS, FP16 Tensor 125 TFLOPS dense, 600 GB/s.
#   T4: "NVIDIA T4" datasheet: FP32 8.1 TFLOPS, FP16 (mixed) 65 TFLOPS, 320 GB/s.
#   RTX 4090: "NVIDIA Ada GPU Architecture" whitepaper, appendix A: FP32 82.6 TFLOPS, FP16 Tensor
#       with FP32 accumulate 165.2 TFLOPS dense (330.3 with FP16 accumulate), 1,008 GB/s.
GPU_PEAKS: tuple[tuple[str, Peaks], ...] = (
    (r"h200.*nvl", Peaks(60.0, 835.5, 4800.0, "spec sheet: NVIDIA H200 NVL")),
    (r"h200", Peaks(67.0, 989.5, 4800.0, "spec sheet: NVIDIA H200 SXM")),
    (r"h100.*nvl", Peaks(60.0, 835.5, 3900.0, "spec sheet: NVIDIA H100 NVL")),
    (r"h100.*pcie", Peaks(51.0, 756.5, 2000.0, "spec sheet: NVIDIA H100 PCIe")),
    (r"h100", Peaks(67.0, 989.5, 3350.0, "spec sheet: NVIDIA H100 SXM5")),
    (r"a100.*80gb.*pcie|a100.*pcie.*80gb", Peaks(19.5, 312.0, 1935.0, "spec sheet: NVIDIA A100 80GB PCIe")),
    (r"a100.*80gb", Peaks(19.5, 312.0, 2039.0, "spec sheet: NVIDIA A100 80GB SXM")),
    (r"a100", Peaks(19.5, 312.0, 1555.0, "spec sheet: NVIDIA A100 40GB")),
    (r"l40s", Peaks(91.6, 366.5, 864.0, "spec sheet: NVIDIA L40S")),
    (r"\bl4\b", Peaks(30.3, 121.0, 300.0, "spec sheet: NVIDIA L4")),
    (r"\ba10\b", Peaks(31.2, 125.0, 600.0, "spec sheet: NVIDIA A10")),
    (r"\bt4\b", Peaks(8.1, 65.0, 320.0, "spec sheet: NVIDIA T4")),
    (r"rtx 4090", Peaks(82.6, 165.2, 1008.0, "whitepaper: NVIDIA Ada (RTX 4090), FP16 with FP32 accumulate")),
)


def gpu_peaks(name: str) -> Peaks | None:
    """Spec-sheet peaks of the GPU called ``name`` (as nvidia-smi prints it), or None if not in the table."""
    lowered = name.lower()
    for pattern, peaks in GPU_PEAKS:
        if re.search(pattern, lowered):
            return peaks
    return None


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the numbers (absent ones left out)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


CPU_FEATURES: dict[str, str] = {
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "avx_vnni": "AVX-VNNI",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512_vnni": "AVX-512 VNNI",
    "avx512_bf16": "AVX512_BF16",
    "avx512_fp16": "AVX512_FP16",
    "amx_tile": "AMX-TILE",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
    "amx_fp16": "AMX-FP16",
}
"""The /proc/cpuinfo flags that decide how fast a network runs on a CPU, and how Intel and AMD name them."""
NATIVE_PRECISION_FLAGS: dict[str, tuple[str, ...]] = {
    "bf16": ("avx512_bf16", "amx_bf16"),
    "fp16": ("avx512_fp16", "amx_fp16"),
}
"""A reduced precision is native when the CPU has one of these flags (the ISAs oneDNN, and so OpenVINO's
CPU plugin, run bf16 / fp16 convolutions on); without one, OpenVINO runs such a model in fp32."""


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text (empty when there is none)."""
    line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[1].split()) if ":" in line else set()


def native_precisions(flags: set[str]) -> list[str]:
    """The precisions a CPU with ``flags`` computes natively: fp32 always, bf16 / fp16 by :data:`NATIVE_PRECISION_FLAGS`."""
    return ["fp32", *(p for p, needs in NATIVE_PRECISION_FLAGS.items() if flags & set(needs))]


def openvino_capabilities() -> list[str] | None:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU (its own CPUID reading), None without openvino."""
    try:
        import openvino
    except ImportError:
        return None
    return [str(c) for c in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def cpu_description() -> dict[str, Any]:
    """Processor model, core counts, vector extensions, native precisions and memory of this machine."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    flags = cpu_flags(cpuinfo)
    meminfo = _read("/proc/meminfo")
    match = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return {
        "model": model or platform.processor() or platform.machine(),
        "architecture": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "vector_extensions": sorted(flags & set(CPU_FEATURES)),
        "native_precisions": native_precisions(flags),
        "openvino_capabilities": openvino_capabilities(),
        "virtualized": "hypervisor" in flags,
        "memory_gib": round(int(match.group(1)) / 2**20, 1) if match else None,
        "os": platform.platform(),
    }


def _nvidia_smi(*args: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("nvidia-smi failed: %s", exc)
        return None
    return done.stdout


def gpu_description(index: int = 0) -> dict[str, Any] | None:
    """Name, driver, CUDA version, memory and compute capability of GPU ``index``, from nvidia-smi."""
    out = _nvidia_smi(
        "--query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit",
        "--format=csv,noheader,nounits",
        f"--id={index}",
    )
    if not out or not out.strip():
        return None
    fields = [f.strip() for f in out.strip().splitlines()[0].split(",")]
    fields += [""] * (6 - len(fields))
    header = _nvidia_smi() or ""
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)

    def number(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None

    return {
        "name": fields[0],
        "driver": fields[1],
        "cuda_driver_api": cuda.group(1) if cuda else None,
        "memory_mib": number(fields[2]),
        "compute_capability": fields[3] or None,
        "max_sm_clock_mhz": number(fields[4]),
        "power_limit_w": number(fields[5]),
    }


def measure_cpu_peaks(threads: int | None = None, size: int = 2048, repeats: int = 5) -> Peaks:
    """Measured CPU peaks: best numpy float32 ``size``^3 matmul rate and best large-array copy rate.

    ``threads`` is recorded for the label only: numpy's BLAS uses its own default thread count.
    FP16 is left unknown (numpy has no fast FP16 matmul to measure it with).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    np.matmul(a, b)
    best = min(_timed(lambda: np.matmul(a, b)) for _ in range(repeats))
    tflops = 2 * size**3 / best / 1e12
    count = 32 * 2**20  # 128 MiB of float32, far beyond any cache
    src = np.ones(count, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best_copy = min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeats))
    bandwidth = 2 * src.nbytes / best_copy / 1e9  # read + write
    label = (
        f"measured: numpy float32 {size}x{size} matmul and a 128 MiB copy (read + write), best of {repeats}"
        + (f"; benchmark threads {threads}" if threads else "")
    )
    return Peaks(round(tflops, 4), None, round(bandwidth, 2), label)


def best_of(*measured: Peaks) -> Peaks:
    """The highest of several measurements of the same peaks (other work on the machine only lowers them)."""
    def top(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    return Peaks(
        top([p.fp32_tflops for p in measured]),
        top([p.fp16_tflops for p in measured]),
        top([p.bandwidth_gbps for p in measured]),
        measured[0].source + (f"; best of {len(measured)} measurements (before and after the benchmark)" if len(measured) > 1 else ""),
    )


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def slug(text: str) -> str:
    """A file-name-safe lowercase slug: ``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def describe_device(
    device: str, measure_cpu: bool = True, threads: int | None = None, earlier: Peaks | None = None
) -> dict[str, Any]:
    """Everything that shapes a benchmark's numbers, as JSON-ready data.

    ``device`` is "cpu" or "cuda". On the CPU the peaks are measured when ``measure_cpu`` (else
    unknown), and combined with an ``earlier`` measurement (the best of both is kept); on a GPU
    they come from :data:`GPU_PEAKS` when its name is there.
    """
    cpu = cpu_description()
    info: dict[str, Any] = {"kind": device, "cpu": cpu, "gpu": None, "libraries": library_versions()}
    if device == "cuda":
        gpu = gpu_description()
        info["gpu"] = gpu
        name = gpu["name"] if gpu else "unknown NVIDIA GPU"
        peaks = gpu_peaks(name) if gpu else None
        info["name"] = name
        info["driver"] = gpu["driver"] if gpu else None
        info["cuda"] = _cuda_runtime_version() or (gpu or {}).get("cuda_driver_api")
        info["peaks"] = (peaks or Peaks(None, None, None, f"unknown: {name} is not in the spec-sheet table")).to_dict()
    else:
        info["name"] = cpu["model"]
        info["driver"] = None
        info["cuda"] = None
        if measure_cpu:
            peaks = measure_cpu_peaks(threads)
            peaks = best_of(earlier, peaks) if earlier is not None else peaks
        else:
            peaks = Peaks(None, None, None, "unknown (not measured)")
        info["peaks"] = peaks.to_dict()
    info["slug"] = slug(f"{'cpu-' if device != 'cuda' else ''}{info['name']}")
    return info


def _cuda_runtime_version() -> str | None:
    """The CUDA runtime torch was built with, if torch is already imported (never imported here)."""
    torch = sys.modules.get("torch")
    version = getattr(getattr(torch, "version", None), "cuda", None) if torch else None
    return str(version) if version else None
