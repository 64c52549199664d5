"""Writing frames: mp4 through OpenCV or a folder of PNGs, never half-written."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lgfa_deploy.atomic import publish
from lgfa_deploy.errors import LgfaError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv")
FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def _cv2():
    try:
        import cv2
    except ImportError:
        raise LgfaError("writing video needs OpenCV; install it with: pip install opencv-python-headless") from None
    return cv2


def _writable_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise LgfaError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise LgfaError(f"cannot write {path}: directory {parent} is not writable")


def check_output(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output that :func:`write_frames` could not write."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LgfaError(f"{path} exists and is not an empty folder; choose another --out or remove it")
    _writable_parent(path)


def write_frames(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 10.0) -> int:
    """Write uint8 BGR frames to ``path``: a video file by suffix, else a folder of PNGs. Returns the count."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return write_video(path, frames, fps)
    return write_png_folder(path, frames)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 10.0) -> int:
    """Encode frames through a :class:`VideoSink`: the file appears only when complete."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise LgfaError(f"no frames to write to {path}")
    with VideoSink(path, fps, (first.shape[1], first.shape[0])) as sink:
        sink.write(first)
        for frame in frames:
            sink.write(frame)
    return sink.count


def write_png_folder(path: str | os.PathLike, frames: Iterable[np.ndarray]) -> int:
    """Write ``frame_0000.png``... into a temporary folder, then rename it to ``path``."""
    cv2 = _cv2()
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LgfaError(f"{path} exists and is not an empty folder; choose another --out or remove it")
    _writable_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent or "."))
    try:
        count = 0
        for count, frame in enumerate(frames, start=1):
            cv2.imwrite(str(tmp / f"frame_{count - 1:04d}.png"), frame)
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
    """A video written frame by frame into a temporary file beside ``path`` and renamed into place on close.

    Leaving the ``with`` block normally or by Ctrl-C keeps what was written (a playable file);
    any other error removes it, and so does closing before the first frame: no half-written file.
    ``size`` is (width, height) of every frame.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]) -> None:
        cv2 = _cv2()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise LgfaError(f"{self.path} is not a video file name; end it in one of {', '.join(VIDEO_SUFFIXES)}")
        _writable_parent(self.path)
        self.size = size
        self.count = 0
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=suffix, dir=self.path.parent)
        except OSError as exc:
            raise LgfaError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        os.close(fd)
        self._tmp = Path(tmp_name)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*FOURCC[suffix]), float(fps), size)
        if not self._writer.isOpened():
            self._writer.release()
            self._tmp.unlink(missing_ok=True)
            raise LgfaError(f"OpenCV cannot encode {suffix} here; write a PNG folder instead (lgfa animate --out DIR)")

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 BGR frame [H, W, 3] of the sink's size."""
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"frame of {frame.shape[1]}x{frame.shape[0]} written to a {self.size[0]}x{self.size[1]} video")
        self._writer.write(np.ascontiguousarray(frame))
        self.count += 1

    def close(self, keep: bool = True) -> bool:
        """Finish the file and rename it into place when ``keep`` and frames were written; True if kept."""
        if self._writer is None:
            return False
        self._writer.release()
        self._writer = None
        if keep and self.count:
            publish(self._tmp, self.path)
            return True
        self._tmp.unlink(missing_ok=True)
        return False

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.close(keep=exc_type is None or issubclass(exc_type, KeyboardInterrupt))
