"""``lgfa eval``'s scores on hand-made parameter sequences with known motion, and its bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lgfa_deploy.cli import main
from lgfa_deploy.evaluation import jitter, landmark_steps, pairwise_mean_distance, score_prompt

NAMES = ("skin", "hair", "eye", "mouth", "tilt")
IDENTITY = ("skin", "hair")
EXPRESSION = ("eye", "mouth", "tilt")
NEUTRAL = {"eye": 0.6, "mouth": 0.5, "tilt": 0.5}
T = 16


def clip(start: dict[str, float], end: dict[str, float], path: np.ndarray | None = None) -> np.ndarray:
    """[T, P]: every parameter from ``start`` to ``end`` along ``path`` (0..1, default linear)."""
    path = np.linspace(0, 1, T) if path is None else path
    a = np.array([start[n] for n in NAMES])
    b = np.array([end[n] for n in NAMES])
    return a + path[:, None] * (b - a)


START = {"skin": 0.3, "hair": 0.7, **NEUTRAL}


def score(clips: list[np.ndarray], on_target: dict[str, float]):
    return score_prompt("p", np.stack(clips), NAMES, IDENTITY, EXPRESSION, NEUTRAL, on_target)


def test_linear_motion_to_the_target_scores_full_progress_no_drift_uniform_steps() -> None:
    s = score([clip(START, {**START, "mouth": 1.0})], {"mouth": 1.0})
    assert s.progress == pytest.approx(1.0)
    assert s.off_target == 0.0 and s.identity_drift == 0.0
    assert s.jitter_ratio == pytest.approx(1.0)
    assert s.median_step == pytest.approx(0.5 / (T - 1))
    assert all(s.passes().values())


def test_halfway_and_wrong_way_progress() -> None:
    halfway = score([clip(START, {**START, "eye": 0.3})], {"eye": 0.0})  # 0.6 -> 0.3 of 0.6 -> 0.0
    assert halfway.progress == pytest.approx(0.5)
    assert not halfway.passes()["progress"]
    wrong = score([clip(START, {**START, "eye": 0.9})], {"eye": 0.0})
    assert wrong.progress == pytest.approx(-0.5)
    two = score([clip(START, {**START, "eye": 0.0, "mouth": 0.9})], {"eye": 0.0, "mouth": 0.7})
    assert two.progress == pytest.approx(1.0)  # the weakest target parameter counts; both overshoot or reach


def test_off_target_counts_the_largest_departure_even_when_it_returns() -> None:
    there_and_back = np.concatenate([np.linspace(0, 1, T // 2), np.linspace(1, 0, T - T // 2)])
    moving_tilt = clip(START, {**START, "tilt": 0.7}, there_and_back)
    moving_tilt[:, NAMES.index("mouth")] = np.linspace(0.5, 1.0, T)
    s = score([moving_tilt], {"mouth": 1.0})
    assert s.off_target == pytest.approx(0.2, abs=0.02)
    assert s.passes()["off_target"] is False


def test_identity_drift_is_averaged_over_clips() -> None:
    drifting = clip(START, {**START, "skin": 0.4, "mouth": 1.0})
    still = clip(START, {**START, "mouth": 1.0})
    s = score([drifting, still], {"mouth": 1.0})
    assert s.identity_drift == pytest.approx(0.05)


def test_one_jump_makes_jitter_ratio_its_size_over_the_median() -> None:
    steps = np.full(T - 1, 0.01)
    steps[7] = 0.05
    path = np.concatenate([[0], np.cumsum(steps)])
    s = score([clip(START, {**START, "mouth": 0.5 + path[-1]}, path / path[-1])], {"mouth": 1.0})
    assert s.jitter_ratio == pytest.approx(5.0)
    assert s.passes()["jitter_ratio"] is False
    assert jitter(np.zeros(5)) == (1.0, 0.0)
    assert jitter(np.array([0, 0, 0, 0.1]))[0] == float("inf")


def test_face_score_helpers_on_known_geometry() -> None:
    square = np.array([[0, 0], [3, 0], [0, 4]], float)  # distances 3, 4, 5
    assert pairwise_mean_distance(square) == pytest.approx(4.0)
    landmarks = np.zeros((3, 68, 2))
    landmarks[:, 36:42] = [0, 0]
    landmarks[:, 42:48] = [10, 0]
    landmarks[1] += [1, 0]
    landmarks[2] += [1, 2]
    assert landmark_steps(landmarks) == pytest.approx([0.1, 0.2])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--seeds", "0", "--prompts", "smiling"], "--seeds must be at least 1"),
        ([], "name the expressions to animate with --prompts"),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny_bundle: Path, tmp_path: Path, extra: list[str], expected: str,
                                      capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    code = main(["eval", "--bundle", str(tiny_bundle), "--out", str(tmp_path / "e"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_missing_bundle_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--bundle", str(tmp_path / "nothing"), "--out", str(tmp_path / "e")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_eval_on_any_bundle_writes_its_report(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["eval", "--bundle", str(tiny_bundle), "--prompts", "smiling", "--seeds", "2", "--out", str(out)]) == 0
    assert (out / "eval.json").is_file() and (out / "eval.md").is_file()


def test_face_scores_on_a_real_photo_moving_steadily() -> None:
    """The astronaut photo shifted 3 px per frame: the same person throughout (dlib distance far
    below its 0.6 same-person threshold), landmarks moving 3 px per frame, so a uniform jitter ratio."""
    import cv2
    from skimage import data as skimage_data

    from lgfa_deploy.align import detect_faces
    from lgfa_deploy.evaluation import face_scores

    photo = np.ascontiguousarray(skimage_data.astronaut()[:256, 100:356, ::-1])  # her face, 256 px
    frames = np.stack([cv2.warpAffine(photo, np.float32([[1, 0, 3 * k], [0, 1, 0]]), (256, 256), borderMode=cv2.BORDER_REFLECT)
                       for k in range(4)])  # fmt: skip
    scores = face_scores([frames])
    assert scores.frames_with_face == 1.0
    assert scores.identity_distance < 0.2 and scores.acd < 0.2
    eyes = detect_faces(photo)[0].landmarks
    inter_ocular = np.linalg.norm(eyes[36:42].mean(0) - eyes[42:48].mean(0))
    assert scores.landmark_median_step == pytest.approx(3 / inter_ocular, rel=0.25)
    assert scores.landmark_jitter_ratio < 1.5


def test_conditioned_z_from_the_manifest_facts() -> None:
    from lgfa_deploy.commands.eval import conditioned_z
    from lgfa_deploy.errors import LgfaError

    z = conditioned_z(np.array([[0.975, 0.5, 0.0]]), {"kind": "inverse-normal-cdf-then-ones", "clip": 0.005})
    assert z[0, :2] == pytest.approx([1.959964, 0.0], abs=1e-5)  # the textbook 97.5% quantile
    assert z[0, 2] == pytest.approx(-2.575829, abs=1e-5)  # clipped at 0.005
    assert z[0, 3:].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(LgfaError, match="z kind"):
        conditioned_z(np.zeros((1, 2)), {"kind": "something-new", "clip": 0.0})
