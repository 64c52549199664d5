"""``lgfa animate``: one sentence -> one clip, from a bundle or the PyTorch reference networks."""
from __future__ import annotations

import argparse
import logging
import textwrap
import time
from pathlib import Path

from lgfa_deploy.bundle import Bundle
from lgfa_deploy.commands.common import (
    CTRL_C_RULES,
    DEFAULT_VIDEO_FPS,
    TEXT_RULES,
    SideFiles,
    add_bundle_argument,
    add_content_arguments,
    add_runtime_arguments,
    add_video_arguments,
    check_video_options,
    open_animator,
    prepare_face,
)
from lgfa_deploy.default_bundle import default_bundle
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.pipeline import check_seed, check_text, load_latent
from lgfa_deploy.tokenizer import ClipTokenizer
from lgfa_deploy.video import check_output, write_frames

log = logging.getLogger(__name__)

MAX_REFERENCE_FRAMES = 256
"""The reference path keeps every frame in memory; longer animations stream from a bundle."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "\n".join(textwrap.fill(paragraph, width=100) for paragraph in (
        "Animate a face performing a sentence and write the frames as an H.264 video (.mp4, .mkv) or a folder of PNGs.",
        (
            "The face: --seed N (default 0), --latent W.npy, or --image PHOTO, which is aligned, inverted once "
            "(e4e) and embedded (CLIP); --save-latent keeps its content W+ to animate again with --latent."
        ),
        (
            "It runs a bundle (--bundle DIR, default: the embedded faces-64 model, trained by this project on "
            "its synthetic cartoon faces) on --backend auto (default: the fastest installed backend that keeps "
            "fidelity here), onnxruntime, openvino, tensorrt or torch. With --preset, --checkpoint, --stylegan or "
            "--random-init instead it runs the PyTorch reference networks straight from those weights, for seeds "
            "and latents."
        ),
        TEXT_RULES,
        CTRL_C_RULES,
    ))
    parser.epilog = (
        "examples:\n"
        '  lgfa animate --text "The person is smiling." --out clip.mp4          # the embedded default, seed 0\n'
        '  lgfa animate --text "The person is winking." --seed 7 --out wink.mp4\n'
        '  lgfa animate --bundle engines/tiny --text "The person is smiling." --seed 0 --out clip.mp4\n'
        '  lgfa animate --bundle engines/tiny --text "The person is angry." --image me.jpg --save-latent me.npy --out me.mp4\n'
        '  lgfa animate --bundle engines/tiny --text "The person is smiling." --latent me.npy --out frames/   # PNGs\n'
        '  lgfa animate --bundle engines/tiny --text "The person is smiling." --crf 28 --encoder libx264 --out small.mp4\n'
        '  lgfa animate --backend torch --preset tiny --random-init --text "The person is smiling." --out ref.mp4'
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--text", required=True, help='the sentence, e.g. "The person is smiling." (at most 77 tokens)')
    add_bundle_argument(parser)
    add_content_arguments(parser)
    parser.add_argument(
        "--frames", type=int, default=None,
        help=f"frames in the clip (default: the model's, 16; without --bundle 2 to {MAX_REFERENCE_FRAMES})",
    )
    parser.add_argument("--fps", type=float, default=DEFAULT_VIDEO_FPS, help="frame rate written into the video")
    parser.add_argument("--out", required=True, help="output video (.mp4, .mkv; H.264), or a folder for PNG frames")
    add_video_arguments(parser)
    add_runtime_arguments(parser, backend_default=None)
    ref = parser.add_argument_group("reference networks (no --bundle)")
    ref.add_argument("--preset", default=None, help="model preset: tiny, ffhq-256, stylegan-512, ffhq-1024")
    ref.add_argument("--checkpoint", default=None, help="lgfa checkpoint (.safetensors) or reference Iter_*.pth")
    ref.add_argument("--stylegan", default=None, help="rosinality StyleGAN2 checkpoint (g_ema)")
    ref.add_argument("--random-init", action="store_true", help="random weights (no face; for testing the chain)")
    ref.add_argument("--weights-seed", type=int, default=0, help="seed of the random weights with --random-init")


def run(args: argparse.Namespace) -> int:
    if args.frames is not None and args.frames < 2:
        raise LgfaError(f"--frames must be at least 2, got {args.frames}")
    check_video_options(args)
    check_output(args.out)
    reference = args.preset is not None or args.checkpoint is not None or args.stylegan is not None or args.random_init
    if args.bundle is None and not reference:
        args.bundle = str(default_bundle())
    if args.bundle is not None:
        return run_bundle(args)
    return run_reference(args)


def run_bundle(args: argparse.Namespace) -> int:
    """The deployed path: a bundle on a backend, frames encoded while the next ones are computed."""
    reference_options = [
        f"--{name.replace('_', '-')}" for name in ("preset", "checkpoint", "stylegan") if getattr(args, name) is not None
    ] + (["--random-init"] if args.random_init else [])
    if reference_options:
        raise LgfaError(f"with --bundle, {', '.join(reference_options)} cannot be used: a bundle brings its own weights")
    args.backend = args.backend or "auto"
    started = time.perf_counter()

    def check_frames(bundle: Bundle) -> None:
        if args.frames is not None and args.frames != bundle.frames:
            raise LgfaError(
                f"the bundle's motion graph is unrolled for {bundle.frames} frames; --frames "
                f"{args.frames} needs a bundle exported with '--frames {args.frames}'"
            )

    animator, aligned = open_animator(args, [args.text], check_bundle=check_frames)
    with animator, SideFiles() as side_files:
        face = prepare_face(animator, args, aligned, side_files)
        frames = animator.stream([args.text], **face)
        count = write_frames(args.out, frames, fps=args.fps, encoder=args.encoder, crf=args.crf)
        side_files.publish()
        backend = animator.backend
    note = " [random-init weights: the frames show no face]" if animator.bundle.random_init else ""
    source = f" of face {aligned.face.index} of {args.image}" if aligned is not None else ""
    print(
        f"wrote {count} frames of {animator.resolution}x{animator.resolution}{source} to {args.out} "
        f"({backend.name} on {backend.device}, {backend.precision}, {time.perf_counter() - started:.2f} s){note}"
    )
    return 0


def run_reference(args: argparse.Namespace) -> int:
    """The PyTorch reference path: checkpoints in, frames out, no bundle."""
    if args.backend not in (None, "torch"):
        raise LgfaError(f"--backend {args.backend} needs --bundle DIR; without a bundle only the torch reference runs")
    bundle_options = [
        option for option, used in (
            ("--device", args.device != "auto"), ("--precision", args.precision not in ("auto", "fp32")),
            ("--micro-batch", args.micro_batch is not None), ("--compile", args.compile),
        ) if used
    ]
    if bundle_options:
        raise LgfaError(
            f"without --bundle, {', '.join(bundle_options)} cannot be used: the reference networks run eager fp32 on the CPU"
        )
    photo_options = [
        f"--{name.replace('_', '-')}" for name in ("image", "face", "save_latent", "save_aligned")
        if getattr(args, name) is not None
    ]
    if photo_options:
        raise LgfaError(
            f"without --bundle, {', '.join(photo_options)} cannot be used: the photo path runs an exported bundle"
        )
    if args.preset is None and args.checkpoint is None and args.stylegan is None:
        raise LgfaError("give --bundle DIR, or --preset NAME --random-init, or --checkpoint/--stylegan files")
    _check_reference_inputs(args)
    import torch

    from training.checkpoints import load_models
    from training.clip_model import vocabulary_path
    from training.reference import animate_reference

    text = check_text(ClipTokenizer(vocabulary_path()), args.text)
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
    content = None
    if args.latent is not None:
        content = torch.from_numpy(load_latent(args.latent, models.preset.n_latent, models.preset.style_dim))
    seed = 0 if args.seed is None else check_seed(args.seed)
    frames = animate_reference(models, text, seed=seed, content=content, frames=args.frames)
    count = write_frames(args.out, frames, fps=args.fps, encoder=args.encoder, crf=args.crf)
    note = " [random-init weights: the frames show no face]" if models.random_init else ""
    print(
        f"wrote {count} frames of {models.preset.resolution}x{models.preset.resolution} to {args.out} "
        f"(torch reference, preset {models.preset.name}, {time.perf_counter() - started:.2f} s){note}"
    )
    return 0


def _check_reference_inputs(args: argparse.Namespace) -> None:
    """--frames, --seed, the weight files and, with --preset, the latent, before the reference networks load."""
    if args.frames is not None and args.frames > MAX_REFERENCE_FRAMES:
        raise LgfaError(
            f"--frames {args.frames}: without --bundle at most {MAX_REFERENCE_FRAMES} (the reference keeps every "
            "frame in memory); for longer animations export a bundle and use 'lgfa stream'"
        )
    if args.seed is not None:
        check_seed(args.seed)
    for option, path in (("--checkpoint", args.checkpoint), ("--stylegan", args.stylegan)):
        if path is not None and not Path(path).is_file():
            raise LgfaError(f"{option} {path} does not exist or is not a file")
    if args.preset is not None:
        from training.presets import PRESETS

        if args.preset not in PRESETS:
            raise LgfaError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
        if args.latent is not None:
            preset = PRESETS[args.preset]
            load_latent(args.latent, preset.n_latent, preset.style_dim)
