"""Training data: the sentences, the image-mode dataset, and the per-step sampling of a batch.

Every random draw of a step (which images, which sentences, the content noise z, the recurrent
state h_0) comes from generators seeded by ``(seed, step, stream)`` over the *global* batch, and each
process takes its slice. A step's data is therefore a pure function of the step: resuming needs no
data-loader state, and two processes with batch b see exactly what one process with batch 2b sees.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from training.checkpoints import torch_load
from training.errors import CheckpointError, DataError

log = logging.getLogger(__name__)

# The paper's 28 expressions, prompted with the preset's template ("The person is {}.").
EXPRESSIONS: tuple[str, ...] = (
    "smiling", "angry", "closing eyes", "winking", "shocked", "pouting", "crying", "disgusted",
    "appalled", "opening mouth", "hatred", "surprised", "aha", "annoyed", "awkward", "biting tongues",
    "blank stare", "confused", "duck lips", "incredulous", "mocking", "nervous", "no comment", "oh no",
    "serious", "stunned", "whatever", "wtf",
)  # fmt: skip
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})

# Streams of the per-step generators.
_IMAGES, _TEXTS, _CONTENT, _STATE = range(4)



def default_texts(template: str) -> list[str]:
    """The paper's 28 expressions in the prompt template."""
    return [template.format(expression) for expression in EXPRESSIONS]


def read_texts(path: str | os.PathLike) -> list[str]:
    """One sentence per non-empty line of a UTF-8 text file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the sentences file {path}: {exc}") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise DataError(f"{path} holds no sentences; write one sentence per line")
    return texts


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator seeded from (seed, step, stream), independent of every other draw."""
    state = np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def sample_text_ids(seed: int, step: int, n_texts: int, n_groups: int, group: int) -> list[int]:
    """Sentence indices for ``n_groups`` contrastive groups, distinct within each group."""
    if group > n_texts:
        raise ValueError(f"groups of {group} distinct sentences need at least {group} sentences, got {n_texts}")
    generator = step_generator(seed, step, _TEXTS)
    return [i for _ in range(n_groups) for i in torch.randperm(n_texts, generator=generator)[:group].tolist()]


def sample_image_ids(seed: int, step: int, n_images: int, global_batch: int) -> list[int]:
    """Dataset indices of a step: positions ``step * global_batch ...`` of a stream of per-epoch shuffles."""
    ids: list[int] = []
    epoch_order: dict[int, list[int]] = {}
    for position in range(step * global_batch, (step + 1) * global_batch):
        epoch = position // n_images
        if epoch not in epoch_order:
            epoch_order[epoch] = torch.randperm(n_images, generator=step_generator(seed, epoch, _IMAGES)).tolist()
        ids.append(epoch_order[epoch][position % n_images])
    return ids


def sample_normal(seed: int, step: int, stream: int, rows: int, width: int) -> Tensor:
    """Standard-normal draws [rows, width] of one step's stream."""
    return torch.randn(rows, width, generator=step_generator(seed, step, stream))


def sample_content_z(seed: int, step: int, rows: int, width: int) -> Tensor:
    """No-image mode: the z of each global-batch row, mapped to content by the frozen generator."""
    return sample_normal(seed, step, _CONTENT, rows, width)


def sample_initial_state(seed: int, step: int, rows: int, width: int, std: float) -> Tensor:
    """The recurrent generator's h_0 ~ N(0, std^2) of each global-batch row."""
    return sample_normal(seed, step, _STATE, rows, width) * std


def _read_latents(path: Path) -> Tensor | dict[str, Tensor]:
    """A latents file: a tensor [N, L, S] (e4e's ``latents.pt``, rows in sorted file order) or {name: [L, S]}."""
    expected = "W+ latents (a tensor [N, L, S] or a dict of file name -> [L, S], as e4e writes)"
    if path.suffix == ".npy":
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False)).float()
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the latents file {path}: {exc}") from None
    try:
        obj = torch_load(path, expected)
    except CheckpointError as exc:
        raise DataError(str(exc)) from None
    if torch.is_tensor(obj):
        return obj.float()
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return {str(k): v.float() for k, v in obj.items()}
    raise DataError(f"{path} is not {expected}")


def _check_latent(latent: Tensor, where: str, latents: Path, n_latent: int, style_dim: int) -> Tensor:
    """One W+ [L, S] (a leading 1 dropped), or a DataError naming its shape and the preset's."""
    latent = latent.squeeze(0) if latent.dim() == 3 and latent.shape[0] == 1 else latent
    if tuple(latent.shape) != (n_latent, style_dim):
        raise DataError(
            f"the latent of {where} in {latents} has shape {list(latent.shape)}; this preset needs "
            f"[{n_latent}, {style_dim}] (W+ of its generator)"
        )
    return latent.contiguous()


def read_contents(latents: str | os.PathLike, n_latent: int, style_dim: int) -> Tensor:
    """Latent mode's contents [N, L, S]: a tensor file's rows, or a dict's values in sorted key order."""
    latents = Path(latents)
    if not latents.is_file():
        raise DataError(f"the latents file {latents} does not exist")
    table = _read_latents(latents)
    if torch.is_tensor(table) and table.dim() != 3:
        raise DataError(f"{latents} holds a tensor of shape {list(table.shape)}; expected [N, {n_latent}, {style_dim}]")
    rows = list(table) if torch.is_tensor(table) else [table[k] for k in sorted(table)]
    if not rows:
        raise DataError(f"{latents} holds no latents")
    return torch.stack([_check_latent(row, f"row {i}", latents, n_latent, style_dim) for i, row in enumerate(rows)])


@dataclass(frozen=True)
class ImageItem:
    """One training face: the image file and its inverted W+ [L, S]."""

    path: Path
    latent: Tensor


class ImageDataset:
    """A folder of aligned face images with one inverted W+ per image."""

    def __init__(self, folder: str | os.PathLike, latents: str | os.PathLike, n_latent: int, style_dim: int) -> None:
        folder, latents = Path(folder), Path(latents)
        if not folder.is_dir():
            raise DataError(f"the image folder {folder} does not exist")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"{folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        table = _read_latents(latents)
        if torch.is_tensor(table):
            if table.dim() != 3 or table.shape[0] != len(paths):
                raise DataError(
                    f"{latents} holds a tensor of shape {list(table.shape)}; expected [{len(paths)}, {n_latent}, "
                    f"{style_dim}]: one W+ per image of {folder}, in sorted file-name order"
                )
            rows = list(table)
        else:
            rows = []
            for path in paths:
                latent = table.get(path.name, table.get(path.stem))
                if latent is None:
                    raise DataError(f"{latents} has no latent for {path} (looked up {path.name!r} and {path.stem!r})")
                rows.append(latent)
        self.items: list[ImageItem] = []
        for path, latent in zip(paths, rows):
            self.items.append(ImageItem(path, _check_latent(latent, str(path), latents, n_latent, style_dim)))
        log.debug("image dataset: %d faces from %s with latents %s", len(self.items), folder, latents)

    def __len__(self) -> int:
        return len(self.items)

    def images(self, index: int, sizes: tuple[int, ...]) -> list[Tensor]:
        """The image at each of ``sizes`` px, RGB in [-1, 1], [3, size, size] (centre-cropped to a square)."""
        path = self.items[index].path
        pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if pixels is None:
            raise DataError(f"cannot decode the image {path}")
        height, width = pixels.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        pixels = pixels[top : top + side, left : left + side]
        out = []
        for size in sizes:
            resized = pixels
            if side != size:
                interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
                resized = cv2.resize(pixels, (size, size), interpolation=interpolation)
            rgb = torch.from_numpy(np.ascontiguousarray(resized[:, :, ::-1])).permute(2, 0, 1).float()
            out.append(rgb / 127.5 - 1)
        return out
