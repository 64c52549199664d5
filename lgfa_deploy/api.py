"""The Python API, as small as the command line.

    import lgfa_deploy
    with lgfa_deploy.open() as animator:                 # the embedded faces-64 model; or open("engines/ffhq-256")
        frames = animator.animate("The person is smiling.", seed=3)   # uint8 BGR [T, H, W, 3]
        for frame in animator.stream(["The person is smiling.", "The person is angry."]):
            ...                                                       # uint8 BGR [H, W, 3]
        face = animator.invert("photo.jpg")        # aligned, inverted (e4e), embedded (CLIP) once
        frames = animator.animate("The person is smiling.", image=face)
        numpy.save("face.npy", face.content)       # later: animate(..., latent="face.npy"), text-only motion
"""
from __future__ import annotations

import os
from typing import Any

from lgfa_deploy.backends.base import open_backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.default_bundle import bundle_or_default
from lgfa_deploy.pipeline import Animator


def open(
    bundle_dir: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    *,
    device: str = "auto",
    precision: str = "auto",
    micro_batch: int | None = None,
    verify_hashes: bool = True,
    **backend_options: Any,
) -> Animator:
    """Open a bundle (default: the embedded faces-64 model) on a backend ("auto", "onnxruntime", "openvino",
    "tensorrt" or "torch") and return its :class:`Animator`.

    ``backend="auto"`` picks the fastest installed backend and precision that keeps the bundle's
    fidelity on this machine (:mod:`lgfa_deploy.backends.choice`) and logs its choice. ``device``:
    "cpu", "cuda" or "auto" (the GPU when the backend finds one); ``precision``: "auto", "fp32",
    "fp16" or "bf16" (openvino, on CPUs with native bf16); ``backend_options`` go to the backend class (e.g. ``compile=True`` for torch). A missing or
    tampered bundle, an unknown or uninstalled backend raise :class:`lgfa_deploy.errors.LgfaError`.
    """
    bundle = Bundle.open(bundle_or_default(bundle_dir), verify_hashes=verify_hashes)
    runtime = open_backend(backend, bundle, device=device, precision=precision, **backend_options)
    try:
        return Animator(bundle, runtime, micro_batch=micro_batch)
    except BaseException:
        runtime.close()
        raise
