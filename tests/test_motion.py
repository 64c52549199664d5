"""The motion generator and mappers against hand-unrolled computations in float64 numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.motion import AnimationModel, LatentMapper, MotionGenerator
from training.presets import get_preset


def lrelu(x: np.ndarray, slope: float) -> np.ndarray:
    return np.where(x >= 0, x, slope * x)


def unrolled(gen: MotionGenerator, z0: np.ndarray, frames: int, training: bool) -> np.ndarray:
    """PAPER-NOTES' recurrence written out step by step."""
    w = {n: getattr(gen, n).weight.detach().double().numpy() for n in ("fc1", "fc2", "fc3")}
    b = {n: getattr(gen, n).bias.detach().double().numpy() for n in ("fc1", "fc2", "fc3")}
    z, h = z0, np.zeros((z0.shape[0], gen.hidden))
    out = [z0]
    for t in range(1, frames):
        a = np.concatenate([lrelu(z @ w["fc1"].T + b["fc1"], 0.01), h], axis=1)
        r = 0.8 / frames if training else 0.8 / frames * (frames - t) / frames
        z, h = z + r * lrelu(a @ w["fc2"].T + b["fc2"], 0.01), h + r * lrelu(a @ w["fc3"].T + b["fc3"], 0.01)
        out.append(z)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("frames", [4, 16])
@pytest.mark.parametrize("decay", ["constant", "linear"])
def test_motion_generator_matches_hand_unrolled(frames: int, decay: str) -> None:
    torch.manual_seed(0)
    gen = MotionGenerator(z_dim=24, hidden=8).double()
    z0 = torch.randn(3, 24, dtype=torch.float64)
    got = gen(z0, frames, decay).detach().numpy()
    want = unrolled(gen, z0.numpy(), frames, training=decay == "constant")
    assert got.shape == (3, frames, 24)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.array_equal(got[:, 0], z0.numpy())


def test_paper_sizes_and_slope() -> None:
    gen = MotionGenerator()
    assert (gen.fc1.in_features, gen.fc1.out_features) == (1024, 384)
    assert (gen.fc2.in_features, gen.fc2.out_features) == (768, 1024)
    assert (gen.fc3.in_features, gen.fc3.out_features) == (768, 384)
    assert gen.slope == 0.01


def test_mapper_is_pixelnorm_then_three_activated_layers() -> None:
    torch.manual_seed(1)
    mapper = LatentMapper(in_dim=16, n_latent=3, style_dim=5, lr_mul=0.01).double()
    x = torch.randn(2, 4, 16, dtype=torch.float64)
    h = x.numpy().reshape(-1, 16)
    h = h / np.sqrt((h**2).mean(axis=1, keepdims=True) + 1e-8)
    for layer in list(mapper.mapping)[1:]:
        weight = layer.weight.detach().numpy() * 0.01 / np.sqrt(layer.weight.shape[1])
        h = lrelu(h @ weight.T + layer.bias.detach().numpy() * 0.01, 0.2) * np.sqrt(2)
    got = mapper(x).detach().numpy()
    assert got.shape == (2, 4, 3, 5)
    np.testing.assert_allclose(got, h.reshape(2, 4, 3, 5), rtol=1e-10)


def test_first_offset_is_a_text_independent_constant() -> None:
    torch.manual_seed(2)
    model = AnimationModel(get_preset("tiny")).eval()
    with torch.no_grad():
        a = model.motion_offsets(torch.nn.functional.normalize(torch.randn(2, 64), dim=-1), 4)
        b = model.motion_offsets(torch.nn.functional.normalize(torch.randn(1, 64), dim=-1), 4)
    assert torch.equal(a[0, 0], a[1, 0]) and torch.equal(a[0, 0], b[0, 0])
    assert not torch.allclose(a[0, 1], a[1, 1])


def test_latents_compose_content_visual_and_motion_terms() -> None:
    torch.manual_seed(3)
    preset = get_preset("tiny")
    model = AnimationModel(preset).eval()
    content = torch.randn(2, preset.n_latent, preset.style_dim)
    text = torch.nn.functional.normalize(torch.randn(2, 64), dim=-1)
    image = torch.nn.functional.normalize(torch.randn(2, 64), dim=-1)
    with torch.no_grad():
        no_image = model.latents(content, text, 5)
        with_image = model.latents(content, text, 5, image_embedding=image)
        z = model.rnn(text + image, 5)
        want = content[:, None] + model.mapper.v_mapper(image)[:, None] + model.mapper.t_mapper(z - z[:, :1])
        want_no_image = content[:, None] + model.motion_offsets(text, 5)
    torch.testing.assert_close(with_image, want)
    torch.testing.assert_close(no_image, want_no_image)
    assert no_image.shape == (2, 5, preset.n_latent, preset.style_dim)
