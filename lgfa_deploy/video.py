"""Writing frames: H.264 video through PyAV (FFmpeg) or a folder of PNGs (OpenCV), never half-written.

Videos are H.264 in yuv420p, BT.601 colours in limited range, the colour matrix recorded in the
stream, and, for ``.mp4``, the index at the front (``movflags +faststart``): the file plays in
browsers, phones and chat apps, and starts playing before it has fully downloaded. The encoder is
``h264_nvenc`` where an NVIDIA GPU with NVENC opens it, else ``libx264`` (``encoder="auto"``).
yuv420p stores colour at half resolution, so a side of odd length is padded by repeating its last
row or column. Every file is written under a temporary name beside the target and renamed into
place when complete.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lgfa_deploy.atomic import publish
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.validate import check_number, check_output_file, check_writable_parent

VIDEO_SUFFIXES = (".mp4", ".mkv")
CONTAINERS = {".mp4": "mp4", ".mkv": "matroska"}
ENCODERS = ("auto", "libx264", "h264_nvenc")
DEFAULT_CRF = 18
"""x264's constant rate factor (0 lossless in YUV, 51 worst): 18 looks like the frames themselves."""
MAX_CRF = 51
MAX_FPS = 1000.0
_BT601 = 6  # AVCOL_SPC/PRI/TRC_SMPTE170M: the matrix swscale converts BGR with by default
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


def _cv2():
    try:
        import cv2
    except ImportError:
        raise LgfaError("writing PNG frames needs OpenCV; install it with: pip install opencv-python-headless") from None
    return cv2


def _av():
    try:
        import av
    except ImportError:
        raise LgfaError("writing video needs PyAV; install it with: pip install av") from None
    return av


def check_fps(fps: float, option: str = "--fps") -> float:
    """A frame rate above 0 and at most :data:`MAX_FPS`; NaN, infinity and the rest raise :class:`LgfaError`."""
    return float(check_number(fps, option, above=0, maximum=MAX_FPS))


def check_crf(crf: int, option: str = "--crf") -> int:
    """A constant rate factor from 0 (best) to :data:`MAX_CRF`."""
    return int(check_number(crf, option, minimum=0, maximum=MAX_CRF))


@functools.cache
def encoder_opens(name: str) -> bool:
    """Whether FFmpeg's encoder ``name`` opens here (``h264_nvenc`` needs an NVIDIA GPU with NVENC)."""
    av = _av()
    try:
        context = av.CodecContext.create(name, "w")
        context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
        context.time_base = Fraction(1, 25)
        context.open()
    except (av.FFmpegError, ValueError, OSError):
        return False
    return True


def choose_encoder(name: str = "auto") -> str:
    """The H.264 encoder for ``name``: ``auto`` is ``h264_nvenc`` where it opens, else ``libx264``."""
    if name not in ENCODERS:
        raise LgfaError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    if name == "auto":
        return "h264_nvenc" if encoder_opens("h264_nvenc") else "libx264"
    if not encoder_opens(name):
        raise LgfaError(
            f"the {name} encoder does not open here (h264_nvenc needs an NVIDIA GPU with NVENC and its driver); "
            "use --encoder libx264"
        )
    return name


def _encoder_options(encoder: str, crf: int) -> dict[str, str]:
    if encoder == "h264_nvenc":  # constant quality, NVENC's counterpart of a CRF
        return {"preset": "p4", "rc": "vbr", "cq": str(max(crf, 1)), "b": "0"}
    return {"crf": str(crf), "preset": "veryfast"}


def check_output(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse, before any work, an output that :func:`write_frames` could not write: a video file
    name that is a folder, a folder that holds files, a symbolic link, a missing or read-only folder."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        check_output_file(path, option)
        return
    if path.is_symlink():
        raise LgfaError(f"{option} {path} is a symbolic link; give the path of a real folder")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LgfaError(f"{option} {path} exists and is not an empty folder; choose another {option} or remove it")
    check_writable_parent(path)


def write_frames(
    path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 10.0, encoder: str = "auto", crf: int = DEFAULT_CRF
) -> int:
    """Write uint8 BGR frames to ``path``: a video file by suffix, else a folder of PNGs. Returns the count.

    Any exception, Ctrl-C included, leaves nothing: the clip appears only when complete."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return write_video(path, frames, fps, encoder=encoder, crf=crf)
    return write_png_folder(path, frames)


def write_video(
    path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 10.0, encoder: str = "auto", crf: int = DEFAULT_CRF
) -> int:
    """Encode frames through a :class:`VideoSink`: the file appears only when complete."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise LgfaError(f"no frames to write to {path}")
    with VideoSink(path, fps, (first.shape[1], first.shape[0]), encoder=encoder, crf=crf) as sink:
        sink.write(first)
        for frame in frames:
            sink.write(frame)
    return sink.count


def write_png_folder(path: str | os.PathLike, frames: Iterable[np.ndarray]) -> int:
    """Write ``frame_0000.png``... into a temporary folder, then rename it to ``path``."""
    cv2 = _cv2()
    path = Path(path)
    check_output(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        count = 0
        for count, frame in enumerate(frames, start=1):
            name = tmp / f"frame_{count - 1:04d}.png"
            if not cv2.imwrite(str(name), frame):
                raise LgfaError(f"cannot write {path}: OpenCV could not write {name.name} (disk full?)")
        if count == 0:
            raise LgfaError(f"no frames to write to {path}")
        if path.exists():
            path.rmdir()
        publish(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return count


class VideoSink:
    """An H.264 video written frame by frame into a temporary file beside ``path``, renamed into place
    by :meth:`close`.

    Leaving the ``with`` block normally publishes the file; any exception, Ctrl-C included, removes
    it, and so does closing before the first frame. ``size`` is (width, height) of every frame.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        size: tuple[int, int],
        encoder: str = "auto",
        crf: int = DEFAULT_CRF,
    ) -> None:
        av = _av()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise LgfaError(f"{self.path} is not a video file name; end it in one of {', '.join(VIDEO_SUFFIXES)}")
        check_output(self.path)
        fps, crf = check_fps(fps), check_crf(crf)
        self.encoder = choose_encoder(encoder)
        self.size = size
        self.count = 0
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=suffix, dir=self.path.parent)
        except OSError as exc:
            raise LgfaError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        os.close(fd)
        self._tmp = Path(tmp_name)
        options = {"movflags": "+faststart"} if suffix == ".mp4" else {}
        try:
            self._container: Any = av.open(tmp_name, "w", format=CONTAINERS[suffix], options=options)
            stream = self._container.add_stream(self.encoder, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = (side + side % 2 for side in size)
            stream.pix_fmt = "yuv420p"
            context = stream.codec_context
            context.colorspace = context.color_primaries = context.color_trc = _BT601
            context.color_range = _LIMITED_RANGE
            stream.options = _encoder_options(self.encoder, crf)
        except (av.FFmpegError, ValueError) as exc:
            self._tmp.unlink(missing_ok=True)
            raise LgfaError(f"cannot encode {self.path} with {self.encoder}: {exc}") from None
        self._stream = stream

    def _mux(self, frame: Any) -> None:
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except OSError as exc:  # FFmpeg's I/O errors are OSErrors (disk full, ...)
            raise LgfaError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 BGR frame [H, W, 3] of the sink's size."""
        av = _av()
        if frame.ndim != 3 or frame.shape[2] != 3 or (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"frame of shape {list(frame.shape)} written to a {self.size[0]}x{self.size[1]} BGR video")
        height, width = frame.shape[:2]
        if height % 2 or width % 2:  # yuv420p: even sides; repeat the last row or column
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        self._mux(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="bgr24"))
        self.count += 1

    def close(self, keep: bool = True) -> bool:
        """Finish the file and rename it into place when ``keep`` and frames were written; True if kept."""
        container = self._container
        if container is None:
            return False
        keep = keep and self.count > 0
        try:
            if keep:
                self._mux(None)  # the frames the encoder holds back
            self._container = None
            container.close()
            if keep:
                publish(self._tmp, self.path)
            return keep
        finally:
            if self._container is not None:  # flushing failed: close without publishing
                self._container = None
                container.close()
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.close(keep=exc_type is None)
