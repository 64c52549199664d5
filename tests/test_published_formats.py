"""Files in the layouts their authors publish (written by ``tests.published_layouts``, never from our
modules) load, export and verify: a reference ``Iter_*.pth``, a rosinality generator, e4e, OpenAI CLIP."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from lgfa_deploy.cli import main
from tests.published_layouts import (
    TINY_CLIP,
    e4e_checkpoint,
    e4e_encoder_layout,
    openai_clip_layout,
    openai_clip_tensors,
    reference_iter_checkpoint,
    reference_model_layout,
    reference_motion,
    rosinality_checkpoint,
    rosinality_g_ema_layout,
)
from training.checkpoints import load_clip_weights
from training.clip_model import create_clip
from training.e4e import E4E_CONFIGS, Encoder4Editing, load_e4e
from training.presets import get_preset

TINY = get_preset("tiny")
TINY_E4E = E4E_CONFIGS["tiny"]


def tiny_e4e_layout() -> dict[str, tuple[int, ...]]:
    c = TINY_E4E
    return e4e_encoder_layout(c.stage_widths, c.stage_units, c.n_styles, c.style_dim, c.input_size, c.coarse_ind, c.middle_ind)


def shapes_of(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {f"{prefix}{k}": tuple(v.shape) for k, v in module.state_dict().items()}


def test_published_e4e_layout_is_the_ffhq_encoder() -> None:
    """e4e_ffhq_encode.pt's ``encoder.*``: 621 entries, 267 M numbers, shape for shape our Encoder4Editing."""
    layout = e4e_encoder_layout()
    assert len(layout) == 621
    assert sum(int(np.prod(s)) for s in layout.values()) == 267_161_076
    with torch.device("meta"):
        encoder = Encoder4Editing("ffhq")
    assert shapes_of(encoder, "encoder.") == layout


def test_published_clip_layouts_are_open_clip_rn50() -> None:
    """OpenAI CLIP RN50's module state dict, written out by hand, is open_clip's RN50 name for name."""
    with torch.device("meta"):
        rn50 = create_clip("RN50")
    assert shapes_of(rn50) == openai_clip_layout()
    assert shapes_of(create_clip("tiny-rn")) == openai_clip_layout(**TINY_CLIP)


def test_openai_clip_file_loads(tmp_path: Path) -> None:
    """An OpenAI-layout file (fp16 weights as OpenAI ships them, its three scalar entries) loads strictly."""
    published = openai_clip_tensors(openai_clip_layout(**TINY_CLIP), seed=8)
    shipped = {k: v.half() if v.is_floating_point() and v.dim() > 1 else v for k, v in published.items()}
    shipped.update(input_resolution=torch.tensor(64), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    torch.save(shipped, tmp_path / "RN50.pt")
    clip = create_clip("tiny-rn")
    clip.load_state_dict(load_clip_weights(tmp_path / "RN50.pt"), strict=True)
    for key, value in clip.state_dict().items():
        assert torch.equal(value, shipped[key].to(value.dtype)), key


def test_e4e_file_loads(tmp_path: Path) -> None:
    checkpoint = e4e_checkpoint(tiny_e4e_layout(), rosinality_g_ema_layout(32, 64, 2), TINY_E4E.n_styles, 64)
    torch.save(checkpoint, tmp_path / "e4e.pt")
    e4e = load_e4e(tmp_path / "e4e.pt", n_latent=TINY.n_latent)
    own = e4e.state_dict()
    for key, value in checkpoint["state_dict"].items():
        if key.startswith("encoder."):
            assert torch.equal(own[key], value), key
    assert torch.equal(own["latent_avg"], checkpoint["latent_avg"])


@pytest.fixture(scope="module")
def published_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A reference Iter_*.pth, a rosinality generator and an e4e file at the tiny preset's sizes."""
    root = tmp_path_factory.mktemp("published")
    clip = openai_clip_tensors(openai_clip_layout(**TINY_CLIP), seed=3)
    layout = reference_model_layout(TINY.embed_dim, TINY.motion_hidden, TINY.n_latent, TINY.style_dim, TINY.embed_dim)
    files = {"--checkpoint": root / "Iter_000800.pth", "--stylegan": root / "550000.pt", "--e4e": root / "e4e.pt"}
    torch.save(reference_iter_checkpoint(clip, layout, step=800, seed=4), files["--checkpoint"])
    torch.save(rosinality_checkpoint(32, TINY.style_dim, TINY.n_mlp, seed=5), files["--stylegan"])
    torch.save(e4e_checkpoint(tiny_e4e_layout(), rosinality_g_ema_layout(32, 64, 2), 8, 64, seed=6), files["--e4e"])
    return files


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_published_files_export_and_verify(published_files: dict[str, Path], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    options = [f"{name}={path}" for name, path in published_files.items()]
    assert main(["export", "--preset", "tiny", *options, "--out", str(bundle)]) == 0
    assert main(["verify", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["provenance"]["random_init"] is False
    roles = {s["role"] for s in manifest["provenance"]["sources"]}
    assert roles == {"checkpoint", "stylegan", "e4e"}

    # The exported motion graph computes the reference's motion: recurrence + mapper (lr_mul 1) by hand.
    state = torch.load(published_files["--checkpoint"], weights_only=True)["state_dict"]
    text = torch.nn.functional.normalize(torch.randn(3, TINY.embed_dim, generator=torch.Generator().manual_seed(9)), dim=-1)
    session = ort.InferenceSession(str(bundle / "motion.onnx"), providers=["CPUExecutionProvider"])
    inputs = {"text_embedding": text.numpy(), "image_embedding": np.zeros_like(text.numpy())}
    (got,) = session.run(["motion_offsets"], inputs)
    want = reference_motion(state, text.double().numpy(), TINY.frames)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
