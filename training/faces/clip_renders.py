"""Train the domain's CLIP (text and image towers, ``faces-rn``) on renders and their sentences.

Each step takes up to ``batch`` distinct covered expressions and renders one face per expression
(random identity; the expression a part drawn from ``INTENSITY`` of the way from neutral to the
expression's target, every expression parameter jittered by up to ``JITTER``) and as many other
faces, blurs half of each (generated frames are softer than renders) and applies CLIP's symmetric
contrastive loss with the learned temperature, softened by each face's closeness to each
sentence's target (:func:`contrastive_loss`). ``CAPTIONS`` names how the faces are drawn and
captioned:
- ``graded``: the other faces show no covered expression (uniform expressions at least
  ``NEGATIVE_MARGIN`` from every prompt's way to its target), and each face is close only to its
  own sentence, by its part of the way: captioned ``a`` by its sentence and ``1 - a`` by all
  sentences evenly, and picked by its sentence with weight ``a``;
- ``closeness``: the other faces are uniformly random, and every face is close to every sentence as
  :func:`closeness` measures it (``a`` at part ``a`` of a sentence's way, less off the way), so a
  face near two targets is captioned by both and each sentence picks every face near its target.
- ``partial``: closeness captions whose other faces are half uniformly random, half near misses (a
  sentence's target with one of its on-target parameters short of half way), so that the CLIP must
  see every parameter a sentence moves.
The result is the animation model's encoder and, frozen, the contrastive loss's CLIP (the paper's
separate ViT-B/32 has no counterpart here).

Why (measured on the generator's faces, seeds' identities, the loss's temperature 0.07):
- a CLIP that saw only full target expressions matched 95% of target faces to their sentence but
  was flat between neutral and the targets (30% of the way: 7%, chance), so descending its
  contrastive loss over the 8 expression parameters moved them away from the targets (mean
  progress -0.33). Faces part of the way and negatives fixed the direction (86% at 30% of the way;
  the same descent moved toward the targets, +0.24);
- but trained with hard captions it was as sure at half way as at the target (own-sentence
  probability 0.82 at 50%, 0.85 at 100%, and for 5 prompts highest before the target), so the
  animation's loss stopped asking for more. With graded captions it rises along the way (0.36 at
  30%, 0.73 at 50%, 0.85 at 100%; smiling 0.34 -> 0.72 from half way to the target), and the same
  600 animation steps moved the targets twice as far (mean progress 0.11 against 0.05);
- graded captions tell a sentence nothing about faces near other targets or off every way; with
  closeness captions 2,000 animation steps moved 11 of 14 prompts further (mean progress 0.26
  against 0.14, 13 prompts the right way against 11), which is why ``train_all`` uses them.
- but a closeness CLIP tells a sentence apart by the parameters that suffice among the 14: its
  gradient in angry's brow height is -0.97 at neutral and +0.17 half way (brow tilt -3.96, -0.93;
  :mod:`training.faces.clip_probe`), so the animation never lowers angry's brows (read: 0.00 of
  -0.37) and angry scores no progress.
  Near misses turn angry the right way on two animation seeds (+0.15 and +0.17 against -0.01 and
  +0.03) but lose duck lips (0.12 against 0.63); as a second loss CLIP beside a closeness one see
  docs/faces-64/near-miss-captions/.
Real photographs show expressions at every intensity, and most faces show none of the 14.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from safetensors.torch import save_file

from training.clip_model import CLIP_MEAN, CLIP_STD, create_clip, tokenize
from training.faces.parameters import EXPRESSION, IDENTITY, NEUTRAL, sample_identity, sample_parameters
from training.faces.prompts import COVERED, target_expression
from training.faces.reader import augment, faces_to_tensor
from training.faces.render import render_faces
from training.faces.run import Run

CLIP_NAME = "faces-rn"
JITTER = 0.08
INTENSITY = (0.0, 1.0)
PATH_STEP = 0.05
NEGATIVE_MARGIN = 0.2
PROMPT_TEMPLATE = "The person is {}."


def neutral_and_targets(expressions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The neutral expression [8] and each expression's target [N, 8], in ``EXPRESSION`` order."""
    neutral = np.array([NEUTRAL[n] for n in EXPRESSION], np.float32)
    targets = np.array([[target_expression(e)[n] for n in EXPRESSION] for e in expressions], np.float32)
    return neutral, targets


def expression_parameters(
    expressions: list[str], rng: np.random.Generator, intensity: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """(parameters [N, 16], parts [N]), one row per expression: random identity, the expression a
    part drawn uniformly from ``intensity`` of the way from neutral to its target, jittered, within [0, 1]."""
    identity = sample_identity(rng, len(expressions), IDENTITY)
    neutral, targets = neutral_and_targets(expressions)
    part = rng.uniform(*intensity, (len(expressions), 1)).astype(np.float32)
    targets = neutral + part * (targets - neutral)
    jitter = rng.uniform(-JITTER, JITTER, targets.shape).astype(np.float32)
    return np.concatenate([identity, np.clip(targets + jitter, 0.0, 1.0)], axis=1), part[:, 0]


def expression_faces(
    expressions: list[str], rng: np.random.Generator, size: int, intensity: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 BGR renders, parts) of :func:`expression_parameters`."""
    parameters, parts = expression_parameters(expressions, rng, intensity)
    return render_faces(parameters, size)[0], parts


def expression_paths() -> np.ndarray:
    """Expressions [prompts, steps, 8] along each covered prompt's way from neutral to its target, over ``INTENSITY``."""
    neutral, targets = neutral_and_targets(list(COVERED))
    parts = np.arange(INTENSITY[0], INTENSITY[1] + 1e-6, PATH_STEP, dtype=np.float32)[:, None]
    return neutral + parts[None] * (targets - neutral)[:, None]


def negative_parameters(n: int, rng: np.random.Generator) -> np.ndarray:
    """Parameters [n, 16] of no covered expression: random identity, uniform expressions at least
    ``NEGATIVE_MARGIN`` (in their largest parameter difference) from every prompt's way to its target."""
    paths = expression_paths().reshape(-1, len(EXPRESSION))
    kept: list[np.ndarray] = []
    while len(kept) < n:
        candidate = rng.random(len(EXPRESSION), dtype=np.float32)
        if np.abs(paths - candidate).max(axis=1).min() >= NEGATIVE_MARGIN:
            kept.append(candidate)
    identity = sample_identity(rng, n, IDENTITY)
    return np.concatenate([identity, np.stack(kept)], axis=1)


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    """RGB in [-1, 1] -> CLIP-normalised input."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def closeness(expressions: np.ndarray, targets: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """How close each expression [N, 8] is to each target [M, 8], 0-1 [N, M]: 1 - (largest parameter
    difference from the target) / (the neutral face's), clipped at 0. 1 at the target, ``a`` at part
    ``a`` of the straight way from neutral, 0 at the neutral face's distance or farther on any side."""
    distance = np.abs(expressions[:, None] - targets[None]).max(axis=2)
    scale = np.abs(neutral[None] - targets).max(axis=1)
    return np.clip(1.0 - distance / scale[None], 0.0, 1.0).astype(np.float32)


def caption_targets(closeness: torch.Tensor) -> torch.Tensor:
    """Each image's distribution over the batch's sentences from its closeness to their targets
    [images, texts]: each sentence gets the image's closeness to it (scaled to sum to 1 where the
    closenesses sum past 1), the rest is spread evenly. A face ``a`` of the way to one sentence's
    target and near no other is ``a`` that sentence and ``1 - a`` spread; a face near none is spread."""
    total = closeness.sum(1, keepdim=True)
    own = closeness / total.clamp_min(1.0)
    return own + (1 - own.sum(1, keepdim=True)) / closeness.shape[1]


def contrastive_loss(clip: CLIP, images: torch.Tensor, tokens: torch.Tensor, closeness: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch's image-text similarities, softened by each
    image's ``closeness`` [images, texts] to each sentence's target: each image's sentences are
    :func:`caption_targets`; each sentence picks among all images in proportion to their closeness to
    it, weighted by the closest one's (a sentence that no image shows picks none)."""
    image = F.normalize(clip.encode_image(images), dim=-1)
    text = F.normalize(clip.encode_text(tokens), dim=-1)
    logits = clip.logit_scale.exp() * image @ text.T  # [images, texts]
    image_to_text = -(caption_targets(closeness) * logits.log_softmax(1)).sum(1).mean()
    weight = closeness.amax(0)  # [texts]
    picks = closeness.T / closeness.T.sum(1, keepdim=True).clamp_min(1e-12)
    text_to_image = (weight * -(picks * logits.T.log_softmax(1)).sum(1)).sum() / weight.sum().clamp_min(1e-12)
    return (image_to_text + text_to_image) / 2


def graded_batch(expressions: list[str], rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positive renders, negative renders, closeness [faces, sentences]) of graded captions: one face
    per sentence part of the way to its target, close to its own sentence only (by its part), and as
    many faces of no covered expression, close to none."""
    faces, parts = expression_faces(expressions, rng, size, INTENSITY)
    negatives = render_faces(negative_parameters(len(expressions), rng), size)[0]
    n = len(expressions)
    matrix = np.zeros((2 * n, n), np.float32)
    matrix[np.arange(n), np.arange(n)] = parts
    return faces, negatives, matrix


def closeness_batch(expressions: list[str], rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positive renders, uniform renders, closeness [faces, sentences]) of closeness captions: one
    face per sentence part of the way to its target and as many faces of uniformly random expression,
    each face close to every sentence as :func:`closeness` measures it."""
    parameters, _ = expression_parameters(expressions, rng, INTENSITY)
    uniform = sample_parameters(rng, len(expressions), IDENTITY)
    everything = np.concatenate([parameters, uniform])
    neutral, targets = neutral_and_targets(expressions)
    faces = render_faces(everything, size)[0]
    matrix = closeness(everything[:, len(IDENTITY):], targets, neutral)
    return faces[: len(expressions)], faces[len(expressions) :], matrix


def partial_parameters(expressions: list[str], rng: np.random.Generator) -> np.ndarray:
    """Parameters [N, 16] of near misses: each expression's target (jittered, random identity) with one of
    its on-target parameters, drawn at random, left between neutral and half way to its target."""
    parameters, _ = expression_parameters(expressions, rng)
    neutral, targets = neutral_and_targets(expressions)
    for row, expression in enumerate(expressions):
        column = EXPRESSION.index(rng.choice(sorted(COVERED[expression])))
        part = rng.uniform(0.0, 0.5)
        parameters[row, len(IDENTITY) + column] = neutral[column] + part * (targets[row, column] - neutral[column])
    return parameters


def partial_batch(expressions: list[str], rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`closeness_batch` whose other faces are half uniformly random, half near misses
    (:func:`partial_parameters` of sentences drawn from the batch's): a CLIP that tells a sentence
    apart from the others by one or two of its parameters scores a near miss too close to it, so it
    must see every parameter the sentence moves."""
    parameters, _ = expression_parameters(expressions, rng, INTENSITY)
    misses = partial_parameters(list(rng.choice(expressions, len(expressions) // 2)), rng)
    uniform = sample_parameters(rng, len(expressions) - len(misses), IDENTITY)
    everything = np.concatenate([parameters, misses, uniform])
    neutral, targets = neutral_and_targets(expressions)
    faces = render_faces(everything, size)[0]
    matrix = closeness(everything[:, len(IDENTITY) :], targets, neutral)
    return faces[: len(expressions)], faces[len(expressions) :], matrix


CAPTIONS = {"graded": graded_batch, "closeness": closeness_batch, "partial": partial_batch}
"""How a step's faces are drawn and captioned, by name (``train_clip``'s ``captions``)."""


@torch.no_grad()
def prompt_accuracy(clip: CLIP, seed: int, size: int = 64, per_prompt: int = 8) -> float:
    """Fraction of fresh renders whose most similar covered sentence is their own."""
    clip.eval()
    names = list(COVERED)
    text = F.normalize(clip.encode_text(tokenize([PROMPT_TEMPLATE.format(n) for n in names])), dim=-1)
    rng = np.random.default_rng([seed, 999])
    expressions = [n for n in names for _ in range(per_prompt)]
    images = clip_normalize(faces_to_tensor(expression_faces(expressions, rng, size)[0]))
    image = F.normalize(clip.encode_image(images), dim=-1)
    predicted = (image @ text.T).argmax(1)
    truth = torch.tensor([names.index(e) for e in expressions])
    return float((predicted == truth).float().mean())


def train_clip(
    out: str, *, steps: int, seed: int = 0, batch: int = 14, lr: float = 5e-4, size: int = 64, captions: str = "graded"
) -> CLIP:
    """Train (or resume) the CLIP in ``out`` with the ``captions`` of :data:`CAPTIONS`; writes
    ``out/clip.safetensors`` (open_clip key names)."""
    if not 2 <= batch <= len(COVERED):
        raise ValueError(f"batch must be 2 to {len(COVERED)} (distinct covered expressions), got {batch}")
    if captions not in CAPTIONS:
        raise ValueError(f"unknown captions {captions!r}; known: {', '.join(CAPTIONS)}")
    torch.manual_seed(seed)
    clip = create_clip(CLIP_NAME)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=lr, weight_decay=0.01)
    options = {"trainer": "clip", "clip": CLIP_NAME, "seed": seed, "batch": batch, "lr": lr, "size": size,
               "intensity": list(INTENSITY), "negatives": batch, "captions": captions}  # fmt: skip
    if captions == "graded":  # only graded captions draw their other faces away from every way
        options["negative_margin"] = NEGATIVE_MARGIN
    run = Run(out, options, {"clip": clip}, optimizer)
    names = list(COVERED)
    clip.train()
    for step in run.steps(steps, "clip"):
        rng = np.random.default_rng([seed, step])
        expressions = [names[i] for i in rng.permutation(len(names))[:batch]]
        faces, others, matrix = CAPTIONS[captions](expressions, rng, size)
        positives = augment(faces_to_tensor(faces), seed, step)
        negatives = augment(faces_to_tensor(others), seed, step)
        images = clip_normalize(torch.cat([positives, negatives]))
        tokens = tokenize([PROMPT_TEMPLATE.format(e) for e in expressions])
        loss = contrastive_loss(clip, images, tokens, torch.from_numpy(matrix))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, np.log(100))
        if step % 10 == 0:
            run.log({"loss": loss.item()})
    save_file({k: v.detach().contiguous() for k, v in clip.state_dict().items()}, f"{out}/clip.safetensors")
    return clip.eval()
