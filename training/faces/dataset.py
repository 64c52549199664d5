"""Pre-rendered training sets of the face domain, cached as one ``.npz`` file (no pickles).

A set holds parameters [N, 16] float32, faces [N, H, W, 3] uint8 BGR and the loss weight map
[N, H, W] uint8 of the generator trainer: 1 everywhere plus ``REGION_WEIGHT`` on the eye, brow and
mouth regions dilated by ``DILATE_PX`` pixels. Rendering is split over worker processes; the set
depends only on (n, seed, size, varying identity parameters), which the file records and checks.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from training.atomic import atomic_path
from training.errors import DataError
from training.faces.parameters import sample_parameters
from training.faces.render import REGIONS, render_faces

log = logging.getLogger(__name__)

REGION_WEIGHT = 4
DILATE_PX = 1
_CHUNK = 500
_WEIGHTED = tuple(REGIONS.index(r) for r in ("eyes", "brows", "mouth"))


@dataclass
class FaceSet:
    parameters: np.ndarray  # [N, 16] float32
    faces: np.ndarray  # [N, H, W, 3] uint8 BGR
    weights: np.ndarray  # [N, H, W] uint8: 1, or 1 + REGION_WEIGHT in the dilated regions

    def __len__(self) -> int:
        return len(self.parameters)


def weight_map(masks: np.ndarray) -> np.ndarray:
    """Loss weights [N, H, W] uint8 from region masks [N, 4, H, W]: 1 + REGION_WEIGHT on dilated eyes, brows, mouth."""
    kernel = np.ones((2 * DILATE_PX + 1, 2 * DILATE_PX + 1), np.uint8)
    regions = masks[:, list(_WEIGHTED)].any(axis=1).astype(np.uint8)
    dilated = np.stack([cv2.dilate(r, kernel) for r in regions])
    return (1 + REGION_WEIGHT * dilated).astype(np.uint8)


def _render_chunk(parameters: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    faces, masks = render_faces(parameters, size, with_masks=True)
    return faces, weight_map(masks)


def render_set(n: int, seed: int, size: int, varying_identity: tuple[str, ...], workers: int = 2) -> FaceSet:
    """Render ``n`` faces with parameters drawn by ``sample_parameters`` from ``seed``."""
    parameters = sample_parameters(np.random.default_rng(seed), n, varying_identity)
    chunks = [parameters[i : i + _CHUNK] for i in range(0, n, _CHUNK)]
    faces, weights = [], []
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for f, w in tqdm(pool.map(_render_chunk, chunks, [size] * len(chunks)), total=len(chunks), desc="render", unit="chunk"):
            faces.append(f)
            weights.append(w)
    return FaceSet(parameters, np.concatenate(faces), np.concatenate(weights))


def load_or_render_set(
    path: str | os.PathLike, n: int, seed: int, size: int, varying_identity: tuple[str, ...], workers: int = 2
) -> FaceSet:
    """The set cached at ``path`` when it was rendered with these settings, else render and cache it."""
    path = Path(path)
    key = np.array([n, seed, size], np.int64)
    varying = np.array(sorted(varying_identity))
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                if np.array_equal(data["key"], key) and list(data["varying"]) == list(varying):
                    return FaceSet(data["parameters"], data["faces"], data["weights"])
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path} is not a face set ({exc}); delete it to render it again") from None
        log.info("%s was rendered with other settings; rendering again", path)
    face_set = render_set(n, seed, size, varying_identity, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, key=key, varying=varying, parameters=face_set.parameters, faces=face_set.faces, weights=face_set.weights)
    return face_set
