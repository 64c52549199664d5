"""The README's strip: the embedded default animating three sentences, frames left to right.

    python docs/default_strip.py --out docs/default-strip.png

Rows: sentences (each from the same seed's neutral face); columns: every third frame of the
16-frame clip, enlarged 2x with nearest-neighbour pixels so that what the model drew is what you see.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

import lgfa_deploy

PROMPTS = ("smiling", "closing eyes", "opening mouth")
COLUMNS = (0, 3, 6, 9, 12, 15)
SCALE = 2
LABEL_WIDTH = 190


def strip(animator: lgfa_deploy.Animator, prompts: tuple[str, ...], seed: int) -> np.ndarray:
    """One labelled row per prompt of the chosen frames, stacked."""
    rows = []
    for prompt in prompts:
        text = animator.bundle.prompt_template.format(prompt)
        frames = animator.animate(text, seed=seed)
        cells = [cv2.resize(frames[i], None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST) for i in COLUMNS]
        row = np.concatenate(cells, axis=1)
        label = np.full((row.shape[0], LABEL_WIDTH, 3), 255, np.uint8)
        cv2.putText(label, f'"{prompt}"', (6, row.shape[0] // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, row], axis=1))
    return np.concatenate(rows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/default-strip.png", help="PNG to write")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="faces, one block of rows each")
    args = parser.parse_args()
    with lgfa_deploy.open(backend="onnxruntime") as animator:
        blocks = [strip(animator, PROMPTS, seed) for seed in args.seeds]
    gap = np.full((6, blocks[0].shape[1], 3), 255, np.uint8)
    image = np.concatenate([part for block in blocks for part in (block, gap)][:-1], axis=0)
    if not cv2.imwrite(args.out, image):
        raise SystemExit(f"cannot write {args.out}")
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]})")


if __name__ == "__main__":
    main()
