"""The paper's training losses as plain functions of tensors (PAPER-NOTES, "Training").

Shapes: per-frame motion offsets ``H_t(m_t)`` and per-frame latents ``w_t`` are [B, T, L, S];
content latents are [B, L, S]; images are [B, 3, H, W] in [-1, 1].
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from training.clip_model import CLIP_MEAN, CLIP_STD


def contrastive_loss(
    image_features: Tensor, text_features: Tensor, tau: float = 0.07, group: int | None = None
) -> Tensor:
    """``mean_i log(1 + sum_j exp((s_ij - s_ii) / tau))`` over cosine similarities ``s`` within each group.

    The batch is cut into consecutive groups of ``group`` image-text pairs (default: one group, the
    whole batch); row ``i`` of a group is compared with every text ``j`` of that group, ``j = i``
    included, exactly as PAPER-NOTES writes it and as the reference implementation computes it. The
    ``j = i`` term adds ``exp(0) = 1``, so each row is ``log(2 + sum_{j != i} ...)``, where the paper's
    equation (11) (softmax cross-entropy) gives ``log(1 + sum_{j != i} ...)``; both fall as the
    matching pair pulls ahead. The mean is over every row of every group, so a batch split across
    processes (one group each) averages to the same loss as the whole batch in one process.
    """
    batch = image_features.shape[0]
    group = batch if group is None else group
    if group < 1 or batch % group:
        raise ValueError(f"a batch of {batch} does not split into contrastive groups of {group}")
    images = F.normalize(image_features.float(), dim=-1).reshape(batch // group, group, -1)
    texts = F.normalize(text_features.float(), dim=-1).reshape(batch // group, group, -1)
    similarity = images @ texts.transpose(1, 2)  # [groups, i, j]
    matching = similarity.diagonal(dim1=1, dim2=2).unsqueeze(-1)  # s_ii as a column
    return torch.log1p(torch.exp((similarity - matching) / tau).sum(dim=-1)).mean()


def path_regularizer(offsets: Tensor) -> Tensor:
    """Second-order latent path regulariser ``mse(w_{t+1} - w_t, w_t - w_{t-1})`` over t = 1..T-2.

    The content is the same in every frame, so differences of ``w_t`` are differences of ``H_t(m_t)``.
    """
    if offsets.shape[1] < 3:
        raise ValueError(f"the path regulariser needs at least 3 frames, got {offsets.shape[1]}")
    step = offsets[:, 1:] - offsets[:, :-1]
    return F.mse_loss(step[:, 1:], step[:, :-1])


def latent_regularizer(latents: Tensor, content: Tensor) -> Tensor:
    """``sum_t mse(w_t, w_content)``: every frame's W+ stays near the content (summed over frames)."""
    return torch.stack([F.mse_loss(latents[:, t], content) for t in range(latents.shape[1])]).sum()


def endpoint_regularizer(offsets: Tensor) -> Tensor:
    """First/last-frame regulariser ``mse(H_t(m_0), H_t(m_{T-1}))``: the clip returns towards its start."""
    return F.mse_loss(offsets[:, 0], offsets[:, -1])


def colour_statistics(images: Tensor) -> Tensor:
    """Each image's per-channel mean and population standard deviation over its pixels: [B, 2, C]."""
    flat = images.float().flatten(2)
    return torch.stack([flat.mean(-1), flat.std(-1, correction=0)], dim=1)


def colour_statistics_loss(images: Tensor, reference: Tensor) -> Tensor:
    """``mse`` of each image's per-channel mean and standard deviation against the reference's
    (:func:`colour_statistics` [B, 2, C] of the reference images): holds a face's colours (skin,
    hair, background) and leaves its shapes free.

    Not one of the paper's terms: in latent mode there is no input photo for its LPIPS, and this is
    the substitute the synthetic face domain measured (the reference is the content's own render)."""
    statistics = colour_statistics(images)
    if statistics.shape != reference.shape:
        raise ValueError(f"colour statistics {list(statistics.shape)} and reference {list(reference.shape)} differ in shape")
    reference = reference.float()
    return F.mse_loss(statistics[:, 0], reference[:, 0]) + F.mse_loss(statistics[:, 1], reference[:, 1])


def identity_loss(readings: Tensor, reference: Tensor, margin: float = 0.0) -> Tensor:
    """Mean of ``max(|readings - reference| - margin, 0)`` over a batch of identity readings [B, K]: L1
    beyond a margin, so that the small shifts a reader shows as an expression changes cost nothing.

    Not one of the paper's terms: the synthetic face domain's stand-in for an identity network's loss
    (the readings are a frozen parameter reader's identity parameters of frame T-1 and of the content)."""
    if readings.shape != reference.shape:
        raise ValueError(f"identity readings {list(readings.shape)} and reference {list(reference.shape)} differ in shape")
    return F.relu((readings.float() - reference.float()).abs() - margin).mean()


class ContentReferences:
    """Statistics (``colour_statistics``, a reader's identity readings) of contents' own renders, each
    content rendered once for all of them. With ``n_contents`` (latent mode: the contents are a fixed
    file) each content is rendered the first time it is drawn and its statistics kept; without, every
    call renders its contents afresh (once, whatever the number of statistics)."""

    def __init__(
        self,
        statistics: dict[str, Callable[[Tensor], Tensor]],
        render: Callable[[Tensor], Tensor],
        n_contents: int | None = None,
    ) -> None:
        self.statistics = statistics
        self.render = render
        self.known = None if n_contents is None else torch.zeros(n_contents, dtype=torch.bool)
        self.values: dict[str, Tensor] = {}

    @torch.no_grad()
    def measure(self, contents: Tensor) -> dict[str, Tensor]:
        """Every statistic of the contents [B, ...], from one render."""
        images = self.render(contents)
        return {name: statistic(images) for name, statistic in self.statistics.items()}

    @torch.no_grad()
    def __call__(self, contents: Tensor, ids: Sequence[int] | None = None) -> dict[str, Tensor]:
        """Every statistic [B, ...] of the contents [B, ...]; ``ids`` (their indices) when the contents are fixed."""
        if self.known is None:
            return self.measure(contents)
        if ids is None:
            raise ValueError("fixed contents are looked up by their indices: give ids")
        index = torch.as_tensor(list(ids), dtype=torch.long)
        missing = [row for row, i in enumerate(index.tolist()) if not self.known[i]]
        if missing:
            for name, fresh in self.measure(contents[missing]).items():
                if name not in self.values:
                    self.values[name] = fresh.new_zeros((len(self.known), *fresh.shape[1:]))
                self.values[name][index[missing].to(fresh.device)] = fresh
            self.known[index[missing]] = True
        return {name: values[index.to(values.device)] for name, values in self.values.items()}


def resize_images(images: Tensor, size: int) -> Tensor:
    """Square images to ``size`` px: average pooling to shrink (the paper's 1024 -> 224), bilinear to enlarge."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    if height >= size and width >= size:
        return F.adaptive_avg_pool2d(images, size)
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def clip_normalize(images: Tensor) -> Tensor:
    """Images in [-1, 1] -> CLIP's input normalisation ``((x + 1) / 2 - mean) / std``."""
    mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std
