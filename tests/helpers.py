"""Test helpers: the tiny bundle (exported once per session; conftest serves it as the
``tiny_bundle`` fixture, and tests that change a bundle work on a copy), reading videos back, PSNR."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np

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


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, decoded by OpenCV."""
    import cv2  # here: the GPU check runs the GPU tests where OpenCV is not installed

    capture = cv2.VideoCapture(str(path))
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(frame)
        ok, frame = capture.read()
    capture.release()
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def load_script(name: str):
    """A script of benchmarks/ as a module (the folder is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
