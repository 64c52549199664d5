"""Foreign checkpoint files written from their published layouts, never from this project's modules.

Each key list below is written out from the structure of the code that saves the file (rosinality's
``stylegan2-pytorch`` ``Generator``, e4e's ``Encoder4Editing`` on IR-SE-50, OpenAI CLIP's
``ModifiedResNet`` and text ``Transformer``, the reference implementation's ``UniEditModelv1``),
as ``/work/shared/PAPER-NOTES.md`` states it, with sizes as parameters so that the same writers
make the published full-size layouts (compared shape for shape with our networks) and
small-but-real-layout files for end-to-end tests. Values are seeded random numbers, except the
fixed blur kernels. Nothing here imports ``training`` or ``export``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

Layout = dict[str, tuple[int, ...]]


# -- rosinality StyleGAN2 g_ema ----------------------------------------------------------------
def rosinality_g_ema_layout(size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2) -> Layout:
    """rosinality's ``Generator(size, style_dim, n_mlp, channel_multiplier)``: its state-dict shapes."""
    channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
                256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}  # fmt: skip
    out: Layout = {}
    for i in range(1, n_mlp + 1):  # style.0 is the PixelNorm
        out[f"style.{i}.weight"] = (style_dim, style_dim)
        out[f"style.{i}.bias"] = (style_dim,)
    out["input.input"] = (1, channels[4], 4, 4)

    def styled_conv(name: str, cin: int, cout: int, upsample: bool) -> None:
        out[f"{name}.conv.weight"] = (1, cout, cin, 3, 3)
        if upsample:
            out[f"{name}.conv.blur.kernel"] = (4, 4)
        out[f"{name}.conv.modulation.weight"] = (cin, style_dim)
        out[f"{name}.conv.modulation.bias"] = (cin,)
        out[f"{name}.noise.weight"] = (1,)
        out[f"{name}.activate.bias"] = (cout,)

    def to_rgb(name: str, cin: int, upsample: bool) -> None:
        out[f"{name}.bias"] = (1, 3, 1, 1)
        if upsample:
            out[f"{name}.upsample.kernel"] = (4, 4)
        out[f"{name}.conv.weight"] = (1, 3, cin, 1, 1)
        out[f"{name}.conv.modulation.weight"] = (cin, style_dim)
        out[f"{name}.conv.modulation.bias"] = (cin,)

    styled_conv("conv1", channels[4], channels[4], False)
    to_rgb("to_rgb1", channels[4], False)
    log_size = int(math.log2(size))
    previous = channels[4]
    for k, i in enumerate(range(3, log_size + 1)):
        width = channels[2**i]
        styled_conv(f"convs.{2 * k}", previous, width, True)
        styled_conv(f"convs.{2 * k + 1}", width, width, False)
        to_rgb(f"to_rgbs.{k}", width, True)
        previous = width
    for layer in range((log_size - 2) * 2 + 1):
        side = 2 ** ((layer + 5) // 2)
        out[f"noises.noise_{layer}"] = (1, 1, side, side)
    return out


def _blur_kernel() -> torch.Tensor:
    """rosinality's ``make_kernel([1, 3, 3, 1])`` times 4 (the up-sampling factor squared): sums to 4."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = taps[None] * taps[:, None]
    return kernel / kernel.sum() * 4


def random_tensors(layout: Layout, seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Seeded normal values in every shape of ``layout`` (BatchNorm statistics and counters made valid)."""
    rng = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=rng) + 0.5
        elif key.endswith(("blur.kernel", "upsample.kernel")):
            out[key] = _blur_kernel()
        else:
            out[key] = torch.randn(shape, generator=rng) * scale
    return out


def rosinality_checkpoint(size: int, style_dim: int, n_mlp: int, seed: int = 0) -> dict:
    """What rosinality's ``train.py`` saves: ``g``, ``d`` (a stand-in), ``g_ema``, ``g_optim``..., ``args``."""
    g_ema = random_tensors(rosinality_g_ema_layout(size, style_dim, n_mlp), seed)
    g_ema = {k: v * 0.2 if k.startswith("style.") and k.endswith("weight") else v for k, v in g_ema.items()}
    return {
        "g": {k: v.clone() for k, v in g_ema.items()},
        "d": {"convs.0.0.weight": torch.zeros(3, 3, 1, 1)},
        "g_ema": g_ema,
        "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "params": []}]},
        "latent_avg": torch.randn(style_dim, generator=torch.Generator().manual_seed(seed + 1)),
    }


# -- e4e -----------------------------------------------------------------------------------------
def _batch_norm(out: Layout, name: str, channels: int) -> None:
    for kind in ("weight", "bias", "running_mean", "running_var"):
        out[f"{name}.{kind}"] = (channels,)
    out[f"{name}.num_batches_tracked"] = ()


def e4e_encoder_layout(
    widths: Sequence[int] = (64, 128, 256, 512),
    units: Sequence[int] = (3, 4, 14, 3),
    n_styles: int = 18,
    style_dim: int = 512,
    input_size: int = 256,
    coarse_ind: int = 3,
    middle_ind: int = 7,
) -> Layout:
    """e4e's ``Encoder4Editing`` on IR-SE-(50): ``encoder.*`` shapes. Defaults: the published FFHQ encoder."""
    out: Layout = {"encoder.input_layer.0.weight": (widths[0], 3, 3, 3)}
    _batch_norm(out, "encoder.input_layer.1", widths[0])
    out["encoder.input_layer.2.weight"] = (widths[0],)
    unit, cin = 0, widths[0]
    for width, count in zip(widths, units):
        for _ in range(count):
            name = f"encoder.body.{unit}"
            if cin != width:  # otherwise a MaxPool2d(1, stride) shortcut, without parameters
                out[f"{name}.shortcut_layer.0.weight"] = (width, cin, 1, 1)
                _batch_norm(out, f"{name}.shortcut_layer.1", width)
            _batch_norm(out, f"{name}.res_layer.0", cin)
            out[f"{name}.res_layer.1.weight"] = (width, cin, 3, 3)
            out[f"{name}.res_layer.2.weight"] = (width,)
            out[f"{name}.res_layer.3.weight"] = (width, width, 3, 3)
            _batch_norm(out, f"{name}.res_layer.4", width)
            out[f"{name}.res_layer.5.fc1.weight"] = (width // 16, width, 1, 1)
            out[f"{name}.res_layer.5.fc2.weight"] = (width, width // 16, 1, 1)
            unit, cin = unit + 1, width
    for i in range(n_styles):
        side = input_size // 16 if i < coarse_ind else input_size // 8 if i < middle_ind else input_size // 4
        c_in = widths[3]
        for k in range(int(math.log2(side))):  # Conv2d(stride 2) + LeakyReLU, repeated
            out[f"encoder.styles.{i}.convs.{2 * k}.weight"] = (style_dim, c_in, 3, 3)
            out[f"encoder.styles.{i}.convs.{2 * k}.bias"] = (style_dim,)
            c_in = style_dim
        out[f"encoder.styles.{i}.linear.weight"] = (style_dim, style_dim)
        out[f"encoder.styles.{i}.linear.bias"] = (style_dim,)
    out["encoder.latlayer1.weight"] = (widths[3], widths[2], 1, 1)
    out["encoder.latlayer1.bias"] = (widths[3],)
    out["encoder.latlayer2.weight"] = (widths[3], widths[1], 1, 1)
    out["encoder.latlayer2.bias"] = (widths[3],)
    return out


def e4e_checkpoint(encoder_layout: Layout, decoder_layout: Layout, n_styles: int, style_dim: int, seed: int = 0) -> dict:
    """What e4e's coach saves: ``state_dict`` (``encoder.*``, ``decoder.*``), ``opts``, ``latent_avg``."""
    encoder = random_tensors(encoder_layout, seed, scale=0.1)
    decoder = {f"decoder.{k}": v for k, v in random_tensors(decoder_layout, seed + 1).items()}
    opts = {"exp_dir": "experiments/ffhq", "encoder_type": "Encoder4Editing", "stylegan_size": 1024,
            "batch_size": 8, "start_from_latent_avg": True, "checkpoint_path": None, "lpips_lambda": 0.8}  # fmt: skip
    latent_avg = torch.randn(n_styles, style_dim, generator=torch.Generator().manual_seed(seed + 2))
    return {"state_dict": {**encoder, **decoder}, "opts": opts, "latent_avg": latent_avg}


# -- OpenAI CLIP (ModifiedResNet image tower and text transformer) -----------------------------
def openai_clip_layout(
    embed_dim: int = 1024,
    image_layers: Sequence[int] = (3, 4, 6, 3),
    image_width: int = 64,
    image_size: int = 224,
    text_width: int = 512,
    text_layers: int = 12,
    context_length: int = 77,
    vocab_size: int = 49408,
) -> Layout:
    """OpenAI CLIP's ``CLIP`` module state dict with a ModifiedResNet tower. Defaults: RN50."""
    out: Layout = {"positional_embedding": (context_length, text_width), "text_projection": (text_width, embed_dim),
                   "logit_scale": ()}  # fmt: skip
    stem = image_width // 2
    out["visual.conv1.weight"] = (stem, 3, 3, 3)
    _batch_norm(out, "visual.bn1", stem)
    out["visual.conv2.weight"] = (stem, stem, 3, 3)
    _batch_norm(out, "visual.bn2", stem)
    out["visual.conv3.weight"] = (image_width, stem, 3, 3)
    _batch_norm(out, "visual.bn3", image_width)
    inplanes = image_width
    for layer, blocks in enumerate(image_layers):
        planes = image_width * 2**layer
        for block in range(blocks):
            name = f"visual.layer{layer + 1}.{block}"
            stride = 2 if layer > 0 and block == 0 else 1
            out[f"{name}.conv1.weight"] = (planes, inplanes, 1, 1)
            _batch_norm(out, f"{name}.bn1", planes)
            out[f"{name}.conv2.weight"] = (planes, planes, 3, 3)
            _batch_norm(out, f"{name}.bn2", planes)
            out[f"{name}.conv3.weight"] = (planes * 4, planes, 1, 1)
            _batch_norm(out, f"{name}.bn3", planes * 4)
            if stride > 1 or inplanes != planes * 4:
                out[f"{name}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                _batch_norm(out, f"{name}.downsample.1", planes * 4)
            inplanes = planes * 4
    width = image_width * 32
    out["visual.attnpool.positional_embedding"] = ((image_size // 32) ** 2 + 1, width)
    for proj in ("k_proj", "q_proj", "v_proj"):
        out[f"visual.attnpool.{proj}.weight"] = (width, width)
        out[f"visual.attnpool.{proj}.bias"] = (width,)
    out["visual.attnpool.c_proj.weight"] = (embed_dim, width)
    out["visual.attnpool.c_proj.bias"] = (embed_dim,)
    for i in range(text_layers):
        name = f"transformer.resblocks.{i}"
        out[f"{name}.attn.in_proj_weight"] = (3 * text_width, text_width)
        out[f"{name}.attn.in_proj_bias"] = (3 * text_width,)
        out[f"{name}.attn.out_proj.weight"] = (text_width, text_width)
        out[f"{name}.attn.out_proj.bias"] = (text_width,)
        out[f"{name}.ln_1.weight"] = out[f"{name}.ln_1.bias"] = (text_width,)
        out[f"{name}.mlp.c_fc.weight"] = (4 * text_width, text_width)
        out[f"{name}.mlp.c_fc.bias"] = (4 * text_width,)
        out[f"{name}.mlp.c_proj.weight"] = (text_width, 4 * text_width)
        out[f"{name}.mlp.c_proj.bias"] = (text_width,)
        out[f"{name}.ln_2.weight"] = out[f"{name}.ln_2.bias"] = (text_width,)
    out["token_embedding.weight"] = (vocab_size, text_width)
    out["ln_final.weight"] = out["ln_final.bias"] = (text_width,)
    return out


TINY_CLIP = dict(embed_dim=64, image_layers=(1, 1, 1, 1), image_width=16, image_size=64, text_width=32, text_layers=2)
"""The tiny preset's CLIP (``tiny-rn``) in OpenAI's layout."""


def openai_clip_tensors(layout: Layout, seed: int) -> dict[str, torch.Tensor]:
    """Seeded values for an OpenAI CLIP layout, scaled (weights ~ sqrt(gain/fan-in), unit norm gains) so that
    activations keep their size through both towers and the outputs depend on the inputs."""
    tensors = random_tensors(layout, seed, scale=0.05)
    for key, value in tensors.items():
        if value.dim() >= 2:  # He initialisation for convolutions (ReLU follows), LeCun for the rest
            gain = 2.0 if value.dim() == 4 else 1.0
            tensors[key] = value / 0.05 * math.sqrt(gain / math.prod(value.shape[1:]))
        elif key.endswith("running_mean"):
            tensors[key] = torch.zeros_like(value)
        elif key.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight")) or (".bn" in key and key.endswith("weight")):
            tensors[key] = torch.ones_like(value)
    tensors["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return tensors


# -- the reference implementation's Iter_*.pth -------------------------------------------------
def reference_model_layout(embed_dim: int, hidden: int, n_latent: int, style_dim: int, mapper_width: int) -> Layout:
    """``UniEditModelv1``'s non-CLIP entries: ``rnn.fc1-3`` and the two mapper ``nn.Sequential``s."""
    out: Layout = {
        "rnn.fc1.weight": (hidden, embed_dim), "rnn.fc1.bias": (hidden,),
        "rnn.fc2.weight": (embed_dim, 2 * hidden), "rnn.fc2.bias": (embed_dim,),
        "rnn.fc3.weight": (hidden, 2 * hidden), "rnn.fc3.bias": (hidden,),
    }  # fmt: skip
    for mapper in ("v_mapper", "t_mapper"):
        sizes = [(mapper_width, embed_dim), (mapper_width, mapper_width), (n_latent * style_dim, mapper_width)]
        for index, (n_out, n_in) in enumerate(sizes, start=1):  # index 0 is the PixelNorm
            out[f"mapper.{mapper}.{index}.weight"] = (n_out, n_in)
            out[f"mapper.{mapper}.{index}.bias"] = (n_out,)
    return out


def reference_iter_checkpoint(clip: dict[str, torch.Tensor], model_layout: Layout, step: int, seed: int = 0) -> dict:
    """What the reference's ``dist_train.py`` saves: ``{iter, arch, state_dict, optimizer}``, DDP ``module.`` names.

    The optimiser is Adam over three groups (encoder, rnn, mapper), betas (0, 0.999), after one step.
    """
    rest = random_tensors(model_layout, seed, scale=0.5)
    state = {**{f"module.encoder.{k}": v for k, v in clip.items()}, **{f"module.{k}": v for k, v in rest.items()}}
    groups = {"encoder": [], "rnn": [], "mapper": []}
    for key, value in state.items():
        if value.is_floating_point() and "running_" not in key:
            groups[key.split(".")[1]].append(torch.nn.Parameter(value.clone()))
    optimizer = torch.optim.Adam(
        [{"params": p, "lr": lr, "betas": (0.0, 0.999)} for p, lr in zip(groups.values(), (1e-5, 1e-3, 1e-3))]
    )
    for group in groups.values():
        for parameter in group:
            parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    return {"iter": step, "arch": "RN50", "state_dict": state, "optimizer": optimizer.state_dict()}


# -- the reference's motion function, by hand in float64 ---------------------------------------
Linear = tuple[np.ndarray, np.ndarray]


def lrelu(x: np.ndarray, slope: float) -> np.ndarray:
    return np.where(x >= 0, x, slope * x)


def mapper_by_hand(layers: Sequence[Linear], x: np.ndarray, lr_mul: float = 1.0, eps: float = 1e-8) -> np.ndarray:
    """PixelNorm (epsilon ``eps``), then EqualLinear layers (weight x lr_mul / sqrt(in), bias x lr_mul),
    each fused lrelu x sqrt 2."""
    h = x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + eps)
    for weight, bias in layers:
        h = lrelu(h @ (weight * lr_mul / np.sqrt(weight.shape[1])).T + bias * lr_mul, 0.2) * np.sqrt(2)
    return h


def recurrence_by_hand(fc: dict[str, Linear], z0: np.ndarray, frames: int, training: bool = False) -> np.ndarray:
    """PAPER-NOTES' recurrence z_0..z_{T-1} [B, T, Z], h_0 = 0; step 0.8/T (training) or 0.8/T (T-t)/T."""
    (w1, b1), (w2, b2), (w3, b3) = fc["fc1"], fc["fc2"], fc["fc3"]
    z, h = z0, np.zeros((z0.shape[0], w1.shape[0]))
    out = [z0]
    for t in range(1, frames):
        a = np.concatenate([lrelu(z @ w1.T + b1, 0.01), h], axis=1)
        r = 0.8 / frames if training else 0.8 / frames * (frames - t) / frames
        z, h = z + r * lrelu(a @ w2.T + b2, 0.01), h + r * lrelu(a @ w3.T + b3, 0.01)
        out.append(z)
    return np.stack(out, axis=1)


def _linear(state: dict[str, torch.Tensor], prefix: str) -> Linear:
    return state[f"{prefix}.weight"].double().numpy(), state[f"{prefix}.bias"].double().numpy()


def reference_motion(state: dict[str, torch.Tensor], z0: np.ndarray, frames: int) -> np.ndarray:
    """Motion offsets H_t(z_t - z_0) [B, T, L*S] of an ``Iter_*.pth`` state dict: inference decay, h_0 = 0."""
    fc = {name: _linear(state, f"module.rnn.{name}") for name in ("fc1", "fc2", "fc3")}
    motion = recurrence_by_hand(fc, z0, frames) - z0[:, None]
    return mapper_by_hand([_linear(state, f"module.mapper.t_mapper.{i}") for i in (1, 2, 3)], motion)
