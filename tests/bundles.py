"""The tiny test bundle (FP32 and FP16 graphs), exported once per session; conftest serves it as
the ``tiny_bundle`` fixture. Tests that change a bundle work on a copy."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

TINY_MAX_BATCH = 4


@functools.cache
def export_tiny(base: Path) -> Path:
    from export.bundle_writer import export_bundle

    out = base / "tiny-bundle"
    export_bundle(out, preset="tiny", random_init=True, precisions=("fp32", "fp16"), max_batch=TINY_MAX_BATCH)
    return out


def copy_bundle(bundle: Path, parent: Path) -> Path:
    """A writable copy of ``bundle`` inside ``parent``."""
    return Path(shutil.copytree(bundle, parent / bundle.name))
