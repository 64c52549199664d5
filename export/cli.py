"""``lgfa export``: checkpoints -> a bundle of verified ONNX graphs that every backend runs.

Only argparse is imported at module level so that ``lgfa export --help`` answers at once; torch,
onnx and the networks load when the command runs.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lgfa_deploy.bundle import PRECISIONS
from training.presets import PRESETS

log = logging.getLogger(__name__)

DESCRIPTION = """\
Write a bundle: the ONNX graphs text_encoder (tokens [batch, 77] -> embedding), motion (text and
image embeddings -> W+ offsets for T frames), synthesis (W+ -> frames) and mapping (z -> w, for seed
mode); for animating a photo also image_encoder (e4e: aligned face -> W+), clip_image (CLIP's image
tower -> image embedding) and visual_mapper (image embedding -> W+ offset); the weights as
safetensors for the torch backend (e4e's in e4e.safetensors), the tokenizer vocabulary and
manifest.json describing all of them. The bundle is verified (lgfa verify) before it is moved into
place; nothing is left behind when the export fails or is interrupted.

Weights come from one of:
  --checkpoint FILE              this project's checkpoint (.safetensors) or the reference
                                 implementation's Iter_*.pth (add --stylegan FILE when it does not
                                 record the generator)
  --preset NAME --random-init    random weights for every network (tests, benchmarks)
  --stylegan FILE --random-init  a real StyleGAN2 (rosinality .pt) with random motion and CLIP weights

The photo graphs need e4e, the encoder trained for the generator: --e4e FILE (e4e_ffhq_encode.pt,
or a bundle's e4e.safetensors). Random-init models get a random e4e (it inverts no face; the
bundle says random-init). --no-photo leaves the photo graphs out (seeds and latents only)."""

EXAMPLES = """\
examples:
  lgfa export --preset tiny --random-init --out engines/tiny
  lgfa export --checkpoint runs/ffhq/last.safetensors --out engines/ffhq --precision fp32,fp16
  lgfa export --checkpoint Iter_000800.pth --stylegan 550000.pt --e4e e4e_ffhq_encode.pt --out engines/paper
  lgfa export --checkpoint runs/ffhq/last.safetensors --no-photo --out engines/ffhq-seeds
  lgfa export --stylegan 550000.pt --random-init --frames 24 --out engines/ffhq-random --force

then:
  lgfa verify engines/tiny
  lgfa build-engines engines/tiny --fp16"""


def precision_list(text: str) -> tuple[str, ...]:
    """``fp32``, ``fp16`` or ``fp32,fp16`` -> the precisions, in canonical order."""
    wanted = {p.strip() for p in text.split(",") if p.strip()}
    unknown = wanted - set(PRECISIONS)
    if not wanted or unknown:
        raise argparse.ArgumentTypeError(f"give precisions from {', '.join(PRECISIONS)} separated by commas, got {text!r}")
    return tuple(p for p in PRECISIONS if p in wanted)


def _positive(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"give a whole number of at least {minimum}, got {text!r}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    source = parser.add_argument_group("weights")
    source.add_argument("--checkpoint", metavar="FILE", help="project checkpoint or reference Iter_*.pth")
    source.add_argument("--stylegan", metavar="FILE", help="rosinality StyleGAN2 checkpoint (g_ema) to use")
    source.add_argument("--preset", choices=list(PRESETS), help="model sizes, for --random-init")
    source.add_argument("--random-init", action="store_true", help="random weights where no file gives them")
    source.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    source.add_argument(
        "--e4e", metavar="FILE", help="e4e encoder for the photo graphs (e4e_ffhq_encode.pt or an lgfa e4e.safetensors)"
    )
    parser.add_argument(
        "--no-photo", action="store_true",
        help="leave out the photo graphs (image_encoder, clip_image, visual_mapper): seeds and latents only",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="bundle directory to write")
    parser.add_argument(
        "--frames", type=_positive(2), metavar="T", help="frames the motion graph is unrolled for (default: the preset's, 16)"
    )
    parser.add_argument(
        "--precision", type=precision_list, default=("fp32",), metavar="LIST",
        help="graph precisions: fp32, fp16 (for GPU execution providers and TensorRT) or fp32,fp16 (default: fp32)",
    )
    parser.add_argument(
        "--max-batch", type=_positive(1), default=16, metavar="N", help="largest batch each graph declares (default: 16)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing bundle in --out (after success)")


MAX_FRAMES = 256
"""The motion graph is unrolled for every frame; longer clips chain segments ('lgfa stream')."""
MAX_BATCH = 1024


def check_options(args: argparse.Namespace) -> None:
    """Every option, before torch or a model loads."""
    from lgfa_deploy.errors import LgfaError

    if not args.checkpoint and not args.random_init:
        raise LgfaError("say where the weights come from: --checkpoint FILE, or --random-init with --preset NAME or --stylegan FILE")
    for option, path in (("--checkpoint", args.checkpoint), ("--stylegan", args.stylegan), ("--e4e", args.e4e)):
        if path is not None and not Path(path).is_file():
            raise LgfaError(f"{option} {path} does not exist or is not a file")
    if args.out.is_symlink():
        raise LgfaError(f"--out {args.out} is a symbolic link; give the path of a real folder for the bundle")
    if args.seed < 0:
        raise LgfaError(f"--seed must be 0 or more, got {args.seed}")
    if args.frames is not None and args.frames > MAX_FRAMES:
        raise LgfaError(f"--frames must be at most {MAX_FRAMES}, got {args.frames}; stream longer clips with 'lgfa stream'")
    if args.max_batch > MAX_BATCH:
        raise LgfaError(f"--max-batch must be at most {MAX_BATCH}, got {args.max_batch}")


def run(args: argparse.Namespace) -> int:
    check_options(args)
    from export.bundle_writer import export_bundle

    summary = export_bundle(
        args.out,
        preset=args.preset,
        checkpoint=args.checkpoint,
        stylegan=args.stylegan,
        random_init=args.random_init,
        seed=args.seed,
        frames=args.frames,
        precisions=args.precision,
        max_batch=args.max_batch,
        force=args.force,
        e4e=args.e4e,
        photo=not args.no_photo,
    )
    for graph in summary.graphs:
        sizes = ", ".join(f"{p} {b / 2**20:.1f} MiB" for p, b in graph.bytes.items())
        log.info("  %-13s %s, %.1f s", graph.name, sizes, graph.seconds)
    log.info(
        "wrote %s: exported in %.1f s, verified in %.1f s",
        summary.out, summary.export_seconds, summary.verify_seconds,
    )
    return 0
