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
from typing import Any, Protocol

import numpy as np

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
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.pipeline import Animator, StreamFrame
from lgfa_deploy.validate import read_text_file

log = logging.getLogger(__name__)

_STATUS_SECONDS = 0.25
_FPS_WINDOW_SECONDS = 2.0


# -- arguments ----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Animate one face continuously, sentence after sentence: each sentence's clip starts from the "
        "last frame of the one before (with --image, every sentence's motion also starts from the photo's "
        "image embedding). Show it in a window, write an mp4, or pipe raw frames into ffmpeg. "
        + TEXT_RULES + " " + CTRL_C_RULES,
        width=100,
    )
    parser.epilog = (
        "examples:\n"
        "  lgfa stream --texts sentences.txt --out talk.mp4        # the embedded default model, seed 0\n"
        "  lgfa stream --bundle engines/tiny --texts sentences.txt --out talk.mp4\n"
        "  lgfa stream --bundle engines/tiny --texts - --window --fps 10      # type sentences, Enter each\n"
        "  lgfa stream --bundle engines/tiny --texts sentences.txt --image photo.jpg --save-latent me.npy --out me.mp4\n"
        "  lgfa stream --bundle engines/tiny --texts sentences.txt --out talk.mp4 --encoder libx264 --crf 23  # smaller file\n"
        "  lgfa stream --bundle engines/tiny --texts sentences.txt --raw | "
        "ffmpeg -f rawvideo -pix_fmt bgr24 -s 32x32 -r 10 -i - talk.mp4"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_bundle_argument(parser)
    parser.add_argument(
        "--texts", required=True, metavar="FILE|-",
        help="one sentence a line (blank lines and '# comments' skipped); '-' reads stdin as lines arrive",
    )
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="video file (.mp4, .mkv; H.264), renamed into place when the stream ends")
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
    add_video_arguments(parser)


# -- inputs ---------------------------------------------------------------------------------------------
def _sentences(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


def read_texts(path: str) -> list[str]:
    """The sentences of a text file, one a line."""
    texts = list(_sentences(read_text_file(path, "--texts").splitlines()))
    if not texts:
        raise LgfaError(f"--texts {path} has no sentences (blank lines and '#' comments are skipped)")
    return texts


# -- outputs --------------------------------------------------------------------------------------------
class Sink(Protocol):
    def write(self, frame: np.ndarray) -> bool:
        """Show or store one frame; False when the receiver has gone (window closed, pipe shut)."""

    def close(self, keep: bool = True) -> None:
        """Release the output; a file is kept only when ``keep``."""


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

    def close(self, keep: bool = True) -> None:
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

    def close(self, keep: bool = True) -> None:
        pass


class FileSink:
    """A video file written through :class:`lgfa_deploy.video.VideoSink`; ``close(keep=False)`` leaves none."""

    def __init__(self, path: str, fps: float, resolution: int, encoder: str, crf: int) -> None:
        from lgfa_deploy.video import VideoSink

        self.sink = VideoSink(path, fps, (resolution, resolution), encoder=encoder, crf=crf)

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
    """Refuse, before any work, an --fps, --crf, --encoder, --out, --raw or --window that could not be
    served (also `lgfa client`'s)."""
    check_video_options(args)
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
    with animator, SideFiles() as side_files:
        if args.loop:
            texts = itertools.cycle(texts)
        face = prepare_face(animator, args, aligned, side_files)
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
            sink = FileSink(args.out, args.fps or DEFAULT_VIDEO_FPS, animator.resolution, args.encoder, args.crf)
        count = _play(animator, texts, face, sink, args)
        if count or not args.out:  # the side files go with the video, or with a stream shown or piped
            side_files.publish()
    return 0


def _play(animator: Animator, texts: Iterable[str], face: dict[str, Any], sink: Sink, args: argparse.Namespace) -> int:
    """Frames -> sink until the texts run out, the receiver goes or Ctrl-C, which all keep what was
    written; any other error keeps nothing. The sink is always closed. Returns the frames written."""
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
        sink.close(keep=False)
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
    return status.count
