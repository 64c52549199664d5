"""The PyTorch reference animation: the frames every exported backend must reproduce."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from training.checkpoints import Models
from training.clip_model import tokenize


def seed_z(seed: int, style_dim: int) -> np.ndarray:
    """The z of a seed: ``numpy.random.default_rng(seed).standard_normal((1, style_dim))`` as float32."""
    return np.random.default_rng(seed).standard_normal((1, style_dim)).astype(np.float32)


def content_from_seed(models: Models, seed: int) -> Tensor:
    """Seed-mode content W+ [1, L, S]: mapping(z) repeated over every layer."""
    w = models.generator.mapping(torch.from_numpy(seed_z(seed, models.preset.style_dim)))
    return w[:, None].repeat(1, models.preset.n_latent, 1)


def to_uint8_bgr(images: Tensor) -> np.ndarray:
    """Images [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] in OpenCV's BGR order."""
    pixels = ((images.detach().float().cpu() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).flip(-1).contiguous().numpy()


@torch.no_grad()
def animate_reference(
    models: Models,
    text: str,
    *,
    seed: int = 0,
    content: Tensor | None = None,
    frames: int | None = None,
    image_embedding: Tensor | None = None,
) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 BGR of ``text`` performed by the seed's face (or by ``content`` W+).

    With a photo, ``content`` is its inversion ``w_inv`` and ``image_embedding`` its normalised CLIP
    image embedding [1, E]: the motion starts from text + image and ``H_v(E_v)`` joins the content.
    """
    frames = frames or models.preset.frames
    w_content = content_from_seed(models, seed) if content is None else content
    text_embedding = models.model.encode_text(tokenize([text]))
    latents = models.model.latents(w_content, text_embedding, frames, image_embedding, decay="linear")[0]
    return np.concatenate([to_uint8_bgr(models.generator.synthesis(w[None])) for w in latents])
