"""What the README's figure scripts share: enlarged, labelled rows, and writing the PNG."""
from __future__ import annotations

import cv2
import numpy as np


def enlarged_row(images: list[np.ndarray], scale: int) -> np.ndarray:
    """Images side by side, each enlarged ``scale`` x with nearest-neighbour pixels (what the model drew is what you see)."""
    return np.concatenate([cv2.resize(i, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for i in images], axis=1)


def labelled(row: np.ndarray | None, text: str, width: int, height: int, scale: float) -> np.ndarray:
    """A white ``width`` x ``height`` px cell with ``text`` (OpenCV's simplex font at ``scale``), left of ``row`` if given."""
    cell = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(cell, text, (6, height // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return cell if row is None else np.concatenate([cell, row], axis=1)


def write_png(out: str, image: np.ndarray) -> None:
    """Write ``image`` to ``out`` and say so; a path OpenCV cannot write ends the script in one line."""
    if not cv2.imwrite(out, image):
        raise SystemExit(f"cannot write {out}")
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]})")
