"""Checkpoint I/O: round trips for every format we read and one-line errors for everything else."""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from training.checkpoints import (
    describe_file,
    load_clip_weights,
    load_e4e_latent_avg,
    load_models,
    load_rosinality,
    save_checkpoint,
)
from training.errors import CheckpointError
from training.reference import animate_reference

TEXT = "The person is smiling."


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def rosinality_file(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> Path:
    """A rosinality-style file: g_ema plus the extras real training files carry (args, latent_avg)."""
    path = tmp_path_factory.mktemp("ckpt") / "550000.pt"
    g_ema = {k: v * 1.5 if v.is_floating_point() else v for k, v in tiny_models.generator.state_dict().items()}
    torch.save({"g_ema": g_ema, "latent_avg": torch.randn(64), "args": argparse.Namespace(size=32)}, path)
    return path


def openai_named(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference implementation's layout: DDP prefix, OpenAI CLIP extras, no BatchNorm counters."""
    out = collections.OrderedDict()
    for key, value in model_state.items():
        if not key.endswith("num_batches_tracked"):
            out[f"module.{key}"] = value.clone()
    out.update({"module.encoder.input_resolution": torch.tensor(64), "module.encoder.context_length": torch.tensor(77),
                "module.encoder.vocab_size": torch.tensor(49408)})
    return out


def test_own_checkpoint_round_trip(tmp_path: Path, tiny_models) -> None:
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, tiny_models, metadata={"step": 7})
    loaded = load_models(checkpoint=path)
    assert loaded.preset == tiny_models.preset and loaded.random_init
    assert same_state(loaded.model, tiny_models.model) and same_state(loaded.generator, tiny_models.generator)
    assert np.array_equal(animate_reference(loaded, TEXT, frames=3), animate_reference(tiny_models, TEXT, frames=3))
    assert "LGFA checkpoint, preset tiny, 32 px, 8 latents" in describe_file(path)
    assert "step 7" in describe_file(path)
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_rosinality_round_trip(rosinality_file: Path, tiny_models) -> None:
    gen = load_rosinality(rosinality_file)
    assert (gen.size, gen.style_dim, gen.n_mlp, gen.channel_cap) == (32, 64, 2, 32)
    models = load_models(preset="tiny", stylegan=rosinality_file, random_init=True)
    for key, value in models.generator.state_dict().items():
        assert torch.equal(value, gen.state_dict[key])
    assert models.sources[0]["role"] == "stylegan" and len(models.sources[0]["sha256"]) == 64
    assert describe_file(rosinality_file).startswith("rosinality StyleGAN2 generator, 32 px, 8 latents")


def test_reference_iter_round_trip(tmp_path: Path, tiny_models) -> None:
    path = tmp_path / "Iter_000800.pth"
    state = {k: v * 2 if v.is_floating_point() else v for k, v in tiny_models.model.state_dict().items()}
    torch.save(openai_named(state), path)
    models = load_models(preset="tiny", checkpoint=path)
    for key, value in models.model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key
    assert models.sources[0]["role"] == "checkpoint"
    assert "reference-implementation" in describe_file(path)


def test_reference_iter_resolution_from_generator(tmp_path: Path, tiny_models, rosinality_file: Path) -> None:
    path = tmp_path / "Iter_000100.pth"
    torch.save({"state_dict": openai_named(tiny_models.model.state_dict())}, path)
    with pytest.raises(CheckpointError) as exc:  # style_dim 512 by default: 8*64 outputs are 1 latent
        load_models(checkpoint=path, stylegan=rosinality_file)
    assert "preset" in one_line(exc)
    models = load_models(preset="tiny", checkpoint=path, stylegan=rosinality_file)
    assert not models.random_init and [s["role"] for s in models.sources] == ["checkpoint", "stylegan"]


def test_clip_and_e4e_loaders(tmp_path: Path, tiny_models) -> None:
    clip_state = {k: v.contiguous() for k, v in tiny_models.model.encoder.state_dict().items()}
    save_file(clip_state, tmp_path / "clip.safetensors")
    loaded = load_clip_weights(tmp_path / "clip.safetensors")
    assert loaded.keys() == clip_state.keys()
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}, "latent_avg": torch.ones(18, 512), "opts": {}}, tmp_path / "e4e.pt")
    assert load_e4e_latent_avg(tmp_path / "e4e.pt").shape == (18, 512)
    assert describe_file(tmp_path / "e4e.pt").startswith("e4e encoder checkpoint")
    with pytest.raises(CheckpointError) as exc:
        load_e4e_latent_avg(tmp_path / "clip.safetensors")
    assert "expected an e4e checkpoint" in one_line(exc)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "does not exist"),
        (b"hello, I am a text file\n", "expected"),
        ("truncated", "truncated"),
        ("evil", "unsafe to unpickle"),
        ("tensor", "found a tensor of shape (3,)"),
    ],
)
def test_bad_files_give_one_line(tmp_path: Path, rosinality_file: Path, content, expected: str) -> None:
    path = tmp_path / "file.pt"
    if content == "truncated":
        path.write_bytes(rosinality_file.read_bytes()[:5000])
    elif content == "evil":
        torch.save({"g_ema": Evil()}, path)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as exc:
        load_rosinality(path)
    assert expected in one_line(exc)


def test_wrong_kinds_are_named(tmp_path: Path, tiny_models, rosinality_file: Path) -> None:
    own = tmp_path / "own.safetensors"
    save_checkpoint(own, tiny_models)
    with pytest.raises(CheckpointError) as exc:  # a generator given as the animation checkpoint
        load_models(preset="tiny", checkpoint=rosinality_file)
    assert "expected the reference implementation's training checkpoint" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:  # our checkpoint given as the generator
        load_models(preset="tiny", stylegan=own, random_init=True)
    assert "rosinality" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:  # another resolution
        load_models(preset="ffhq-256", stylegan=rosinality_file, random_init=True)
    assert "32 px" in one_line(exc) and "256" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:  # another preset
        load_models(preset="ffhq-256", checkpoint=own)
    assert "tiny checkpoint" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        load_models(preset="tiny")
    assert "--random-init" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        load_models(checkpoint=own, random_init=True)
    assert "exclude" in one_line(exc)
    save_file({"a": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError) as exc:
        load_models(checkpoint=tmp_path / "other.safetensors")
    assert "not an lgfa checkpoint" in one_line(exc)
