"""The embedded default: shipping a trained bundle graphs-only into the package, and running it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lgfa_deploy
from export.ship_default import ship
from lgfa_deploy.backends import open_backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.cli import main
from lgfa_deploy.default_bundle import DEFAULT_BUNDLE, default_bundle
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.face_domain import seed_parameters, target_path_parameters
from lgfa_deploy.graphs import PARAMETER_READER
from tests.helpers import copy_bundle, read_video


def trained_copy(tiny_bundle: Path, parent: Path) -> Path:
    """A copy of the tiny bundle whose manifest says trained (shipping refuses random weights)."""
    bundle = Bundle.open(copy_bundle(tiny_bundle, parent))
    bundle.manifest["provenance"]["random_init"] = False
    bundle.save_manifest()
    return bundle.root


def test_shipping_keeps_fp32_graphs_tokenizer_and_e4e_only(tiny_bundle: Path, tmp_path: Path) -> None:
    source = trained_copy(tiny_bundle, tmp_path)
    destination = tmp_path / "package" / "faces-64"
    total = ship(source, destination, max_bytes=2**30)
    shipped = Bundle.open(destination)  # every hash checked
    source_manifest = json.loads((source / "manifest.json").read_text())
    assert "weights" not in shipped.manifest and "weights" in source_manifest
    kept = sorted(p.name for p in destination.iterdir())
    graphs = sorted(g["files"]["fp32"]["file"] for g in source_manifest["graphs"].values())
    others = [source_manifest[key]["file"] for key in ("tokenizer", "e4e") if key in source_manifest]
    assert kept == sorted([*graphs, *others, "manifest.json"])
    assert total == sum(p.stat().st_size for p in destination.iterdir())
    assert not list(destination.parent.glob(".*"))  # no staging folder left
    with pytest.raises(LgfaError, match="graphs only, no PyTorch weights"):
        open_backend("torch", shipped, device="cpu")
    frames = open_backend("onnxruntime", shipped, device="cpu")
    assert frames.name == "onnxruntime"


def test_shipping_refuses_random_weights_and_oversize_leaving_the_old_default(tiny_bundle: Path, tmp_path: Path) -> None:
    destination = tmp_path / "faces-64"
    with pytest.raises(LgfaError, match="random weights"):
        ship(tiny_bundle, destination)
    assert not destination.exists()
    source = trained_copy(tiny_bundle, tmp_path)
    total = ship(source, destination, max_bytes=2**30)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in destination.iterdir())
    with pytest.raises(LgfaError, match="the package carries at most"):
        ship(source, destination, max_bytes=total - 1)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in destination.iterdir()) == before
    assert not list(tmp_path.glob(".faces-64*"))


# -- the shipped model ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_animator():
    with lgfa_deploy.open(backend="onnxruntime", device="cpu") as animator:
        yield animator


def read(animator, frames: np.ndarray) -> dict[str, np.ndarray]:
    """The bundle's parameter reader on uint8 BGR frames [T, H, W, 3]: name -> values [T]."""
    rgb = np.ascontiguousarray(frames[..., ::-1].transpose(0, 3, 1, 2)).astype(np.float32) / 127.5 - 1
    values = animator.backend.run("parameter_reader", {"image": rgb})["parameters"]
    return dict(zip(animator.bundle.manifest["face_domain"]["parameters"], values.T))


def test_the_default_is_the_trained_face_domain_within_the_size_limit() -> None:
    bundle = Bundle.open(default_bundle())
    assert not bundle.random_init and bundle.manifest["model"]["preset"] == "faces-64"
    assert PARAMETER_READER in bundle.graph_names and "face_domain" in bundle.manifest
    assert sum(p.stat().st_size for p in DEFAULT_BUNDLE.iterdir()) <= 25 * 2**20


@pytest.mark.parametrize("seed", [0, 5])
def test_a_seed_is_a_neutral_face_whose_identity_the_seed_draws(default_animator, seed: int) -> None:
    """The seed's face read back: its skin and hair colour (default_rng(seed).random(), in that order) and the
    neutral expression of the domain (eyes 0.65 open, mouth closed, head upright), within the reader's error."""
    facts = default_animator.bundle.manifest["face_domain"]
    got = read(default_animator, default_animator.render(default_animator.content(seed=seed)))
    rng = np.random.default_rng(seed)
    drawn = {name: rng.random() for name in ("skin", "hair_color")}
    assert facts["varying_identity"] == ["skin", "hair_color"]
    for name, value in {**drawn, "eye_open_left": 0.65, "eye_open_right": 0.65, "mouth_open": 0.0, "head_tilt": 0.5}.items():
        assert abs(got[name][0] - value) < 0.15, (name, got[name][0], value)  # ~2x the gate's mean errors


def test_domain_faces_draw_the_given_parameters(default_animator, tiny_bundle: Path) -> None:
    """A wink (left eye shut, right wide open) drawn from parameters reads back as one; a bundle of no face domain is refused."""
    facts = default_animator.bundle.manifest["face_domain"]
    parameters = seed_parameters(2, facts)
    parameters[0, facts["parameters"].index("eye_open_left")] = 0.0
    parameters[0, facts["parameters"].index("eye_open_right")] = 1.0
    got = read(default_animator, default_animator.domain_faces(parameters))
    assert got["eye_open_left"][0] < 0.2 and got["eye_open_right"][0] > 0.8
    with lgfa_deploy.open(tiny_bundle, backend="onnxruntime") as animator:
        with pytest.raises(LgfaError, match="not of the synthetic face domain"):
            animator.domain_faces(parameters)


NOT_YET = pytest.mark.xfail(strict=True, reason="issue 15 is open: the shipped animation model does not yet move the face "
                            "far enough toward this sentence's target (docs/faces-64/eval.md); "
                            "this turns into a failure when it does")


@pytest.mark.parametrize(
    ("expression", "parameter", "direction"),
    [("smiling", "mouth_curve", +1), pytest.param("smiling", "mouth_width", +1, marks=NOT_YET),
     ("duck lips", "mouth_width", -1), ("duck lips", "head_tilt", +1),
     ("closing eyes", "eye_open_left", -1),
     pytest.param("opening mouth", "mouth_open", +1, marks=NOT_YET)],
)
def test_the_default_does_what_the_sentence_says(default_animator, expression: str, parameter: str, direction: int) -> None:
    """Over four seeds the read parameter moves toward the domain's target by at least 60% of the way."""
    facts = default_animator.bundle.manifest["face_domain"]
    target, neutral = facts["prompts"][expression]["on_target"][parameter], facts["neutral"][parameter]
    assert np.sign(target - neutral) == direction  # the domain's table says where the sentence leads
    for seed in range(4):
        values = read(default_animator, default_animator.animate(f"The person is {expression}.", seed=seed))[parameter]
        assert (values[-1] - values[0]) / (target - neutral) >= 0.6, (seed, values[0], values[-1], target)


def test_the_default_holds_the_face_while_it_smiles(default_animator) -> None:
    """Over four seeds no identity parameter the reader can hold steady along smiling's path departs from its
    frame-0 reading by more than the issue's 0.05 in any frame (the default before the identity term: iris 0.09-0.13)."""
    facts = default_animator.bundle.manifest["face_domain"]
    unreadable = facts["prompts"]["smiling"].get("unreadable_identity", {})
    held = [name for name in facts["identity"] if name not in unreadable]
    assert "skin" in held and "iris_color" in held
    for seed in range(4):
        values = read(default_animator, default_animator.animate("The person is smiling.", seed=seed))
        departures = {name: float(np.abs(values[name] - values[name][0]).max()) for name in held}
        assert max(departures.values()) <= 0.05, (seed, departures)


def test_lgfa_animate_without_a_bundle_writes_the_default(tmp_path: Path, capsys) -> None:
    out = tmp_path / "clip.mp4"
    assert main(["animate", "--text", "The person is smiling.", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "64x64" in printed and "random" not in printed
    frames = read_video(out)
    assert len(frames) == 16 and frames[0].shape == (64, 64, 3)


def test_lgfa_eval_without_a_bundle_scores_the_default(tmp_path: Path) -> None:
    assert main(["eval", "--seeds", "2", "--prompts", "smiling", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["bundle"] == str(DEFAULT_BUNDLE) and report["synthetic"][0]["prompt"] == "smiling"


def test_the_target_path_runs_in_equal_steps_from_the_seeds_face_to_the_prompts_target() -> None:
    facts = Bundle.open(default_bundle()).manifest["face_domain"]
    path = target_path_parameters(3, facts, "surprised", 16)
    start = seed_parameters(3, facts)[0]
    on_target = {"eye_open_left": 1.0, "eye_open_right": 1.0, "brow_height": 0.9, "mouth_open": 0.45, "mouth_width": 0.2}
    assert path.shape == (16, 16) and np.array_equal(path[0], start)
    for name, value in zip(facts["parameters"], path[-1]):
        assert value == pytest.approx(on_target.get(name, start[facts["parameters"].index(name)])), name
    assert np.allclose(np.diff(path, axis=0), (path[-1] - path[0]) / 15)


def test_eval_ceiling_scores_the_generators_own_path(tmp_path: Path) -> None:
    """The shipped generator closes the eyes along its own path as the reader reads it (docs/faces-64/eval.md)."""
    assert main(["eval", "--seeds", "2", "--prompts", "closing eyes", "--ceiling", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["ceiling"][0]["prompt"] == "closing eyes" and report["ceiling"][0]["progress"] >= 0.8
    assert "Ceiling" in (tmp_path / "eval" / "eval.md").read_text()


def test_the_default_leaves_the_hidden_iris_out_of_closing_eyes_identity_drift() -> None:
    """Measured at export on renders (ground truth, identity unchanged): closed eyes hide the iris, so its read
    colour wanders past the 0.05 target and is not scored; skin, which stays in view, never is left out."""
    prompts = Bundle.open(default_bundle()).manifest["face_domain"]["prompts"]
    assert prompts["closing eyes"]["unreadable_identity"]["iris_color"] > 0.05
    assert not any("skin" in entry.get("unreadable_identity", {}) for entry in prompts.values())
    assert "unreadable_identity" not in prompts["angry"]  # brows and mouth hide no identity parameter
