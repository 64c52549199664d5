"""The parameter reader: a small CNN that reads all 16 face parameters back from a frame.

Input: RGB in [-1, 1], [B, 3, S, S] (the synthesis graph's output layout); output: the parameters
[B, 16] on the 0-1 scale. It is trained on renders, half of each batch blurred by a Gaussian of a
random width, so that it also reads the softer frames a generator makes. ``lgfa eval`` runs it as
the bundle's ``parameter_reader`` graph; the generator trainer's gate is its error on generated frames.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from training.atomic import atomic_path
from training.errors import CheckpointError
from training.faces.dataset import FaceSet, load_or_render_set
from training.faces.parameters import IDENTITY, NAMES
from training.faces.run import Run, batch_indices

log = logging.getLogger(__name__)

BLUR_SIGMAS = (0.5, 1.5)
"""Range of the Gaussian blur's sigma (pixels) applied to half of each training batch."""
READER_FILE = "reader.safetensors"
"""The trained reader's weights in its folder, with its input size and width in the metadata."""


class ParameterReader(nn.Module):
    """Four stages of a stride-2 3x3 convolution (32, 64, 96, 128 channels), each but the first
    followed by a 3x3 convolution at its resolution, each with batch normalisation; then two linear
    layers and a sigmoid."""

    def __init__(self, size: int = 64, width: int = 32, n_parameters: int = len(NAMES)) -> None:
        super().__init__()
        if size % 16 or size < 16:
            raise ValueError(f"the reader's input size must be a multiple of 16, got {size}")
        channels = (3, width, 2 * width, 3 * width, 4 * width)
        layers: list[nn.Module] = []
        for stage, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]
            if stage > 0:
                layers += [nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * (size // 16) ** 2, 256), nn.LeakyReLU(0.1), nn.Linear(256, n_parameters))
        self.size = size
        self.width = width

    def forward(self, image: Tensor) -> Tensor:
        return torch.sigmoid(self.head(self.features(image)))


class IdentityReading(nn.Module):
    """A frozen reader's identity parameters [B, 8] (``IDENTITY``) of generated frames [B, 3, S, S] in
    [-1, 1], resized to the reader's input: what ``lgfa train --lambda-identity`` holds to the content's."""

    def __init__(self, reader: ParameterReader) -> None:
        super().__init__()
        self.reader = reader.eval().requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        size = self.reader.size
        if images.shape[-1] != size:
            images = F.interpolate(images.float(), size=(size, size), mode="area" if images.shape[-1] > size else "bilinear")
        return self.reader(images)[:, : len(IDENTITY)]


def save_reader(reader: ParameterReader, path: str | os.PathLike) -> None:
    """Write the reader's weights as safetensors (atomically), its size and width in the metadata."""
    state = {name: value.detach().contiguous() for name, value in reader.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"size": str(reader.size), "width": str(reader.width)})


def load_reader(path: str | os.PathLike) -> ParameterReader:
    """A reader written by :func:`save_reader` (``train_reader``'s ``reader.safetensors``), in eval mode."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}
        size, width = int(metadata["size"]), int(metadata["width"])
        if not (16 <= size <= 1024 and 1 <= width <= 256):
            raise ValueError(f"input size {size} px and width {width} lie outside 16-1024 and 1-256")
        reader = ParameterReader(size, width)
        reader.load_state_dict(state)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a safetensors file ({error}); give the {READER_FILE} that training wrote") from None
    except (KeyError, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0]
        raise CheckpointError(f"{path} does not hold a parameter reader ({reason}); give the {READER_FILE} that training wrote") from None
    return reader.eval()


def faces_to_tensor(faces: np.ndarray) -> Tensor:
    """uint8 BGR [N, H, W, 3] -> float RGB in [-1, 1], [N, 3, H, W]."""
    rgb = torch.from_numpy(np.ascontiguousarray(faces[..., ::-1])).permute(0, 3, 1, 2)
    return rgb.float() / 127.5 - 1.0


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of [N, C, H, W] with reflect padding."""
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def augment(images: Tensor, seed: int, step: int) -> Tensor:
    """Blur the second half of the batch by a sigma drawn from ``BLUR_SIGMAS`` for this step."""
    sigma = float(np.random.default_rng([seed, step, 1]).uniform(*BLUR_SIGMAS))
    half = images.shape[0] // 2
    return torch.cat([images[:half], gaussian_blur(images[half:], sigma)])


@torch.no_grad()
def read_parameters(reader: ParameterReader, images: Tensor, batch: int = 256) -> Tensor:
    """The reader's parameters [N, 16] for images [N, 3, S, S] in [-1, 1]."""
    reader.eval()
    return torch.cat([reader(images[i : i + batch]) for i in range(0, len(images), batch)])


def mean_absolute_error(read: Tensor, truth: Tensor) -> dict[str, float]:
    """Per-parameter mean absolute error, plus ``expression`` and ``identity`` means."""
    error = (read - truth).abs().mean(0)
    out = {name: float(error[i]) for i, name in enumerate(NAMES)}
    out["expression"] = float(error[len(IDENTITY) :].mean())
    out["identity"] = float(error[: len(IDENTITY)].mean())
    return out


def train_reader(
    out: str,
    *,
    steps: int,
    seed: int = 0,
    size: int = 64,
    n_faces: int = 20000,
    batch: int = 64,
    lr: float = 1e-3,
    width: int = 32,
    workers: int = 2,
    face_set: FaceSet | None = None,
    held_out: FaceSet | None = None,
) -> tuple[ParameterReader, dict[str, float]]:
    """Train (or resume) the reader in ``out`` on renders with every identity parameter varying, and
    write its weights to ``out/reader.safetensors``; returns it and its error on held-out renders
    (default 1,000; half of them blurred)."""
    torch.manual_seed(seed)
    reader = ParameterReader(size, width)
    optimizer = torch.optim.Adam(reader.parameters(), lr=lr)
    options = {"trainer": "reader", "seed": seed, "size": size, "n_faces": n_faces, "batch": batch, "lr": lr, "width": width}
    run = Run(out, options, {"reader": reader}, optimizer)
    if face_set is None:
        face_set = load_or_render_set(f"{out}/faces.npz", n_faces, seed, size, IDENTITY, workers)
    images = faces_to_tensor(face_set.faces)
    truth = torch.from_numpy(face_set.parameters)
    reader.train()
    for step in run.steps(steps, "reader"):
        rows = torch.from_numpy(batch_indices(seed, step, len(face_set), batch))
        loss = F.l1_loss(reader(augment(images[rows], seed, step)), truth[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            run.log({"l1": loss.item()})
    save_reader(reader, Path(out) / READER_FILE)
    if held_out is None:
        held_out = load_or_render_set(f"{out}/held_out.npz", 1000, seed + 1, size, IDENTITY, workers)
    held_images = augment(faces_to_tensor(held_out.faces), seed + 1, 0)
    error = mean_absolute_error(read_parameters(reader, held_images), torch.from_numpy(held_out.parameters))
    log.info("reader: mean absolute error on held-out renders %.3f (expression %.3f)", np.mean([error[n] for n in NAMES]), error["expression"])
    return reader, error

