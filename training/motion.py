"""The animation networks: recurrent motion generator, the two latent mappers, the composed model.

Per frame t: ``w_t = w_content + H_v(E_v(img)) + H_t(m_t)`` with ``m_t = z_t - z_0`` from the
recurrent generator started at ``z_0 = norm(E_t(text)) + norm(E_v(img))`` (text alone without an
image). Module and parameter names follow the reference implementation's checkpoints
(``encoder.*``, ``rnn.fc1/fc2/fc3``, ``mapper.v_mapper``, ``mapper.t_mapper``), except one level: the
reference stores each mapper as its ``nn.Sequential`` (``mapper.t_mapper.1.weight``), ours keeps it
under ``mapping`` (``mapper.t_mapper.mapping.1.weight``); ``training.checkpoints`` maps the names.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from training.clip_model import create_clip
from training.presets import Preset
from training.stylegan2 import EqualLinear, PixelNorm

Decay = Literal["constant", "linear"]


def step_factor(t: int, frames: int, decay: Decay) -> float:
    """The recurrence's step size r at step t of T frames: 0.8/T (training) or 0.8/T*(T-t)/T (inference)."""
    base = 0.8 / frames
    if decay == "constant":
        return base
    if decay == "linear":
        return base * (frames - t) / frames
    raise ValueError(f"decay must be 'constant' or 'linear', got {decay!r}")


class MotionGenerator(nn.Module):
    """Recurrent motion generator M: z_0 [B, Z] -> z_0..z_{T-1} [B, T, Z]."""

    def __init__(self, z_dim: int = 1024, hidden: int = 384, slope: float = 0.01) -> None:
        super().__init__()
        self.hidden = hidden
        self.slope = slope
        self.fc1 = nn.Linear(z_dim, hidden)
        self.fc2 = nn.Linear(2 * hidden, z_dim)
        self.fc3 = nn.Linear(2 * hidden, hidden)

    def forward(self, z0: Tensor, frames: int, decay: Decay = "linear", h0: Tensor | None = None) -> Tensor:
        """Unroll for ``frames`` steps; ``h0`` defaults to zeros so the result is deterministic."""
        h = z0.new_zeros(z0.shape[0], self.hidden) if h0 is None else h0
        z = z0
        states = [z0]
        for t in range(1, frames):
            a = torch.cat([F.leaky_relu(self.fc1(z), self.slope), h], dim=1)
            r = step_factor(t, frames, decay)
            z = z + r * F.leaky_relu(self.fc2(a), self.slope)
            h = h + r * F.leaky_relu(self.fc3(a), self.slope)
            states.append(z)
        return torch.stack(states, dim=1)


class LatentMapper(nn.Module):
    """PixelNorm then three equalised-lr linear layers, each with fused leaky ReLU: [..., Z] -> [..., L, S].

    ``lr_mul`` 1 is the reference's (weight x 1/sqrt(in_dim), bias as stored); see ``Preset.mapper_lr_mul``.
    ``norm_eps`` is the PixelNorm's epsilon (the reference's 1e-8; see ``Preset.motion_norm_eps``).
    """

    def __init__(self, in_dim: int, n_latent: int, style_dim: int, lr_mul: float = 1.0, norm_eps: float = 1e-8) -> None:
        super().__init__()
        self.n_latent = n_latent
        self.style_dim = style_dim
        self.mapping = nn.Sequential(
            PixelNorm(norm_eps),
            EqualLinear(in_dim, in_dim, lr_mul=lr_mul, activation=True),
            EqualLinear(in_dim, in_dim, lr_mul=lr_mul, activation=True),
            EqualLinear(in_dim, n_latent * style_dim, lr_mul=lr_mul, activation=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        flat = self.mapping(x.reshape(-1, x.shape[-1]))
        return flat.reshape(*x.shape[:-1], self.n_latent, self.style_dim)


class Mappers(nn.Module):
    """The visual mapper H_v and the text-aware motion mapper H_t (whose PixelNorm takes ``motion_norm_eps``)."""

    def __init__(self, in_dim: int, n_latent: int, style_dim: int, lr_mul: float, motion_norm_eps: float = 1e-8) -> None:
        super().__init__()
        self.v_mapper = LatentMapper(in_dim, n_latent, style_dim, lr_mul)
        self.t_mapper = LatentMapper(in_dim, n_latent, style_dim, lr_mul, motion_norm_eps)


class AnimationModel(nn.Module):
    """CLIP encoder (text and image towers), motion generator and mappers of one preset."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.preset = preset
        self.encoder = create_clip(preset.clip_model)
        self.rnn = MotionGenerator(preset.embed_dim, preset.motion_hidden, preset.motion_slope)
        self.mapper = Mappers(preset.embed_dim, preset.n_latent, preset.style_dim, preset.mapper_lr_mul, preset.motion_norm_eps)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Tokens [B, 77] -> L2-normalised text embedding [B, E]."""
        return F.normalize(self.encoder.encode_text(tokens), dim=-1)

    def encode_image(self, images: Tensor) -> Tensor:
        """CLIP-normalised images [B, 3, S, S] -> L2-normalised image embedding [B, E]."""
        return F.normalize(self.encoder.encode_image(images), dim=-1)

    def motion_offsets(
        self,
        text_embedding: Tensor,
        frames: int,
        image_embedding: Tensor | None = None,
        decay: Decay = "linear",
        h0: Tensor | None = None,
    ) -> Tensor:
        """H_t(m_t) for t = 0..T-1: [B, T, L, S]. Embeddings must already be normalised."""
        z0 = text_embedding if image_embedding is None else text_embedding + image_embedding.detach()
        z = self.rnn(z0, frames, decay, h0)
        return self.mapper.t_mapper(z - z0[:, None])

    def latents(
        self,
        content: Tensor,
        text_embedding: Tensor,
        frames: int,
        image_embedding: Tensor | None = None,
        decay: Decay = "linear",
    ) -> Tensor:
        """Per-frame W+ [B, T, L, S] from content W+ [B, L, S]: content + H_v(E_v) + H_t(m_t)."""
        offsets = self.motion_offsets(text_embedding, frames, image_embedding, decay)
        return self.compose(content, offsets, image_embedding)

    def compose(self, content: Tensor, offsets: Tensor, image_embedding: Tensor | None = None) -> Tensor:
        """Per-frame W+ from content [B, L, S] and motion offsets [B, T, L, S], plus H_v(E_v) with an image."""
        w = content[:, None] + offsets
        if image_embedding is not None:
            w = w + self.mapper.v_mapper(image_embedding)[:, None]
        return w
