"""Inception v3 pool features for FID, from torchvision's weights in a local file (never downloaded).

The network is torchvision's ``inception_v3`` with ``transform_input=True``, as its ImageNet weights
expect: frames are resized to 299x299 (bilinear), scaled to [0, 1] and normalised with ImageNet's
mean and std; the features are the 2,048 values after global average pooling (the ``fc`` layer is
dropped). These are the torchvision weights, not pytorch-fid's TensorFlow port, so scores are
comparable with each other, not with published FIDs.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception_v3

from training.checkpoints import load_inception_weights

SIZE = 299
FEATURES = 2048
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def inception_network() -> nn.Module:
    """torchvision's Inception v3 as its ImageNet weights were trained (auxiliary head, input transform)."""
    return inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)


def load_inception(path: str | os.PathLike) -> nn.Module:
    """The pool-feature network [N, 3, 299, 299] -> [N, 2048] with the weights of ``path``, in eval mode."""
    network = inception_network()
    weights = load_inception_weights(path, set(network.state_dict()))
    network.load_state_dict(weights, strict=False)
    network.fc = nn.Identity()
    network.AuxLogits = None
    return network.eval().requires_grad_(False)


@torch.no_grad()
def inception_features(network: nn.Module, frames: np.ndarray, batch: int = 16) -> np.ndarray:
    """Pool features [N, 2048] of uint8 BGR frames [N, H, W, 3]."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(frames), batch):
        rgb = torch.from_numpy(np.ascontiguousarray(frames[start : start + batch, ..., ::-1])).permute(0, 3, 1, 2)
        x = F.interpolate(rgb.float() / 255, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        out.append(network((x - mean) / std).double().numpy())
    return np.concatenate(out)
