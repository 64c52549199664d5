"""Tests for the rosinality-compatible, export-friendly StyleGAN2 generator."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.published_layouts import rosinality_g_ema_layout
from training.presets import get_preset
from training.stylegan2 import (
    CONV_CLAMP,
    Generator,
    ModulatedConv2d,
    StyledConv,
    Upsample,
    generator_from_preset,
    make_blur_kernel,
    modulated_conv2d_reference,
    rosinality_layout,
    synthesis_reference,
    upfirdn2d,
    upfirdn2d_reference,
)

TINY = dict(size=32, style_dim=64, n_mlp=2, channel_cap=32)


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def _tiny(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(**TINY).eval()


def _latents(gen: Generator, batch: int, seed: int = 1) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    return torch.randn(batch, gen.n_latent, gen.style_dim, generator=rng)


# ----------------------------------------------------------------------------------------------
# Checkpoint layout


@pytest.fixture(scope="module")
def generator_1024() -> Generator:
    return Generator(1024)


def test_layout_1024_matches_rosinality(generator_1024: Generator) -> None:
    shapes = _shapes(generator_1024)
    assert len(shapes) == 171
    assert shapes == rosinality_layout(1024) == rosinality_g_ema_layout(1024)
    assert list(shapes) == list(rosinality_layout(1024))
    assert generator_1024.n_latent == 18


def test_layout_1024_hand_written_entries(generator_1024: Generator) -> None:
    shapes = _shapes(generator_1024)
    expected = {
        "style.1.weight": (512, 512),
        "style.8.weight": (512, 512),
        "style.8.bias": (512,),
        "input.input": (1, 512, 4, 4),
        "conv1.conv.weight": (1, 512, 512, 3, 3),
        "conv1.conv.modulation.weight": (512, 512),
        "conv1.conv.modulation.bias": (512,),
        "conv1.noise.weight": (1,),
        "conv1.activate.bias": (512,),
        "to_rgb1.conv.weight": (1, 3, 512, 1, 1),
        "to_rgb1.bias": (1, 3, 1, 1),
        "convs.0.conv.blur.kernel": (4, 4),
        "convs.8.conv.weight": (1, 256, 512, 3, 3),
        "convs.14.conv.weight": (1, 32, 64, 3, 3),
        "convs.15.conv.weight": (1, 32, 32, 3, 3),
        "convs.15.activate.bias": (32,),
        "to_rgbs.7.upsample.kernel": (4, 4),
        "to_rgbs.7.conv.weight": (1, 3, 32, 1, 1),
        "to_rgbs.7.conv.modulation.weight": (32, 512),
        "noises.noise_0": (1, 1, 4, 4),
        "noises.noise_16": (1, 1, 1024, 1024),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    assert "style.0.weight" not in shapes
    assert "convs.1.conv.blur.kernel" not in shapes
    assert "to_rgb1.upsample.kernel" not in shapes
    assert "convs.16.conv.weight" not in shapes and "noises.noise_17" not in shapes


@pytest.mark.parametrize(("size", "count", "n_latent"), [(256, 135, 14), (512, 153, 16)])
def test_layout_counts(size: int, count: int, n_latent: int) -> None:
    gen = Generator(size)
    shapes = _shapes(gen)
    assert len(shapes) == count
    assert shapes == rosinality_layout(size) == rosinality_g_ema_layout(size)
    assert gen.n_latent == n_latent


def test_tiny_layout_and_preset() -> None:
    gen = generator_from_preset(get_preset("tiny"))
    assert _shapes(gen) == rosinality_layout(32, style_dim=64, n_mlp=2, channel_cap=32)
    assert gen.size == 32 and gen.style_dim == 64 and gen.n_latent == 8
    assert max(gen.channels.values()) == 32


def test_parameter_count_1024(generator_1024: Generator) -> None:
    """Counts from the published layout written out independently (buffers: blur kernels, noises)."""
    published = rosinality_g_ema_layout(1024)
    buffers = {k for k in published if k.endswith("kernel") or k.startswith("noises.")}
    want = {k: math.prod(shape) for k, shape in published.items() if k not in buffers}
    mapping = sum(p.numel() for n, p in generator_1024.named_parameters() if n.startswith("style."))
    synthesis = sum(p.numel() for n, p in generator_1024.named_parameters() if not n.startswith("style."))
    assert mapping == 8 * (512 * 512 + 512) == sum(v for k, v in want.items() if k.startswith("style."))
    assert synthesis == sum(v for k, v in want.items() if not k.startswith("style."))
    assert round(synthesis / 1e6, 1) == 28.3  # README's figure


def test_blur_buffers_match_rosinality(generator_1024: Generator) -> None:
    expected = torch.tensor([[1, 3, 3, 1], [3, 9, 9, 3], [3, 9, 9, 3], [1, 3, 3, 1]], dtype=torch.float32) / 16
    for i in range(0, 16, 2):
        torch.testing.assert_close(generator_1024.convs[i].conv.blur.kernel, expected, rtol=0, atol=0)
    for to_rgb in generator_1024.to_rgbs:
        torch.testing.assert_close(to_rgb.upsample.kernel, expected, rtol=0, atol=0)
    torch.testing.assert_close(make_blur_kernel(), expected / 4, rtol=0, atol=0)


def test_equalised_lr_initialisation(generator_1024: Generator) -> None:
    assert torch.all(generator_1024.conv1.conv.modulation.bias == 1)
    assert torch.all(generator_1024.to_rgbs[0].conv.modulation.bias == 1)
    assert torch.all(generator_1024.style[1].bias == 0)
    # raw mapping weights are stored divided by lr_mul (std ~ 100), scaled back at run time
    assert 80 < generator_1024.style[1].weight.std().item() < 120
    assert generator_1024.style[1].scale == pytest.approx(0.01 / 512**0.5)


# ----------------------------------------------------------------------------------------------
# Formulations against their references


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_modulated_conv_matches_grouped_reference(upsample: bool, demodulate: bool, kernel_size: int) -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 7, kernel_size, 16, demodulate=demodulate, upsample=upsample).double()
    with torch.no_grad():
        conv.modulation.bias.uniform_(-2.0, 2.0)  # random styles of either sign
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64)
    w = torch.randn(3, 16, dtype=torch.float64)
    with torch.no_grad():
        out = conv(x, w)
        blur = conv.blur.kernel if upsample else None
        ref = modulated_conv2d_reference(x, conv.scaled_weight(), conv.modulation(w), demodulate, upsample, blur)
    assert out.shape == ref.shape == (3, 7, 12 if upsample else 6, 12 if upsample else 6)
    assert (out - ref).abs().max().item() < 1e-4


def test_modulated_conv_float32_and_default_blur() -> None:
    torch.manual_seed(1)
    conv = ModulatedConv2d(8, 4, 3, 16, upsample=True)
    x, w = torch.randn(3, 8, 5, 5), torch.randn(3, 16)
    with torch.no_grad():
        ref = modulated_conv2d_reference(x, conv.scaled_weight(), conv.modulation(w), True, True)
        assert (conv(x, w) - ref).abs().max().item() < 1e-4


def test_demodulation_statistics_survive_fp16() -> None:
    torch.manual_seed(3)
    conv = ModulatedConv2d(8, 4, 3, 16)
    with torch.no_grad():
        conv.modulation.bias.fill_(1000.0)  # s**2 = 1e6 overflows fp16; the statistics stay in fp32
        x, w = torch.randn(2, 8, 6, 6), torch.randn(2, 16)
        ref = conv(x, w)
        out = conv.half()(x.half(), w.half()).float()
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max().item() < 0.05 * ref.abs().max().item()


@pytest.mark.parametrize(
    ("up", "down", "pad", "kernel_shape"),
    [
        (1, 1, (1, 1), (4, 4)),
        (2, 1, (2, 1), (4, 4)),
        (2, 1, (0, 0), (3, 3)),
        (2, 1, (1, 3), (4, 4)),
        (2, 2, (-1, 3), (4, 4)),
        (3, 1, (1, 1), (3, 5)),
        (1, 2, (1, 2), (4, 4)),
        (1, 1, (2, -1), (3, 2)),
    ],
)
def test_upfirdn2d_matches_reference(
    up: int, down: int, pad: tuple[int, int], kernel_shape: tuple[int, int]
) -> None:
    rng = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 7, 6, generator=rng, dtype=torch.float64)
    kernel = torch.randn(*kernel_shape, generator=rng, dtype=torch.float64)  # asymmetric: checks the flip
    out = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    ref = upfirdn2d_reference(x, kernel, up=up, down=down, pad=pad)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-10


def test_upsample_module_doubles_resolution() -> None:
    up = Upsample((1, 3, 3, 1), channels=3)
    x = torch.randn(2, 3, 8, 8)
    out = up(x)
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out, upfirdn2d_reference(x, up.kernel, up=2, pad=(2, 1)))
    # the kernel carries the factor^2 gain: a constant image stays constant away from the borders
    flat = up(torch.ones(1, 3, 8, 8))
    torch.testing.assert_close(flat[..., 2:-2, 2:-2], torch.ones(1, 3, 12, 12))


def _reference_generator(name: str) -> Generator:
    """The tiny preset or a narrow 64 px generator, with the parameters that start at zero randomised."""
    torch.manual_seed(4)
    if name == "tiny":
        gen = generator_from_preset(get_preset("tiny"))
    else:
        gen = Generator(64, style_dim=64, n_mlp=2, channel_cap=16)
    with torch.no_grad():  # noise weights and biases start at zero: random here, so the comparison sees them
        for key, param in gen.named_parameters():
            if key.endswith(("noise.weight", "activate.bias")) or (key.startswith("to_rgb") and key.endswith(".bias")):
                param.normal_(0.0, 0.5)
    return gen.eval()


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", ["tiny", "64px"])
def test_synthesis_reference_matches_synthesis(name: str, batch: int) -> None:
    gen = _reference_generator(name)
    latents = _latents(gen, batch, seed=5)
    with torch.no_grad():
        image = gen.synthesis(latents)
        ref = synthesis_reference(gen, latents)
    assert ref.shape == image.shape == (batch, 3, gen.size, gen.size)
    scale = image.abs().max().item()
    assert scale > 1.0
    assert (ref - image).abs().max().item() < 1e-4 * scale
    if batch == 2:  # the grouped convolution keeps the samples apart
        assert (image[0] - image[1]).abs().max().item() > 0.1 * scale


# ----------------------------------------------------------------------------------------------
# The tiny generator end to end


def test_tiny_synthesis_shape_finite_deterministic() -> None:
    first, second = _tiny(), _tiny()
    latents = _latents(first, 2)
    with torch.no_grad():
        image = first.synthesis(latents)
        again = second(latents)
    assert image.shape == (2, 3, 32, 32)
    assert torch.isfinite(image).all()
    assert torch.equal(image, again)


def test_tiny_synthesis_is_batch_independent() -> None:
    gen = _tiny()
    latents = _latents(gen, 3)
    with torch.no_grad():
        batched = gen.synthesis(latents)
        for i in range(3):
            alone = gen.synthesis(latents[i : i + 1])
            torch.testing.assert_close(alone, batched[i : i + 1], rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip() -> None:
    source, target = _tiny(0), _tiny(1)
    latents = _latents(source, 2)
    with torch.no_grad():
        assert not torch.equal(source(latents), target(latents))
        target.load_state_dict(source.state_dict(), strict=True)
        assert torch.equal(source(latents), target(latents))


def test_mapping_mean_latent_and_truncation() -> None:
    gen = _tiny()
    z = torch.randn(4, 64)
    with torch.no_grad():
        w = gen.mapping(z)
    assert w.shape == (4, 64)
    w_avg = gen.mean_latent(256, seed=3)
    assert w_avg.shape == (1, 64)
    torch.testing.assert_close(w_avg, gen.mean_latent(256, seed=3), rtol=0, atol=0)
    w_plus = w[:, None].repeat(1, gen.n_latent, 1)
    torch.testing.assert_close(Generator.truncate(w_plus, w_avg, 1.0), w_plus)
    torch.testing.assert_close(Generator.truncate(w_plus, w_avg, 0.0), w_avg.expand_as(w_plus))


def test_bad_inputs_raise_value_error() -> None:
    gen = _tiny()
    with pytest.raises(ValueError, match="latents must have shape"):
        gen.synthesis(torch.randn(1, gen.n_latent + 1, 64))
    with pytest.raises(ValueError, match="latents must have shape"):
        gen.synthesis(torch.randn(1, 64))
    with pytest.raises(ValueError, match="latents must have shape"):
        synthesis_reference(gen, torch.randn(2, gen.n_latent, 32))
    with pytest.raises(ValueError, match="z must have shape"):
        gen.mapping(torch.randn(2, 32))
    with pytest.raises(ValueError, match="power of two"):
        Generator(48)
    with pytest.raises(ValueError, match="power of two"):
        rosinality_layout(2048)
    with pytest.raises(ValueError, match="n must be"):
        gen.mean_latent(0)


# ----------------------------------------------------------------------------------------------
# ONNX export


@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")  # no tensor-valued size baked into the graph
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter (dynamo=False) is on purpose
def test_onnx_export_dynamic_batch(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    gen = _tiny()
    path = tmp_path / "synthesis.onnx"
    torch.onnx.export(
        gen,
        (_latents(gen, 2),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["latents"],
        output_names=["images"],
        dynamic_axes={"latents": {0: "batch"}, "images": {0: "batch"}},
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}, "custom ops in graph"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 2):
        latents = _latents(gen, batch, seed=10 + batch)
        with torch.no_grad():
            expected = gen(latents).numpy()
        (got,) = session.run(["images"], {"latents": latents.numpy()})
        assert got.shape == (batch, 3, 32, 32)
        assert np.abs(got - expected).max() < 1e-4


def _large_weights(generator: Generator, weight_gain: float = 300.0, style_gain: float = 100.0) -> Generator:
    """Demodulated convolutions with raw weights and styles far larger than at initialisation (the sizes
    trained models reach). Demodulation cancels both, so FP32 images are unchanged, but before the
    FP16 guards the pre-demodulation sums of an FP16 run overflowed to inf."""
    with torch.no_grad():
        for layer in generator.modules():
            if isinstance(layer, StyledConv):
                layer.conv.weight.mul_(weight_gain)
                layer.conv.modulation.weight.mul_(style_gain)
                layer.conv.modulation.bias.mul_(style_gain)
    return generator


def test_fp16_synthesis_stays_finite_with_large_weights() -> None:
    torch.manual_seed(0)
    generator = Generator(**TINY).eval()
    latents = torch.randn(2, generator.n_latent, TINY["style_dim"])
    with torch.no_grad():
        before = generator.synthesis(latents)
        large = _large_weights(generator)
        fp32 = large.synthesis(latents)
        fp16 = large.half().synthesis(latents.half()).float()
    assert (fp32 - before).abs().max().item() < 1e-4  # demodulation cancels the scales
    assert torch.isfinite(fp16).all()
    assert (fp16 - fp32).abs().max().item() < 0.05


def test_layer_outputs_are_clamped_at_conv_clamp() -> None:
    torch.manual_seed(0)
    layer = StyledConv(4, 4, 8).eval()
    with torch.no_grad():
        layer.activate.bias.fill_(1e4)  # every activation far past the clamp
        out = layer(torch.randn(1, 4, 5, 5), torch.randn(1, 8), torch.zeros(1, 1, 5, 5))
    assert out.max().item() == CONV_CLAMP
