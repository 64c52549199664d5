"""The paper's 28 expressions in this domain: a target expression for each one a cartoon face can show.

``COVERED`` maps an expression (as in ``training.data.EXPRESSIONS``, prompted "The person is {x}.")
to the expression parameters it moves and their target values; every expression parameter not
listed is off-target and should stay at ``NEUTRAL``. ``NOT_COVERED`` says why each other
expression is left out. Two rules keep the table trainable and measurable: every on-target value
lies at least ``MIN_MOVE`` from neutral (so "how far toward the target" is well defined), and
any two covered expressions differ by at least ``MIN_SEPARATION`` in some parameter (so the
contrastive CLIP loss never asks two sentences to match one picture).
"""
from __future__ import annotations

from training.faces.parameters import EXPRESSION, FIXED_IDENTITY_VALUE, GENERATOR_IDENTITY, IDENTITY, NAMES, NEUTRAL, Z_CLIP

MIN_MOVE = 0.2
MIN_SEPARATION = 0.25

COVERED: dict[str, dict[str, float]] = {
    "smiling": {"mouth_curve": 1.0, "mouth_width": 0.85},
    "angry": {"brow_tilt": 0.0, "brow_height": 0.1, "mouth_curve": 0.25},
    "closing eyes": {"eye_open_left": 0.0, "eye_open_right": 0.0},
    "winking": {"eye_open_left": 0.0, "mouth_curve": 0.85},
    "shocked": {"eye_open_left": 1.0, "eye_open_right": 1.0, "brow_height": 1.0, "mouth_open": 1.0},
    "pouting": {"mouth_width": 0.0, "mouth_curve": 0.2, "brow_tilt": 0.8},
    "crying": {"brow_tilt": 1.0, "eye_open_left": 0.25, "eye_open_right": 0.25, "mouth_curve": 0.1, "mouth_open": 0.35},
    "disgusted": {"brow_height": 0.15, "brow_tilt": 0.25, "eye_open_left": 0.35, "eye_open_right": 0.35,
                  "mouth_curve": 0.15, "mouth_width": 0.8},
    "opening mouth": {"mouth_open": 0.9},
    "surprised": {"eye_open_left": 1.0, "eye_open_right": 1.0, "brow_height": 0.9, "mouth_open": 0.45, "mouth_width": 0.2},
    "confused": {"head_tilt": 0.15, "brow_tilt": 0.8, "mouth_curve": 0.3},
    "duck lips": {"mouth_width": 0.0, "head_tilt": 0.75},
    "oh no": {"brow_tilt": 1.0, "brow_height": 0.85, "mouth_open": 0.7, "mouth_curve": 0.25},
    "whatever": {"eye_open_left": 0.3, "eye_open_right": 0.3, "head_tilt": 0.8, "mouth_curve": 0.35},
}  # fmt: skip

NOT_COVERED: dict[str, str] = {
    "appalled": "no distinct face here: the renderer's appalled would repeat shocked or oh no",
    "hatred": "no distinct face here: the renderer's hatred would repeat angry",
    "aha": "a moment of insight is a gesture, not a configuration of these features",
    "annoyed": "no distinct face here: a milder angry, closer to it than the separation rule allows",
    "awkward": "needs an asymmetric grimace the symmetric mouth curve cannot draw",
    "biting tongues": "the renderer draws no teeth and no tongue",
    "blank stare": "needs a fixed unfocused gaze; the renderer has no gaze direction",
    "incredulous": "needs one raised brow; both brows share one height and tilt",
    "mocking": "needs a one-sided smirk or a tongue",
    "nervous": "needs sweat, glances or a bitten lip the renderer does not draw",
    "no comment": "pressed lips are too close to neutral to measure movement toward them",
    "serious": "too close to the neutral start to measure movement toward it",
    "stunned": "no distinct face here: the renderer's stunned would repeat shocked",
    "wtf": "no distinct face here: the renderer's wtf would repeat shocked or confused",
}


def target_expression(expression: str) -> dict[str, float]:
    """Every expression parameter's target for a covered expression: the table's values, neutral elsewhere."""
    return {name: COVERED[expression].get(name, NEUTRAL[name]) for name in EXPRESSION}


def domain_facts() -> dict:
    """The domain as data, for a bundle's manifest: parameter names, neutral, covered prompts and targets."""
    return {
        "parameters": list(NAMES),
        "identity": list(IDENTITY),
        "expression": list(EXPRESSION),
        "neutral": dict(NEUTRAL),
        "varying_identity": list(GENERATOR_IDENTITY),
        "fixed_identity_value": FIXED_IDENTITY_VALUE,
        "z": {"kind": "inverse-normal-cdf-then-ones", "clip": Z_CLIP},
        "prompts": {name: {"on_target": dict(targets)} for name, targets in COVERED.items()},
        "not_covered": dict(NOT_COVERED),
    }
