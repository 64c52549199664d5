"""``lgfa animate``: one sentence -> one clip, from a bundle or the PyTorch reference networks."""
from __future__ import annotations

import argparse
import logging
import time

from lgfa_deploy.errors import LgfaError
from lgfa_deploy.video import write_frames

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Animate a face performing a sentence and write the frames as a video (.mp4) or a folder of PNGs.\n"
        "Without --bundle it runs the PyTorch reference networks straight from checkpoints "
        "(--checkpoint/--stylegan) or random weights (--random-init)."
    )
    parser.add_argument("--text", required=True, help='the sentence, e.g. "The person is smiling."')
    parser.add_argument("--seed", type=int, default=0, help="face seed: z ~ N(0, I) through the mapping network")
    parser.add_argument("--frames", type=int, default=None, help="frames in the clip (default: the model's, 16)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate written into the video")
    parser.add_argument("--out", required=True, help="output .mp4 file, or a folder for PNG frames")
    parser.add_argument("--backend", default=None, help="torch (reference, without --bundle)")
    ref = parser.add_argument_group("reference networks (no --bundle)")
    ref.add_argument("--preset", default=None, help="model preset: tiny, ffhq-256, stylegan-512, ffhq-1024")
    ref.add_argument("--checkpoint", default=None, help="lgfa checkpoint (.safetensors) or reference Iter_*.pth")
    ref.add_argument("--stylegan", default=None, help="rosinality StyleGAN2 checkpoint (g_ema)")
    ref.add_argument("--random-init", action="store_true", help="random weights (no face; for testing the chain)")
    ref.add_argument("--weights-seed", type=int, default=0, help="seed of the random weights with --random-init")


def run(args: argparse.Namespace) -> int:
    if not args.text.strip():
        raise LgfaError("--text is empty; give a sentence such as \"The person is smiling.\"")
    if args.frames is not None and args.frames < 2:
        raise LgfaError(f"--frames must be at least 2, got {args.frames}")
    return run_reference(args)


def run_reference(args: argparse.Namespace) -> int:
    """The PyTorch reference path: checkpoints in, frames out, no bundle."""
    if args.backend not in (None, "torch"):
        raise LgfaError(f"--backend {args.backend} needs --bundle DIR; without a bundle only the torch reference runs")
    if args.preset is None and args.checkpoint is None and args.stylegan is None:
        raise LgfaError("give --bundle DIR, or --preset NAME --random-init, or --checkpoint/--stylegan files")
    from training.checkpoints import load_models
    from training.reference import animate_reference

    started = time.perf_counter()
    try:
        models = load_models(
            preset=args.preset,
            checkpoint=args.checkpoint,
            stylegan=args.stylegan,
            random_init=args.random_init,
            seed=args.weights_seed,
        )
    except ValueError as exc:  # an unknown preset name
        raise LgfaError(str(exc)) from None
    frames = animate_reference(models, args.text, seed=args.seed, frames=args.frames)
    count = write_frames(args.out, frames, fps=args.fps)
    note = " [random-init weights: the frames show no face]" if models.random_init else ""
    print(
        f"wrote {count} frames of {models.preset.resolution}x{models.preset.resolution} to {args.out} "
        f"(torch reference, preset {models.preset.name}, {time.perf_counter() - started:.2f} s){note}"
    )
    return 0
