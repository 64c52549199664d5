"""Scores of ``lgfa eval``: ground-truth motion on the synthetic face domain, dlib identity and
landmark scores on any face bundle. numpy and OpenCV; dlib is imported when used.

Synthetic domain (the bundle's ``parameter_reader`` reads every frame's parameters, [N, T, P] for
N clips of T frames), per prompt:
- ``progress``: for each on-target parameter, (read[T-1] - read[0]) / (target - neutral), averaged
  over clips; the prompt's score is its weakest parameter (1 = reached the target, 0 = no motion);
- ``off_target``: for each off-target expression parameter, the largest |read[t] - read[0]| over
  the clip, averaged over clips; the score is the worst parameter (0-1 range);
- ``identity_drift``: the same for the identity parameters, leaving out those the reader cannot hold
  steady on the renderer's own faces along the prompt's path (ground truth, identity unchanged; the
  manifest's ``unreadable_identity``: a closed eye hides the iris, so its read colour wanders);
- ``jitter``: per clip, the frame-to-frame steps of the expression parameters (Euclidean); the
  ratio of the largest to the median step, worst clip (1 = uniform motion); also the median step.
``TARGETS`` are the issue's pass marks.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from lgfa_deploy.align import detect_faces, face_descriptor

TARGETS: dict[str, tuple[str, float]] = {
    "progress": (">=", 0.60),
    "off_target": ("<=", 0.15),
    "identity_drift": ("<=", 0.05),
    "jitter_ratio": ("<=", 3.0),
}
STILL = 1e-6
"""A median step below this means the clip does not move; its jitter ratio is then 1 if nothing moves at all."""


@dataclass
class PromptScore:
    prompt: str
    clips: int
    progress: float
    off_target: float
    identity_drift: float
    jitter_ratio: float
    median_step: float

    def passes(self) -> dict[str, bool]:
        """Each score against the issue's target."""
        out = {}
        for name, (op, bound) in TARGETS.items():
            value = getattr(self, name)
            out[name] = bool(value >= bound if op == ">=" else value <= bound)
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), "passes": self.passes()}


def jitter(steps: np.ndarray) -> tuple[float, float]:
    """(max step / median step, median step) of one clip's frame-to-frame steps [T-1]."""
    median = float(np.median(steps))
    largest = float(steps.max())
    if median < STILL:
        return (1.0 if largest < STILL else float("inf")), median
    return largest / median, median


def largest_departure(read: np.ndarray) -> np.ndarray:
    """Each clip's largest departure of each parameter from its frame 0: read [N, T, P] -> [N, P]."""
    return np.abs(read - read[:, :1]).max(axis=1)


def score_prompt(
    prompt: str,
    read: np.ndarray,
    names: Sequence[str],
    identity: Sequence[str],
    expression: Sequence[str],
    neutral: dict[str, float],
    on_target: dict[str, float],
    unreadable_identity: Sequence[str] = (),
) -> PromptScore:
    """Scores of one prompt from the read parameters [N clips, T frames, P] (see the module)."""
    read = np.asarray(read, dtype=np.float64)
    if read.ndim != 3 or read.shape[1] < 3 or read.shape[2] != len(names):
        raise ValueError(f"read parameters must be [clips, frames >= 3, {len(names)}], got {list(read.shape)}")
    index = {n: i for i, n in enumerate(names)}
    moved = largest_departure(read)
    progress = min(
        float(np.mean((read[:, -1, index[n]] - read[:, 0, index[n]]) / (target - neutral[n])))
        for n, target in on_target.items()
    )
    off = [index[n] for n in expression if n not in on_target]
    off_target = float(moved[:, off].mean(axis=0).max()) if off else 0.0
    readable = [index[n] for n in identity if n not in unreadable_identity]
    identity_drift = float(moved[:, readable].mean(axis=0).max()) if readable else 0.0
    expr = read[:, :, [index[n] for n in expression]]
    steps = np.linalg.norm(np.diff(expr, axis=1), axis=2)  # [N, T-1]
    ratios, medians = zip(*(jitter(s) for s in steps))
    return PromptScore(prompt, len(read), progress, off_target, identity_drift, float(max(ratios)), float(np.mean(medians)))


def table(scores: Iterable[PromptScore]) -> str:
    """A Markdown table of the scores with a pass/fail column per target."""
    head = "| prompt | clips | progress (>= 0.60) | off-target (<= 0.15) | identity drift (<= 0.05) | jitter max/median (<= 3) | median step |"
    lines = [head, "|" + "---|" * 7]
    for s in scores:
        ok = s.passes()
        mark = {k: "pass" if v else "FAIL" for k, v in ok.items()}
        lines.append(
            f"| {s.prompt} | {s.clips} | {s.progress:.2f} {mark['progress']} | {s.off_target:.3f} {mark['off_target']} | "
            f"{s.identity_drift:.3f} {mark['identity_drift']} | {s.jitter_ratio:.2f} {mark['jitter_ratio']} | {s.median_step:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot(scores: Sequence[PromptScore], width: int = 900) -> np.ndarray:
    """A uint8 BGR bar chart: one row per prompt, bars for progress, off-target and drift, target marks."""
    row, left, bar_w = 26, 160, (width - 180) // 3
    height = 40 + row * len(scores)
    image = np.full((height, width, 3), 255, np.uint8)
    columns = (("progress", 1.0, 0.60, (60, 160, 60)), ("off_target", 0.5, 0.15, (60, 60, 200)),
               ("identity_drift", 0.2, 0.05, (200, 120, 40)))  # fmt: skip
    font = cv2.FONT_HERSHEY_SIMPLEX
    for c, (name, full, target, color) in enumerate(columns):
        x0 = left + c * bar_w
        cv2.putText(image, f"{name} (0-{full:g})", (x0, 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        xt = x0 + int((bar_w - 20) * target / full)
        cv2.line(image, (xt, 30), (xt, height - 4), (0, 0, 0), 1)
        for r, s in enumerate(scores):
            value = float(np.clip(getattr(s, name), 0, full))
            y = 34 + r * row
            cv2.rectangle(image, (x0, y), (x0 + int((bar_w - 20) * value / full), y + row - 8), color, -1)
    for r, s in enumerate(scores):
        cv2.putText(image, s.prompt[:20], (6, 34 + r * row + 13), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return image


# -- any face bundle: dlib face recognition and landmarks, CLIP score -------------------------
@dataclass
class FaceScores:
    clips: int
    frames_with_face: float  # fraction of frames in which dlib found a face
    identity_distance: float  # mean L2 between frame 0's and each later frame's 128-d descriptor
    acd: float  # mean pairwise L2 between a clip's descriptors (average content distance)
    landmark_median_step: float  # median frame-to-frame landmark step / inter-ocular distance
    landmark_jitter_ratio: float  # worst clip's max step / median step

    def to_dict(self) -> dict:
        return asdict(self)


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Frechet distance of two Gaussians: |m_a - m_b|^2 + Tr(C_a) + Tr(C_b) - 2 Tr((C_a C_b)^(1/2)).

    Tr((C_a C_b)^(1/2)) = Tr((R C_b R)^(1/2)) with R = C_a^(1/2) (similar matrices), a symmetric
    positive semi-definite matrix whose eigenvalues numpy finds stably; rounding negatives are clipped."""
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root_a @ cov_b @ root_a
    trace_root = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two sets of Inception features [N, D] and [M, D] (N, M >= 2)."""
    return frechet_distance(features_a.mean(0), np.cov(features_a, rowvar=False), features_b.mean(0), np.cov(features_b, rowvar=False))


def pairwise_mean_distance(descriptors: np.ndarray) -> float:
    """Mean L2 distance over all pairs of rows [K, D] (0 for fewer than two)."""
    if len(descriptors) < 2:
        return float("nan")
    d = np.linalg.norm(descriptors[:, None] - descriptors[None], axis=2)
    return float(d[np.triu_indices(len(descriptors), 1)].mean())


def landmark_steps(landmarks: np.ndarray) -> np.ndarray:
    """Per step t -> t+1: mean point displacement over the inter-ocular distance, for [T, 68, 2]."""
    eyes = np.linalg.norm(landmarks[:, 36:42].mean(1) - landmarks[:, 42:48].mean(1), axis=1)
    moves = np.linalg.norm(np.diff(landmarks, axis=0), axis=2).mean(axis=1)
    return moves / np.maximum(eyes[:-1], 1e-6)


def face_scores(clips: Sequence[np.ndarray], detect_size: int = 256) -> FaceScores:
    """dlib scores of clips of uint8 BGR frames [T, H, W, 3]; smaller frames are upscaled to ``detect_size``."""
    found = total = 0
    identity, acd, medians, ratios = [], [], [], []
    for clip in clips:
        descriptors, points = [], []
        for frame in clip:
            total += 1
            scale = max(1.0, detect_size / frame.shape[0])
            if scale > 1.0:
                frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            faces = detect_faces(frame)
            if not faces:
                continue
            found += 1
            points.append(faces[0].landmarks)
            descriptors.append(face_descriptor(frame, faces[0]))
        if len(descriptors) >= 2:
            d = np.stack(descriptors)
            identity.append(float(np.linalg.norm(d[1:] - d[0], axis=1).mean()))
            acd.append(pairwise_mean_distance(d))
        if len(points) >= 3:
            ratio, median = jitter(landmark_steps(np.stack(points)))
            ratios.append(ratio)
            medians.append(median)
    nan = float("nan")
    return FaceScores(
        len(clips),
        found / max(total, 1),
        float(np.mean(identity)) if identity else nan,
        float(np.mean(acd)) if acd else nan,
        float(np.mean(medians)) if medians else nan,
        float(max(ratios)) if ratios else nan,
    )
