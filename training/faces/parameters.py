"""The renderer's parameters: names, the identity/expression split, sampling and the generator's z.

Every parameter lies on a 0-1 scale. Identity parameters say who the face is and must not drift in
an animation; expression parameters are what a sentence may move. This module is numpy-only so
that ``lgfa eval`` and the export can read the same facts (a bundle carries them as ``domain_facts``).
"""
from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

IDENTITY: tuple[str, ...] = (
    "skin",  # skin tone, light to dark
    "hair_color",  # along a palette: black, brown, auburn, blond, grey
    "hair_length",  # short crop to shoulder length
    "head_width",  # narrow to round head
    "eye_spacing",  # eyes close together to far apart
    "background",  # background hue
    "iris_color",  # along a palette: brown, hazel, green, blue
    "lip_color",  # pale to dark red
)
EXPRESSION: tuple[str, ...] = (
    "eye_open_left",  # the left eye in the image: 0 closed, 1 wide open
    "eye_open_right",
    "brow_height",  # 0 low, 1 raised
    "brow_tilt",  # 0 inner ends down (frown), 0.5 level, 1 inner ends up (worry)
    "mouth_curve",  # 0 corners down, 0.5 straight, 1 smile
    "mouth_open",  # 0 closed, 1 wide open
    "mouth_width",  # 0 narrow and round (pout), 1 wide
    "head_tilt",  # 0 tilted 15 degrees one way, 0.5 upright, 1 15 degrees the other way
)
NAMES: tuple[str, ...] = IDENTITY + EXPRESSION
INDEX: dict[str, int] = {name: i for i, name in enumerate(NAMES)}

NEUTRAL: dict[str, float] = {
    "eye_open_left": 0.65,
    "eye_open_right": 0.65,
    "brow_height": 0.45,
    "brow_tilt": 0.5,
    "mouth_curve": 0.55,
    "mouth_open": 0.0,
    "mouth_width": 0.5,
    "head_tilt": 0.5,
}
"""The expression every animation starts from."""

FIXED_IDENTITY_VALUE = 0.5
"""Value of an identity parameter that a domain configuration holds fixed."""

GENERATOR_IDENTITY: tuple[str, ...] = ("skin", "hair_color")
"""Identity parameters the domain's generator learns (the issue's trial); the others stay fixed."""

Z_CLIP = 0.005
"""Parameters are clipped to [Z_CLIP, 1 - Z_CLIP] before the inverse normal CDF (which is infinite at 0 and 1)."""


def check_names(names: Sequence[str]) -> None:
    """Raise ValueError naming any unknown parameter."""
    unknown = [n for n in names if n not in INDEX]
    if unknown:
        raise ValueError(f"unknown face parameters {unknown}; known: {', '.join(NAMES)}")


def neutral_parameters(identity: np.ndarray) -> np.ndarray:
    """Parameters [N, 16]: the given identity columns [N, 8] with the neutral expression."""
    identity = np.asarray(identity, dtype=np.float32)
    expression = np.array([NEUTRAL[n] for n in EXPRESSION], dtype=np.float32)
    return np.concatenate([identity, np.broadcast_to(expression, (identity.shape[0], len(EXPRESSION)))], axis=1)


def sample_identity(rng: np.random.Generator, n: int, varying: Sequence[str]) -> np.ndarray:
    """Identity columns [n, 8]: the ``varying`` ones uniform in [0, 1], the rest at FIXED_IDENTITY_VALUE."""
    check_names(varying)
    identity = np.full((n, len(IDENTITY)), FIXED_IDENTITY_VALUE, dtype=np.float32)
    for name in varying:
        if name not in IDENTITY:
            raise ValueError(f"{name} is an expression parameter, not an identity parameter")
        identity[:, IDENTITY.index(name)] = rng.random(n, dtype=np.float32)
    return identity


def sample_parameters(rng: np.random.Generator, n: int, varying_identity: Sequence[str]) -> np.ndarray:
    """Training parameters [n, 16]: identity as :func:`sample_identity`, every expression uniform in [0, 1]."""
    identity = sample_identity(rng, n, varying_identity)
    expression = rng.random((n, len(EXPRESSION)), dtype=np.float32)
    return np.concatenate([identity, expression], axis=1)


def parameters_to_z(parameters: np.ndarray) -> np.ndarray:
    """The generator's conditioned z [N, 32]: Phi^-1 of the 16 parameters, then 16 constant ones.

    The ones keep the vector's scale meaningful: the mapping network's PixelNorm divides z by its
    root mean square, which on the 16 parameters alone would erase how far they lie from 0.5.
    """
    parameters = np.asarray(parameters, dtype=np.float64)
    if parameters.ndim != 2 or parameters.shape[1] != len(NAMES):
        raise ValueError(f"parameters must have shape [N, {len(NAMES)}], got {list(parameters.shape)}")
    inv_cdf = np.vectorize(NormalDist().inv_cdf, otypes=[np.float64])
    normal = inv_cdf(np.clip(parameters, Z_CLIP, 1.0 - Z_CLIP))
    return np.concatenate([normal, np.ones_like(normal)], axis=1).astype(np.float32)


Z_DIM = 2 * len(NAMES)
"""Width of the conditioned z (the domain's style_dim)."""
