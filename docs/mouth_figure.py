"""The README's mouth figure: the renderer's mouths against the embedded default generator's.

    python docs/mouth_figure.py --out docs/faces-64/mouths.png

For each seed's face, rows ``render`` (ground truth) and ``generator`` (the default bundle's
mapping and synthesis graphs on the same parameters), columns: neutral, then smiling (mouth
curvature 1) at mouth width 0, 0.5 and 1; the mouth's part of the face enlarged 5x with
nearest-neighbour pixels. It shows why the gate fails on the mouth (README, "Where it stands").
"""
from __future__ import annotations

import numpy as np

import lgfa_deploy
from figures import blocks_per_seed, labelled, labelled_rows, write_png
from lgfa_deploy.face_domain import seed_parameters
from training.faces.render import render_faces

COLUMNS = (("neutral", {}), ("smile, width 0", {"mouth_curve": 1.0, "mouth_width": 0.0}),
           ("smile, width 0.5", {"mouth_curve": 1.0, "mouth_width": 0.5}),
           ("smile, width 1", {"mouth_curve": 1.0, "mouth_width": 1.0}))  # fmt: skip
CROP = (slice(34, 60), slice(14, 50))  # rows and columns of a 64 px face around the mouth
SCALE = 5
LABEL_WIDTH = 110


def mouths(animator: lgfa_deploy.Animator, seed: int) -> np.ndarray:
    """Two labelled rows (render, generator) of the mouth crops of ``COLUMNS`` for one seed's face."""
    facts = animator.bundle.manifest["face_domain"]
    names = facts["parameters"]
    parameters = np.repeat(seed_parameters(seed, facts), len(COLUMNS), axis=0)
    for row, (_, changes) in zip(parameters, COLUMNS):
        for name, value in changes.items():
            row[names.index(name)] = value
    generated = animator.domain_faces(parameters)
    rendered = render_faces(parameters, animator.bundle.resolution)[0]
    rows = [(f"{name} {seed}", [face[CROP] for face in faces])
            for name, faces in (("render", rendered), ("generator", generated))]  # fmt: skip
    return labelled_rows(rows, SCALE, LABEL_WIDTH, 0.45)


def main() -> None:
    out, blocks = blocks_per_seed(__doc__.split("\n\n")[0], "docs/faces-64/mouths.png", [0, 1], "faces, two rows each", mouths)
    width = (CROP[1].stop - CROP[1].start) * SCALE
    names = [labelled(None, name, width, 24, 0.45) for name, _ in COLUMNS]
    header = np.concatenate([labelled(None, "", LABEL_WIDTH, 24, 0.45), *names], axis=1)
    image = np.concatenate([header, *blocks], axis=0)
    write_png(out, image)


if __name__ == "__main__":
    main()
