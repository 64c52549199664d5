"""Videos: H.264 yuv420p mp4 that plays everywhere, the frames written are the frames made, and
nothing half-written is ever left (errors and Ctrl-C alike)."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from lgfa_deploy.cli import main
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.pipeline import Animator
from lgfa_deploy.video import VideoSink, choose_encoder, encoder_opens, write_frames, write_png_folder
from tests.helpers import psnr

TEXT = "The person is smiling."
MIN_LUMA_PSNR_CRF18 = 34.0
"""dB, luma of each decoded mp4 frame against the PNG of the same frame at the default --crf 18.
Measured on the tiny bundle's 32x32 random-init frames: 36.5-38 dB (38.9 at --crf 0)."""
MIN_PSNR_CRF18 = 24.0
"""dB, the same in full colour. yuv420p keeps colour at half resolution, which alone bounds these
saturated, pixel-sized random patterns at 26.2 dB (measured 25.6-25.9 dB through the file); video of
real faces loses far less."""


def luma(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def decode(path: Path) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    """Every frame of a video as BGR, decoded by FFmpeg (PyAV), and its stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="bgr24") for frame in container.decode(stream)]
    return frames, stream


def gradient_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Smooth moving colour gradients (video-like content, unlike noise)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return [
        np.stack([128 + 100 * np.sin((x + 3 * i) / 7), 128 + 100 * np.cos(y / 5), (x + y + i) * 2 % 256], -1)
        .round().astype(np.uint8)
        for i in range(count)
    ]


def test_animate_mp4_holds_the_png_frames(tiny_bundle: Path, tmp_path: Path) -> None:
    common = ["animate", "--bundle", str(tiny_bundle), "--text", TEXT, "--seed", "3"]
    assert main([*common, "--out", str(tmp_path / "clip.mp4")]) == 0
    assert main([*common, "--out", str(tmp_path / "frames")]) == 0
    pngs = [cv2.imread(str(p)) for p in sorted((tmp_path / "frames").glob("frame_*.png"))]
    frames, stream = decode(tmp_path / "clip.mp4")
    assert len(frames) == len(pngs) == 16
    luma_values = [psnr(luma(a), luma(b)) for a, b in zip(frames, pngs)]
    assert min(luma_values) >= MIN_LUMA_PSNR_CRF18, luma_values
    assert min(psnr(a, b) for a, b in zip(frames, pngs)) >= MIN_PSNR_CRF18
    # the first frame is the first PNG, not the second (they differ: the motion starts from H_t(0))
    assert psnr(luma(frames[0]), luma(pngs[0])) > psnr(luma(frames[0]), luma(pngs[1])) + 10
    context = stream.codec_context
    assert (context.name, context.format.name, context.profile) == ("h264", "yuv420p", "High")
    assert stream.average_rate == 10
    data = (tmp_path / "clip.mp4").read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "the index is not at the front (+faststart)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "frames"]


def test_lower_crf_is_closer_and_larger(tmp_path: Path) -> None:
    frames = gradient_frames(12, 64, 64)
    results = {}
    for crf in (10, 30):
        path = tmp_path / f"crf{crf}.mp4"
        write_frames(path, frames, fps=25, encoder="libx264", crf=crf)
        decoded, _ = decode(path)
        results[crf] = (np.mean([psnr(a, b) for a, b in zip(decoded, frames)]), path.stat().st_size)
    assert results[10][0] > results[30][0] and results[10][1] > results[30][1], results


def test_odd_sizes_are_padded_for_yuv420p(tmp_path: Path) -> None:
    frames = gradient_frames(5, 33, 47)  # height 33, width 47
    path = tmp_path / "odd.mkv"
    assert write_frames(path, frames, fps=12.5, encoder="libx264", crf=10) == 5
    decoded, stream = decode(path)
    assert (stream.codec_context.width, stream.codec_context.height) == (48, 34)
    assert len(decoded) == 5
    assert min(psnr(d[:33, :47], f) for d, f in zip(decoded, frames)) >= 30
    # the added column repeats the last one
    assert psnr(decoded[0][:33, 47], decoded[0][:33, 46]) >= 30


def test_nothing_is_left_when_the_frames_fail(tmp_path: Path) -> None:
    """An error or Ctrl-C while frames are made leaves no video, no folder and no temporary file."""

    def frames_then(exception: BaseException):
        yield from gradient_frames(3, 32, 32)
        raise exception

    for exception in (KeyboardInterrupt(), RuntimeError("the backend failed")):
        for out in ("clip.mp4", "frames"):
            with pytest.raises(type(exception)):
                write_frames(tmp_path / out, frames_then(exception))
            assert list(tmp_path.iterdir()) == []
    with pytest.raises(LgfaError, match="no frames"):
        write_frames(tmp_path / "clip.mp4", iter(()))
    sink = VideoSink(tmp_path / "empty.mp4", 10, (32, 32))
    assert sink.close() is False
    assert list(tmp_path.iterdir()) == []


def test_a_failed_png_write_publishes_no_folder(tmp_path: Path) -> None:
    """cv2.imwrite's False (here: its folder vanished, as on a failing disk) ends the write with nothing published."""

    def frames_losing_the_folder():
        frames = gradient_frames(3, 32, 32)
        yield frames[0]
        for staged in tmp_path.glob(".frames.*"):
            for file in staged.iterdir():
                file.unlink()
            staged.rmdir()
        yield from frames[1:]

    with pytest.raises(LgfaError, match="could not write frame_0001.png"):
        write_png_folder(tmp_path / "frames", frames_losing_the_folder())
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_animate_leaves_nothing(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """animate's clip has a known length: Ctrl-C after some frames leaves no clip, no --save-latent
    file and no temporary file (stream's Ctrl-C keeps them: test_runtime)."""
    stream = Animator.stream

    def interrupted(self, *args, **kwargs):
        for index, frame in enumerate(stream(self, *args, **kwargs)):
            if index == 5:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(Animator, "stream", interrupted)  # Ctrl-C arrives while the sixth frame is made
    monkeypatch.chdir(tmp_path)
    for out in ("clip.mp4", "frames"):
        code = main(["animate", "--bundle", str(tiny_bundle), "--text", TEXT, "--out", out, "--save-latent", "w.npy"])
        assert code == 130
        assert list(tmp_path.iterdir()) == []


def test_save_latent_is_written_with_the_clip(tiny_bundle: Path, tmp_path: Path) -> None:
    out, latent = tmp_path / "clip.mp4", tmp_path / "w.npy"
    assert main(["animate", "--bundle", str(tiny_bundle), "--text", TEXT, "--seed", "4", "--out", str(out),
                 "--save-latent", str(latent)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "w.npy"]
    assert np.load(latent, allow_pickle=False).shape[0] == 1


def test_unknown_or_unusable_encoder_is_one_line() -> None:
    with pytest.raises(LgfaError, match="unknown encoder"):
        choose_encoder("mpeg4")
    if not encoder_opens("h264_nvenc"):
        with pytest.raises(LgfaError, match="use --encoder libx264"):
            choose_encoder("h264_nvenc")
        assert choose_encoder("auto") == "libx264"


@pytest.mark.gpu
def test_nvenc_is_chosen_and_writes_the_frames(tmp_path: Path) -> None:
    """Where NVENC opens (not on every NVIDIA GPU: H100 and H200 have none), auto takes it."""
    if not encoder_opens("h264_nvenc"):
        pytest.skip("h264_nvenc does not open on this GPU")
    assert choose_encoder("auto") == "h264_nvenc"
    frames = gradient_frames(10, 256, 256)
    write_frames(tmp_path / "nvenc.mp4", frames, fps=25, encoder="auto")
    decoded, stream = decode(tmp_path / "nvenc.mp4")
    assert stream.codec_context.format.name == "yuv420p" and len(decoded) == 10
    assert min(psnr(luma(a), luma(b)) for a, b in zip(decoded, frames)) >= MIN_LUMA_PSNR_CRF18
