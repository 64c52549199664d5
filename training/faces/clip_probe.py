"""How a loss CLIP pulls each covered prompt's faces, measured on the generator's faces in seconds
instead of an animation run: along each prompt's way from the neutral face to its target, the
probability the CLIP gives the prompt among the covered sentences (at the animation loss's
temperature) and the gradient of its log in each expression parameter. An on-target parameter whose
gradient is near zero or points away from the target is one the animation will not move: angry's
brow height under the closeness CLIP (docs/faces-64/near-miss-captions/).

    python -m training.faces.clip_probe --checkpoint runs/teacher/base.safetensors \\
        [--loss-clip runs/teacher/clip/clip.safetensors] [--json probe.json]

Without ``--loss-clip`` the checkpoint's own CLIP (the animation model's encoder) is probed.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.atomic import write_json_atomic
from training.checkpoints import load_clip_weights, load_models
from training.clip_model import clip_image_size, create_clip, tokenize
from training.errors import CheckpointError
from training.faces.clip_renders import CLIP_NAME, PROMPT_TEMPLATE, clip_normalize, neutral_and_targets
from training.faces.parameters import (
    EXPRESSION,
    GENERATOR_IDENTITY,
    IDENTITY,
    Z_CLIP,
    Z_DIM,
    neutral_parameters,
    sample_identity,
)
from training.faces.prompts import COVERED
from training.losses import resize_images

PARTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TAU = 0.2
"""The animation recipe's contrastive temperature (``train_all``'s ``--tau``)."""


class ClipProbe:
    """A generator of the face domain and a CLIP, with the covered sentences encoded once."""

    def __init__(self, generator: torch.nn.Module, clip: torch.nn.Module, prompts: Sequence[str], tau: float = TAU) -> None:
        self.generator, self.clip, self.prompts, self.tau = generator.eval(), clip.eval(), list(prompts), tau
        self.size = clip_image_size(clip)
        with torch.no_grad():
            text = clip.encode_text(tokenize([PROMPT_TEMPLATE.format(p) for p in self.prompts])).float()
        self.text = F.normalize(text, dim=-1)

    def log_probability(self, parameters: torch.Tensor, prompt: str) -> torch.Tensor:
        """log p(prompt | face) [N] among the probe's sentences for faces of ``parameters`` [N, 16]
        (identity then expression), differentiable in the parameters: the z of
        :func:`training.faces.parameters.parameters_to_z` in torch, its clamp into the generator's z range
        passing the gradient through, so that a parameter at 0 or 1 still shows its pull."""
        clamped = parameters + (parameters.clamp(Z_CLIP, 1 - Z_CLIP) - parameters).detach()
        z = torch.cat([torch.special.ndtri(clamped), torch.ones_like(clamped)], 1).float()
        w = self.generator.mapping(z)
        images = self.generator.synthesis(w[:, None].expand(-1, self.generator.n_latent, -1))
        features = F.normalize(self.clip.encode_image(clip_normalize(resize_images(images, self.size))).float(), dim=-1)
        return (features @ self.text.T / self.tau).log_softmax(1)[:, self.prompts.index(prompt)]

    def along_the_way(self, identity: np.ndarray, prompt: str, parts: Sequence[float] = PARTS) -> dict:
        """For faces of ``identity`` [N, 8] part of the way to ``prompt``'s target: the mean probability
        of the prompt and the mean gradient of its log in each expression parameter, at each part."""
        neutral = torch.from_numpy(neutral_parameters(identity)).double()
        neutral_expression, targets = neutral_and_targets([prompt])
        way = torch.from_numpy(targets[0] - neutral_expression).double()
        probability, gradient = [], []
        for part in parts:
            parameters = neutral.clone()
            parameters[:, len(IDENTITY) :] += part * way
            parameters.requires_grad_(True)
            log_p = self.log_probability(parameters, prompt)
            (grad,) = torch.autograd.grad(log_p.sum(), parameters)
            probability.append(float(log_p.detach().exp().mean()))
            gradient.append(grad[:, len(IDENTITY) :].mean(0).tolist())
        return {"parts": list(parts), "probability": probability, "gradient": gradient, "way": way.tolist()}


def probe(generator: torch.nn.Module, clip: torch.nn.Module, faces: int = 24, seed: int = 1, tau: float = TAU) -> dict:
    """:meth:`ClipProbe.along_the_way` for every covered prompt, on ``faces`` neutral identities of ``seed``."""
    clip_probe = ClipProbe(generator, clip, list(COVERED), tau)
    identity = sample_identity(np.random.default_rng([seed, 7]), faces, GENERATOR_IDENTITY)
    return {prompt: clip_probe.along_the_way(identity, prompt) for prompt in COVERED}


def table(result: dict) -> str:
    """The probe as text: the prompt's probability along its way, and for each on-target parameter
    the gradient at the neutral face and half way, marked ``!`` where it does not pull toward the target."""
    half = PARTS.index(0.5)
    lines = [f"{'prompt':<14} {'p(prompt) along the way':<30} on-target parameters: gradient at neutral / half way (way)"]
    for prompt, row in result.items():
        cells = []
        for name in COVERED[prompt]:
            i = EXPRESSION.index(name)
            start, middle, way = row["gradient"][0][i], row["gradient"][half][i], row["way"][i]
            mark = "!" if min(start * way, middle * way) <= 0 else " "
            cells.append(f"{name} {start:+.2f}/{middle:+.2f} ({way:+.2f}){mark}")
        probabilities = " ".join(f"{p:.2f}" for p in row["probability"])
        lines.append(f"{prompt:<14} {probabilities:<30} " + "; ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a face-domain checkpoint (train_all's base.safetensors)")
    parser.add_argument("--loss-clip", default=None, help="a faces-rn CLIP file to probe instead of the checkpoint's")
    parser.add_argument("--faces", type=int, default=24, help="neutral identities averaged over (default 24)")
    parser.add_argument("--tau", type=float, default=TAU, help=f"the contrastive temperature (default {TAU})")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.faces < 1 or args.tau <= 0:
        print("clip_probe: --faces must be at least 1 and --tau positive", file=sys.stderr)
        return 2
    try:
        models = load_models(checkpoint=args.checkpoint)
        clip = models.model.encoder
        if args.loss_clip is not None:
            clip = create_clip(CLIP_NAME)
            clip.load_state_dict(load_clip_weights(args.loss_clip))
    except (CheckpointError, OSError, RuntimeError) as exc:
        print(f"clip_probe: cannot load the networks: {exc}", file=sys.stderr)
        return 2
    if models.preset.style_dim != Z_DIM:
        print(f"clip_probe: {args.checkpoint} is preset {models.preset.name}, not the face domain's; "
              "give train_all's base.safetensors or an animation checkpoint of it", file=sys.stderr)
        return 2
    result = probe(models.generator, clip, faces=args.faces, tau=args.tau)
    print(table(result))
    if args.json is not None:
        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
