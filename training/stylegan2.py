"""StyleGAN2 generator in plain PyTorch, laid out key for key like rosinality's ``g_ema``.

The state dict of :class:`Generator` matches the ``g_ema`` entry of a rosinality
``stylegan2-pytorch`` checkpoint (names, shapes and buffers), so such weights load with
``load_state_dict(strict=True)``. The forward pass is written for export (ONNX opset 17,
TensorRT): the modulated convolution scales the input by the style, convolves with the static
weight and scales the output by the demodulation factor, so weights stay constants and the batch
stays free; the FIR up-sampling is a depthwise (transposed) convolution. As in StyleGAN2-ADA, the
demodulated convolutions pre-normalise style and weight by their largest magnitude (demodulation
cancels both scales) and every layer output is clamped to +-CONV_CLAMP, so that the same graph runs
in FP16 without overflow. Reference twins written
rosinality's way (:func:`modulated_conv2d_reference`, :func:`upfirdn2d_reference`,
:func:`synthesis_reference`) are the test oracles and the benchmarks' baseline.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from training.presets import Preset

BLUR_TAPS: tuple[int, ...] = (1, 3, 3, 1)
"""The 1-D binomial filter whose outer product is StyleGAN2's 4x4 blur kernel."""

NOISE_SEED = 0
"""Seed of the constant noise buffers, so a randomly initialised generator is deterministic."""

CONV_CLAMP = 256.0
"""Every layer's output is clamped to +-256, StyleGAN2-ADA's ``conv_clamp``: it keeps FP16 synthesis
finite and is never reached by a healthy generator in FP32."""

_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)
_MAX_SIZE = 1024
_NORM_FLOOR = 1e-4  # normalisers below it (an all-zero style or weight channel) are not divided by


# ----------------------------------------------------------------------------------------------
# Channel table and the published checkpoint layout


def rosinality_channels(size: int, channel_multiplier: int = 2, channel_cap: int = 512) -> dict[int, int]:
    """Channels per resolution 4..``size``: rosinality's table, each entry capped at ``channel_cap``."""
    _check_size(size)
    table = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }
    return {res: min(ch, channel_cap) for res, ch in table.items() if res <= size}


def rosinality_layout(
    size: int,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    channel_cap: int = 512,
) -> dict[str, tuple[int, ...]]:
    """The ``g_ema`` state-dict layout (key -> shape, in rosinality's order), from the channel table alone."""
    ch = rosinality_channels(size, channel_multiplier, channel_cap)
    log_size = int(math.log2(size))
    layout: dict[str, tuple[int, ...]] = {}
    for i in range(1, n_mlp + 1):
        layout[f"style.{i}.weight"] = (style_dim, style_dim)
        layout[f"style.{i}.bias"] = (style_dim,)
    layout["input.input"] = (1, ch[4], 4, 4)

    def styled_conv(prefix: str, cin: int, cout: int, upsample: bool) -> None:
        layout[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        if upsample:
            layout[f"{prefix}.conv.blur.kernel"] = (4, 4)
        layout[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        layout[f"{prefix}.conv.modulation.bias"] = (cin,)
        layout[f"{prefix}.noise.weight"] = (1,)
        layout[f"{prefix}.activate.bias"] = (cout,)

    def to_rgb(prefix: str, cin: int, upsample: bool) -> None:
        layout[f"{prefix}.bias"] = (1, 3, 1, 1)
        if upsample:
            layout[f"{prefix}.upsample.kernel"] = (4, 4)
        layout[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        layout[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        layout[f"{prefix}.conv.modulation.bias"] = (cin,)

    styled_conv("conv1", ch[4], ch[4], upsample=False)
    to_rgb("to_rgb1", ch[4], upsample=False)
    widths = [ch[2**log_res] for log_res in range(2, log_size + 1)]
    for j, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
        styled_conv(f"convs.{2 * j}", cin, cout, upsample=True)
        styled_conv(f"convs.{2 * j + 1}", cout, cout, upsample=False)
    for j, cout in enumerate(widths[1:]):
        to_rgb(f"to_rgbs.{j}", cout, upsample=True)
    for k in range(2 * (log_size - 2) + 1):
        res = 2 ** ((k + 5) // 2)
        layout[f"noises.noise_{k}"] = (1, 1, res, res)
    return layout


def _shape_is(x: Tensor, trailing: tuple[int, ...]) -> bool:
    """Whether ``x`` is [batch, *trailing]; always true while tracing for export (sizes are symbolic then)."""
    if torch.jit.is_tracing():
        return True
    return x.dim() == len(trailing) + 1 and tuple(x.shape[1:]) == trailing


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 4 or size > _MAX_SIZE or size & (size - 1):
        raise ValueError(f"generator size must be a power of two from 4 to {_MAX_SIZE}, got {size!r}")


# ----------------------------------------------------------------------------------------------
# Functional building blocks


def make_blur_kernel(taps: Sequence[float] = BLUR_TAPS, upsample_factor: int = 1) -> Tensor:
    """Normalised 2-D FIR kernel (outer product of ``taps``), times ``upsample_factor**2``."""
    k1 = torch.tensor(list(taps), dtype=torch.float32)
    kernel = torch.outer(k1, k1)
    return kernel / kernel.sum() * upsample_factor**2


def fused_leaky_relu(x: Tensor, bias: Tensor) -> Tensor:
    """``leaky_relu(x + bias, 0.2) * sqrt(2)`` with ``bias`` broadcast over channel dim 1."""
    bias = bias.reshape(1, -1, *([1] * (x.dim() - 2)))
    return F.leaky_relu(x + bias, _LRELU_SLOPE) * _LRELU_GAIN


def _pad_crop(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Zero-pad the spatial borders where positive, crop them where negative."""
    pads = [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)]
    if any(pads):
        x = F.pad(x, pads)
    return x[
        :,
        :,
        max(-top, 0) : (bottom if bottom < 0 else None),
        max(-left, 0) : (right if right < 0 else None),
    ]


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, FIR-filter and downsample ``x`` [B,C,H,W], export-friendly.

    Same result as :func:`upfirdn2d_reference` (rosinality's semantics, ``pad`` applied to both
    axes), computed as one depthwise convolution: a grouped transposed convolution of stride ``up``
    when upsampling, a grouped convolution otherwise.
    """
    kh, kw = kernel.shape
    return _upfirdn2d_static(x, kernel, x.shape[1], (kh, kw), up, down, pad)


def _upfirdn2d_static(
    x: Tensor,
    kernel: Tensor,
    channels: int,
    kernel_size: tuple[int, int],
    up: int,
    down: int,
    pad: tuple[int, int],
) -> Tensor:
    """:func:`upfirdn2d` with the channel count and kernel size given as Python ints.

    Modules pass them from construction time, so that tracing for export sees no tensor-valued sizes.
    """
    kh, kw = kernel_size
    pad0, pad1 = pad
    weight = kernel.to(x.dtype)[None, None].repeat(channels, 1, 1, 1)
    if up == 1:
        flipped = weight.flip([2, 3])
        if pad0 == pad1 >= 0:
            out = F.conv2d(x, flipped, padding=pad0, groups=channels)
        else:
            out = F.conv2d(_pad_crop(x, pad0, pad1, pad0, pad1), flipped, groups=channels)
    else:
        # The transposed convolution scatters every input pixel through the kernel: the full
        # convolution of the zero-inserted input. Output j of upfirdn2d sits at index j + k - 1 - pad0.
        top, bottom = kh - 1 - pad0, kh - up - pad1
        left, right = kw - 1 - pad0, kw - up - pad1
        if top == bottom >= 0 and left == right >= 0:
            out = F.conv_transpose2d(x, weight, stride=up, padding=(top, left), groups=channels)
        else:
            out = F.conv_transpose2d(x, weight, stride=up, groups=channels)
            out = _pad_crop(out, -top, -bottom, -left, -right)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out


def upfirdn2d_reference(
    x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> Tensor:
    """upfirdn2d as rosinality's ``upfirdn2d_native`` runs it on the CPU: every channel a plane,
    zeros inserted by padding, pad (crop where negative), one single-channel convolution with the
    flipped kernel over all planes, then keep every ``down``-th pixel."""
    batch, channels, height, width = x.shape
    kh, kw = kernel.shape
    pad0, pad1 = pad
    # [B*C, H, 1, W, 1, 1]: padding the two unit axes with up - 1 zeros interleaves the zeros.
    planes = F.pad(x.reshape(-1, height, 1, width, 1, 1), [0, 0, 0, up - 1, 0, 0, 0, up - 1])
    planes = planes.reshape(-1, height * up, width * up, 1)
    planes = F.pad(planes, [0, 0, max(pad0, 0), max(pad1, 0), max(pad0, 0), max(pad1, 0)])
    planes = planes[
        :,
        max(-pad0, 0) : planes.shape[1] - max(-pad1, 0),
        max(-pad0, 0) : planes.shape[2] - max(-pad1, 0),
    ]
    weight = kernel.to(x.dtype).flip([0, 1]).view(1, 1, kh, kw)
    out = F.conv2d(planes.permute(0, 3, 1, 2), weight)[:, :, ::down, ::down]
    return out.reshape(batch, channels, out.shape[-2], out.shape[-1])


def _upfirdn2d_dispatched(x: Tensor, kernel: Tensor, up: int, pad: tuple[int, int]) -> Tensor:
    """upfirdn2d as rosinality dispatches it: the native code on the CPU, else :func:`upfirdn2d`
    (its CUDA kernel is not built here)."""
    if x.device.type == "cpu":
        return upfirdn2d_reference(x, kernel, up=up, pad=pad)
    return upfirdn2d(x, kernel, up=up, pad=pad)


def _upsample_blur_pad(blur_len: int, kernel_size: int, factor: int = 2) -> tuple[int, int]:
    """Blur padding after a stride-``factor`` transposed conv: the output is exactly ``factor`` times larger."""
    p = (blur_len - factor) - (kernel_size - 1)
    return (p + 1) // 2 + factor - 1, p // 2 + 1


def modulated_conv2d_reference(
    x: Tensor,
    weight: Tensor,
    style: Tensor,
    demodulate: bool = True,
    upsample: bool = False,
    blur_kernel: Tensor | None = None,
) -> Tensor:
    """Modulated convolution as rosinality writes it: per-sample weights, one grouped convolution.

    ``x`` [B,in,H,W], ``weight`` [out,in,k,k] (already multiplied by its equalised-lr scale),
    ``style`` [B,in]. With ``upsample``: stride-2 transposed convolution then ``blur_kernel``
    (default: the [1,3,3,1] kernel times 4), native upfirdn2d on the CPU.
    """
    batch, cin, height, width = x.shape
    cout, _, ksize, _ = weight.shape
    per_sample = weight[None] * style[:, None, :, None, None]
    if demodulate:
        demod = torch.rsqrt(per_sample.pow(2).sum([2, 3, 4]) + 1e-8)
        per_sample = per_sample * demod[:, :, None, None, None]
    grouped_input = x.reshape(1, batch * cin, height, width)
    if upsample:
        grouped = per_sample.transpose(1, 2).reshape(batch * cin, cout, ksize, ksize)
        out = F.conv_transpose2d(grouped_input, grouped, stride=2, groups=batch)
        out = out.reshape(batch, cout, out.shape[-2], out.shape[-1])
        if blur_kernel is None:
            blur_kernel = make_blur_kernel(upsample_factor=2).to(x.device)
        return _upfirdn2d_dispatched(out, blur_kernel, 1, _upsample_blur_pad(blur_kernel.shape[0], ksize))
    grouped = per_sample.reshape(batch * cout, cin, ksize, ksize)
    out = F.conv2d(grouped_input, grouped, padding=ksize // 2, groups=batch)
    return out.reshape(batch, cout, height, width)


# ----------------------------------------------------------------------------------------------
# Layers (names and parameters as rosinality's, so the state dict lines up)


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square: ``x / sqrt(mean(x^2) + eps)``.

    ``eps`` is StyleGAN's 1e-8 unless a preset asks otherwise (see ``Preset.motion_norm_eps``)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: raw weights, scaled at run time."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    """FIR blur of ``channels`` channels with a fixed ``kernel`` buffer (upfirdn2d without resampling)."""

    def __init__(
        self, taps: Sequence[float], pad: tuple[int, int], channels: int, upsample_factor: int = 1
    ) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, upsample_factor))
        self.kernel_size = (len(taps), len(taps))
        self.pad = pad
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return _upfirdn2d_static(x, self.kernel, self.channels, self.kernel_size, 1, 1, self.pad)


class Upsample(nn.Module):
    """FIR upsampling (default 2x) of ``channels`` channels with a fixed ``kernel`` buffer."""

    def __init__(self, taps: Sequence[float], channels: int, factor: int = 2) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, factor))
        self.kernel_size = (len(taps), len(taps))
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.channels = channels
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return _upfirdn2d_static(x, self.kernel, self.channels, self.kernel_size, self.factor, 1, self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution, computed as input scaling, static conv, output demodulation."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_taps: Sequence[float] = BLUR_TAPS,
    ) -> None:
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        if upsample:
            pad = _upsample_blur_pad(len(blur_taps), kernel_size)
            self.blur = Blur(blur_taps, pad, out_channel, upsample_factor=2)
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def scaled_weight(self) -> Tensor:
        """The effective static weight [out, in, k, k] (raw weight times the equalised-lr scale)."""
        return self.weight[0] * self.scale

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        style = self.modulation(w)
        weight = self.scaled_weight()
        if self.demodulate:
            # FP16 guard (StyleGAN2-ADA): style per sample and weight per output channel divided by their
            # largest magnitude, the weight then scaled by 1/sqrt(fan-in); the demodulation factor below,
            # computed from the same normalised values, undoes both scales, so only the range changes.
            style = style / style.abs().amax(dim=1, keepdim=True).clamp_min(_NORM_FLOOR)
            weight = weight * (self.scale / weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(_NORM_FLOOR))
        x = x * style[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # d[b, o] = rsqrt(sum_i s[b, i]^2 * sum_kk W[o, i]^2); kept in at least fp32 (fp16 overflows).
            stat_dtype = torch.promote_types(weight.dtype, torch.float32)
            weight_sq = weight.to(stat_dtype).pow(2).sum([2, 3])
            demod = torch.rsqrt(style.to(stat_dtype).pow(2) @ weight_sq.t() + 1e-8)
            out = out * demod.to(out.dtype)[:, :, None, None]
        return out


class NoiseInjection(nn.Module):
    """Adds a learned multiple of a noise image."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: Tensor, noise: Tensor) -> Tensor:
        return image + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU (0.2) and sqrt(2) gain."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    """Modulated 3x3 conv, noise, bias and activation."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        style_dim: int,
        upsample: bool = False,
        blur_taps: Sequence[float] = BLUR_TAPS,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, 3, style_dim, upsample=upsample, blur_taps=blur_taps
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        return self.activate(self.noise(self.conv(x, w), noise)).clamp(-CONV_CLAMP, CONV_CLAMP)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation), plus the upsampled skip image."""

    def __init__(
        self, in_channel: int, style_dim: int, upsample: bool = True, blur_taps: Sequence[float] = BLUR_TAPS
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_taps, 3)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
        out = (self.conv(x, w) + self.bias).clamp(-CONV_CLAMP, CONV_CLAMP)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 constant the synthesis starts from."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch_like: Tensor) -> Tensor:
        return self.input.expand(batch_like.shape[0], -1, -1, -1)


# ----------------------------------------------------------------------------------------------
# Generator


class Generator(nn.Module):
    """StyleGAN2 generator (mapping + synthesis) with rosinality's ``g_ema`` state-dict layout."""

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        channel_cap: int = 512,
        lr_mlp: float = 0.01,
        channels: Sequence[int] = (),
    ) -> None:
        """``channels``, when given, lists the width at 4, 8, ... ``size`` px and replaces rosinality's table."""
        super().__init__()
        _check_size(size)
        positive = {"style_dim": style_dim, "channel_multiplier": channel_multiplier, "channel_cap": channel_cap}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if n_mlp < 0:
            raise ValueError(f"n_mlp must be zero or more, got {n_mlp!r}")
        if lr_mlp <= 0:
            raise ValueError(f"lr_mlp must be positive, got {lr_mlp!r}")
        self.size = size
        self.style_dim = style_dim
        self.log_size = int(math.log2(size))
        self.num_layers = 2 * (self.log_size - 2) + 1
        self.n_latent = 2 * self.log_size - 2
        self.channels = rosinality_channels(size, channel_multiplier, channel_cap)
        if channels:
            if len(channels) != len(self.channels) or min(channels) < 1:
                raise ValueError(f"channels must list {len(self.channels)} positive widths (4 to {size} px), got {list(channels)}")
            self.channels = dict(zip(self.channels, channels))

        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)),
        )
        ch4 = self.channels[4]
        self.input = ConstantInput(ch4)
        self.conv1 = StyledConv(ch4, ch4, style_dim)
        self.to_rgb1 = ToRGB(ch4, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = ch4
        for log_res in range(3, self.log_size + 1):
            out_channel = self.channels[2**log_res]
            self.convs.append(StyledConv(in_channel, out_channel, style_dim, upsample=True))
            self.convs.append(StyledConv(out_channel, out_channel, style_dim))
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel

        self.noises = nn.Module()
        rng = torch.Generator().manual_seed(NOISE_SEED)
        for k in range(self.num_layers):
            res = 2 ** ((k + 5) // 2)
            self.noises.register_buffer(f"noise_{k}", torch.randn(1, 1, res, res, generator=rng))

    def mapping(self, z: Tensor) -> Tensor:
        """Map ``z`` [B, style_dim] to ``w`` [B, style_dim] (PixelNorm, then the style MLP)."""
        if not _shape_is(z, (self.style_dim,)):
            raise ValueError(f"z must have shape [batch, {self.style_dim}], got {list(z.shape)}")
        return self.style(z)

    def _check_latents(self, latents: Tensor) -> list[Tensor]:
        """Raise ValueError unless ``latents`` is [B, n_latent, style_dim]; returns the noise buffers."""
        if not _shape_is(latents, (self.n_latent, self.style_dim)):
            raise ValueError(
                f"latents must have shape [batch, {self.n_latent}, {self.style_dim}], got {list(latents.shape)}"
            )
        return [getattr(self.noises, f"noise_{k}") for k in range(self.num_layers)]

    def synthesis(self, latents: Tensor) -> Tensor:
        """Render W+ ``latents`` [B, n_latent, style_dim] to images [B, 3, size, size] (about [-1, 1]).

        Uses the constant noise buffers (rosinality's ``randomize_noise=False``).
        """
        noise = self._check_latents(latents)
        out = self.conv1(self.input(latents), latents[:, 0], noise[0])
        skip = self.to_rgb1(out, latents[:, 1])
        i = 1
        for up_conv, conv, noise_up, noise_conv, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs
        ):
            out = up_conv(out, latents[:, i], noise_up)
            out = conv(out, latents[:, i + 1], noise_conv)
            skip = to_rgb(out, latents[:, i + 2], skip)
            i += 2
        return skip

    def forward(self, latents: Tensor) -> Tensor:
        """Same as :meth:`synthesis`."""
        return self.synthesis(latents)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, seed: int = 0) -> Tensor:
        """Average ``w`` [1, style_dim] over ``n`` mapped standard-normal ``z`` drawn with ``seed``."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n!r}")
        z = torch.randn(n, self.style_dim, generator=torch.Generator().manual_seed(seed))
        param = self.input.input
        return self.mapping(z.to(device=param.device, dtype=param.dtype)).mean(0, keepdim=True)

    @staticmethod
    def truncate(w: Tensor, w_avg: Tensor, psi: float) -> Tensor:
        """Truncation trick: ``w_avg + psi * (w - w_avg)`` (``w_avg`` broadcasts over W+ layers)."""
        return w_avg + psi * (w - w_avg)


def _styled_conv_reference(layer: StyledConv, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
    """``layer`` as rosinality's StyledConv runs: fused modulated conv, noise, fused leaky ReLU."""
    conv = layer.conv
    blur = conv.blur.kernel if conv.upsample else None
    out = modulated_conv2d_reference(x, conv.scaled_weight(), conv.modulation(w), conv.demodulate, conv.upsample, blur)
    return fused_leaky_relu(out + layer.noise.weight * noise, layer.activate.bias)


def _to_rgb_reference(layer: ToRGB, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
    """``layer`` as rosinality's ToRGB runs: fused modulated 1x1 conv, bias, FIR-upsampled skip."""
    conv = layer.conv
    out = modulated_conv2d_reference(x, conv.scaled_weight(), conv.modulation(w), conv.demodulate) + layer.bias
    if skip is not None:
        out = out + _upfirdn2d_dispatched(skip, layer.upsample.kernel, layer.upsample.factor, layer.upsample.pad)
    return out


def synthesis_reference(generator: Generator, latents: Tensor) -> Tensor:
    """:meth:`Generator.synthesis` with the generator run the way the reference implementation runs
    (rosinality's per-sample weights, grouped convolutions): the benchmarks' 1.0x baseline and a test oracle."""
    noise = generator._check_latents(latents)
    out = _styled_conv_reference(generator.conv1, generator.input(latents), latents[:, 0], noise[0])
    skip = _to_rgb_reference(generator.to_rgb1, out, latents[:, 1])
    i = 1
    for up_conv, conv, noise_up, noise_conv, to_rgb in zip(
        generator.convs[::2], generator.convs[1::2], noise[1::2], noise[2::2], generator.to_rgbs
    ):
        out = _styled_conv_reference(up_conv, out, latents[:, i], noise_up)
        out = _styled_conv_reference(conv, out, latents[:, i + 1], noise_conv)
        skip = _to_rgb_reference(to_rgb, out, latents[:, i + 2], skip)
        i += 2
    return skip


def generator_from_preset(preset: Preset) -> Generator:
    """A randomly initialised :class:`Generator` sized by a :class:`training.presets.Preset`."""
    return Generator(
        preset.resolution,
        style_dim=preset.style_dim,
        n_mlp=preset.n_mlp,
        channel_multiplier=preset.channel_multiplier,
        channel_cap=preset.channel_cap,
        channels=preset.generator_channels,
    )
