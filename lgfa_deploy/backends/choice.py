"""``--backend auto``: the fastest installed backend and precision that keeps a bundle's fidelity here.

The rule, from the CPU's flags and from measurements committed under benchmarks/results/:

1. On a GPU (onnxruntime finds CUDA): onnxruntime on CUDA, fp32 unless a precision is asked for.
2. On a CPU that computes bf16 natively (OpenVINO reports BF16 among its OPTIMIZATION_CAPABILITIES:
   AVX512_BF16 or AMX-BF16) with openvino installed: openvino bf16, with the style and demodulation
   vectors and the ToRGBs kept fp32 (:mod:`lgfa_deploy.backends.precision_policy`). Plain bf16
   measured 41 dB PSNR against fp32 at 256 px and 34 dB at 1024 px (issue 17, an AVX-512 BF16 EPYC);
   the kept layers hold :data:`BF16_MIN_PSNR` in the emulation of benchmarks/bf16_emulation.py
   (43 dB at 256 px, 39 dB at 1024 px; plain bf16 there: 37 and 36 dB).
3. Otherwise fp32 on the backend :func:`fastest_fp32` names for the bundle's resolution.

An explicit precision narrows the choice to the backends that run it. The choice is logged with its
reason, and the backend's own check still refuses a precision the CPU would not run natively.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

from lgfa_deploy.bundle import Bundle
from lgfa_deploy.errors import LgfaError

log = logging.getLogger(__name__)

BF16_MIN_PSNR = 38.0
"""Frames at bf16 must stay at least this close to fp32 (dB PSNR over [-1, 1])."""
OPENVINO_FP32_FROM = 512
"""From this resolution up, openvino fp32 outran onnxruntime fp32 (with its Winograd rewrites) on
the CPUs measured: the 2-core AVX2 EPYC of benchmarks/results/ (1024 px: 1,055 ms against
onnxruntime's best 1,515 ms; 256 px: 703 against 603 ms) and the AVX-512 EPYC of issue 17
(1024 px: 856 against 1,069 ms; 256 px: 470 against 387 ms); below it onnxruntime did."""


@dataclass(frozen=True)
class Choice:
    """The backend and precision ``auto`` picked, and why."""

    backend: str
    precision: str
    reason: str


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _cuda_found() -> bool:
    if not _installed("onnxruntime"):
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _openvino_capabilities() -> list[str]:
    import openvino

    return [str(c) for c in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def fastest_fp32(resolution: int, installed: list[str]) -> str:
    """The faster fp32 CPU backend at ``resolution`` among ``installed`` (see :data:`OPENVINO_FP32_FROM`)."""
    order = ["openvino", "onnxruntime"] if resolution >= OPENVINO_FP32_FROM else ["onnxruntime", "openvino"]
    return next(name for name in order if name in installed)


def choose_backend(bundle: Bundle, device: str, precision: str) -> Choice:
    """Apply the rule of this module; ``precision`` "auto" lets it choose the precision too."""
    if device == "cuda" or (device == "auto" and _cuda_found()):
        return Choice("onnxruntime", "fp32" if precision == "auto" else precision, "a CUDA GPU: onnxruntime on CUDA")
    installed = [name for name in ("openvino", "onnxruntime") if _installed(name)]
    if not installed:
        raise LgfaError("--backend auto found no CPU backend; install one with: pip install 'lgfa-deploy[openvino]'")
    if precision == "fp32":
        why_fp32 = "fp32 asked for"
    elif "openvino" not in installed:
        if precision != "auto":
            raise LgfaError(f"--backend auto runs {precision} on the CPU with openvino, which is not installed; "
                            "pip install 'lgfa-deploy[openvino]'")
        why_fp32 = "openvino is not installed"
    else:
        wanted = "bf16" if precision == "auto" else precision
        capabilities = _openvino_capabilities()
        if wanted.upper() in capabilities or precision != "auto":
            return Choice("openvino", wanted, f"OpenVINO finds {', '.join(capabilities)} on this CPU")
        why_fp32 = f"this CPU has no native bf16 (OpenVINO finds {', '.join(capabilities)})"
    name = fastest_fp32(bundle.resolution, installed)
    return Choice(name, "fp32", f"{why_fp32}; {name} is the faster fp32 CPU backend at {bundle.resolution} px")
