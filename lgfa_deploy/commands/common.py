"""What ``lgfa animate`` and ``lgfa stream`` share: their runtime, face and video options, the
checks of those options (all before a model loads), opening the animator, and the side files
``--save-latent`` and ``--save-aligned``, published together with the clip or not at all."""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lgfa_deploy.atomic import publish
from lgfa_deploy.backends.base import BACKENDS, DEVICES, RUNTIME_PRECISIONS, open_backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.commands.align import face_index
from lgfa_deploy.default_bundle import bundle_or_default
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import CONTEXT_LENGTH
from lgfa_deploy.pipeline import Animator, align_photo, check_micro_batch, check_seed, check_text, load_latent
from lgfa_deploy.tokenizer import ClipTokenizer
from lgfa_deploy.validate import check_output_file
from lgfa_deploy.video import DEFAULT_CRF, ENCODERS, MAX_CRF, check_crf, check_fps, choose_encoder

if TYPE_CHECKING:
    from lgfa_deploy.align import AlignedFace

log = logging.getLogger(__name__)

DEFAULT_VIDEO_FPS = 10.0
"""Frame rate of a written video when --fps is not given: the reference implementation's."""
TEXT_RULES = (
    "A text may be at most 77 CLIP tokens, start and end of text included; a longer one is refused, "
    "not truncated, because truncation would cut the expression at the end of the sentence. "
    "Zero-width and other invisible format characters are removed first."
)
CTRL_C_RULES = (
    "Ctrl-C leaves no temporary file. 'lgfa stream' ends there as if the sentences had run out: the video "
    "so far (playable) and the --save-* files are kept. 'lgfa animate' makes a clip of known length, so "
    "Ctrl-C leaves nothing: no clip, no --save-* files."
)


# -- options ----------------------------------------------------------------------------------------------
def add_bundle_argument(parser: argparse.ArgumentParser) -> None:
    """--bundle DIR, which may be left out for the embedded default (:func:`bundle_or_default`)."""
    parser.add_argument(
        "--bundle", default=None, metavar="DIR", help="bundle directory from 'lgfa export' (default: the embedded faces-64 model)"
    )


def add_runtime_arguments(parser: argparse.ArgumentParser, backend_default: str | None = "auto") -> None:
    """--backend, --device, --precision, --micro-batch and --compile: how a bundle runs."""
    group = parser.add_argument_group("runtime")
    # No argparse choices: open_backend() answers a wrong name in one line that lists them.
    group.add_argument(
        "--backend", default=backend_default, metavar="NAME",
        help=f"auto | {' | '.join(BACKENDS)}: auto (the fastest installed one that keeps fidelity here, named "
             "in the log), onnxruntime (CPU or CUDA), openvino (CPU, bf16 where the CPU has it), tensorrt "
             "(engines from 'lgfa build-engines'), torch (the bundle's weights in PyTorch)",
    )
    group.add_argument("--device", default="auto", help=f"{' | '.join(DEVICES)}; auto: the GPU when the backend finds one")
    group.add_argument("--precision", default="auto",
                       help=f"auto | {' | '.join(RUNTIME_PRECISIONS)}; synthesis runs at it (auto: the auto backend's "
                            "choice, else fp32; bf16: openvino on CPUs with AVX512_BF16 or AMX)")
    group.add_argument("--micro-batch", type=int, default=None, metavar="N",
                       help="frames per synthesis call (default: the graph's optimal batch)")
    group.add_argument("--compile", action="store_true", help="torch backend: torch.compile the synthesis network (slow start)")


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """--encoder and --crf: how an mp4 is encoded (H.264, yuv420p, through PyAV)."""
    group = parser.add_argument_group("video (H.264 mp4 through PyAV; plays in browsers and on phones)")
    group.add_argument(
        "--encoder", default="auto", metavar="NAME",
        help=f"{' | '.join(ENCODERS)}; auto: h264_nvenc where an NVIDIA GPU with NVENC opens it, else libx264",
    )
    group.add_argument(
        "--crf", type=int, default=DEFAULT_CRF, metavar="N",
        help=f"quality, 0 (best, largest) to {MAX_CRF}; {DEFAULT_CRF} looks like the frames themselves "
             "(libx264's CRF, h264_nvenc's constant quality)",
    )


def check_video_options(args: argparse.Namespace) -> None:
    """--fps (when given), --crf and --encoder, before any work."""
    if args.fps is not None:
        check_fps(args.fps)
    check_crf(args.crf)
    args.encoder = choose_encoder(args.encoder)


def add_content_arguments(parser: argparse.ArgumentParser) -> None:
    """--seed N | --latent FILE | --image PHOTO: whose face; --face, --save-latent, --save-aligned."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seed", type=int, default=None, help="face seed: z ~ N(0, I) through the mapping network (default 0); on the "
                       "synthetic face domain a neutral face drawn from the seed")
    group.add_argument(
        "--latent", default=None, metavar="FILE",
        help="face as W+ in a .npy file, shape [L, 512] or [1, L, 512]; its motion is text-only (a latent "
             "saved with --save-latent keeps the photo's face, not its image embedding)",
    )
    group.add_argument(
        "--image", default=None, metavar="PHOTO",
        help="a photo of a face (PNG, JPEG, WebP...): aligned, inverted with e4e, embedded with CLIP; "
             "content w_inv + H_v(E_v), motion from the text and image embeddings (needs the 'face' extra)",
    )
    photo = parser.add_argument_group("photo")
    photo.add_argument("--face", type=face_index, default=None, metavar="N",
                       help="with --image: which face, by its number in 'lgfa align --list-faces' (default: the largest)")
    photo.add_argument("--save-latent", default=None, metavar="FILE.npy",
                       help="also write the content W+ [1, L, S] (with --image: w_inv + H_v(E_v)), to animate the "
                            "face again with --latent (text-only motion); written with the clip, not without it")
    photo.add_argument("--save-aligned", default=None, metavar="FILE.png",
                       help="with --image: also write the aligned face that e4e and CLIP saw, with the clip")


def check_content_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, photo options without --image and files --save-* could not write."""
    from lgfa_deploy.align import WRITABLE_SUFFIXES

    if args.image is None:
        for option, value in (("--face", args.face), ("--save-aligned", args.save_aligned)):
            if value is not None:
                raise LgfaError(f"{option} needs --image PHOTO")
    for option, value, suffixes in (
        ("--save-latent", args.save_latent, (".npy",)),
        ("--save-aligned", args.save_aligned, WRITABLE_SUFFIXES),
    ):
        if value is not None:
            check_output_file(value, option, suffixes)


# -- the animator -----------------------------------------------------------------------------------------
def open_animator(
    args: argparse.Namespace, texts: Iterable[str] = (), check_bundle: Callable[[Bundle], None] | None = None
) -> tuple[Animator, AlignedFace | None]:
    """The bundle of ``args.bundle`` on the chosen backend and the aligned face of ``--image`` (None
    without one), after checking every input that needs no backend (``check_bundle(bundle)``, texts,
    seed, latent, photo, micro-batch), so that bad input fails before a large model loads."""
    options = {}
    if args.compile:
        if args.backend != "torch":
            raise LgfaError("--compile works with --backend torch only")
        options["compile"] = True
    check_content_outputs(args)
    bundle = Bundle.open(bundle_or_default(args.bundle))
    if check_bundle is not None:
        check_bundle(bundle)
    tokenizer = ClipTokenizer(bundle.tokenizer_path, context_length=CONTEXT_LENGTH)
    for text in texts:
        check_text(tokenizer, text)
    if args.latent is not None:
        load_latent(args.latent, bundle.n_latent, bundle.style_dim)
    if args.seed is not None:
        check_seed(args.seed)
    check_micro_batch(bundle, args.micro_batch)
    aligned = align_photo(bundle, args.image, args.face) if args.image is not None else None
    backend = open_backend(args.backend, bundle, device=args.device, precision=args.precision, **options)
    try:
        return Animator(bundle, backend, micro_batch=args.micro_batch, tokenizer=tokenizer), aligned
    except BaseException:
        backend.close()
        raise


# -- side files -------------------------------------------------------------------------------------------
class SideFiles:
    """Files made beside the clip (``--save-latent``, ``--save-aligned``): each written under a
    temporary name beside its target as soon as it is known, renamed into place by :meth:`publish`
    when the clip is, removed when the ``with`` block ends without publishing (an error, Ctrl-C)."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def stage(self, path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
        """Write the file ``path`` through ``write(temporary_path)``; published later."""
        path = Path(path)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
            os.close(fd)
            self._staged.append((Path(name), path))
            write(Path(name))
        except OSError as exc:
            raise LgfaError(f"cannot write {path}: {exc.strerror or exc}") from None

    def publish(self) -> None:
        """Rename every staged file into place."""
        while self._staged:
            tmp, path = self._staged.pop(0)
            publish(tmp, path)

    def discard(self) -> None:
        while self._staged:
            self._staged.pop()[0].unlink(missing_ok=True)

    def __enter__(self) -> SideFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def prepare_face(
    animator: Animator, args: argparse.Namespace, aligned: AlignedFace | None, side_files: SideFiles
) -> dict[str, Any]:
    """The face as keyword arguments of :meth:`Animator.stream` (the inverted photo, or the content
    latent of the seed or latent); ``--save-latent`` and ``--save-aligned`` are staged in ``side_files``."""
    if aligned is not None:
        inverted = animator.invert(aligned)
        content, face = inverted.content, {"image": inverted}
    else:
        content = animator.content(args.seed, args.latent)
        face = {"latent": content}
    if args.save_aligned is not None and aligned is not None:
        from lgfa_deploy.align import write_image

        side_files.stage(args.save_aligned, lambda tmp: write_image(tmp, aligned.image))
        log.info("the aligned face (%dx%d) goes to %s", aligned.size, aligned.size, args.save_aligned)
    if args.save_latent is not None:
        side_files.stage(args.save_latent, lambda tmp: np.save(tmp, content.astype(np.float32)))
        log.info("the content W+ %s goes to %s", list(content.shape), args.save_latent)
    return face
