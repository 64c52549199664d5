"""``lgfa client``: frames streamed from ``lgfa serve`` into the sinks of ``lgfa stream`` (window, mp4, raw)."""
from __future__ import annotations

import argparse
import logging
import textwrap
import time

from lgfa_deploy.commands.stream import (
    DEFAULT_VIDEO_FPS,
    FileSink,
    Pacer,
    RawSink,
    Sink,
    WindowSink,
    check_sink_options,
    read_texts,
)
from lgfa_deploy.commands.common import add_video_arguments
from lgfa_deploy.errors import LgfaError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Ask a running 'lgfa serve' to animate sentences and show or store its frames as they arrive: in a "
        "window, an mp4, or raw bgr24 frames on stdout (the sinks of 'lgfa stream'). Each sentence is one "
        "'animate' request from the same face (seed or latent); unlike 'lgfa stream', sentences are not "
        "chained, each starts from the face itself.",
        width=100,
    )
    parser.epilog = (
        "examples:\n"
        "  lgfa client --text \"The person is smiling.\" --seed 3 --out smile.mp4\n"
        "  lgfa client --texts sentences.txt --url 127.0.0.1:9001 --window --fps 10\n"
        "  lgfa client --text \"The person is angry.\" --raw | ffmpeg -f rawvideo -pix_fmt bgr24 -s 256x256 -r 10 -i - angry.mp4"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address, HOST:PORT (default 127.0.0.1:8001)")
    texts = parser.add_mutually_exclusive_group(required=True)
    texts.add_argument("--text", action="append", metavar="SENTENCE", help="a sentence; repeat for several")
    texts.add_argument("--texts", metavar="FILE", help="one sentence a line (blank lines and '# comments' skipped)")
    face = parser.add_mutually_exclusive_group()
    face.add_argument("--seed", type=int, default=0, help="face seed (default 0)")
    face.add_argument("--latent", metavar="FILE", help="face as W+ in a .npy file, shape [L, 512] or [1, L, 512]")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="video file (.mp4, .mkv; H.264), renamed into place when the stream ends")
    out.add_argument("--window", action="store_true", help="show the frames in an OpenCV window (q or Esc closes it)")
    out.add_argument("--raw", action="store_true", help="write raw bgr24 frames to stdout, for a pipe into ffmpeg")
    parser.add_argument("--fps", type=float, default=None,
                        help=f"pace the output at N frames per second, also the video's rate (default: as they come, "
                             f"videos at {DEFAULT_VIDEO_FPS:g} fps)")
    add_video_arguments(parser)
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="longest wait for one frame (default 60 s)")


def _open_sink(args: argparse.Namespace, resolution: int) -> Sink:
    if args.raw:
        return RawSink()
    if args.window:
        return WindowSink(resolution)
    return FileSink(args.out, args.fps or DEFAULT_VIDEO_FPS, resolution, args.encoder, args.crf)


def run(args: argparse.Namespace) -> int:
    from lgfa_deploy.pipeline import check_seed, load_latent
    from lgfa_deploy.serve.client import AnimationClient

    if not args.timeout > 0:
        raise LgfaError(f"--timeout must be above 0, got {args.timeout}")
    check_seed(args.seed)
    texts = read_texts(args.texts) if args.texts else args.text
    check_sink_options(args)
    with AnimationClient(args.url, timeout=args.timeout) as client:
        facts = client.facts()
        latent = None if args.latent is None else load_latent(args.latent, facts.n_latent, facts.style_dim)
        sink = _open_sink(args, facts.resolution)
        pacer = Pacer(args.fps) if args.fps else None
        count, ended, started = 0, "done", time.perf_counter()
        try:
            for text in texts:
                frames = client.frames(text, seed=args.seed, latent=latent)
                for frame in frames:
                    if pacer is not None:
                        pacer.wait()
                    if not sink.write(frame):
                        ended = "the receiver closed"
                        break
                    count += 1
                frames.close()
                if ended != "done":
                    break
        except KeyboardInterrupt:
            ended = "stopped by Ctrl-C"
        except BaseException:
            sink.close(keep=False) if isinstance(sink, FileSink) else sink.close()
            raise
        sink.close()
    elapsed = time.perf_counter() - started
    where = args.out or ("a window" if args.window else "stdout")
    log.info("%s: %d frames from %s to %s in %.1f s (%.1f fps)", ended, count, args.url, where, elapsed,
             count / max(elapsed, 1e-9))
    return 0
