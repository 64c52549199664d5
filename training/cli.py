"""``lgfa train``: train the text encoder, motion generator and mappers against a frozen StyleGAN2.

This module only parses and checks options (it imports no torch, so ``--help`` is quick); the loop
is :func:`training.train.train`. Several processes: ``torchrun --nproc-per-node N -m lgfa_deploy.cli
train ...`` (NCCL on GPUs, gloo on CPU); ``--batch`` is per process.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import OptionError
from training.presets import PRESETS

# Options a resumed run may change; every other option is the saved run's.
RESUME_OVERRIDES: tuple[str, ...] = ("steps", "save_every", "sample_every", "device")
TRAIN_OPTIONS_FILE = "train.json"



@dataclass
class TrainConfig:
    """Every option of a training run; the defaults are the paper's (PAPER-NOTES, "Training")."""

    out: str
    preset: str | None = None
    random_init: bool = False
    checkpoint: str | None = None
    stylegan: str | None = None
    clip: str | None = None
    loss_clip: list[str] = field(default_factory=list)
    lpips_weights: list[str] = field(default_factory=list)
    images: str | None = None
    latents: str | None = None
    texts: str | None = None
    prompt_template: str | None = None
    steps: int = 2000
    batch: int = 4
    frames: int = 4
    decay: str = "constant"
    lr_encoder: float = 1e-5
    lr_motion: float = 1e-3
    lr_mapper: float = 1e-3
    adam_betas: tuple[float, float] = (0.0, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    lambda_lpips: float = 1.0
    lambda_contrastive: float = 0.5
    lambda_path: float = 1.0
    lambda_latent: float = 1.0
    lambda_endpoints: float = 1.0
    lambda_colour: float = 0.0
    identity_reader: str | None = None
    lambda_identity: float = 0.0
    identity_margin: float = 0.0
    tau: float = 0.07
    contrastive_group: int | None = None
    lpips_size: int | None = None
    h0_std: float = 0.01
    save_every: int = 1000
    sample_every: int = 200
    sample_prompts: int = 4
    sample_size: int = 256
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    tf32: bool = False

    @property
    def image_mode(self) -> bool:
        """True when training on faces with inverted latents; else content comes from the mapping network."""
        return self.images is not None

    @property
    def latent_mode(self) -> bool:
        """True when contents are given W+ (``--latents`` without ``--images``): the no-image path on them."""
        return self.images is None and self.latents is not None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DEFAULTS = TrainConfig(out="")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train the CLIP text encoder, the recurrent motion generator and the mappers against a frozen "
        "StyleGAN2 with the paper's losses. Pretrained weights are read from local files only; "
        "--random-init trains on random weights (for tests). Several processes: "
        "torchrun --nproc-per-node N -m lgfa_deploy.cli train ... (--batch is per process)."
    )
    d = DEFAULTS
    run = parser.add_argument_group("run")
    run.add_argument("--out", help="output folder: checkpoints/, samples/, metrics.jsonl, train.json")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly (its saved options)")
    run.add_argument("--steps", type=int, default=argparse.SUPPRESS, help=f"total optimiser steps (default: {d.steps})")
    run.add_argument(
        "--save-every", type=int, default=argparse.SUPPRESS, help=f"checkpoint every N steps (default: {d.save_every})"
    )
    run.add_argument(
        "--sample-every",
        type=int,
        default=argparse.SUPPRESS,
        help=f"sample grid PNG every N steps, 0 for never (default: {d.sample_every})",
    )
    run.add_argument("--seed", type=int, default=d.seed, help="seed of random weights and of every data draw")
    run.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    run.add_argument("--amp", choices=("none", "bf16"), default=d.amp, help="autocast the forward pass (GPU)")
    run.add_argument("--tf32", action="store_true", help="allow TF32 matrix multiplies and convolutions (GPU)")

    weights = parser.add_argument_group("weights (local files only)")
    weights.add_argument("--preset", choices=list(PRESETS), default=d.preset, help="model preset")
    weights.add_argument("--random-init", action="store_true", help="every network on seeded random weights")
    weights.add_argument("--checkpoint", help="start from an lgfa checkpoint or a reference Iter_*.pth")
    weights.add_argument("--stylegan", help="rosinality StyleGAN2 checkpoint (g_ema), frozen")
    weights.add_argument("--clip", help="CLIP weights for the trained encoder (RN50 for the paper's presets)")
    weights.add_argument(
        "--loss-clip", nargs="+", default=[], metavar="FILE",
        help="CLIP weights of the frozen loss model (the paper's ViT-B/32); several files: the contrastive "
        "loss is the mean of each CLIP's",
    )  # fmt: skip
    weights.add_argument(
        "--identity-reader", metavar="FILE",
        help="the synthetic face domain's parameter reader (a reader.safetensors of train_all's teacher/), "
        "frozen: --lambda-identity holds its identity readings of frame T-1 to the content's",
    )  # fmt: skip
    weights.add_argument(
        "--lpips-weights", nargs="+", default=[], metavar="FILE",
        help="LPIPS heads (lpips alex.pth) and AlexNet backbone (torchvision state dict), one or two files",
    )  # fmt: skip

    data = parser.add_argument_group("data")
    data.add_argument("--images", help="folder of aligned face images (image mode, with --latents)")
    data.add_argument(
        "--latents",
        help="W+ per image of --images: e4e's latents.pt [N, L, S] or {file name: [L, S]}; alone (latent mode) "
        "the contents of the no-image path instead of mapping(z), e.g. a domain's neutral faces",
    )
    data.add_argument("--texts", help="file of sentences, one per line (default: the paper's 28 expressions)")
    data.add_argument("--prompt-template", help="template of the 28 expressions (default: the preset's)")

    numbers = {
        "sizes": [
            ("--batch", int, "samples per process and step"),
            ("--frames", int, "frames T per training clip (the inference clip has the preset's T, 16)"),
            ("--lpips-size", int, "px at which LPIPS compares frames and faces; None: the loss CLIP's input (224)"),
            ("--contrastive-group", int, "pairs per contrastive group; None: --batch"),
            ("--sample-prompts", int, "rows (sentences) of the sample grid"),
            ("--sample-size", int, "largest cell of the sample grid, px"),
        ],
        "optimiser": [
            ("--lr-encoder", float, "Adam learning rate of the CLIP encoder"),
            ("--lr-motion", float, "learning rate of the motion generator"),
            ("--lr-mapper", float, "learning rate of the mappers"),
            ("--warmup-steps", int, "linear learning-rate warm-up; 0: constant"),
            ("--adam-eps", float, "Adam's epsilon, added to the root of the second moment (PyTorch's default)"),
        ],
        "losses": [
            ("--lambda-lpips", float, "LPIPS on frames 0 and T-1 (image mode)"),
            ("--lambda-contrastive", float, "contrastive CLIP loss on frame T-1"),
            ("--lambda-path", float, "second-order latent path regulariser"),
            ("--lambda-latent", float, "latent regulariser (every frame vs the content)"),
            ("--lambda-endpoints", float, "first/last-frame regulariser"),
            ("--lambda-colour", float, "colour statistics of frame T-1 vs the content's render (not the paper's; 0: off)"),
            ("--lambda-identity", float, "L1 of --identity-reader's identity readings of frame T-1 vs the content's "
                                         "render (not the paper's; 0: off)"),
            ("--identity-margin", float, "change of an identity reading (0-1 scale) that --lambda-identity lets pass free"),
            ("--tau", float, "temperature of the contrastive loss"),
            ("--h0-std", float, "std of the recurrent state h_0 in training"),
        ],
    }
    groups = {title: parser.add_argument_group(title) for title in numbers}
    for title, options in numbers.items():
        for flag, kind, help_text in options:
            default = getattr(d, flag[2:].replace("-", "_"))
            groups[title].add_argument(flag, type=kind, default=default, help=help_text)
    groups["sizes"].add_argument(
        "--decay", choices=("constant", "linear"), default=d.decay,
        help="the recurrence's step size in training: constant 0.8/T (the paper's) or linear 0.8/T*(T-t)/T "
        "(inference's; with --frames 16 for a preset whose motion_norm_eps lets the offset grow with m_t)",
    )  # fmt: skip
    groups["optimiser"].add_argument(
        "--adam-betas", type=float, nargs=2, default=d.adam_betas, metavar=("B1", "B2"), help="Adam betas"
    )


def _fresh_config(args: argparse.Namespace) -> TrainConfig:
    """The options of a new run, checked."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["adam_betas"] = tuple(values["adam_betas"])
    if not args.out:
        raise OptionError("--out DIR is required (or --resume DIR)")
    if (Path(args.out) / "checkpoints" / "last.json").is_file():
        raise OptionError(
            f"{args.out} already holds a training run; continue it with --resume {args.out} or pick another --out"
        )
    config = TrainConfig(**values)
    check_config(config)
    return config


def _resumed_config(args: argparse.Namespace) -> TrainConfig:
    """The saved options of the run in ``--resume DIR``, with the few a resumed run may change."""
    folder = Path(args.resume)
    options_file = folder / TRAIN_OPTIONS_FILE
    if not (folder / "checkpoints" / "last.json").is_file() or not options_file.is_file():
        raise OptionError(f"{folder} holds no run to resume (no checkpoints/last.json or {TRAIN_OPTIONS_FILE})")
    if args.out and Path(args.out).resolve() != folder.resolve():
        raise OptionError("--resume DIR writes into DIR; drop --out or give the same folder")
    changed = [
        f"--{f.name.replace('_', '-')}"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUME_OVERRIDES
        and f.name != "out"
        and hasattr(args, f.name)
        and _normalised(getattr(args, f.name)) != _normalised(getattr(DEFAULTS, f.name))
    ]
    if changed:
        raise OptionError(
            f"--resume continues {folder} with its saved options; drop {', '.join(changed)} "
            f"(only --{', --'.join(o.replace('_', '-') for o in RESUME_OVERRIDES)} may change)"
        )
    saved = json.loads(options_file.read_text(encoding="utf-8"))["options"]
    saved["adam_betas"] = tuple(saved["adam_betas"])
    if not isinstance(saved.get("loss_clip", []), list):  # runs saved when --loss-clip took one file (or none)
        saved["loss_clip"] = [saved["loss_clip"]] if saved["loss_clip"] else []
    saved["out"] = str(folder)
    for name in RESUME_OVERRIDES:
        if hasattr(args, name) and (name != "device" or args.device != DEFAULTS.device):
            saved[name] = getattr(args, name)
    config = TrainConfig(**saved)
    check_config(config)
    return config


def _normalised(value: object) -> object:
    return list(value) if isinstance(value, (tuple, list)) else value


def check_config(config: TrainConfig) -> None:
    """Raise :class:`OptionError` for options that cannot train; files are checked when read."""
    for name, minimum in (("steps", 1), ("batch", 1), ("frames", 3), ("save_every", 1), ("sample_every", 0),
                          ("sample_prompts", 1), ("sample_size", 8), ("warmup_steps", 0)):  # fmt: skip
        if getattr(config, name) < minimum:
            raise OptionError(f"--{name.replace('_', '-')} must be at least {minimum}, got {getattr(config, name)}")
    for name in ("lr_encoder", "lr_motion", "lr_mapper", "lambda_lpips", "lambda_contrastive", "lambda_path",
                 "lambda_latent", "lambda_endpoints", "lambda_colour", "lambda_identity", "identity_margin", "h0_std", "tau"):  # fmt: skip
        value = getattr(config, name)
        if not math.isfinite(value) or value < 0:
            raise OptionError(f"--{name.replace('_', '-')} must be a finite number of 0 or more, got {value}")
    if config.tau <= 0:
        raise OptionError(f"--tau must be positive, got {config.tau}")
    if config.adam_eps <= 0:
        raise OptionError(f"--adam-eps must be positive, got {config.adam_eps}")
    if not all(0 <= b < 1 for b in config.adam_betas):
        raise OptionError(f"--adam-betas must lie in [0, 1), got {list(config.adam_betas)}")
    group = config.contrastive_group or config.batch
    if group < 1 or config.batch % group:
        raise OptionError(f"--contrastive-group {group} must divide --batch {config.batch}")
    if config.lpips_size is not None and config.lpips_size < 16:
        raise OptionError(f"--lpips-size must be at least 16 px, got {config.lpips_size}")
    if config.images is not None and config.latents is None:
        raise OptionError("image mode needs --latents FILE (one W+ per image of --images) as well as --images DIR")
    if config.preset is None and config.checkpoint is None:
        raise OptionError("give --preset NAME (or --checkpoint FILE, which names its preset)")
    if (config.lambda_identity > 0) != (config.identity_reader is not None):
        raise OptionError("--lambda-identity W (above 0) and --identity-reader FILE go together; give both or neither")
    _check_paths(config)
    files = {"--checkpoint": config.checkpoint, "--stylegan": config.stylegan, "--clip": config.clip,
             "--loss-clip": config.loss_clip, "--lpips-weights": config.lpips_weights}  # fmt: skip
    if config.random_init:
        given = [name for name, value in files.items() if value]
        if given:
            raise OptionError(f"--random-init trains on random weights only; drop {', '.join(given)}")
        return
    if config.checkpoint and config.clip:
        raise OptionError("--checkpoint already holds the encoder; drop --clip")
    needed = []
    if not config.checkpoint:
        needed += [n for n in ("--stylegan", "--clip") if not files[n]]
    if config.lambda_contrastive > 0 and not config.loss_clip:
        needed.append("--loss-clip")
    if config.image_mode and config.lambda_lpips > 0 and not config.lpips_weights:
        needed.append("--lpips-weights")
    if needed:
        raise OptionError(
            f"pretrained weights come from local files: give {', '.join(needed)} "
            "(or --random-init to train on random weights, for tests)"
        )


def _check_paths(config: TrainConfig) -> None:
    """Input files and folders exist, the sentences file is readable text, --out is no file or link."""
    out = Path(config.out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OptionError(f"--out {out} is a file or a symbolic link; give a folder for the run")
    files = [("--checkpoint", config.checkpoint), ("--stylegan", config.stylegan), ("--clip", config.clip),
             *(("--loss-clip", path) for path in config.loss_clip), ("--latents", config.latents), ("--texts", config.texts),
             ("--identity-reader", config.identity_reader),
             *(("--lpips-weights", path) for path in config.lpips_weights)]  # fmt: skip
    for option, path in files:
        if path is not None and not Path(path).is_file():
            raise OptionError(f"{option} {path} does not exist or is not a file")
    if config.images is not None and not Path(config.images).is_dir():
        raise OptionError(f"--images {config.images} is not a folder of images")
    if config.texts is not None and b"\0" in Path(config.texts).read_bytes():
        raise OptionError(f"--texts {config.texts} holds NUL bytes, so it is not a text file; give UTF-8 text")


def run(args: argparse.Namespace) -> int:
    config = _resumed_config(args) if args.resume else _fresh_config(args)
    from training.train import train

    train(config, resume=bool(args.resume))
    return 0
