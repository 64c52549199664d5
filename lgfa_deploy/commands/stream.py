"""``lgfa stream``: sentence after sentence, chained, to a window, an mp4 or raw frames on stdout."""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import textwrap
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lgfa_deploy.atomic import atomic_path
from lgfa_deploy.backends.base import BACKENDS, DEVICES, RUNTIME_PRECISIONS, open_backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.commands.align import face_index
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import CONTEXT_LENGTH
from lgfa_deploy.pipeline import (
    Animator,
    StreamFrame,
    align_photo,
    check_micro_batch,
    check_seed,
    check_text,
    load_latent,
)
from lgfa_deploy.tokenizer import ClipTokenizer

if TYPE_CHECKING:
    from lgfa_deploy.align import AlignedFace

log = logging.getLogger(__name__)

DEFAULT_VIDEO_FPS = 10.0
"""Frame rate of a written video when --fps is not given: the reference implementation's."""
TEXT_RULES = (
    "A text may be at most 77 CLIP tokens, start and end of text included; a longer one is refused, "
    "not truncated, because truncation would cut the expression at the end of the sentence."
)
_STATUS_SECONDS = 0.25
_FPS_WINDOW_SECONDS = 2.0


# -- shared with `lgfa animate` ---------------------------------------------------------------------
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


def add_content_arguments(parser: argparse.ArgumentParser) -> None:
    """--seed N | --latent FILE | --image PHOTO: whose face; --face, --save-latent, --save-aligned."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seed", type=int, default=None, help="face seed: z ~ N(0, I) through the mapping network (default 0)")
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
                       help="write the content W+ [1, L, S] (with --image: w_inv + H_v(E_v)) as soon as it is known, "
                            "to animate the face again with --latent (text-only motion)")
    photo.add_argument("--save-aligned", default=None, metavar="FILE.png",
                       help="with --image: write the aligned face that e4e and CLIP saw")


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
        if value is None:
            continue
        path = Path(value)
        if path.suffix.lower() not in suffixes:
            raise LgfaError(f"{option} {path}: choose a file ending in {', '.join(suffixes)}")
        if path.is_dir():
            raise LgfaError(f"{option} {path} is a directory; give a file name")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise LgfaError(f"cannot write {path}: directory {parent} does not exist")


def open_animator(args: argparse.Namespace, texts: Iterable[str] = ()) -> tuple[Animator, AlignedFace | None]:
    """The bundle of ``args.bundle`` on the chosen backend and the aligned face of ``--image`` (None
    without one), after checking every input that needs no backend (texts, seed, latent, photo,
    micro-batch), so that bad input fails before a large model loads."""
    options = {}
    if args.compile:
        if args.backend != "torch":
            raise LgfaError("--compile works with --backend torch only")
        options["compile"] = True
    check_content_outputs(args)
    bundle = Bundle.open(args.bundle)
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


def prepare_face(animator: Animator, args: argparse.Namespace, aligned: AlignedFace | None) -> dict[str, Any]:
    """The face as keyword arguments of :meth:`Animator.stream` (the inverted photo, or the content
    latent of the seed or latent), after writing ``--save-latent`` and ``--save-aligned``."""
    if aligned is not None:
        inverted = animator.invert(aligned)
        content, face = inverted.content, {"image": inverted}
    else:
        content = animator.content(args.seed, args.latent)
        face = {"latent": content}
    if args.save_aligned is not None and aligned is not None:
        from lgfa_deploy.align import write_image

        write_image(args.save_aligned, aligned.image)
        log.info("wrote the aligned face (%dx%d) to %s", aligned.size, aligned.size, args.save_aligned)
    if args.save_latent is not None:
        save_latent(args.save_latent, content)
        log.info("wrote the content W+ %s to %s", list(content.shape), args.save_latent)
    return face


def save_latent(path: str | os.PathLike[str], content: np.ndarray) -> None:
    """Write W+ [1, L, S] as a float32 ``.npy`` file, atomically."""
    try:
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, content.astype(np.float32))
    except OSError as exc:
        raise LgfaError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- arguments ----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Animate one face continuously, sentence after sentence: each sentence's clip starts from the "
        "last frame of the one before (with --image, every sentence's motion also starts from the photo's "
        "image embedding). Show it in a window, write an mp4, or pipe raw frames into ffmpeg. "
        "Ctrl-C ends the stream cleanly (a video written so far stays playable). " + TEXT_RULES,
        width=100,
    )
    parser.epilog = (
        "examples:\n"
        "  lgfa stream --bundle engines/tiny --texts sentences.txt --out talk.mp4\n"
        "  lgfa stream --bundle engines/tiny --texts - --window --fps 10      # type sentences, Enter each\n"
        "  lgfa stream --bundle engines/tiny --texts sentences.txt --image photo.jpg --save-latent me.npy --out me.mp4\n"
        "  lgfa stream --bundle engines/tiny --texts sentences.txt --raw | "
        "ffmpeg -f rawvideo -pix_fmt bgr24 -s 32x32 -r 10 -i - talk.mp4"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--bundle", required=True, metavar="DIR", help="bundle directory from 'lgfa export'")
    parser.add_argument(
        "--texts", required=True, metavar="FILE|-",
        help="one sentence a line (blank lines and '# comments' skipped); '-' reads stdin as lines arrive",
    )
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="video file (.mp4, .avi, .mkv), renamed into place when the stream ends")
    out.add_argument("--window", action="store_true", help="show the frames in an OpenCV window (q or Esc closes it)")
    out.add_argument("--raw", action="store_true", help="write raw bgr24 frames to stdout, for a pipe into ffmpeg")
    parser.add_argument(
        "--fps", type=float, default=None,
        help=f"pace the output at N frames per second, also the video's rate (default: as fast as it can, "
             f"videos at {DEFAULT_VIDEO_FPS:g} fps)",
    )
    parser.add_argument("--loop", action="store_true", help="repeat the sentences of --texts FILE until Ctrl-C")
    parser.add_argument("--quiet", action="store_true", help="no status line (fps, latency) on stderr")
    add_content_arguments(parser)
    add_runtime_arguments(parser)


# -- inputs ---------------------------------------------------------------------------------------------
def _sentences(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


def read_texts(path: str) -> list[str]:
    """The sentences of a text file, one a line."""
    file = Path(path)
    if not file.is_file():
        raise LgfaError(f"--texts {path} does not exist (give a file with one sentence a line, or - for stdin)")
    try:
        texts = list(_sentences(file.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise LgfaError(f"cannot read --texts {path}: {exc}") from None
    if not texts:
        raise LgfaError(f"--texts {path} has no sentences (blank lines and '#' comments are skipped)")
    return texts


# -- outputs --------------------------------------------------------------------------------------------
class Sink(Protocol):
    def write(self, frame: np.ndarray) -> bool:
        """Show or store one frame; False when the receiver has gone (window closed, pipe shut)."""

    def close(self) -> None: ...


class WindowSink:
    """An OpenCV window; q, Esc or closing the window ends the stream."""

    TITLE = "lgfa stream"

    @staticmethod
    def check_display() -> None:
        """Refuse early where no display can exist (Linux without DISPLAY or WAYLAND_DISPLAY)."""
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise LgfaError("--window needs a display, and DISPLAY is not set; use --out FILE.mp4 or --raw instead")

    def __init__(self, resolution: int) -> None:
        self.check_display()
        import cv2

        self._cv2 = cv2
        try:
            cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise LgfaError(
                "this OpenCV has no GUI (opencv-python-headless); for --window install opencv-python, "
                "or use --out FILE.mp4 or --raw"
            ) from None
        side = max(resolution, 512)
        cv2.resizeWindow(self.TITLE, side, side)

    def write(self, frame: np.ndarray) -> bool:
        cv2 = self._cv2
        cv2.imshow(self.TITLE, frame)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27) and cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        self._cv2.destroyAllWindows()


class RawSink:
    """Raw bgr24 frames on stdout."""

    @staticmethod
    def check_stdout() -> None:
        if sys.stdout.isatty():
            raise LgfaError("--raw writes binary frames; pipe them into a program, e.g. '| ffmpeg -f rawvideo ...'")

    def __init__(self) -> None:
        self.check_stdout()
        self._out = sys.stdout.buffer

    def write(self, frame: np.ndarray) -> bool:
        try:
            self._out.write(np.ascontiguousarray(frame).data)
            self._out.flush()
        except BrokenPipeError:
            # The reader has gone; point stdout at /dev/null so that Python's exit flush stays quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return False
        return True

    def close(self) -> None:
        pass


class FileSink:
    """A video file written through :class:`lgfa_deploy.video.VideoSink` (kept on success and on Ctrl-C)."""

    def __init__(self, path: str, fps: float, resolution: int) -> None:
        from lgfa_deploy.video import VideoSink

        self.sink = VideoSink(path, fps, (resolution, resolution))

    def write(self, frame: np.ndarray) -> bool:
        self.sink.write(frame)
        return True

    def close(self, keep: bool = True) -> None:
        self.sink.close(keep=keep)


# -- pacing and status ----------------------------------------------------------------------------------
class Pacer:
    """Lets frames out at ``fps``; when it falls behind it restarts the clock rather than bursting."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.deadline = 0.0

    def wait(self) -> None:
        now = time.perf_counter()
        if self.deadline > now:
            time.sleep(self.deadline - now)
        else:
            self.deadline = now
        self.deadline += self.period


class Status:
    """fps and latency: a live line on a terminal's stderr, else one log line per sentence."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self.times: deque[float] = deque()
        self.segment = -1
        self.latency = 0.0
        self.first_latency: float | None = None
        self.shown = 0.0
        self.count = 0
        self.begin = time.perf_counter()

    def fps(self) -> float:
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)

    def update(self, frame: StreamFrame) -> None:
        now = time.perf_counter()
        self.count += 1
        self.times.append(now)
        while self.times[0] < now - _FPS_WINDOW_SECONDS:
            self.times.popleft()
        if frame.segment != self.segment:
            self.segment = frame.segment
            self.latency = now - frame.started
            if self.first_latency is None:
                self.first_latency = now - self.begin
            if not self.live and not self.quiet:
                log.info("sentence %d: %r (first frame %.0f ms after it was taken up)",
                         frame.segment + 1, frame.text, 1000 * self.latency)
        if self.live and now - self.shown >= _STATUS_SECONDS:
            self.shown = now
            text = frame.text if len(frame.text) <= 40 else frame.text[:37] + "..."
            sys.stderr.write(
                f"\r{self.count} frames | {self.fps():5.1f} fps | latency {1000 * self.latency:4.0f} ms | "
                f"sentence {frame.segment + 1}: {text}\x1b[K"
            )
            sys.stderr.flush()

    def finish(self) -> None:
        if self.live:
            sys.stderr.write("\n")
            sys.stderr.flush()


def check_sink_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, an --fps, --out, --raw or --window that could not be served (also `lgfa client`'s)."""
    if args.fps is not None and not args.fps > 0:
        raise LgfaError(f"--fps must be above 0, got {args.fps}")
    if args.out is not None:
        from lgfa_deploy.video import VIDEO_SUFFIXES, check_output

        if Path(args.out).suffix.lower() not in VIDEO_SUFFIXES:
            raise LgfaError(f"--out must be a video file ({', '.join(VIDEO_SUFFIXES)}); for PNG frames use 'lgfa animate'")
        check_output(args.out)
    elif args.raw:
        RawSink.check_stdout()
    else:
        WindowSink.check_display()


# -- the command ------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    check_sink_options(args)
    if args.texts == "-":
        if args.loop:
            raise LgfaError("--loop repeats a --texts FILE; it cannot repeat stdin")
        texts: Iterable[str] = _sentences(sys.stdin)
    else:
        texts = read_texts(args.texts)
    animator, aligned = open_animator(args, texts if isinstance(texts, list) else ())
    with animator:
        if args.loop:
            texts = itertools.cycle(texts)
        face = prepare_face(animator, args, aligned)
        if animator.backend.device == "cuda":
            animator.warm_up()  # no CUDA graph capture or autotuning in the middle of the stream
        if args.raw:
            sink: Sink = RawSink()
            log.info(
                "raw bgr24 frames of %dx%d on stdout; e.g. | ffmpeg -f rawvideo -pix_fmt bgr24 -s %dx%d -r %g -i - out.mp4",
                animator.resolution, animator.resolution, animator.resolution, animator.resolution,
                args.fps or DEFAULT_VIDEO_FPS,
            )
        elif args.window:
            sink = WindowSink(animator.resolution)
        else:
            sink = FileSink(args.out, args.fps or DEFAULT_VIDEO_FPS, animator.resolution)
        return _play(animator, texts, face, sink, args)


def _play(animator: Animator, texts: Iterable[str], face: dict[str, Any], sink: Sink, args: argparse.Namespace) -> int:
    """Frames -> sink until the texts run out, the receiver goes or Ctrl-C; the sink is always closed."""
    pacer = Pacer(args.fps) if args.fps else None
    status = Status(args.quiet)
    ended = "done"
    frames = animator.stream_frames(texts, **face)
    try:
        for frame in frames:
            if pacer is not None:
                pacer.wait()
            if not sink.write(frame.image):
                ended = "the receiver closed"
                break
            status.update(frame)
    except KeyboardInterrupt:
        ended = "stopped by Ctrl-C"
    except BaseException:
        if isinstance(sink, FileSink):
            sink.close(keep=False)
        else:
            sink.close()
        status.finish()
        raise
    finally:
        frames.close()
    sink.close()
    status.finish()
    elapsed = time.perf_counter() - status.begin
    where = args.out if args.out else "a window" if args.window else "stdout"
    first = f", first frame after {1000 * status.first_latency:.0f} ms" if status.first_latency is not None else ""
    if args.out and status.count == 0:
        where += " (no frames, so no file)"
    log.info(
        "%s: %d frames of %d sentences to %s in %.1f s (%.1f fps%s)",
        ended, status.count, status.segment + 1, where, elapsed, status.count / max(elapsed, 1e-9), first,
    )
    return 0
