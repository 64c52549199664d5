"""``lgfa eval [--bundle DIR]``: measure how a bundle's clips do what their sentences say.

On a bundle of the synthetic face domain (one with the ``parameter_reader`` graph and the
manifest's ``face_domain`` facts) every covered prompt animates seeds 0..N-1 (each a neutral face
of the domain, :mod:`lgfa_deploy.face_domain`), the reader reads every frame, and
:mod:`lgfa_deploy.evaluation` scores progress toward the target, off-target motion, identity
drift and jitter against the issue's targets; ``--ceiling`` scores the same way the generator's
own path from each neutral face to each target (what a perfect motion model could reach). On any
bundle, ``--face-scores`` adds dlib's identity distance, ACD and landmark jitter, and a bundle with
the photo graphs gets a CLIP score (text-image cosine at the first and last frame).
Writes ``eval.json``, ``eval.md`` (the table) and ``eval.png`` (a bar chart) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from lgfa_deploy.atomic import write_bytes_atomic, write_json_atomic
from lgfa_deploy.backends import Backend, open_backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.commands.common import add_bundle_argument, add_runtime_arguments
from lgfa_deploy.default_bundle import bundle_or_default
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.align import READABLE_SUFFIXES, read_image
from lgfa_deploy.face_domain import target_path_parameters
from lgfa_deploy.evaluation import PromptScore, face_scores, fid, plot, score_prompt, table
from lgfa_deploy.graphs import PARAMETER_READER
from lgfa_deploy.pipeline import Animator, clip_pixels

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  lgfa eval --out eval/default                        # the embedded faces-64 model, 64 seeds
  lgfa eval --seeds 8 --prompts smiling "closing eyes" --out eval/quick
  lgfa eval --seeds 16 --ceiling --out eval/ceiling      # and the generator's own paths to the targets
  lgfa eval --bundle engines/ffhq-256 --face-scores --seeds 4 --out eval/ffhq"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Animate every covered prompt from N seeds and score the clips: with ground truth on the synthetic "
        "face domain (the bundle's parameter reader), with dlib's face recognition and landmarks on any bundle."
    )
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_bundle_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for eval.json, eval.md and eval.png")
    parser.add_argument("--seeds", type=int, default=64, help="clips per prompt, seeds 0..N-1 (default: 64)")
    parser.add_argument("--prompts", nargs="+", default=None, metavar="EXPRESSION",
                        help="expressions, put into the bundle's prompt template (default on the face domain: "
                             "every covered one; required on other bundles)")
    parser.add_argument("--face-scores", action="store_true", help="dlib identity distance, ACD and landmark jitter")
    parser.add_argument("--ceiling", action="store_true",
                        help="synthetic face domain: also score the generator's own path from each neutral face to "
                             "each prompt's target (mapping of the interpolated parameters), what a perfect motion "
                             "model could reach on this generator")  # fmt: skip
    fid = parser.add_argument_group("FID (only with Inception weights you bring; needs the train extra)")
    fid.add_argument("--fid-inception", metavar="FILE",
                     help="torchvision's Inception v3 weights (inception_v3_google-*.pth or .safetensors)")
    fid.add_argument("--fid-real", metavar="DIR",
                     help="folder of real images (at least 2) to compare the first and last frames of every clip with")
    add_runtime_arguments(parser)


def frames_to_reader_input(frames: np.ndarray) -> np.ndarray:
    """uint8 BGR frames [T, H, W, 3] -> RGB in [-1, 1], [T, 3, H, W] float32."""
    return np.ascontiguousarray(frames[..., ::-1].transpose(0, 3, 1, 2)).astype(np.float32) / 127.5 - 1.0


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise LgfaError(f"--seeds must be at least 1, got {args.seeds}")
    bundle = Bundle.open(bundle_or_default(args.bundle))
    facts = bundle.manifest.get("face_domain")
    synthetic = facts is not None and PARAMETER_READER in bundle.graph_names
    if synthetic:
        covered = list(facts["prompts"])
        prompts = args.prompts or covered
        unknown = [p for p in prompts if p not in covered]
        if unknown:
            raise LgfaError(f"{', '.join(map(repr, unknown))} not covered by this face domain; choose from: {', '.join(covered)}")
    elif args.ceiling:
        raise LgfaError(f"--ceiling needs a bundle of the synthetic face domain with a parameter reader; "
                        f"{bundle.root} is not one")  # fmt: skip
    elif args.prompts is None:
        raise LgfaError(f"bundle {bundle.root} has no parameter reader (not the synthetic face domain); "
                        "name the expressions to animate with --prompts")  # fmt: skip
    else:
        prompts = args.prompts
    real_images = check_fid_options(args)
    inception = open_inception(args.fid_inception) if real_images else None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LgfaError(f"--out {out} is a file; give a folder")
    if args.compile and args.backend != "torch":
        raise LgfaError("--compile works with --backend torch only")
    options = {"compile": True} if args.compile else {}
    backend = open_backend(args.backend, bundle, device=args.device, precision=args.precision, **options)
    reader = backend if args.backend != "torch" else open_backend("onnxruntime", bundle, device="cpu")
    animator = Animator(bundle, backend, micro_batch=args.micro_batch)
    report: dict = {"bundle": str(bundle.root), "backend": args.backend, "seeds": args.seeds, "frames": bundle.frames}
    scores: list[PromptScore] = []
    ceiling: list[PromptScore] = []
    clip_scores: dict[str, dict[str, float]] = {}
    all_clips = []
    for prompt in tqdm(prompts, desc="eval", unit="prompt"):
        text = bundle.prompt_template.format(prompt)
        clips = [animator.animate(text, seed=s) for s in range(args.seeds)]
        all_clips += clips
        if synthetic:
            scores.append(score_domain_prompt(facts, prompt, read_clips(reader, clips)))
        if bundle.has_photo:
            clip_scores[prompt] = clip_score(animator, text, clips)
        if args.ceiling:
            paths = [target_path_clip(animator, facts, prompt, s) for s in range(args.seeds)]
            ceiling.append(score_domain_prompt(facts, prompt, read_clips(reader, paths)))
    if scores:
        report["synthetic"] = [s.to_dict() for s in scores]
    if ceiling:
        report["ceiling"] = [s.to_dict() for s in ceiling]
    if clip_scores:
        report["clip_score"] = clip_scores
    if args.face_scores:
        report["face_scores"] = face_scores(all_clips).to_dict()
    if real_images:
        report["fid"] = fid_report(inception, args.fid_inception, real_images, all_clips)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "eval.json", report)
    markdown = table(scores) + unreadable_note(facts, prompts) if scores else ""
    if ceiling:
        markdown += f"\n{CEILING_HEADING}\n\n" + table(ceiling)
    for key in ("face_scores", "fid"):
        if key in report:
            markdown += "\n" + "\n".join(f"- {k}: {v}" for k, v in report[key].items()) + "\n"
    write_bytes_atomic(out / "eval.md", markdown.encode())
    if scores:
        png = cv2.imencode(".png", plot(scores))[1]
        write_bytes_atomic(out / "eval.png", png.tobytes())
    log.info("wrote %s", ", ".join(str(p) for p in sorted(out.glob("eval.*"))))
    print(markdown or json.dumps(report, indent=1))
    return 0


def read_clips(reader: Backend, clips: list[np.ndarray]) -> np.ndarray:
    """The parameter reader's reading of every frame of every clip: [clips, T, P]."""
    return np.stack([reader.run(PARAMETER_READER, {"image": frames_to_reader_input(c)})["parameters"] for c in clips])


def score_domain_prompt(facts: dict, prompt: str, read: np.ndarray) -> PromptScore:
    """:func:`score_prompt` with the face domain's facts (bundle manifest ``face_domain``)."""
    entry = facts["prompts"][prompt]
    return score_prompt(prompt, read, facts["parameters"], facts["identity"], facts["expression"], facts["neutral"],
                        entry["on_target"], list(entry.get("unreadable_identity", {})))  # fmt: skip


def unreadable_note(facts: dict, prompts: list[str]) -> str:
    """A line naming the identity parameters left out of each prompt's identity drift, with their ground-truth drift."""
    parts = [f"{p}: " + ", ".join(f"{n} ({v:.2f})" for n, v in facts["prompts"][p]["unreadable_identity"].items())
             for p in prompts if facts["prompts"][p].get("unreadable_identity")]  # fmt: skip
    if not parts:
        return ""
    return ("\nIdentity drift leaves out what the reader cannot hold steady on the renderer's own faces along the "
            f"prompt's path (their drift there in brackets): {'; '.join(parts)}.\n")  # fmt: skip


CEILING_HEADING = "Ceiling: the generator's own path from each neutral face to the prompt's target"


def target_path_clip(animator: Animator, facts: dict, prompt: str, seed: int) -> np.ndarray:
    """uint8 BGR frames of the seed's face moving along the generator's own path to the prompt's target."""
    return animator.domain_faces(target_path_parameters(seed, facts, prompt, animator.bundle.frames))


def clip_score(animator: Animator, text: str, clips: list[np.ndarray]) -> dict[str, float]:
    """Mean cosine between the text's embedding and the bundle's CLIP image embedding of the first and last frames."""
    bundle = animator.bundle
    text_embedding = animator.embed(text)[0]
    cosines = {"first": [], "last": []}
    for clip in clips:
        for key, frame in (("first", clip[0]), ("last", clip[-1])):
            pixels = clip_pixels(frame, bundle.clip_image_size, bundle.clip_mean, bundle.clip_std)
            image = animator.backend.run("clip_image", {"pixels": pixels})["image_embedding"][0]
            cosines[key].append(float(image @ text_embedding / (np.linalg.norm(image) * np.linalg.norm(text_embedding))))
    return {key: float(np.mean(v)) for key, v in cosines.items()}


def check_fid_options(args: argparse.Namespace) -> list[Path]:
    """The real images of --fid-real when --fid-inception is given (both or neither), before any work."""
    if (args.fid_inception is None) != (args.fid_real is None):
        raise LgfaError("FID needs both --fid-inception FILE (Inception v3 weights) and --fid-real DIR (real images)")
    if args.fid_inception is None:
        return []
    if not Path(args.fid_inception).is_file():
        raise LgfaError(f"--fid-inception {args.fid_inception} does not exist or is not a file")
    folder = Path(args.fid_real)
    if not folder.is_dir():
        raise LgfaError(f"--fid-real {folder} is not a folder of images")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in READABLE_SUFFIXES)
    if len(images) < 2:
        raise LgfaError(f"--fid-real {folder} holds {len(images)} images ({', '.join(READABLE_SUFFIXES)}); FID needs at least 2")
    return images


def open_inception(weights: str):
    """The user's Inception v3 (torch), loaded before any clip is made so that a wrong file fails first."""
    try:
        from training.checkpoints import CheckpointError
        from training.inception import load_inception
    except ImportError as exc:
        raise LgfaError(f"FID needs torch and torchvision (pip install 'lgfa-deploy[train]'): {exc}") from None
    try:
        return load_inception(weights)
    except CheckpointError as exc:
        raise LgfaError(str(exc)) from None


def fid_report(network, weights: str, real_images: list[Path], clips: list[np.ndarray]) -> dict:
    """FID between the first and last frames of the clips and the real images."""
    from training.inception import inception_features

    frames = np.stack([frame for clip in clips for frame in (clip[0], clip[-1])])
    real = [read_image(path) for path in tqdm(real_images, desc="fid: real images", unit="image")]
    generated_features = inception_features(network, frames)
    real_features = np.concatenate([inception_features(network, image[None]) for image in real])
    return {"fid": fid(generated_features, real_features), "generated_frames": len(frames), "real_images": len(real),
            "inception": str(weights)}  # fmt: skip
