"""What the README's figure scripts share: their command line, enlarged labelled rows, writing the PNG."""
from __future__ import annotations

import argparse
from collections.abc import Callable

import cv2
import numpy as np

import lgfa_deploy


def blocks_per_seed(
    description: str, out: str, seeds: list[int], seeds_help: str, block: Callable[[lgfa_deploy.Animator, int], np.ndarray]
) -> tuple[str, list[np.ndarray]]:
    """The script's ``--out`` (default ``out``) and one ``block`` per ``--seeds`` face (default ``seeds``),
    drawn by the embedded default on onnxruntime."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=out, help="PNG to write")
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds, help=seeds_help)
    args = parser.parse_args()
    with lgfa_deploy.open(backend="onnxruntime") as animator:
        return args.out, [block(animator, seed) for seed in args.seeds]


def enlarged_row(images: list[np.ndarray], scale: int) -> np.ndarray:
    """Images side by side, each enlarged ``scale`` x with nearest-neighbour pixels (what the model drew is what you see)."""
    return np.concatenate([cv2.resize(i, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for i in images], axis=1)


def labelled(row: np.ndarray | None, text: str, width: int, height: int, scale: float) -> np.ndarray:
    """A white ``width`` x ``height`` px cell with ``text`` (OpenCV's simplex font at ``scale``), left of ``row`` if given."""
    cell = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(cell, text, (6, height // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return cell if row is None else np.concatenate([cell, row], axis=1)


def labelled_rows(rows: list[tuple[str, list[np.ndarray]]], scale: int, label_width: int, font_scale: float) -> np.ndarray:
    """One :func:`enlarged_row` per (label, images), each behind its :func:`labelled` cell, stacked top to bottom."""
    cells = []
    for text, images in rows:
        row = enlarged_row(images, scale)
        cells.append(labelled(row, text, label_width, row.shape[0], font_scale))
    return np.concatenate(cells, axis=0)


def write_png(out: str, image: np.ndarray) -> None:
    """Write ``image`` to ``out`` and say so; a path OpenCV cannot write ends the script in one line."""
    if not cv2.imwrite(out, image):
        raise SystemExit(f"cannot write {out}")
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]})")
