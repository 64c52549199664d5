"""The README's strip: the embedded default animating three sentences, frames left to right.

    python docs/default_strip.py --out docs/default-strip.png

Rows: sentences (each from the same seed's neutral face); columns: every third frame of the
16-frame clip, enlarged 2x with nearest-neighbour pixels so that what the model drew is what you see.
"""
from __future__ import annotations

import argparse

import numpy as np

import lgfa_deploy
from figures import enlarged_row, labelled, write_png

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
        row = enlarged_row([frames[i] for i in COLUMNS], SCALE)
        rows.append(labelled(row, f'"{prompt}"', LABEL_WIDTH, row.shape[0], 0.5))
    return np.concatenate(rows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/default-strip.png", help="PNG to write")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 3], help="faces, one block of rows each")
    args = parser.parse_args()
    with lgfa_deploy.open(backend="onnxruntime") as animator:
        blocks = [strip(animator, PROMPTS, seed) for seed in args.seeds]
    gap = np.full((6, blocks[0].shape[1], 3), 255, np.uint8)
    image = np.concatenate([part for block in blocks for part in (block, gap)][:-1], axis=0)
    write_png(args.out, image)


if __name__ == "__main__":
    main()
