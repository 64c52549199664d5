"""LPIPS (AlexNet variant), the perceptual distance of Zhang et al. 2018, for the training loss.

The inputs in [-1, 1] are shifted and scaled per channel, run through AlexNet's convolutional
features, and read at relu1..relu5 (64, 192, 384, 256, 256 channels). Each feature vector is
normalised to unit length over channels; the squared difference of the two images' features is
weighted per channel by a learned 1x1 convolution, averaged over space and summed over the five
layers. Weights come from local files: the lpips package's ``alex.pth`` (heads ``lin0.model.1.weight``
.. ``lin4.model.1.weight``), torchvision's AlexNet state dict (``features.*``), or a whole lpips model
state dict (``net.sliceN.*`` and ``linN.*``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file
from torch import Tensor, nn

from training.checkpoints import sha256_file, torch_load
from training.errors import CheckpointError

CHANNELS: tuple[int, ...] = (64, 192, 384, 256, 256)
# AlexNet ``features`` index ranges ending at relu1..relu5.
SLICES: tuple[tuple[int, int], ...] = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
SHIFT: tuple[float, float, float] = (-0.030, -0.088, -0.188)
SCALE: tuple[float, float, float] = (0.458, 0.448, 0.450)
EPS = 1e-10

_HEAD_KEY = re.compile(r"^lin(\d)\.model\.1\.weight$")
_SLICE_KEY = re.compile(r"^net\.slice\d\.(\d+)\.(weight|bias)$")
_FEATURE_KEY = re.compile(r"^features\.(\d+)\.(weight|bias)$")


class LPIPS(nn.Module):
    """Perceptual distance between two batches of images in [-1, 1]: [B, 3, H, W] x2 -> [B]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torchvision.models.alexnet(weights=None).features[: SLICES[-1][1]]
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)
        for head, channels in zip(self.heads, CHANNELS):
            # Non-negative like trained heads, so that random weights still give a distance.
            nn.init.uniform_(head.weight, 0.0, 2.0 / channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def layer_features(self, images: Tensor) -> list[Tensor]:
        """AlexNet activations at relu1..relu5 of the shifted and scaled images."""
        x = (images - self.shift) / self.scale
        outputs = []
        for start, stop in SLICES:
            x = self.features[start:stop](x)
            outputs.append(x)
        return outputs

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        distance = first.new_zeros(first.shape[0])
        for head, a, b in zip(self.heads, self.layer_features(first), self.layer_features(second)):
            a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)
            b = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)
            distance = distance + head((a - b) ** 2).mean(dim=(1, 2, 3))
        return distance


def _read_tensors(path: Path) -> dict[str, Tensor]:
    expected = "LPIPS weights (lpips alex.pth heads and/or a torchvision AlexNet state dict)"
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist; expected {expected}")
        return load_file(str(path))
    obj = torch_load(path, expected)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: found a {type(obj).__name__}; expected {expected}")
    return {k.removeprefix("module."): v for k, v in obj.items() if torch.is_tensor(v)}


def load_lpips_weights(lpips: LPIPS, paths: list[str | os.PathLike]) -> None:
    """Load LPIPS weight files into ``lpips``; together the files must hold every tensor it has."""
    state: dict[str, Tensor] = {}
    for path in map(Path, paths):
        found = 0
        for key, value in _read_tensors(path).items():
            head = _HEAD_KEY.match(key)
            layer = _SLICE_KEY.match(key) or _FEATURE_KEY.match(key)
            if head:
                state[f"heads.{head.group(1)}.weight"] = value
            elif layer and int(layer.group(1)) < SLICES[-1][1]:
                state[f"features.{layer.group(1)}.{layer.group(2)}"] = value
            else:
                continue
            found += 1
        if not found:
            raise CheckpointError(
                f"{path} has no LPIPS tensors (expected keys lin0.model.1.weight.. or features.0.weight..)"
            )
    own = lpips.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        parts = sorted({"heads (lpips alex.pth)" if k.startswith("heads.") else "AlexNet backbone" for k in missing})
        raise CheckpointError(
            f"--lpips-weights lacks the {' and the '.join(parts)}: missing {missing[:3]}; "
            "give the lpips package's alex.pth and torchvision's AlexNet weights"
        )
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"--lpips-weights: {wrong[0][0]} has shape {wrong[0][1]}, expected {wrong[0][2]}")
    lpips.load_state_dict(state)


def build_lpips(paths: list[str | os.PathLike] | None, seed: int) -> tuple[LPIPS, list[dict[str, str]]]:
    """A frozen LPIPS from weight files, or seeded random weights when ``paths`` is None; also its sources."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lpips = LPIPS()
    sources: list[dict[str, str]] = []
    if paths:
        load_lpips_weights(lpips, paths)
        sources = [{"role": "lpips", "path": str(p), "sha256": sha256_file(p)} for p in paths]
    lpips.eval().requires_grad_(False)
    return lpips, sources
