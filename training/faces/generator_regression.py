"""Train the domain's StyleGAN2 by regression from the renderer's parameters (the issue's second trial).

The generator is the ``faces-64`` preset's rosinality-layout Generator (64 px; 128 channels at 4-16
px, 64 at 32, 32 at 64; style_dim 32; 4 mapping layers). Its z is conditioned: the 16 parameters
through the inverse normal CDF, then 16 constant ones (:func:`parameters_to_z`); one w from the
mapping network drives every layer. The loss is the L1 distance to the render, weighted 1 + 4 on
the dilated eye, brow and mouth regions, plus 0.5 x L1 at half and 0.25 x L1 at quarter
resolution. Adam, lr 3e-3, betas (0.9, 0.99), on a pre-rendered set in which skin and hair
colour vary and the other identity parameters stay fixed. A schedule of :class:`Phase` s may
change the learning rate, the regions' weight and the weight of :func:`expression_code_loss` step
by step: on this machine the trial's recipe learned identity and head tilt but its expressions
stalled near chance (reader error 0.18 after 6,500 steps, the mapping having squashed them); the
regions at 1 + 20 and then w's first 8 values tied to the expression parameters brought the error
to 0.059 at 14,500 steps (mouth width 0.13 still above the gate; mouth curve 0.079 within it since the
renderer draws lips 1.8-2.8 px thick: on 1.1 px lips it stayed at 0.11). The width was a bias (wide
mouths drawn narrow); from step 7,500 :func:`teacher_loss` asks a second, frozen reader (not the
gate's) to read the frames' expressions right, which brought the gate to 0.034 (width 0.060) at the
cost of about 1 dB of PSNR; :mod:`training.faces.render_fit`, which no network makes, says the pixels
moved less than the readings (width 0.080 against 0.084 without the teacher).

The mapping layers train with learning-rate multiplier 1: the Generator stores them with the
preset's multiplier ``lr_mlp`` (0.01, rosinality's), so their Adam group takes lr / lr_mlp, which
for Adam is the same training as multiplier 1 and leaves the weights in the layout every loader
and exporter reads.

The gate: the parameter reader reads frames generated for held-out parameters; every expression
parameter's mean absolute error must be at most ``GATE_MAE`` before the animation model is
trained on this generator.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from training.errors import OptionError
from training.faces.dataset import REGION_WEIGHT, FaceSet, load_or_render_set
from training.faces.parameters import EXPRESSION, GENERATOR_IDENTITY, NAMES, parameters_to_z, sample_parameters
from training.faces.reader import ParameterReader, augment, faces_to_tensor, mean_absolute_error, read_parameters
from training.faces.run import Run, batch_indices
from training.presets import get_preset
from training.stylegan2 import Generator, generator_from_preset

log = logging.getLogger(__name__)

PRESET = "faces-64"
GATE_MAE = 0.08
SCALE_WEIGHTS: tuple[float, ...] = (1.0, 0.5, 0.25)  # full, 1/2 and 1/4 resolution
ADAM_EPS = 1e-8
EXPRESSION_COLUMNS = slice(len(NAMES) - len(EXPRESSION), None)  # the expression parameters' columns of [B, 16]


def synthesize(generator: Generator, w: Tensor) -> Tensor:
    """Images [B, 3, S, S] in about [-1, 1] from one w [B, style_dim] for every layer."""
    return generator.synthesis(w[:, None].expand(-1, generator.n_latent, -1))


def generate(generator: Generator, z: Tensor) -> Tensor:
    """Images [B, 3, S, S] in about [-1, 1] from conditioned z [B, style_dim]."""
    return synthesize(generator, generator.mapping(z))


def expression_code_loss(w: Tensor, parameters: Tensor) -> Tensor:
    """Mean squared distance of w's first 8 values from 2 x the expression parameters [B, 8] (0-2: the
    mapping's last leaky ReLU passes positive values unchanged but shrinks negative ones)."""
    expression = parameters[:, EXPRESSION_COLUMNS]
    return F.mse_loss(w[:, : expression.shape[1]], 2 * expression)


def teacher_loss(teacher: ParameterReader, images: Tensor, parameters: Tensor, seed: int, step: int) -> Tensor:
    """L1 distance of the expression parameters a frozen reader reads on the generated images (half of
    them blurred, as the reader trained) from the ones they were generated for [B, 16]."""
    read = teacher(augment(images.clamp(-1, 1), seed, step))
    return F.l1_loss(read[:, EXPRESSION_COLUMNS], parameters[:, EXPRESSION_COLUMNS])


def regression_loss(images: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """Weighted L1 at full resolution plus plain L1 at 1/2 and 1/4 (``SCALE_WEIGHTS``)."""
    loss = SCALE_WEIGHTS[0] * (weights * (images - targets).abs()).mean()
    for level, scale_weight in enumerate(SCALE_WEIGHTS[1:], start=1):
        k = 2**level
        loss = loss + scale_weight * F.l1_loss(F.avg_pool2d(images, k), F.avg_pool2d(targets, k))
    return loss


def psnr(images: Tensor, targets: Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(images.clamp(-1, 1), targets).item()
    return 10 * float(np.log10(4.0 / max(mse, 1e-12)))


def optimizer_for(generator: Generator, lr: float) -> torch.optim.Adam:
    """Adam (betas 0.9, 0.99) with the mapping layers at lr / lr_mlp and eps x lr_mlp (their
    gradients are lr_mlp times smaller): the same steps as multiplier 1, see the module."""
    mapping = list(generator.style.parameters())
    lr_mlp = generator.style[1].lr_mul if len(generator.style) > 1 else 1.0
    ids = {id(p) for p in mapping}
    synthesis = [p for p in generator.parameters() if id(p) not in ids]
    return torch.optim.Adam(
        [{"params": synthesis}, {"params": mapping, "lr": lr / lr_mlp, "eps": ADAM_EPS * lr_mlp}],
        lr=lr, betas=(0.9, 0.99), eps=ADAM_EPS,
    )


@dataclass(frozen=True)
class Phase:
    """Steps up to ``until``: the learning rate moves linearly from ``lr_start`` to ``lr_end``, the
    eye, brow and mouth regions weigh ``1 + region_weight`` in the full-resolution L1, and
    :func:`expression_code_loss` and :func:`teacher_loss` weigh ``expression_code`` and ``teacher``."""

    until: int
    lr_start: float
    lr_end: float
    region_weight: float = REGION_WEIGHT
    expression_code: float = 0.0
    teacher: float = 0.0


def phase_at(step: int, phases: Sequence[Phase]) -> tuple[float, Phase]:
    """(learning rate, phase) of ``step``: the rate linear within its phase, from the previous phase's end."""
    begin = 0
    for phase in phases:
        if step < phase.until:
            t = (step - begin) / max(1, phase.until - begin)
            return phase.lr_start + t * (phase.lr_end - phase.lr_start), phase
        begin = phase.until
    return phases[-1].lr_end, phases[-1]


def train_generator(
    out: str,
    *,
    steps: int,
    seed: int = 0,
    n_faces: int = 40000,
    batch: int = 16,
    lr: float = 3e-3,
    workers: int = 2,
    face_set: FaceSet | None = None,
    phases: Sequence[Phase] | None = None,
    teacher: ParameterReader | None = None,
) -> Generator:
    """Train (or resume) the generator in ``out``; metrics.jsonl gets loss, PSNR and lr every 10 steps.

    Without ``phases`` the learning rate is ``lr`` throughout and the regions weigh 1 + REGION_WEIGHT;
    with them (the last one ending at ``steps``) each step follows its phase (a fixed schedule:
    resuming with other phases is another run). Phases with a ``teacher`` weight need ``teacher``, a
    reader that is not the gate's (it stays frozen)."""
    schedule = {"lr": lr} if phases is None else {"phases": [dataclasses.asdict(p) for p in phases]}
    if phases is None:
        phases = [Phase(steps, lr, lr)]  # constant: a resume may go on to more steps
    elif phases[-1].until != steps:
        raise OptionError(f"the last phase ends at step {phases[-1].until}, not at --steps {steps}")
    if teacher is None and any(phase.teacher for phase in phases):
        raise OptionError("a phase weighs the teacher's loss but no teacher reader was given")
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    preset = get_preset(PRESET)
    torch.manual_seed(seed)
    generator = generator_from_preset(preset)
    optimizer = optimizer_for(generator, 1.0)
    unit_lrs = [group["lr"] for group in optimizer.param_groups]
    options = {"trainer": "generator", "preset": PRESET, "seed": seed, "n_faces": n_faces, "batch": batch,
               "varying_identity": list(GENERATOR_IDENTITY), **schedule}  # fmt: skip
    run = Run(out, options, {"generator": generator}, optimizer)
    if face_set is None:
        face_set = load_or_render_set(f"{out}/faces.npz", n_faces, seed, preset.resolution, GENERATOR_IDENTITY, workers)
    targets = faces_to_tensor(face_set.faces)
    regions = torch.from_numpy(face_set.weights > 1).float()[:, None]  # the dilated eye, brow and mouth regions
    z = torch.from_numpy(parameters_to_z(face_set.parameters))
    parameters = torch.from_numpy(face_set.parameters).float()
    generator.train()
    for step in run.steps(steps, "generator"):
        step_lr, phase = phase_at(step, phases)
        for group, unit in zip(optimizer.param_groups, unit_lrs):
            group["lr"] = unit * step_lr
        rows = torch.from_numpy(batch_indices(seed, step, len(face_set), batch))
        w = generator.mapping(z[rows])
        images = synthesize(generator, w)
        loss = regression_loss(images, targets[rows], 1 + phase.region_weight * regions[rows])
        if phase.expression_code:
            loss = loss + phase.expression_code * expression_code_loss(w, parameters[rows])
        if phase.teacher:
            loss = loss + phase.teacher * teacher_loss(teacher, images, parameters[rows], seed, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            run.log({"loss": loss.item(), "psnr": psnr(images.detach(), targets[rows]), "lr": step_lr})
    last = run.metrics()[-1:] or [{}]
    log.info("generator: step %d, last logged loss %s, PSNR %s dB", run.step, last[0].get("loss"), last[0].get("psnr"))
    return generator.eval()


@torch.no_grad()
def draw(generator: Generator, parameters: np.ndarray, batch: int = 64) -> Tensor:
    """The generator's frames [N, 3, S, S] for parameters [N, 16], clamped to [-1, 1]."""
    z = torch.from_numpy(parameters_to_z(parameters))
    return torch.cat([generate(generator, z[i : i + batch]) for i in range(0, len(z), batch)]).clamp(-1, 1)


@torch.no_grad()
def gate(generator: Generator, reader: ParameterReader, *, n: int = 512, seed: int = 12345) -> dict:
    """Read frames generated for ``n`` held-out parameter sets; pass when every expression MAE <= GATE_MAE."""
    truth = sample_parameters(np.random.default_rng(seed), n, GENERATOR_IDENTITY)
    error = mean_absolute_error(read_parameters(reader, draw(generator, truth)), torch.from_numpy(truth))
    failing = [name for name in EXPRESSION if error[name] > GATE_MAE]
    return {"passed": not failing, "threshold": GATE_MAE, "failing": failing,
            "mae": {name: round(error[name], 4) for name in (*NAMES, "expression", "identity")}}  # fmt: skip


def write_gate(out: str, result: dict) -> None:
    """Record the gate's result as ``out/gate.json``."""
    with open(f"{out}/gate.json", "w") as f:
        json.dump(result, f, indent=1)
