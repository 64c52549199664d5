"""A second opinion on the generator that no network gives: fit one parameter by rendering candidates.

The gate's reader is a network, and a generator trained against a reader (even another one) can learn
to be read right without drawing right. Here each generated face is compared in L1 with renders of its
own parameters in which one parameter takes every value of a grid; the nearest render's value is the
fitted one. Only that parameter changes between candidates, so the comparison comes down to the pixels
it moves (for the mouth: the mouth's box). On renders it recovers the truth to about the grid's step.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from training.faces.parameters import GENERATOR_IDENTITY, INDEX, sample_parameters
from training.faces.reader import faces_to_tensor
from training.faces.render import render_faces

MOUTH: tuple[str, ...] = ("mouth_curve", "mouth_open", "mouth_width")
GRID = np.linspace(0.0, 1.0, 21)


def fitted_values(images: Tensor, parameters: np.ndarray, name: str, grid: np.ndarray = GRID) -> np.ndarray:
    """For images [N, 3, S, S] in [-1, 1] drawn for ``parameters`` [N, 16], the value of ``name`` on
    ``grid`` whose render (every other parameter as given) is nearest each image in L1 [N]."""
    candidates = np.repeat(parameters[None], len(grid), axis=0)
    candidates[:, :, INDEX[name]] = grid[:, None]
    faces, _ = render_faces(candidates.reshape(-1, parameters.shape[1]), images.shape[-1])
    renders = faces_to_tensor(faces).view(len(grid), *images.shape)
    distance = (renders - images[None]).abs().mean(dim=(2, 3, 4))  # [grid, N]
    return grid[distance.argmin(dim=0).numpy()]


def render_fit(
    draw: Callable[[np.ndarray], Tensor], names: Sequence[str] = MOUTH, *, n: int = 256, seed: int = 12345
) -> dict[str, dict[str, float]]:
    """Mean absolute error, bias and slope against the truth of each parameter fitted on the images
    ``draw`` makes from held-out parameters [n, 16] ([n, 3, S, S] in [-1, 1]: a generator's frames,
    or the renders themselves for reference)."""
    truth = sample_parameters(np.random.default_rng(seed), n, GENERATOR_IDENTITY)
    images = draw(truth)
    result = {}
    for name in names:
        fitted, true = fitted_values(images, truth, name), truth[:, INDEX[name]]
        error = fitted - true
        result[name] = {"mae": round(float(np.abs(error).mean()), 4), "bias": round(float(error.mean()), 4),
                        "slope": round(float(np.polyfit(true, fitted, 1)[0]), 3)}  # fmt: skip
    return result
