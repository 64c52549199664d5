"""The synthetic face domain as a bundle states it (manifest ``face_domain``): seeds and z.

The domain's generator is conditioned: its z is a code of the renderer's parameters (Phi^-1 of each
parameter, then as many ones), not a draw from N(0, I). So a seed on such a bundle means a face
of the domain: the seed draws the varying identity parameters, the fixed ones keep their value and
the expression is the neutral one every animation starts from. numpy only, for every backend.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from lgfa_deploy.errors import LgfaError

Z_KIND = "inverse-normal-cdf-then-ones"


def conditioned_z(parameters: np.ndarray, z_facts: dict) -> np.ndarray:
    """The domain's z [N, 2P]: Phi^-1 of the clipped parameters [N, P], then P ones (as the manifest states)."""
    if z_facts.get("kind") != Z_KIND:
        raise LgfaError(f"this lgfa-deploy does not know the face domain's z kind {z_facts.get('kind')!r}; update it")
    clip = float(z_facts["clip"])
    inv = NormalDist().inv_cdf
    normal = np.array([[inv(min(max(float(v), clip), 1 - clip)) for v in row] for row in parameters])
    return np.concatenate([normal, np.ones_like(normal)], axis=1).astype(np.float32)


def seed_parameters(seed: int, facts: dict) -> np.ndarray:
    """Parameters [1, P] of a seed's neutral face: varying identity uniform from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    values = {
        name: float(rng.random()) if name in facts["varying_identity"] else float(facts["fixed_identity_value"])
        for name in facts["identity"]
    }
    values.update(facts["neutral"])
    return np.array([[values[name] for name in facts["parameters"]]])


def domain_seed_z(seed: int, facts: dict) -> np.ndarray:
    """The conditioned z [1, 2P] of a seed's neutral face."""
    return conditioned_z(seed_parameters(seed, facts), facts["z"])


def target_path_parameters(seed: int, facts: dict, prompt: str, frames: int) -> np.ndarray:
    """Parameters [frames, P]: the seed's neutral face moving in equal steps to the prompt's target
    expression (its on-target parameters; every other parameter stays), the last frame at the target."""
    start = seed_parameters(seed, facts)[0]
    target = start.copy()
    for name, value in facts["prompts"][prompt]["on_target"].items():
        target[facts["parameters"].index(name)] = value
    return start + np.linspace(0.0, 1.0, frames)[:, None] * (target - start)
