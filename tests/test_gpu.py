"""The GPU path against the CPU reference: torch (FP32, FP16, CUDA graphs, compile), onnxruntime's
CUDA provider, TensorRT, and a long stream. Every test needs CUDA (marker ``gpu``: skipped cleanly
without it); the onnxruntime and TensorRT ones also skip where onnxruntime-gpu or TensorRT is absent.
``benchmarks/gpu_check.py`` runs them first on a GPU machine."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lgfa_deploy.backends import open_backend, to_uint8_bgr
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.pipeline import Animator
from tests.helpers import TINY_MAX_BATCH, copy_bundle, psnr

pytestmark = pytest.mark.gpu

TEXT = "The person is smiling."
MIN_PSNR = {"fp32": 45.0, "fp16": 30.0}
"""dB of uint8 frames against the CPU's eager FP32: FP32 with TF32 off differs by rounding only."""


@pytest.fixture(scope="module")
def latents(tiny_bundle: Path) -> np.ndarray:
    """One sentence's per-frame W+ on the CPU reference, batch-sized slices of it are rendered below."""
    with open_backend("torch", Bundle.open(tiny_bundle), device="cpu") as backend:
        return Animator(Bundle.open(tiny_bundle), backend).latents(TEXT, seed=0)


@pytest.fixture(scope="module")
def reference(tiny_bundle: Path, latents: np.ndarray) -> np.ndarray:
    with open_backend("torch", Bundle.open(tiny_bundle), device="cpu") as backend:
        return np.concatenate([backend.frames(latents[i : i + TINY_MAX_BATCH]) for i in range(0, len(latents), TINY_MAX_BATCH)])


def _render(backend, latents: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([backend.frames(latents[i : i + batch]) for i in range(0, len(latents), batch)])


@pytest.mark.parametrize(
    ("precision", "options"),
    [
        ("fp32", {"cuda_graphs": False}),
        ("fp32", {"cuda_graphs": True}),
        ("fp16", {"cuda_graphs": False}),
        ("fp16", {"cuda_graphs": True}),
        ("fp16", {"cuda_graphs": True, "compile": "default"}),
    ],
    ids=["fp32-eager", "fp32-graphs", "fp16-eager", "fp16-graphs", "fp16-graphs-compile"],
)
def test_torch_on_cuda_matches_the_cpu(tiny_bundle: Path, latents, reference, precision: str, options: dict) -> None:
    with open_backend("torch", Bundle.open(tiny_bundle), device="cuda", precision=precision, **options) as backend:
        assert backend.math == precision
        for batch in (1, 3, TINY_MAX_BATCH):  # 3: a leftover size, padded to 4 when compiled
            frames = _render(backend, latents, batch)
            assert frames.dtype == np.uint8 and frames.shape == reference.shape
            assert psnr(frames, reference) >= MIN_PSNR[precision], (batch, psnr(frames, reference))
        again = _render(backend, latents, TINY_MAX_BATCH)  # replayed graphs give the same frames
        assert np.array_equal(again, _render(backend, latents, TINY_MAX_BATCH))


def test_torch_refuses_two_graph_mechanisms(tiny_bundle: Path) -> None:
    from lgfa_deploy.errors import LgfaError

    with pytest.raises(LgfaError, match="adds its own CUDA graphs"):
        open_backend("torch", Bundle.open(tiny_bundle), device="cuda", compile="reduce-overhead")


def test_onnxruntime_cuda_provider_is_really_used(tiny_bundle: Path, latents, reference) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    with open_backend("onnxruntime", Bundle.open(tiny_bundle), device="cuda") as backend:
        frames = _render(backend, latents, TINY_MAX_BATCH)
        assert all(providers[0] == "CUDAExecutionProvider" for providers in backend.providers.values())
    assert psnr(frames, reference) >= MIN_PSNR["fp32"]


def test_tensorrt_engines_build_and_match_onnxruntime(tiny_bundle: Path, tmp_path: Path, latents) -> None:
    pytest.importorskip("tensorrt")
    pytest.importorskip("cuda")
    from lgfa_deploy.cli import main

    bundle_dir = copy_bundle(tiny_bundle, tmp_path)
    assert main(["build-engines", str(bundle_dir)]) == 0
    bundle = Bundle.open(bundle_dir)
    with open_backend("onnxruntime", bundle, device="cpu") as ort_backend:
        expected = ort_backend.run("synthesis", {"latents": latents[:TINY_MAX_BATCH]})["image"]
    with open_backend("tensorrt", bundle) as backend:
        image = backend.run("synthesis", {"latents": latents[:TINY_MAX_BATCH]})["image"]
        frames = backend.frames(latents[:TINY_MAX_BATCH])
        frames_again = backend.frames(latents[:TINY_MAX_BATCH])
    np.testing.assert_allclose(image, expected, atol=2e-3)
    assert np.array_equal(frames, to_uint8_bgr(image)) and np.array_equal(frames, frames_again)


def test_hundred_sentence_stream_keeps_gpu_memory_flat(tiny_bundle: Path) -> None:
    import torch

    texts = [f"The person is {mood} ({i})." for i, mood in enumerate(["smiling", "angry", "surprised", "sad"] * 25)]
    bundle = Bundle.open(tiny_bundle)
    with Animator(bundle, open_backend("torch", bundle, device="cuda", precision="fp16")) as animator:
        animator.warm_up()
        reserved, segment = [], -1
        for frame in animator.stream_frames(texts, seed=0):
            if frame.segment != segment:  # the first frame of each sentence
                segment = frame.segment
                reserved.append(torch.cuda.memory_reserved())
    assert len(reserved) == 100
    # What torch holds on the GPU stops growing once the stream runs: at most one small 2 MiB segment more.
    assert max(reserved[10:]) - reserved[10] <= 2 << 20, reserved[10:]
