"""Model presets: every size and name of one animation model, chosen by name."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Preset:
    """One animation model: the StyleGAN2 it drives, its CLIP towers and its motion networks.

    ``mapper_lr_mul`` is the equalised-lr multiplier of the mappers' EqualLinear layers: 1, as in the
    reference implementation (weight x 1/sqrt(in_dim), bias as stored). Checkpoints and bundles
    written before 2026-11-30 record 0.01 in their stored preset and keep computing with it.

    ``motion_norm_eps`` is the epsilon of the PixelNorm that starts the motion mapper H_t: the
    reference's 1e-8 makes H_t see only the direction of m_t, so every clip jumps from frame 0 (m_0 = 0,
    a constant offset) to a full-sized offset at frame 1, whatever the recurrence's step. A larger
    epsilon (``faces-64``: 1) lets a small m_t give a small offset, so the motion grows with the
    recurrence; it must then be trained on the inference schedule (``lgfa train --decay linear
    --frames 16``), since the offset's size now follows m_t's. Files that do not record it computed
    with 1e-8.
    """

    name: str
    resolution: int
    description: str
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_cap: int = 512
    clip_model: str = "RN50"
    loss_clip_model: str = "ViT-B-32"
    embed_dim: int = 1024
    motion_hidden: int = 384
    motion_slope: float = 0.01
    mapper_lr_mul: float = 1.0
    motion_norm_eps: float = 1e-8
    train_frames: int = 4
    frames: int = 16
    prompt_template: str = "The person is {}."
    generator_channels: tuple[int, ...] = ()  # widths at 4, 8, ... px; empty: rosinality's table

    def __post_init__(self) -> None:
        object.__setattr__(self, "generator_channels", tuple(self.generator_channels))  # a list when read from JSON

    @property
    def n_latent(self) -> int:
        """Number of W+ layers: 2 * log2(resolution / 2)."""
        return 2 * int(math.log2(self.resolution)) - 2

    def to_dict(self) -> dict:
        return {**asdict(self), "generator_channels": list(self.generator_channels)}  # as JSON reads it back

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> Preset:
        """The preset a checkpoint or bundle recorded, field by field; unknown or missing fields raise ValueError.

        ``mapper_lr_mul`` must be recorded: files written before the reference's multiplier 1 became
        the default carry 0.01 and keep computing with it.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(stored) - names)
        if unknown:
            raise ValueError(f"the recorded preset has fields this version does not know: {unknown}")
        if "mapper_lr_mul" not in stored:
            raise ValueError("the recorded preset does not say its mapper learning-rate multiplier")
        return cls(**stored)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("ffhq-1024", 1024, "the paper: FFHQ StyleGAN2 at 1024 px, CLIP RN50, 18 latents"),
        Preset("stylegan-512", 512, "512 px generators (the paper's dog, anime and art domains), 16 latents"),
        Preset("ffhq-256", 256, "FFHQ StyleGAN2 at 256 px with the paper's CLIP RN50 and motion networks"),
        Preset(
            "tiny",
            32,
            "a few-second CPU model for tests: 32 px, narrow generator, tiny CLIP",
            style_dim=64,
            n_mlp=2,
            channel_cap=32,
            clip_model="tiny-rn",
            loss_clip_model="tiny-vit",
            embed_dim=64,
            motion_hidden=32,
        ),
        Preset(
            "faces-64",
            64,
            "the synthetic cartoon-face domain (training/faces): 64 px generator trained by regression, "
            "CLIP trained on renders",
            style_dim=32,
            n_mlp=4,
            generator_channels=(128, 128, 128, 64, 32),
            clip_model="faces-rn",
            loss_clip_model="faces-rn",
            embed_dim=64,
            motion_hidden=64,
            motion_norm_eps=1.0,
        ),
    )
}


def get_preset(name: str) -> Preset:
    """Return the preset called ``name``; unknown names list the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
