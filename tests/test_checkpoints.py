"""Checkpoint I/O: round trips for every format we read and one-line errors for everything else."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.published_layouts import (
    TINY_CLIP,
    openai_clip_layout,
    openai_clip_tensors,
    reference_iter_checkpoint,
    reference_model_layout,
    reference_motion,
    rosinality_checkpoint,
    rosinality_g_ema_layout,
)
from training.checkpoints import (
    describe_file,
    load_clip_weights,
    load_e4e_latent_avg,
    load_models,
    load_rosinality,
    read_checkpoint_metadata,
    save_checkpoint,
)
from training.errors import CheckpointError
from training.motion import AnimationModel
from training.presets import get_preset
from training.reference import animate_reference
from training.stylegan2 import Generator

TEXT = "The person is smiling."
TINY = get_preset("tiny")


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def rosinality_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px rosinality training file written from the published layout (style_dim 64, 2 mapping layers)."""
    path = tmp_path_factory.mktemp("ckpt") / "550000.pt"
    torch.save({**rosinality_checkpoint(32, TINY.style_dim, TINY.n_mlp), "args": argparse.Namespace(size=32)}, path)
    return path


def tiny_reference_layout() -> dict[str, tuple[int, ...]]:
    """The non-CLIP entries of an ``Iter_*.pth`` at the tiny preset's sizes (mapper width = embedding width)."""
    return reference_model_layout(TINY.embed_dim, TINY.motion_hidden, TINY.n_latent, TINY.style_dim, TINY.embed_dim)


@pytest.fixture(scope="module")
def reference_iter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``Iter_000800.pth`` saved as the reference saves it, from the published key list at tiny sizes."""
    clip = openai_clip_tensors(openai_clip_layout(**TINY_CLIP), seed=3)
    checkpoint = reference_iter_checkpoint(clip, tiny_reference_layout(), step=800, seed=4)
    path = tmp_path_factory.mktemp("reference") / "Iter_000800.pth"
    torch.save(checkpoint, path)
    return path, checkpoint["state_dict"]


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


def test_rosinality_file_from_the_published_layout(rosinality_file: Path) -> None:
    published = rosinality_checkpoint(32, TINY.style_dim, TINY.n_mlp)["g_ema"]  # the same seeded values
    gen = load_rosinality(rosinality_file)
    assert (gen.size, gen.style_dim, gen.n_mlp, gen.channel_multiplier) == (32, 64, 2, 2)
    models = load_models(preset="tiny", stylegan=rosinality_file, random_init=True)
    own = models.generator.state_dict()
    assert own.keys() == published.keys()
    for key, value in published.items():
        assert torch.equal(own[key], value), key
    assert models.sources[0]["role"] == "stylegan" and len(models.sources[0]["sha256"]) == 64
    assert describe_file(rosinality_file).startswith("rosinality StyleGAN2 generator, 32 px, 8 latents")


def test_published_rosinality_layouts_load_shape_for_shape() -> None:
    """The full-size published layouts (171 entries at 1024 px, 135 at 256 px) are what the loader accepts."""
    for size, count in ((1024, 171), (256, 135)):
        layout = rosinality_g_ema_layout(size)
        assert len(layout) == count
        with torch.device("meta"):
            generator = Generator(size)
        assert {k: tuple(v.shape) for k, v in generator.state_dict().items()} == layout


def test_reference_iter_from_the_published_layout(reference_iter: tuple[Path, dict]) -> None:
    path, published = reference_iter
    models = load_models(preset="tiny", checkpoint=path)
    own = models.model.state_dict()
    for key, value in published.items():
        ours = key.removeprefix("module.")
        for mapper in ("v_mapper", "t_mapper"):
            ours = ours.replace(f"mapper.{mapper}.", f"mapper.{mapper}.mapping.")
        assert torch.equal(own[ours], value), key
    assert models.preset.mapper_lr_mul == 1.0
    assert models.sources[0]["role"] == "checkpoint"
    assert "reference-implementation" in describe_file(path)

    # The motion function is the reference's: recurrence, then the mapper with lr_mul 1, by hand in float64.
    z0 = torch.nn.functional.normalize(torch.randn(2, TINY.embed_dim, generator=torch.Generator().manual_seed(5)), dim=-1)
    with torch.no_grad():
        got = models.model.motion_offsets(z0, 5).double().numpy()
    want = reference_motion(published, z0.double().numpy(), 5)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_reference_iter_resolution_from_generator(reference_iter: tuple[Path, dict], rosinality_file: Path) -> None:
    path, _ = reference_iter
    with pytest.raises(CheckpointError) as exc:  # no preset: the 32 px generator has no preset of its own
        load_models(checkpoint=path, stylegan=rosinality_file)
    assert "does not fit" in one_line(exc)
    models = load_models(preset="tiny", checkpoint=path, stylegan=rosinality_file)
    assert not models.random_init and [s["role"] for s in models.sources] == ["checkpoint", "stylegan"]


def test_reference_iter_of_another_layout_is_refused(tmp_path: Path, reference_iter: tuple[Path, dict]) -> None:
    _, published = reference_iter
    staged = {k.replace("_mapper.", "_mapper.mapping."): v for k, v in published.items()}
    torch.save({"iter": 1, "arch": "RN50", "state_dict": staged, "optimizer": {}}, tmp_path / "Iter_000001.pth")
    with pytest.raises(CheckpointError) as exc:
        load_models(preset="tiny", checkpoint=tmp_path / "Iter_000001.pth")
    assert "'mapping.' level" in one_line(exc) and "module.mapper.{v,t}_mapper.{1,2,3}" in one_line(exc)


def test_old_checkpoint_keeps_its_mapper_multiplier(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint written when the preset's multiplier was 0.01 still computes with 0.01, and says so."""
    old = load_models(preset="tiny", random_init=True, seed=6)
    old_preset = dataclasses.replace(old.preset, mapper_lr_mul=0.01)
    state = old.model.state_dict()
    old.model = AnimationModel(old_preset)
    old.model.load_state_dict(state)
    old.preset = old_preset
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, old)
    caplog.set_level("WARNING")
    loaded = load_models(checkpoint=path)
    assert loaded.preset.mapper_lr_mul == 0.01
    assert any("lr_mul 0.01" in r.getMessage() for r in caplog.records)
    x = torch.randn(3, TINY.embed_dim)
    layer = loaded.model.mapper.t_mapper.mapping[1]
    pixel = x / x.pow(2).mean(dim=1, keepdim=True).add(1e-8).sqrt()
    want = torch.nn.functional.leaky_relu(pixel @ (layer.weight * 0.01 / TINY.embed_dim**0.5).T + layer.bias * 0.01, 0.2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.mapper.t_mapper.mapping[:2](x), want * 2**0.5)


def test_stored_preset_without_multiplier_is_refused(tmp_path: Path, tiny_models) -> None:
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, tiny_models)
    tensors = load_file(str(path))
    meta = read_checkpoint_metadata(path)
    preset = json.loads(meta["preset"])
    del preset["mapper_lr_mul"]
    save_file(tensors, str(path), metadata={**meta, "preset": json.dumps(preset)})
    with pytest.raises(CheckpointError) as exc:
        load_models(checkpoint=path)
    assert "learning-rate multiplier" in one_line(exc) and "re-export" in one_line(exc)


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
