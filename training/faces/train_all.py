"""Train every network of the synthetic face domain from one seed, resumably, then export and measure.

    python -m training.faces.train_all --out runs/faces-64 --seed 0

Stages, each in its own folder under ``--out`` and each resumed where it stopped when run again:
1. ``reader/``: the parameter reader on renders (every identity parameter varying, half blurred);
2. ``teacher/``: a second reader, from its own seed and renders, for the generator's loss and the
   animation's identity term only (``teacher/reader.safetensors``);
3. ``generator/``: the StyleGAN2 by regression (:mod:`training.faces.generator_regression`), then
   the gate (``generator/gate.json``): the first reader's error on generated frames, at most 0.08 for
   every expression parameter (beside it, not gated, :mod:`training.faces.render_fit`'s reader-free
   fit of the mouth); a failed gate stops here unless ``--ignore-gate``;
4. ``clip/``: CLIP on renders and their sentences, captioned by closeness (``clip/clip.safetensors``);
5. ``base.safetensors``: the project's checkpoint (generator + CLIP + random motion networks);
6. ``animation/``: ``lgfa train`` in latent mode (the paper's no-image path) on ``neutral_latents.pt``,
   the W+ of neutral faces drawn by the generator (the domain's z is a parameter code, so contents
   come from neutral parameters rather than mapping(z ~ N(0, I))), with the covered sentences only,
   every one of them in each contrastive group (batch 14), on the inference schedule (16 frames,
   linear decay: the preset's ``motion_norm_eps`` makes the offset's size follow m_t's), with the
   path regulariser weighted for this size, a softer and stronger contrastive loss, a colour term and
   the teacher's identity readings held to the content's (``ANIMATION_OPTIONS``);
7. ``bundle/``: ``lgfa export`` of the last animation checkpoint plus the reader graph, and
   ``eval/``: ``lgfa eval --ceiling`` on it (the clips, and the generator's own paths to the
   targets); with ``--ship`` the bundle (graphs only) becomes the package's embedded default
   (:mod:`export.ship_default`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from training.checkpoints import Models, save_checkpoint
from training.faces.clip_renders import PROMPT_TEMPLATE, prompt_accuracy, train_clip
from training.faces.generator_regression import PRESET, Phase, draw, gate, train_generator, write_gate
from training.faces.parameters import GENERATOR_IDENTITY, neutral_parameters, parameters_to_z, sample_identity
from training.faces.prompts import COVERED
from training.faces.reader import READER_FILE, train_reader
from training.faces.render_fit import render_fit
from training.motion import AnimationModel
from training.presets import get_preset

log = logging.getLogger(__name__)

# The teacher: a second reader, on its own renders and initialisation, whose readings of the generated
# frames the generator learns to match; the gate's and eval's reader never trains the generator.
TEACHER = 1.0
TEACHER_SEED_OFFSET = 7


@dataclass(frozen=True)
class Budget:
    """Optimiser steps of each stage (the generator's as phases of its schedule)."""

    reader: int
    teacher: int
    generator: tuple[Phase, ...]
    clip: int
    animation: int
    animation_batch: int
    reader_faces: int
    generator_faces: int
    neutral_faces: int
    eval_seeds: int
    fit_faces: int


BUDGETS = {
    # About 105 minutes on an idle 2-core AMD EPYC with AVX2 (2026-12-03: reader 13.5, teacher 7, generator 58
    # at about 4.2 steps/s, gate 1-3, CLIP 8.5, animation 9 with the identity term, export and eval 5). The
    # generator's schedule is the one the shipped model saw: Adam at 3e-3 with the regions weighing 1 + 4
    # (issue 15's trial) until its expressions stalled at 6,500 steps (reader error 0.18, PSNR 29 dB; the
    # mapping had squashed them: |dw| 0.15 for the whole mouth-curve range against 2.1 for skin), the regions
    # at 1 + 20 (0.16 at 7,000), then w's first 8 values tied to the expression parameters
    # (expression_code_loss) and a linear decay; from 7,500 on the teacher's readings of the frames too (the
    # gate's reader error 0.115 -> 0.060 for mouth width against 2,000 steps more without it, render_fit 0.084
    # -> 0.080; PSNR 31.9 -> 30.8 dB).
    "full": Budget(reader=6000, teacher=3000,
                   generator=(Phase(5000, 3e-3, 3e-3), Phase(6500, 3e-3, 2e-3), Phase(7500, 2e-3, 2e-3, 20.0),
                              Phase(10000, 2e-3, 2e-3, 20.0, 1.0, TEACHER), Phase(11500, 2e-3, 1e-3, 20.0, 1.0, TEACHER),
                              Phase(14500, 1e-3, 0.0, 20.0, 1.0, TEACHER)),
                   clip=3000, animation=2000, animation_batch=14, reader_faces=20000, generator_faces=40000,
                   neutral_faces=512, eval_seeds=64, fit_faces=256),
    # Minutes: proves the chain runs; its models are not trained.
    "smoke": Budget(reader=20, teacher=20, generator=(Phase(10, 3e-3, 3e-3), Phase(20, 3e-3, 0.0, 20.0, 1.0, 1.0)),
                    clip=5, animation=3, animation_batch=4, reader_faces=500, generator_faces=500, neutral_faces=8, eval_seeds=2, fit_faces=4),
}  # fmt: skip


CLIP_CAPTIONS = "closeness"
"""How the CLIP's training faces are captioned (``clip_renders.CAPTIONS``). Graded captions (each face
close to its own sentence only) gave the animation a mean progress of 0.14, 11 of 14 prompts the right
way; closeness captions 0.26 and 13 of 14 (64 seeds each, the same thin-mouthed generator and recipe otherwise)."""

ANIMATION_OPTIONS = {"lambda_path": 3000.0, "tau": 0.2, "lambda_contrastive": 6.0, "lambda_colour": 10000.0,
                     "lambda_identity": 20.0, "identity_margin": 0.03}
"""``lgfa train`` options (``TrainConfig`` names) that differ from the paper's (the animation stage adds
``--identity-reader teacher/reader.safetensors``). Its second-order path regulariser at 1.0 (made for
18 x 512 W+ at 1024 px) weighs nothing at this size (about 3e-6 against a contrastive term of 1): with
the contrastive loss on the last frame only, the motion stood still for 7 frames and then rushed
(largest step 5-11 times the median); at 3000 it runs evenly. The contrastive temperature 0.2 (the
paper's 0.07, about the faces CLIP's own learned 0.079) keeps the loss asking for more after this small
CLIP is already sure of a face half way to its target. Two terms the paper does not have hold the
face: the colour term (the colour statistics of the last frame against the content's render, in place
of the image path's LPIPS to the input photo) holds the skin and hair colour, and the identity term
(the teacher's identity readings of the last frame against the content's, L1 beyond a margin of 0.03,
in place of an identity network) holds what colour statistics do not see (eye spacing, lip and iris
colour); the contrastive weight gives back the pull they take. Side by side on one generator and CLIP
(2026-12-02, 64 seeds): mean progress 0.18 at the paper's (0.07, 0.5), 0.29 at (0.2, 0.5), 0.36 at
(0.2, 1.4), at the cost of identity (mean drift 0.06, 0.08, 0.13); with the colour term at 10000, 0.31
at (0.2, 1.4) and 0.37 at (0.2, 2.0), mean drift 0.08 for both. On the teacher's generator
(2026-12-03, docs/faces-64/identity-term): colour term alone at 2.0, mean progress 0.37, drift within
0.05 for 6 prompts of 14 (mean 0.066); identity term at 20 with weight 2.0, 0.24 and 12 (0.037); with
4.0, 0.37 and 12 (0.040); margin 0.03 and 4.0, 0.40 and 12 (0.042); margin 0.03 and 6.0, 0.41 and 11
(0.044), off-target within 0.15 for 13 and jitter within 3 for 13 (against 12 and 11)."""


def write_neutral_latents(path: Path, generator, n: int, seed: int) -> None:
    """W+ [n, L, S] of ``n`` neutral faces of the domain: the contents the animation model trains on."""
    if path.is_file():
        return
    parameters = neutral_parameters(sample_identity(np.random.default_rng([seed, 7]), n, GENERATOR_IDENTITY))
    with torch.no_grad():
        w = generator.mapping(torch.from_numpy(parameters_to_z(parameters)))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(w[:, None].expand(-1, generator.n_latent, -1).contiguous(), path)


def lgfa(argv: list[str]) -> None:
    """Run an ``lgfa`` subcommand in this process; a failure stops the pipeline."""
    from lgfa_deploy.cli import main

    code = main(argv)
    if code != 0:
        raise SystemExit(f"lgfa {argv[0]} failed with exit code {code}")


def train_all(out: Path, seed: int, budget: Budget, ignore_gate: bool = False, ship_default: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    reader, reader_error = train_reader(str(out / "reader"), steps=budget.reader, seed=seed, n_faces=budget.reader_faces)
    teacher, _ = train_reader(str(out / "teacher"), steps=budget.teacher, seed=seed + TEACHER_SEED_OFFSET,
                              n_faces=budget.reader_faces)
    generator = train_generator(str(out / "generator"), steps=budget.generator[-1].until, seed=seed,
                                n_faces=budget.generator_faces, phases=budget.generator, teacher=teacher)  # fmt: skip
    result = gate(generator, reader)
    result["render_fit"] = render_fit(partial(draw, generator), n=budget.fit_faces)  # reported, not gated
    write_gate(str(out / "generator"), result)
    log.info("gate %s: expression MAE %s", "passed" if result["passed"] else "FAILED", result["mae"]["expression"])
    if not result["passed"] and not ignore_gate:
        raise SystemExit(f"the generator failed the gate ({', '.join(result['failing'])} above 0.08); "
                         f"train it longer (resume with the same command) or pass --ignore-gate")  # fmt: skip
    clip = train_clip(str(out / "clip"), steps=budget.clip, seed=seed, captions=CLIP_CAPTIONS)
    clip_accuracy = prompt_accuracy(clip, seed)
    log.info("clip: %.0f%% of fresh renders match their own sentence best (chance %.0f%%)", 100 * clip_accuracy, 100 / len(COVERED))
    preset = get_preset(PRESET)
    model = AnimationModel(preset)
    model.encoder.load_state_dict(clip.state_dict())
    base = out / "base.safetensors"
    save_checkpoint(base, Models(preset, model, generator, random_init=False, sources=[]), {"stage": "faces-base"})
    latents = out / "neutral_latents.pt"
    write_neutral_latents(latents, generator, budget.neutral_faces, seed)
    prompts = out / "prompts.txt"
    prompts.write_text("".join(PROMPT_TEMPLATE.format(p) + "\n" for p in COVERED))
    animation = out / "animation"
    if (animation / "train.json").is_file():
        lgfa(["train", "--resume", str(animation), "--steps", str(budget.animation)])
    else:
        group = str(min(budget.animation_batch, len(COVERED)))
        lgfa(["train", "--preset", PRESET, "--checkpoint", str(base), "--loss-clip", str(out / "clip" / "clip.safetensors"),
              "--latents", str(latents), "--texts", str(prompts), "--batch", str(budget.animation_batch),
              "--contrastive-group", group, "--steps", str(budget.animation), "--seed", str(seed),
              "--frames", str(preset.frames), "--decay", "linear", "--identity-reader", str(out / "teacher" / READER_FILE),
              *(arg for name, value in ANIMATION_OPTIONS.items() for arg in (f"--{name.replace('_', '-')}", str(value))),
              "--out", str(animation)])  # fmt: skip
    bundle = out / "bundle"
    lgfa(["export", "--checkpoint", str(animation / "checkpoints" / "last.safetensors"), "--no-photo", "--out", str(bundle), "--force"])
    from export.parameter_reader import add_parameter_reader

    add_parameter_reader(bundle, reader)
    lgfa(["eval", "--bundle", str(bundle), "--seeds", str(budget.eval_seeds), "--ceiling", "--out", str(out / "eval")])
    if ship_default:
        from export.ship_default import ship

        log.info("shipped %s as the embedded default (%.1f MiB)", bundle, ship(bundle) / 2**20)
    return {"reader": reader_error, "gate": result, "clip_accuracy": clip_accuracy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.faces.train_all",
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python -m training.faces.train_all --out runs/faces-64 --seed 0 --ship\n"
               "  python -m training.faces.train_all --out /tmp/smoke --budget smoke --ignore-gate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="run folder (run the same command again to resume)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every weight and every data draw")
    parser.add_argument("--budget", choices=list(BUDGETS), default="full",
                        help="steps per stage: full (about 105 min on an idle 2-core CPU) or smoke")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--ignore-gate", action="store_true", help="train the animation model even if the gate fails")
    parser.add_argument("--ship", action="store_true", help="put the bundle into the package as the embedded default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    summary = train_all(Path(args.out), args.seed, BUDGETS[args.budget], args.ignore_gate, args.ship)
    print(json.dumps({"gate": summary["gate"], "clip_accuracy": summary["clip_accuracy"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
