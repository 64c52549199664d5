"""The README's mouth figure: the renderer's mouths against the embedded default generator's.

    python docs/mouth_figure.py --out docs/faces-64/mouths.png

For each seed's face, rows ``render`` (ground truth) and ``generator`` (the default bundle's
mapping and synthesis graphs on the same parameters), columns: neutral, then smiling (mouth
curvature 1) at mouth width 0, 0.5 and 1; the mouth's part of the face enlarged 5x with
nearest-neighbour pixels. It shows why the gate fails on the mouth (README, "Where it stands").
"""
from __future__ import annotations

import argparse

import numpy as np

import lgfa_deploy
from figures import enlarged_row, labelled, write_png
from lgfa_deploy.face_domain import conditioned_z, seed_parameters
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
    z = conditioned_z(parameters, facts["z"])
    w = np.concatenate([animator.backend.run("mapping", {"z": row[None]})["w"] for row in z])
    generated = animator.render(np.repeat(w[:, None], animator.bundle.n_latent, axis=1))
    rendered = render_faces(parameters, animator.bundle.resolution)[0]
    rows = []
    for name, faces in (("render", rendered), ("generator", generated)):
        row = enlarged_row([face[CROP] for face in faces], SCALE)
        rows.append(labelled(row, f"{name} {seed}", LABEL_WIDTH, row.shape[0], 0.45))
    return np.concatenate(rows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/faces-64/mouths.png", help="PNG to write")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="faces, two rows each")
    args = parser.parse_args()
    with lgfa_deploy.open(backend="onnxruntime") as animator:
        blocks = [mouths(animator, seed) for seed in args.seeds]
    width = (CROP[1].stop - CROP[1].start) * SCALE
    names = [labelled(None, name, width, 24, 0.45) for name, _ in COLUMNS]
    header = np.concatenate([labelled(None, "", LABEL_WIDTH, 24, 0.45), *names], axis=1)
    image = np.concatenate([header, *blocks], axis=0)
    write_png(args.out, image)


if __name__ == "__main__":
    main()
