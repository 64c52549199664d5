"""``lgfa eval``'s scores on hand-made parameter sequences with known motion, and its bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lgfa_deploy.cli import main
from lgfa_deploy.evaluation import fid, frechet_distance, jitter, landmark_steps, pairwise_mean_distance, score_prompt

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


def test_identity_drift_leaves_out_what_the_reader_cannot_read_for_this_prompt() -> None:
    hidden_wanders = clip(START, {**START, "skin": 0.5, "hair": 0.75, "eye": 0.0})  # skin read 0.2 off, hair 0.05
    clips = np.stack([hidden_wanders])
    every = score_prompt("p", clips, NAMES, IDENTITY, EXPRESSION, NEUTRAL, {"eye": 0.0})
    readable = score_prompt("p", clips, NAMES, IDENTITY, EXPRESSION, NEUTRAL, {"eye": 0.0}, unreadable_identity=["skin"])
    assert every.identity_drift == pytest.approx(0.2) and readable.identity_drift == pytest.approx(0.05)
    none_left = score_prompt("p", clips, NAMES, IDENTITY, EXPRESSION, NEUTRAL, {"eye": 0.0}, unreadable_identity=IDENTITY)
    assert none_left.identity_drift == 0.0


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
        (["--prompts", "smiling", "--ceiling"], "--ceiling needs a bundle of the synthetic face domain"),
        (["--prompts", "smiling", "--fid-inception", "w.pth"], "FID needs both --fid-inception FILE"),
        (["--prompts", "smiling", "--fid-inception", "nothing.pth", "--fid-real", "."], "nothing.pth does not exist"),
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
    from lgfa_deploy.face_domain import conditioned_z
    from lgfa_deploy.errors import LgfaError

    z = conditioned_z(np.array([[0.975, 0.5, 0.0]]), {"kind": "inverse-normal-cdf-then-ones", "clip": 0.005})
    assert z[0, :2] == pytest.approx([1.959964, 0.0], abs=1e-5)  # the textbook 97.5% quantile
    assert z[0, 2] == pytest.approx(-2.575829, abs=1e-5)  # clipped at 0.005
    assert z[0, 3:].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(LgfaError, match="z kind"):
        conditioned_z(np.zeros((1, 2)), {"kind": "something-new", "clip": 0.0})


def test_frechet_distance_against_closed_forms() -> None:
    # Commuting covariances (same eigenvectors): |dm|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    a, b = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.25])
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    mean_a, mean_b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 3.0])
    got = frechet_distance(mean_a, rotation @ np.diag(a) @ rotation.T, mean_b, rotation @ np.diag(b) @ rotation.T)
    assert got == pytest.approx(4 + (2 - 1) ** 2 + (1 - 3) ** 2 + 0, rel=1e-9)
    # C_a = I: Tr(I) + Tr(C_b) - 2 Tr(C_b^(1/2)); C_b = [[2, 1], [1, 2]] has eigenvalues 3 and 1.
    assert frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.array([[2.0, 1.0], [1.0, 2.0]])) == pytest.approx(
        2 + 4 - 2 * (np.sqrt(3) + 1), rel=1e-9
    )
    features = np.random.default_rng(1).standard_normal((50, 4))
    assert fid(features, features) == pytest.approx(0, abs=1e-9)
    assert fid(features, features + [3, 0, 0, 0]) == pytest.approx(9, rel=1e-6)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> Path:
    """torchvision's Inception v3 layout on seeded random weights, saved as its ImageNet file is (a state dict)."""
    torch = pytest.importorskip("torch")
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "inception_v3_google-random.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(), path)
    return path


def test_fid_on_the_users_inception_weights(tiny_bundle: Path, tmp_path: Path, inception_file: Path) -> None:
    import cv2

    real = tmp_path / "real"
    real.mkdir()
    for i in range(3):
        cv2.imwrite(str(real / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    out = tmp_path / "e"
    assert main(["eval", "--bundle", str(tiny_bundle), "--prompts", "smiling", "--seeds", "2", "--out", str(out),
                 "--fid-inception", str(inception_file), "--fid-real", str(real)]) == 0  # fmt: skip
    report = json.loads((out / "eval.json").read_text())["fid"]
    assert report["generated_frames"] == 4 and report["real_images"] == 3 and report["fid"] > 0
    assert "- fid: " in (out / "eval.md").read_text()


def test_fid_refuses_weights_of_another_network(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import cv2

    torch = pytest.importorskip("torch")
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "other.pth")
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((64, 64, 3), np.uint8))
    code = main(["eval", "--bundle", str(tiny_bundle), "--prompts", "smiling", "--seeds", "1", "--out", str(tmp_path / "e"),
                 "--fid-inception", str(tmp_path / "other.pth"), "--fid-real", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "keys missing" in err and "Inception v3" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e").exists()
