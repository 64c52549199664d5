"""TensorRT 10 and cuda-python, imported lazily: what the engine builder and the TensorRT backend share.

Both ends accept exactly TensorRT 10 (an engine runs only under the TensorRT that built it, and
TensorRT 11 changes the builder's precision API), use cuda-python's runtime bindings for CUDA 12
(``cuda-python>=12.6,<13``: 13.x needs a CUDA 13 driver, and the TensorRT 10 and onnxruntime-gpu
wheels this project targets are CUDA 12 builds), identify a GPU by its name and compute capability,
and log TensorRT's messages at the level of ``lgfa -v``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from lgfa_deploy.errors import LgfaError

TENSORRT_MAJOR = 10
INSTALL_HINT = "pip install 'lgfa-deploy[tensorrt]'"
FRAMES_OUTPUT = "frames"
"""The synthesis engine's extra output: uint8 BGR frames [B, H, W, 3] computed on the device."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, 10.x, or a one-line :class:`LgfaError` saying how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise LgfaError(f"TensorRT is not installed; install it with: {INSTALL_HINT}") from None
    major = int(str(tensorrt.__version__).split(".")[0])
    if major != TENSORRT_MAJOR:
        raise LgfaError(
            f"TensorRT {tensorrt.__version__} is installed, lgfa needs {TENSORRT_MAJOR}.x: {INSTALL_HINT}"
        )
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise LgfaError(f"cuda-python is not installed; install it with: {INSTALL_HINT}") from None
    return cudart


class Cuda:
    """cuda-python runtime calls that raise :class:`RuntimeError` on failure instead of returning codes.

    ``cuda(cudart.cudaMalloc(n))`` returns the value of a call's result tuple (or a tuple of its values).
    """

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def error_name(self, err: Any) -> str:
        name = self.rt.cudaGetErrorName(err)[1]
        return name.decode() if isinstance(name, bytes) else str(name)

    def __call__(self, result: tuple) -> Any:
        err = result[0]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA call failed: {self.error_name(err)}")
        return result[1] if len(result) == 2 else result[1:] or None

    def clear_error(self) -> None:
        """Reset the calling thread's last CUDA error (after a failure that was handled)."""
        self.rt.cudaGetLastError()


@dataclass(frozen=True)
class Gpu:
    """The identity an engine and a timing cache are tied to."""

    index: int
    name: str  # "NVIDIA H100 80GB HBM3"
    compute_capability: str  # "9.0"

    @property
    def slug(self) -> str:
        """The name for keys and file names: "nvidia-h100-80gb-hbm3"."""
        return name_slug(self.name)


def name_slug(name: str) -> str:
    """A GPU name in lower case with runs of other characters as one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def _text(value: Any) -> str:
    """A C string from cuda-python (bytes with trailing NULs, or str) as str."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).split(b"\0", 1)[0].decode(errors="replace")
    return str(value).strip()


def find_gpu(cuda: Cuda, index: int = 0) -> Gpu:
    """GPU ``index`` as the CUDA runtime sees it; one line naming the problem when there is none."""
    rt = cuda.rt
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess or count == 0:
        reason = cuda.error_name(err) if err != rt.cudaError_t.cudaSuccess else "no devices"
        raise LgfaError(f"no usable CUDA GPU ({reason}); is the NVIDIA driver installed and a GPU visible?")
    if not 0 <= index < count:
        raise LgfaError(f"CUDA GPU {index} does not exist; this machine has {count} (0 to {count - 1})")
    props = cuda(rt.cudaGetDeviceProperties(index))
    return Gpu(index, _text(props.name), f"{props.major}.{props.minor}")


def logger_severity(trt: Any) -> Any:
    """TensorRT's log severity for the level ``lgfa`` logs at: warnings normally, everything with -v (debug)."""
    level = logging.getLogger("lgfa_deploy").getEffectiveLevel()
    if level <= logging.DEBUG:
        return trt.Logger.VERBOSE
    if level <= logging.INFO:
        return trt.Logger.WARNING
    return trt.Logger.ERROR
