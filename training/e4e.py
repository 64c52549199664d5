"""e4e (Encoder4Editing): an aligned face -> W+ latents, laid out key for key like ``e4e_ffhq_encode.pt``.

The paper inverts its input photo with e4e (Tov et al., 2021): an IR-SE-50 backbone whose three
feature maps (1/4, 1/8 and 1/16 of the input) feed a small feature pyramid, and one
``GradualStyleBlock`` per W+ layer (strided 3x3 convolutions down to 1x1, then an equalised linear
layer). Style 0 predicts the base latent ``w``; every other style adds a delta to it; ``latent_avg``
(the generator's mean latent) is added last. Only the inference path is written (all deltas on);
e4e's progressive training stages are not.

:class:`Encoder4Editing` holds exactly the checkpoint's ``encoder.*`` entries; :class:`E4E` wraps it
with the ``latent_avg`` buffer, so its state dict is ``encoder.*`` plus ``latent_avg``, the
checkpoint's namespace. :func:`load_e4e` reads the published file through the project's checkpoint
I/O, and also the project's own safetensors form that :func:`save_e4e` writes (a bundle's
``e4e.safetensors``). The forward pass exports to ONNX opset 17 with a free batch axis: Conv,
BatchNormalization, PRelu, MaxPool, GlobalAveragePool, Sigmoid, LeakyRelu, Resize (linear,
align_corners), Gemm/MatMul.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.errors import CheckpointError
from training.stylegan2 import EqualLinear

IR_SE_50_UNITS: tuple[int, int, int, int] = (3, 4, 14, 3)
"""Bottleneck units per stage of IR-SE-50."""
IR_SE_50_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
"""Channels per stage of IR-SE-50."""


@dataclass(frozen=True)
class E4EConfig:
    """One e4e architecture. The published FFHQ encoder is :data:`E4E_CONFIGS` ``["ffhq"]``."""

    name: str
    n_styles: int = 18
    """W+ layers predicted: 2 * log2(generator size) - 2."""
    style_dim: int = 512
    input_size: int = 256
    """Side of the aligned input face; the pyramid reads it at 1/4, 1/8 and 1/16."""
    stage_widths: tuple[int, int, int, int] = IR_SE_50_WIDTHS
    stage_units: tuple[int, int, int, int] = IR_SE_50_UNITS
    se_reduction: int = 16
    coarse_ind: int = 3
    """Styles below this read the 1/16 map (c3)."""
    middle_ind: int = 7
    """Styles from ``coarse_ind`` below this read the 1/8 pyramid level (p2); the rest read 1/4 (p1)."""

    def __post_init__(self) -> None:
        if len(self.stage_widths) != 4 or len(self.stage_units) != 4 or min(self.stage_units) < 1:
            raise ValueError(f"{self.name}: e4e needs 4 stages with at least one unit each")
        if self.input_size < 16 or self.input_size & (self.input_size - 1):
            raise ValueError(f"{self.name}: input size must be a power of two of at least 16, got {self.input_size}")
        if not 1 <= self.coarse_ind <= self.middle_ind <= self.n_styles:
            raise ValueError(f"{self.name}: need 1 <= coarse_ind <= middle_ind <= n_styles")
        if min(self.stage_widths) // self.se_reduction < 1:
            raise ValueError(f"{self.name}: every stage needs at least se_reduction={self.se_reduction} channels")

    def spatial(self, style: int) -> int:
        """Side of the feature map that ``style`` reads (its block halves it log2(spatial) times)."""
        if style < self.coarse_ind:
            return self.input_size // 16
        if style < self.middle_ind:
            return self.input_size // 8
        return self.input_size // 4


E4E_CONFIGS: dict[str, E4EConfig] = {
    c.name: c
    for c in (
        E4EConfig("ffhq"),
        # for tests: the tiny preset's 8 latents of 64, on a 64 px face, one narrow unit per stage (two in stage 3)
        E4EConfig("tiny", n_styles=8, style_dim=64, input_size=64, stage_widths=(16, 32, 64, 128),
                  stage_units=(1, 1, 2, 1), coarse_ind=2, middle_ind=4),
    )
}


# ----------------------------------------------------------------------------------------------
# IR-SE-50


class SEModule(nn.Module):
    """Squeeze-and-excitation: scale each channel by a gate computed from the global average."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """IR-SE unit: BN, 3x3 conv, PReLU, 3x3 conv (stride), BN, SE; plus a (strided) shortcut."""

    def __init__(self, in_channels: int, depth: int, stride: int, se_reduction: int = 16) -> None:
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, se_reduction),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """One W+ layer: log2(spatial) stride-2 3x3 convs with LeakyReLU(0.01) down to 1x1, then EqualLinear."""

    def __init__(self, in_channels: int, style_dim: int, spatial: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            layers += [
                nn.Conv2d(in_channels if i == 0 else style_dim, style_dim, kernel_size=3, stride=2, padding=1),
                nn.LeakyReLU(0.01),
            ]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(style_dim, style_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.convs(x).flatten(1))


def _upsample_add(coarse: Tensor, lateral: Tensor) -> Tensor:
    """Bilinear (align_corners) upsampling of ``coarse`` to ``lateral``'s size, plus ``lateral``."""
    return F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class Encoder4Editing(nn.Module):
    """e4e's encoder: an aligned face [B, 3, S, S] in [-1, 1] -> W+ offsets [B, n_styles, style_dim].

    The state dict is the checkpoint's ``encoder.*`` without the prefix. The output is the latent
    *before* ``latent_avg`` is added (see :class:`E4E`).
    """

    def __init__(self, config: E4EConfig | str = "ffhq") -> None:
        super().__init__()
        self.config = config = E4E_CONFIGS[config] if isinstance(config, str) else config
        widths, units = config.stage_widths, config.stage_units
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.PReLU(widths[0]),
        )
        body: list[nn.Module] = []
        in_channels = widths[0]
        for width, count in zip(widths, units, strict=True):
            body.append(BottleneckIRSE(in_channels, width, 2, config.se_reduction))
            body += [BottleneckIRSE(width, width, 1, config.se_reduction) for _ in range(count - 1)]
            in_channels = width
        self.body = nn.Sequential(*body)
        ends = np.cumsum(units) - 1
        self.feature_units: tuple[int, int, int] = (int(ends[1]), int(ends[2]), int(ends[3]))
        """Units after which c1 (1/4), c2 (1/8) and c3 (1/16) are read: 6, 20, 23 in IR-SE-50."""
        top = widths[3]
        self.styles = nn.ModuleList(
            GradualStyleBlock(top, config.style_dim, config.spatial(i)) for i in range(config.n_styles)
        )
        self.latlayer1 = nn.Conv2d(widths[2], top, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(widths[1], top, kernel_size=1, stride=1, padding=0)

    def forward(self, images: Tensor) -> Tensor:
        size = self.config.input_size
        if not torch.jit.is_tracing() and (images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size)):
            raise ValueError(f"e4e takes aligned faces of shape [batch, 3, {size}, {size}], got {list(images.shape)}")
        x = self.input_layer(images)
        features: list[Tensor] = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.feature_units:
                features.append(x)
        c1, c2, c3 = features
        p2 = _upsample_add(c3, self.latlayer1(c2))
        p1 = _upsample_add(p2, self.latlayer2(c1))
        config = self.config
        w0 = self.styles[0](c3)
        rows = [w0]
        for i in range(1, config.n_styles):
            source = c3 if i < config.coarse_ind else p2 if i < config.middle_ind else p1
            rows.append(w0 + self.styles[i](source))
        return torch.stack(rows, dim=1)


class E4E(nn.Module):
    """The inversion the paper uses: ``W+ = encoder(face) + latent_avg``, [B, 3, S, S] -> [B, n_styles, style_dim].

    State dict: ``encoder.*`` and ``latent_avg`` [n_styles, style_dim], as in ``e4e_ffhq_encode.pt``.
    """

    def __init__(self, config: E4EConfig | str = "ffhq") -> None:
        super().__init__()
        self.encoder = Encoder4Editing(config)
        self.config = self.encoder.config
        self.register_buffer("latent_avg", torch.zeros(self.config.n_styles, self.config.style_dim))

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder(images) + self.latent_avg


def e4e_input(faces_bgr: np.ndarray, size: int = 256) -> Tensor:
    """Aligned uint8 BGR faces [H, W, 3] or [B, H, W, 3] -> e4e's input [B, 3, size, size], RGB in [-1, 1].

    Faces of another size are resized (area averaging down, bilinear up), as e4e's transform does.
    """
    faces = np.asarray(faces_bgr)
    if faces.ndim == 3:
        faces = faces[None]
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
        raise ValueError(f"expected uint8 BGR faces [B, H, W, 3], got {faces.dtype} {list(faces.shape)}")
    tensor = torch.from_numpy(np.ascontiguousarray(faces[..., ::-1])).permute(0, 3, 1, 2).float()
    if tensor.shape[-2:] != (size, size):
        if tensor.shape[-1] > size:
            tensor = F.interpolate(tensor, size=(size, size), mode="area")
        else:
            tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return tensor / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------
# Loading e4e_ffhq_encode.pt


def e4e_layout(config: E4EConfig | str) -> dict[str, tuple[int, ...]]:
    """``encoder.*`` keys and shapes of ``config`` (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        model = Encoder4Editing(config)
    return {f"encoder.{k}": tuple(v.shape) for k, v in model.state_dict().items()}


def _closest_config(layout: Mapping[str, tuple[int, ...]], n_styles: int) -> tuple[E4EConfig, list[str]]:
    """The registered architecture (with the file's style count) that fits ``layout``; else the nearest, and why not."""
    best: tuple[E4EConfig, list[str], int] | None = None
    for config in E4E_CONFIGS.values():
        if n_styles != config.n_styles and n_styles >= config.middle_ind:
            config = dataclasses.replace(config, name=f"{config.name}-{n_styles}", n_styles=n_styles)
        own = e4e_layout(config)
        missing = sorted(set(own) - set(layout))
        unexpected = sorted(set(layout) - set(own))
        wrong = sorted(k for k in set(own) & set(layout) if own[k] != layout[k])
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[:2]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
        if wrong:
            example = f"{wrong[0]} {layout[wrong[0]]}, expected {own[wrong[0]]}"
            problems.append(f"{len(wrong)} of another shape (e.g. {example})")
        score = len(missing) + len(unexpected) + len(wrong)
        if best is None or score < best[2]:
            best = (config, problems, score)
        if not problems:
            break
    assert best is not None  # E4E_CONFIGS is never empty
    return best[0], best[1]


def load_e4e(path: str | os.PathLike, n_latent: int | None = None) -> E4E:
    """Read an e4e encoder into a frozen :class:`E4E`: the published ``e4e_ffhq_encode.pt`` layout, or
    this project's own file (:func:`save_e4e`, a bundle's ``e4e.safetensors``).

    ``n_latent`` (the generator's W+ layers) is checked when given. Every misfit raises
    :class:`CheckpointError` naming what was found and expected.
    """
    from training.checkpoints import read_checkpoint_metadata

    meta = read_checkpoint_metadata(path) if Path(path).is_file() else None
    model = _load_published_e4e(path) if meta is None else _load_own_e4e(Path(path), meta)
    if n_latent is not None and model.config.n_styles != n_latent:
        raise CheckpointError(
            f"{path} inverts to {model.config.n_styles} latents but the generator has {n_latent}; "
            "use the e4e trained for that generator"
        )
    return model


def _load_published_e4e(path: str | os.PathLike) -> E4E:
    """An e4e checkpoint (``state_dict`` with ``encoder.*``, ``latent_avg``).

    The architecture is the registered one whose layout the file matches exactly (the published
    FFHQ encoder, or the tiny test one), with the file's number of styles; ``decoder.*``, ``opts``
    and any discriminator entries are ignored.
    """
    from training.checkpoints import describe_object, torch_load

    expected = (
        "an e4e checkpoint (a dict with 'state_dict' holding encoder.* and 'latent_avg'), e.g. e4e_ffhq_encode.pt"
    )
    obj = torch_load(path, expected)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: found {describe_object(obj)}; expected {expected}")
    encoder = {
        key.removeprefix("module."): value
        for key, value in obj["state_dict"].items()
        if key.removeprefix("module.").startswith("encoder.") and torch.is_tensor(value)
    }
    if not encoder:
        raise CheckpointError(
            f"{path}: its state_dict has no encoder.* tensors ({describe_object(obj['state_dict'])}); "
            f"expected {expected}"
        )
    n_styles = len({k.split(".")[2] for k in encoder if k.startswith("encoder.styles.")})
    layout = {k: tuple(v.shape) for k, v in encoder.items()}
    for key in [k.removesuffix("running_mean") + "num_batches_tracked" for k in layout if k.endswith(".running_mean")]:
        if key not in layout:  # files saved by old PyTorch versions lack the BatchNorm counters
            encoder[key] = torch.zeros((), dtype=torch.long)
            layout[key] = ()
    config, problems = _closest_config(layout, n_styles)
    if problems:
        raise CheckpointError(
            f"{path}: its encoder is not e4e's IR-SE-50 layout ({'; '.join(problems)}); expected {expected}"
        )
    latent_avg = obj.get("latent_avg")
    if not torch.is_tensor(latent_avg):
        raise CheckpointError(f"{path} has no 'latent_avg' tensor (found {describe_object(obj)}); expected {expected}")
    if latent_avg.shape == (config.style_dim,):
        latent_avg = latent_avg.expand(config.n_styles, config.style_dim)
    if tuple(latent_avg.shape) != (config.n_styles, config.style_dim):
        raise CheckpointError(
            f"{path}: latent_avg has shape {tuple(latent_avg.shape)}; expected ({config.n_styles}, {config.style_dim})"
        )

    state = {k: v.float() if v.is_floating_point() else v for k, v in encoder.items()}
    state["latent_avg"] = latent_avg.float().clone()
    return _frozen(config, state)


def _frozen(config: E4EConfig, state: Mapping[str, Tensor]) -> E4E:
    """An evaluation-mode :class:`E4E` of ``config`` holding ``state`` (checked key for key), no gradients."""
    with torch.device("meta"):
        model = E4E(config)
    model.load_state_dict(state, strict=True, assign=True)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# This project's e4e file, and a random e4e for tests


E4E_FORMAT = "lgfa-e4e"
E4E_SCHEMA = 1


def save_e4e(path: str | os.PathLike, model: E4E) -> None:
    """Write ``model`` as one safetensors file, atomically: ``encoder.*`` and ``latent_avg``, with its
    architecture as JSON metadata (what a bundle's ``e4e.safetensors`` holds)."""
    from safetensors.torch import save_file

    from training.atomic import atomic_path

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": E4E_FORMAT,
        "schema_version": str(E4E_SCHEMA),
        "config": json.dumps(dataclasses.asdict(model.config)),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_own_e4e(path: Path, meta: Mapping[str, str]) -> E4E:
    from training.checkpoints import load_safetensors

    if meta.get("format") != E4E_FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an lgfa e4e file (format {meta.get('format')!r})")
    if meta.get("schema_version") != str(E4E_SCHEMA):
        raise CheckpointError(
            f"{path} is an lgfa e4e file of schema {meta.get('schema_version')}; this version reads {E4E_SCHEMA}"
        )
    try:
        fields = json.loads(meta["config"])
        config = E4EConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its e4e architecture cannot be read ({exc})") from None
    tensors = load_safetensors(path, "an lgfa e4e file")
    own = {"latent_avg": (config.n_styles, config.style_dim), **e4e_layout(config)}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != own:
        raise CheckpointError(f"{path}: its tensors do not fit the e4e architecture {config.name} it records")
    return _frozen(config, tensors)


def e4e_config_for(n_latent: int, style_dim: int, tiny: bool = False) -> E4EConfig:
    """The e4e architecture for a generator of ``n_latent`` W+ layers of ``style_dim``: FFHQ's (or the
    tiny test one), with that many styles. Raises ``ValueError`` when none fits."""
    base = E4E_CONFIGS["tiny" if tiny else "ffhq"]
    if style_dim != base.style_dim:
        raise ValueError(f"e4e {base.name} predicts styles of {base.style_dim}, the generator's are {style_dim}")
    if n_latent == base.n_styles:
        return base
    if n_latent < base.middle_ind:
        raise ValueError(f"e4e {base.name} needs at least {base.middle_ind} W+ layers, the generator has {n_latent}")
    return dataclasses.replace(base, name=f"{base.name}-{n_latent}", n_styles=n_latent)


def random_e4e(config: E4EConfig, latent_avg: Tensor, seed: int = 0) -> E4E:
    """A frozen e4e with weights seeded by ``seed`` and the given ``latent_avg`` [n_styles or 1, style_dim]
    (for tests and benchmarks: it inverts no face)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = E4E(config)
    model.latent_avg.copy_(latent_avg.detach().expand_as(model.latent_avg))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()
