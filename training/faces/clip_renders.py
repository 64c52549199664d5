"""Train the domain's CLIP (text and image towers, ``faces-rn``) on renders and their sentences.

Each step takes up to ``batch`` distinct covered expressions, renders one face per expression
(random identity, the expression's target with every expression parameter jittered by up to
``JITTER``), blurs half of the faces (generated frames are softer than renders) and applies the
symmetric contrastive loss of CLIP between the images and "The person is {x}." with the learned
temperature. The result is the animation model's encoder and, frozen, the contrastive loss's
CLIP (the paper's separate ViT-B/32 has no counterpart here).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from safetensors.torch import save_file

from training.clip_model import CLIP_MEAN, CLIP_STD, create_clip, tokenize
from training.faces.parameters import EXPRESSION, IDENTITY, sample_identity
from training.faces.prompts import COVERED, target_expression
from training.faces.reader import augment, faces_to_tensor
from training.faces.render import render_faces
from training.faces.run import Run

CLIP_NAME = "faces-rn"
JITTER = 0.08
PROMPT_TEMPLATE = "The person is {}."


def expression_faces(expressions: list[str], rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 BGR faces, one per expression: random identity, jittered target expression."""
    identity = sample_identity(rng, len(expressions), IDENTITY)
    targets = np.array([[target_expression(e)[n] for n in EXPRESSION] for e in expressions], np.float32)
    jitter = rng.uniform(-JITTER, JITTER, targets.shape).astype(np.float32)
    parameters = np.concatenate([identity, np.clip(targets + jitter, 0.0, 1.0)], axis=1)
    return render_faces(parameters, size)[0]


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    """RGB in [-1, 1] -> CLIP-normalised input."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def contrastive_loss(clip: CLIP, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch's image-text similarities."""
    image = F.normalize(clip.encode_image(images), dim=-1)
    text = F.normalize(clip.encode_text(tokens), dim=-1)
    logits = clip.logit_scale.exp() * image @ text.T
    labels = torch.arange(len(images))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@torch.no_grad()
def prompt_accuracy(clip: CLIP, seed: int, size: int = 64, per_prompt: int = 8) -> float:
    """Fraction of fresh renders whose most similar covered sentence is their own."""
    clip.eval()
    names = list(COVERED)
    text = F.normalize(clip.encode_text(tokenize([PROMPT_TEMPLATE.format(n) for n in names])), dim=-1)
    rng = np.random.default_rng([seed, 999])
    expressions = [n for n in names for _ in range(per_prompt)]
    images = clip_normalize(faces_to_tensor(expression_faces(expressions, rng, size)))
    image = F.normalize(clip.encode_image(images), dim=-1)
    predicted = (image @ text.T).argmax(1)
    truth = torch.tensor([names.index(e) for e in expressions])
    return float((predicted == truth).float().mean())


def train_clip(out: str, *, steps: int, seed: int = 0, batch: int = 14, lr: float = 5e-4, size: int = 64) -> CLIP:
    """Train (or resume) the CLIP in ``out``; writes ``out/clip.safetensors`` (open_clip key names)."""
    if not 2 <= batch <= len(COVERED):
        raise ValueError(f"batch must be 2 to {len(COVERED)} (distinct covered expressions), got {batch}")
    torch.manual_seed(seed)
    clip = create_clip(CLIP_NAME)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=lr, weight_decay=0.01)
    options = {"trainer": "clip", "clip": CLIP_NAME, "seed": seed, "batch": batch, "lr": lr, "size": size}
    run = Run(out, options, {"clip": clip}, optimizer)
    names = list(COVERED)
    clip.train()
    for step in run.steps(steps, "clip"):
        rng = np.random.default_rng([seed, step])
        expressions = [names[i] for i in rng.permutation(len(names))[:batch]]
        images = clip_normalize(augment(faces_to_tensor(expression_faces(expressions, rng, size)), seed, step))
        tokens = tokenize([PROMPT_TEMPLATE.format(e) for e in expressions])
        loss = contrastive_loss(clip, images, tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, np.log(100))
        if step % 10 == 0:
            run.log({"loss": loss.item()})
    save_file({k: v.detach().contiguous() for k, v in clip.state_dict().items()}, f"{out}/clip.safetensors")
    return clip.eval()
