"""The embedded default model: a bundle trained by this project, shipped inside the package.

It is ``faces-64``, the synthetic cartoon-face domain (``training/faces``): every network (the
StyleGAN2 generator, CLIP, the motion generator and mappers, the parameter reader) trained from
seed 0 on a 2-core CPU by ``python -m training.faces.train_all``; README "The embedded default".
Commands that take ``--bundle`` run it when none is given, torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path

from lgfa_deploy.errors import LgfaError

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "data" / "faces-64"
MAX_BYTES = 25 * 2**20
"""The package carries at most this much of it."""


def default_bundle() -> Path:
    """The embedded bundle's folder, or an LgfaError saying how to run without it."""
    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        raise LgfaError(f"this installation has no embedded default bundle ({DEFAULT_BUNDLE}); give --bundle DIR")
    return DEFAULT_BUNDLE


def bundle_or_default(bundle: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    """``--bundle`` as given, or the embedded default's folder when it was left out."""
    return bundle if bundle is not None else default_bundle()
