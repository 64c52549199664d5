"""The README's strip: the embedded default animating three sentences, frames left to right.

    python docs/default_strip.py --out docs/default-strip.png

Rows: sentences (each from the same seed's neutral face); columns: every third frame of the
16-frame clip, enlarged 2x with nearest-neighbour pixels so that what the model drew is what you see.
"""
from __future__ import annotations

import numpy as np

import lgfa_deploy
from figures import blocks_per_seed, labelled_rows, write_png

PROMPTS = ("smiling", "closing eyes", "opening mouth")
COLUMNS = (0, 3, 6, 9, 12, 15)
SCALE = 2
LABEL_WIDTH = 190


def strip(animator: lgfa_deploy.Animator, prompts: tuple[str, ...], seed: int) -> np.ndarray:
    """One labelled row per prompt of the chosen frames, stacked."""
    rows = []
    for prompt in prompts:
        frames = animator.animate(animator.bundle.prompt_template.format(prompt), seed=seed)
        rows.append((f'"{prompt}"', [frames[i] for i in COLUMNS]))
    return labelled_rows(rows, SCALE, LABEL_WIDTH, 0.5)


def main() -> None:
    out, blocks = blocks_per_seed(__doc__.split("\n\n")[0], "docs/default-strip.png", [0, 3], "faces, one block of rows each",
                                  lambda animator, seed: strip(animator, PROMPTS, seed))  # fmt: skip
    gap = np.full((6, blocks[0].shape[1], 3), 255, np.uint8)
    image = np.concatenate([part for block in blocks for part in (block, gap)][:-1], axis=0)
    write_png(out, image)


if __name__ == "__main__":
    main()
