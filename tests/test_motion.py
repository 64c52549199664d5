"""The motion generator and mappers against hand-unrolled computations in float64 numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.published_layouts import Linear, lrelu, mapper_by_hand, recurrence_by_hand
from training.motion import AnimationModel, LatentMapper, MotionGenerator
from training.presets import PRESETS, get_preset


def linear(layer: torch.nn.Module) -> Linear:
    return layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()


def recurrence_of(gen: MotionGenerator) -> dict[str, Linear]:
    return {name: linear(getattr(gen, name)) for name in ("fc1", "fc2", "fc3")}


def layers_of(mapper: LatentMapper) -> list[Linear]:
    return [linear(layer) for layer in list(mapper.mapping)[1:]]


@pytest.mark.parametrize("frames", [4, 16])
@pytest.mark.parametrize("decay", ["constant", "linear"])
def test_motion_generator_matches_hand_unrolled(frames: int, decay: str) -> None:
    torch.manual_seed(0)
    gen = MotionGenerator(z_dim=24, hidden=8).double()
    z0 = torch.randn(3, 24, dtype=torch.float64)
    got = gen(z0, frames, decay).detach().numpy()
    want = recurrence_by_hand(recurrence_of(gen), z0.numpy(), frames, training=decay == "constant")
    assert got.shape == (3, frames, 24)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.array_equal(got[:, 0], z0.numpy())


def test_paper_sizes_and_slope() -> None:
    gen = MotionGenerator()
    assert (gen.fc1.in_features, gen.fc1.out_features) == (1024, 384)
    assert (gen.fc2.in_features, gen.fc2.out_features) == (768, 1024)
    assert (gen.fc3.in_features, gen.fc3.out_features) == (768, 384)
    assert gen.slope == 0.01


def test_one_mapper_layer_of_a_preset_by_hand() -> None:
    """PixelNorm -> EqualLinear -> fused lrelu x sqrt 2 with known weights: the reference's lr_mul 1."""
    preset = get_preset("tiny")
    model = AnimationModel(preset).double().eval()
    n = preset.embed_dim
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    weight = ((7 * i + 3 * j) % 11 - 5) / 5.0  # entries -1..1
    bias = (np.arange(n) % 5 - 2) / 4.0
    x = np.sin(np.arange(2 * n).reshape(2, n))
    layer = model.mapper.t_mapper.mapping[1]
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
        got = model.mapper.t_mapper.mapping[:2](torch.from_numpy(x)).numpy()
    normalised = x / np.sqrt((x**2).mean(axis=1, keepdims=True) + 1e-8)
    want = lrelu(normalised @ weight.T / np.sqrt(n) + bias, 0.2) * np.sqrt(2)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert {p.mapper_lr_mul for p in PRESETS.values()} == {1.0}


@pytest.mark.parametrize("lr_mul", [1.0, 0.01])
def test_mapper_is_pixelnorm_then_three_activated_layers(lr_mul: float) -> None:
    """lr_mul 1 is the reference's; 0.01 is what files written before 2026-11-30 record."""
    torch.manual_seed(1)
    mapper = LatentMapper(in_dim=16, n_latent=3, style_dim=5, lr_mul=lr_mul).double()
    x = torch.randn(2, 4, 16, dtype=torch.float64)
    got = mapper(x).detach().numpy()
    want = mapper_by_hand(layers_of(mapper), x.numpy().reshape(-1, 16), lr_mul)
    assert got.shape == (2, 4, 3, 5)
    np.testing.assert_allclose(got, want.reshape(2, 4, 3, 5), rtol=1e-10)


@pytest.mark.parametrize("eps", [1e-8, 1.0])
def test_mapper_pixelnorm_epsilon_by_hand(eps: float) -> None:
    torch.manual_seed(4)
    mapper = LatentMapper(in_dim=16, n_latent=3, style_dim=5, norm_eps=eps).double()
    x = 0.1 * torch.randn(6, 16, dtype=torch.float64)
    want = mapper_by_hand(layers_of(mapper), x.numpy(), eps=eps)
    np.testing.assert_allclose(mapper(x).detach().numpy(), want.reshape(6, 3, 5), rtol=1e-10)


def test_faces_motion_grows_from_frame_zero_without_a_jump() -> None:
    """With the reference's epsilon a tiny m_1 already gives H_t its full-sized input (the frame 0 -> 1
    jump); with ``faces-64``'s the offset starts small and grows with m_t."""
    torch.manual_seed(5)
    steps = {}
    for eps in (1e-8, get_preset("faces-64").motion_norm_eps):
        mapper = LatentMapper(in_dim=16, n_latent=3, style_dim=5, norm_eps=eps).double()
        direction = torch.randn(16, dtype=torch.float64)
        m = torch.stack([s * direction for s in (0.0, 1e-3, 2e-3, 0.5)])  # m_0 = 0, two small steps, a large m
        with torch.no_grad():
            offsets = mapper(m)
        step = lambda a, b: float((offsets[a] - offsets[b]).abs().max())  # noqa: E731
        steps[eps] = (step(1, 0), step(2, 1), step(3, 0))
    reference, faces = steps[1e-8], steps[1.0]
    assert reference[0] > 0.5 * reference[2] and reference[1] < 0.01 * reference[0]  # frame 1 jumps all the way, then stays
    assert faces[0] < 0.01 * faces[2] and faces[1] == pytest.approx(faces[0], rel=0.05)  # small, even steps
    assert {p.motion_norm_eps for p in PRESETS.values() if p.name != "faces-64"} == {1e-8}


def test_first_offset_is_a_text_independent_constant() -> None:
    torch.manual_seed(2)
    model = AnimationModel(get_preset("tiny")).eval()
    with torch.no_grad():
        a = model.motion_offsets(torch.nn.functional.normalize(torch.randn(2, 64), dim=-1), 4)
        b = model.motion_offsets(torch.nn.functional.normalize(torch.randn(1, 64), dim=-1), 4)
    assert torch.equal(a[0, 0], a[1, 0]) and torch.equal(a[0, 0], b[0, 0])
    assert not torch.allclose(a[0, 1], a[1, 1])


def test_latents_compose_content_visual_and_motion_terms() -> None:
    """w_t = content + H_v(E_v) + H_t(z_t - z_0), z from text + image (text alone without one), by hand."""
    torch.manual_seed(3)
    preset = get_preset("tiny")
    model = AnimationModel(preset).double().eval()
    L, S = preset.n_latent, preset.style_dim
    content = torch.randn(2, L, S, dtype=torch.float64)
    text = torch.nn.functional.normalize(torch.randn(2, 64, dtype=torch.float64), dim=-1)
    image = torch.nn.functional.normalize(torch.randn(2, 64, dtype=torch.float64), dim=-1)
    with torch.no_grad():
        no_image = model.latents(content, text, 5).numpy()
        with_image = model.latents(content, text, 5, image_embedding=image).numpy()

    fc, t_mapper, v_mapper = recurrence_of(model.rnn), layers_of(model.mapper.t_mapper), layers_of(model.mapper.v_mapper)

    def offsets(z0: np.ndarray) -> np.ndarray:
        motion = recurrence_by_hand(fc, z0, 5) - z0[:, None]
        return mapper_by_hand(t_mapper, motion).reshape(2, 5, L, S)

    c, t, i = content.numpy(), text.numpy(), image.numpy()
    visual = mapper_by_hand(v_mapper, i).reshape(2, 1, L, S)
    np.testing.assert_allclose(with_image, c[:, None] + visual + offsets(t + i), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(no_image, c[:, None] + offsets(t), rtol=1e-9, atol=1e-12)
    assert no_image.shape == (2, 5, L, S)
