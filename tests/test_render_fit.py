"""The reader-free second opinion: a parameter fitted by rendering candidates reads the image, not the label."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.faces.parameters import GENERATOR_IDENTITY, INDEX, sample_parameters
from training.faces.reader import faces_to_tensor
from training.faces.render import render_faces
from training.faces.render_fit import fitted_values, render_fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def renders(parameters: np.ndarray) -> torch.Tensor:
    return faces_to_tensor(render_faces(parameters, 64)[0])


def test_the_fit_finds_the_width_drawn_not_the_width_claimed() -> None:
    parameters = sample_parameters(np.random.default_rng(3), 6, GENERATOR_IDENTITY)
    parameters[:, INDEX["mouth_open"]] = 0.2
    drawn = parameters.copy()
    drawn[:, INDEX["mouth_width"]] = [0.1, 0.3, 0.45, 0.6, 0.8, 0.95]
    claimed = parameters.copy()
    claimed[:, INDEX["mouth_width"]] = 0.5
    assert fitted_values(renders(drawn), claimed, "mouth_width") == pytest.approx([0.1, 0.3, 0.45, 0.6, 0.8, 0.95], abs=0.051)


def test_render_fit_of_the_renderer_is_near_exact_and_of_a_width_blind_drawer_flat() -> None:
    exact = render_fit(renders, ("mouth_width", "mouth_curve"), n=24)
    assert all(r["mae"] <= 0.03 and 0.9 <= r["slope"] <= 1.1 for r in exact.values()), exact

    def width_blind(parameters: np.ndarray) -> torch.Tensor:
        fixed = parameters.copy()
        fixed[:, INDEX["mouth_width"]] = 0.5
        return renders(fixed)

    blind = render_fit(width_blind, ("mouth_width",), n=24)["mouth_width"]
    assert abs(blind["slope"]) < 0.1 and blind["mae"] > 0.15, blind
