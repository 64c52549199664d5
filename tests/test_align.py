"""Face alignment (``lgfa align``): the FFHQ recipe on a real photo, and every kind of bad input."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lgfa_deploy import align
from lgfa_deploy.align import AlignedFace, align_face, detect_faces, read_image, to_bgr
from lgfa_deploy.commands import align as align_command
from lgfa_deploy.errors import LgfaError

skimage_data = pytest.importorskip("skimage.data")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """scikit-image's public-domain NASA portrait (512x512), as BGR."""
    return np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="module")
def aligned(astronaut: np.ndarray) -> AlignedFace:
    return align_face(astronaut, size=256)


def lgfa_align(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``lgfa align ARGS`` through the CLI's front door once registered, else through argparse and run()."""
    from lgfa_deploy import cli

    if "align" in cli.COMMANDS:
        code = cli.main(["align", *argv])
    else:
        parser = argparse.ArgumentParser(prog="lgfa align")
        align_command.add_arguments(parser)
        try:
            code = align_command.run(parser.parse_args(argv))
        except LgfaError as exc:
            print(f"lgfa align: error: {exc}", file=sys.stderr)
            code = 2
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def recipe_position(landmarks: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """Where the FFHQ recipe puts photo ``points`` in a ``size`` px output, from its definition alone.

    The quad is centred on c = eye_avg + 0.1 eye_to_mouth with half-axes x (along the eyes, corrected
    by the eye-mouth axis) and y (x turned 90 degrees); it fills the output, so a point p lands at
    size/2 + size/|2x| * ((p - c).x/|x|, (p - c).y/|y|) (pixel centres at +0.5).
    """
    eye_left, eye_right = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (landmarks[48] + landmarks[54]) / 2 - eye_avg
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x_unit = x / np.linalg.norm(x)
    y_unit = np.array([-x_unit[1], x_unit[0]])
    half = max(2.0 * np.linalg.norm(eye_to_eye), 1.8 * np.linalg.norm(eye_to_mouth))
    centre = eye_avg + 0.1 * eye_to_mouth
    rel = np.asarray(points, dtype=np.float64) - centre
    return size / 2 - 0.5 + size / (2 * half) * np.stack([rel @ x_unit, rel @ y_unit], axis=-1)


def eyes(landmarks: np.ndarray) -> np.ndarray:
    return np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)])


def assert_aligned_as_recipe(result: AlignedFace) -> None:
    """Re-detect the face on the aligned image: level eyes, at the positions and distance the recipe implies."""
    size = result.size
    expected = recipe_position(result.face.landmarks, eyes(result.face.landmarks), size)
    np.testing.assert_allclose(result.to_output(eyes(result.face.landmarks)), expected, atol=1e-3)
    found = detect_faces(result.image)
    assert found, "no face found again on the aligned image"
    left, right = eyes(found[0].landmarks)
    angle = np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0]))
    assert abs(angle) < 2.0, f"eyes tilted by {angle:.1f} degrees"
    distance = np.linalg.norm(right - left)
    assert distance == pytest.approx(np.linalg.norm(expected[1] - expected[0]), rel=0.05)
    np.testing.assert_allclose([left, right], expected, atol=0.025 * size)


# -- the recipe on a real photo ----------------------------------------------------------------


def test_astronaut_has_her_face_and_the_badge(astronaut: np.ndarray) -> None:
    faces = detect_faces(astronaut)
    assert len(faces) == 2
    assert [f.index for f in faces] == [0, 1]
    assert faces[0].width * faces[0].height >= faces[1].width * faces[1].height
    left, top, right, bottom = faces[0].box
    assert 150 < left < 200 and 50 < top < 100 and 240 < right < 290 and 140 < bottom < 190
    assert faces[0].landmarks.shape == (68, 2)
    assert 35 < faces[0].eye_distance < 50


def test_astronaut_aligns_with_level_eyes_where_the_recipe_puts_them(aligned: AlignedFace) -> None:
    assert aligned.image.shape == (256, 256, 3) and aligned.image.dtype == np.uint8
    assert aligned.face.index == 0 and len(aligned.faces) == 2
    # for this face the eye term of the recipe is the larger one, so the eyes end a quarter of the width apart
    lm = aligned.face.landmarks
    eye_to_eye = np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0))
    eye_to_mouth = np.linalg.norm((lm[48] + lm[54]) / 2 - (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2)
    assert 2.0 * eye_to_eye > 1.8 * eye_to_mouth
    assert aligned.qsize == pytest.approx(4 * eye_to_eye, rel=0.05)
    left, right = eyes(detect_faces(aligned.image)[0].landmarks)
    assert np.linalg.norm(right - left) == pytest.approx(256 / 4, rel=0.06)
    assert_aligned_as_recipe(aligned)


def test_1024_is_the_same_square_at_four_times_the_size(astronaut: np.ndarray, aligned: AlignedFace) -> None:
    large = align_face(astronaut, size=1024)
    assert large.image.shape == (1024, 1024, 3)
    np.testing.assert_allclose(large.quad, aligned.quad)
    down = cv2.resize(large.image, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(down.astype(float) - aligned.image).mean() < 2.0


def test_face_at_the_border_is_padded_not_cut(astronaut: np.ndarray) -> None:
    corner = np.ascontiguousarray(astronaut[60:, 160:])  # her face now touches the top-left corner
    result = align_face(corner, size=256)
    assert result.quad.min() < 0, "the recipe's square should leave the photo"
    # the padded area is reflected photo blended towards its median, not black
    assert result.image[:24, :24].mean() > 40 and result.image[:24, :24].std() > 1
    assert_aligned_as_recipe(result)


def test_a_large_photo_is_shrunk_first(astronaut: np.ndarray, aligned: AlignedFace) -> None:
    large = cv2.resize(astronaut, (3200, 3200), interpolation=cv2.INTER_CUBIC)
    result = align_face(large, size=256)
    assert result.qsize >= 4 * 256  # so the recipe shrinks the photo (by 2) first
    assert np.abs(result.image.astype(float) - aligned.image).mean() < 6.0


def test_several_faces_largest_first_and_face_n(astronaut: np.ndarray, aligned: AlignedFace) -> None:
    canvas = np.full((512, 768, 3), 128, np.uint8)
    canvas[:, :512] = astronaut
    canvas[128:384, 512:] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    faces = detect_faces(canvas)
    small = [f for f in faces if f.box[0] > 512]
    assert len(small) == 1 and small[0].index > 0
    default = align_face(canvas)
    assert default.face.box == aligned.face.box
    chosen = align_face(canvas, face=small[0].index)
    assert chosen.face.index == small[0].index
    assert np.abs(chosen.image.astype(float) - aligned.image).mean() < 20.0  # the same face, from fewer pixels
    with pytest.raises(LgfaError, match=rf"face {len(faces)} does not exist: the photo has {len(faces)} faces"):
        align_face(canvas, face=len(faces))


# -- photo formats -----------------------------------------------------------------------------


def test_grey_and_transparent_photos_are_converted(astronaut: np.ndarray, aligned: AlignedFace) -> None:
    grey = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    result = align_face(grey)
    assert result.image.shape == (256, 256, 3)
    assert np.array_equal(result.image[..., 0], result.image[..., 1])
    opaque = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert np.array_equal(align_face(opaque).image, aligned.image)
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[0, 0] = (10, 20, 30, 0)
    bgra[0, 1] = (10, 20, 30, 255)
    assert to_bgr(bgra)[0].tolist() == [[255, 255, 255], [10, 20, 30]]
    assert to_bgr(np.full((2, 2), 65535, np.uint16)).max() == 255


def test_read_image_handles_grey_rgba_and_16_bit_files(tmp_path: Path, astronaut: np.ndarray) -> None:
    cv2.imwrite(str(tmp_path / "grey.png"), cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([astronaut, np.full((512, 512), 255, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), astronaut.astype(np.uint16) * 257)
    for name in ("grey.png", "rgba.png", "deep.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (512, 512, 3) and image.dtype == np.uint8, name
    assert np.array_equal(read_image(tmp_path / "rgba.png"), astronaut)
    assert np.array_equal(read_image(tmp_path / "deep.png"), astronaut)


# -- the command -------------------------------------------------------------------------------


@pytest.fixture
def photo(tmp_path: Path, astronaut: np.ndarray) -> Path:
    path = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(path), astronaut, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def test_command_writes_the_aligned_png(photo: Path, capsys: pytest.CaptureFixture) -> None:
    out = photo.parent / "aligned.png"
    code, stdout, stderr = lgfa_align([str(photo), "--out", str(out)], capsys)
    assert code == 0, stderr
    assert "face 0 (of 2)" in stdout and "aligned to 256x256 px" in stdout
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.shape == (256, 256, 3)
    assert sorted(p.name for p in photo.parent.iterdir()) == ["aligned.png", "astronaut.jpg"]
    code, _, stderr = lgfa_align([str(photo), "--out", str(out), "--size", "1024", "--face", "0"], capsys)
    assert code == 0, stderr
    assert cv2.imread(str(out)).shape == (1024, 1024, 3)


def test_command_lists_faces_and_writes_nothing(photo: Path, capsys: pytest.CaptureFixture) -> None:
    code, stdout, _ = lgfa_align([str(photo), "--list-faces"], capsys)
    assert code == 0
    lines = stdout.strip().splitlines()
    assert "2 faces" in lines[0]
    assert lines[1].strip().startswith("face 0: box") and lines[2].strip().startswith("face 1: box")
    assert [p.name for p in photo.parent.iterdir()] == ["astronaut.jpg"]


def bad(tmp_path: Path, name: str, make) -> Path:
    path = tmp_path / name
    make(path)
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("coffee.png", lambda p: cv2.imwrite(str(p), skimage_data.coffee()[:, :, ::-1]), "no face found"),
        ("flat.png", lambda p: cv2.imwrite(str(p), np.full((300, 300, 3), 128, np.uint8)), "no face found"),
        ("text.png", lambda p: p.write_text("this is not a picture\n"), "not a readable image"),
        ("empty.jpg", lambda p: p.write_bytes(b""), "is empty"),
        ("tiny.png", lambda p: cv2.imwrite(str(p), np.full((40, 300, 3), 128, np.uint8)), "too small"),
        ("truncated.png", lambda p: p.write_bytes(cv2.imencode(".png", skimage_data.astronaut())[1].tobytes()[:2000]),
         "not a readable image"),
    ],
)
def test_bad_photos_fail_in_one_line_and_leave_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture, name: str, make, message: str
) -> None:
    path = bad(tmp_path, name, make)
    before = sorted(tmp_path.iterdir())
    out = tmp_path / "aligned.png"
    capfd.readouterr()
    code, stdout, stderr = lgfa_align([str(path), "--out", str(out)], capfd)  # capfd: OpenCV's own warnings too
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert str(path) in stderr
    assert re.search(message, stderr), stderr
    assert sorted(tmp_path.iterdir()) == before


def test_bad_arguments_fail_in_one_line(photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        ([str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "a.png")], "does not exist"),
        ([str(photo)], "give --out FILE"),
        ([str(photo), "--out", str(tmp_path / "no" / "a.png")], "does not exist"),
        ([str(photo), "--out", str(tmp_path / "a.gif")], "choose a file ending in"),
        ([str(photo), "--out", str(photo)], "is the photo itself"),
        ([str(photo), "--out", str(tmp_path / "a.png"), "--face", "2"], "face 2 does not exist: the photo has 2 faces"),
    ]
    before = sorted(tmp_path.iterdir())
    for argv, message in cases:
        code, _, stderr = lgfa_align(argv, capsys)
        assert code == 2 and message in stderr, (argv, stderr)
        assert len(stderr.strip().splitlines()) == 1
        assert sorted(tmp_path.iterdir()) == before


def test_huge_images_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = np.zeros((10_001, 10_001, 3), np.uint8)  # 100 MP of untouched (lazily allocated) zeros
    with pytest.raises(LgfaError, match="megapixels accepted; downscale it first"):
        align_face(huge)
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.full((400, 400, 3), 90, np.uint8))
    monkeypatch.setattr(align, "MAX_PIXELS", 100_000)
    code, _, stderr = lgfa_align([str(path), "--out", str(tmp_path / "a.png")], capsys)
    assert code == 2 and "(0.16 megapixels), more than the 0.1 megapixels accepted; downscale it first" in stderr
    assert not (tmp_path / "a.png").exists()


def test_a_failed_write_leaves_no_file(
    photo: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(align.os, "replace", refuse)
    code, _, stderr = lgfa_align([str(photo), "--out", str(photo.parent / "aligned.png")], capsys)
    assert code == 2 and "No space left on device" in stderr
    assert [p.name for p in photo.parent.iterdir()] == ["astronaut.jpg"]


def test_missing_face_extra_names_the_install(monkeypatch: pytest.MonkeyPatch, astronaut: np.ndarray) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(LgfaError, match=r"needs dlib.*pip install 'lgfa-deploy\[face\]'"):
        detect_faces(astronaut)
    monkeypatch.setattr(align.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LgfaError, match=r"face_recognition_models.*pip install 'lgfa-deploy\[face\]'"):
        align.landmark_model_path()


def test_alignment_runs_without_torch(photo: Path) -> None:
    out = photo.parent / "aligned.png"
    script = (
        "import sys, argparse; sys.modules['torch'] = None\n"
        "from lgfa_deploy.commands import align\n"
        "p = argparse.ArgumentParser(); align.add_arguments(p)\n"
        f"code = align.run(p.parse_args([{str(photo)!r}, '--out', {str(out)!r}]))\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(out)).shape == (256, 256, 3)
