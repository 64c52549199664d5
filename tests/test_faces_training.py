"""The face domain's trainers: the reader reads renders, the generator's loss falls and resumes,
the CLIP trainer writes loadable weights, and the reader exports into a bundle."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.parameter_reader import add_parameter_reader
from export.verify import verify_bundle
from lgfa_deploy.backends import open_backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.cli import main
from lgfa_deploy.graphs import PARAMETER_READER
from tests.helpers import copy_bundle
from training.checkpoints import load_clip_weights
from training.clip_model import create_clip
from training.errors import OptionError
from training.faces.clip_renders import (
    CAPTIONS,
    INTENSITY,
    JITTER,
    NEGATIVE_MARGIN,
    caption_targets,
    closeness,
    contrastive_loss,
    expression_parameters,
    negative_parameters,
    partial_parameters,
    train_clip,
)
from training.faces.dataset import FaceSet, render_set, weight_map
from training.faces.generator_regression import (
    PRESET,
    Phase,
    expression_code_loss,
    generate,
    optimizer_for,
    phase_at,
    regression_loss,
    teacher_loss,
    train_generator,
)
from training.faces.parameters import EXPRESSION, NAMES, NEUTRAL, parameters_to_z
from training.faces.prompts import COVERED
from training.faces.reader import ParameterReader, faces_to_tensor, mean_absolute_error, read_parameters, train_reader
from training.faces.train_all import ANIMATION_OPTIONS, CLIP_CAPTIONS
from training.faces.train_all import main as train_all_main
from training.presets import get_preset
from training.stylegan2 import Generator, generator_from_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64


@pytest.fixture(scope="module")
def small_set() -> FaceSet:
    """1,200 renders with random expressions and one fixed identity (the reader's hard part is expression)."""
    return render_set(1200, seed=5, size=SIZE, varying_identity=(), workers=1)


def test_weight_map_is_one_plus_four_on_dilated_regions() -> None:
    masks = np.zeros((1, 4, 8, 8), bool)
    masks[0, 0, 3, 3] = True  # eyes
    masks[0, 3, :, :] = True  # the head region is not weighted
    weights = weight_map(masks)[0]
    assert weights[2:5, 2:5].tolist() == [[5] * 3] * 3
    assert weights.sum() == 64 + 4 * 9


def test_reader_recovers_expressions_of_renders(tmp_path: Path, small_set: FaceSet) -> None:
    """A reader that knows nothing (always 0.5) errs by 0.25 on uniform parameters: a reader trained
    for a few hundred steps must halve that on held-out renders, and beat it on every parameter."""
    torch.manual_seed(0)
    train = FaceSet(small_set.parameters[:1000], small_set.faces[:1000], small_set.weights[:1000])
    held = FaceSet(small_set.parameters[1000:], small_set.faces[1000:], small_set.weights[1000:])
    reader, _ = train_reader(str(tmp_path / "reader"), steps=500, size=SIZE, batch=32, lr=2e-3, width=16,
                             face_set=train, held_out=held)
    error = mean_absolute_error(read_parameters(reader, faces_to_tensor(held.faces)), torch.from_numpy(held.parameters))
    know_nothing = 0.25
    assert error["expression"] < know_nothing / 2, error
    assert max(error[n] for n in EXPRESSION) < know_nothing, error


def test_regression_loss_by_hand() -> None:
    targets = torch.zeros(1, 3, 8, 8)
    images = targets + 0.1
    ones = torch.ones(1, 1, 8, 8)
    assert regression_loss(images, targets, ones).item() == pytest.approx(0.1 * (1 + 0.5 + 0.25))
    weights = ones.clone()
    weights[..., :4, :] = 5.0  # half the pixels weighted 1 + 4
    assert regression_loss(images, targets, weights).item() == pytest.approx(0.1 * (3 + 0.5 + 0.25))


def test_mapping_trains_as_with_learning_rate_multiplier_one() -> None:
    """The preset's mapping (stored with multiplier 0.01) under optimizer_for follows the same
    effective weights as a mapping built with multiplier 1 under plain Adam."""
    preset = get_preset(PRESET)
    stored = generator_from_preset(preset)
    plain = Generator(preset.resolution, preset.style_dim, preset.n_mlp, lr_mlp=1.0, channels=preset.generator_channels)
    ratio = stored.style[1].lr_mul
    with torch.no_grad():
        for a, b in zip(plain.style[1:], stored.style[1:]):
            b.weight.copy_(a.weight / ratio)
            b.bias.copy_(a.bias / ratio)
    z = torch.randn(4, preset.style_dim, generator=torch.Generator().manual_seed(1))
    opt_stored = optimizer_for(stored, 3e-3)
    opt_plain = torch.optim.Adam(plain.style.parameters(), lr=3e-3, betas=(0.9, 0.99))
    for _ in range(3):
        for generator, opt in ((stored, opt_stored), (plain, opt_plain)):
            opt.zero_grad()
            generator.mapping(z).square().mean().backward()
            opt.step()
    for a, b in zip(plain.style[1:], stored.style[1:]):
        assert torch.allclose(a.weight * a.scale, b.weight * b.scale, atol=1e-5)
        assert torch.allclose(a.bias * a.lr_mul, b.bias * b.lr_mul, atol=1e-5)


def test_generator_loss_falls_and_the_run_resumes(tmp_path: Path, small_set: FaceSet) -> None:
    faces = FaceSet(small_set.parameters[:8], small_set.faces[:8], small_set.weights[:8])
    targets = faces_to_tensor(faces.faces)
    weights = torch.from_numpy(faces.weights).float()[:, None]
    z = torch.from_numpy(parameters_to_z(faces.parameters))
    out = tmp_path / "generator"
    generator = train_generator(str(out), steps=0, batch=4, n_faces=8, face_set=faces)
    with torch.no_grad():
        before = regression_loss(generate(generator, z), targets, weights).item()
    train_generator(str(out), steps=15, batch=4, n_faces=8, face_set=faces)
    generator = train_generator(str(out), steps=25, batch=4, n_faces=8, face_set=faces)  # resumes at step 15
    with torch.no_grad():
        after = regression_loss(generate(generator, z), targets, weights).item()
    assert after < 0.8 * before, (before, after)
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [0, 10, 20]
    with open(out / "metrics.jsonl", "a") as f:  # logged after the last save, then the run died
        f.write('{"step": 30, "loss": 0.0}\n')
    train_generator(str(out), steps=25, batch=4, n_faces=8, face_set=faces)
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 10, 20]
    with pytest.raises(OptionError, match="other options"):
        train_generator(str(out), steps=30, batch=4, lr=1e-3, n_faces=8, face_set=faces)


@pytest.mark.parametrize("captions", sorted(CAPTIONS))
def test_clip_trainer_writes_weights_the_animation_model_loads(tmp_path: Path, captions: str) -> None:
    train_clip(str(tmp_path / "clip"), steps=2, batch=4, captions=captions)
    assert json.loads((tmp_path / "clip" / "options.json").read_text())["captions"] == captions
    clip = create_clip("faces-rn")
    clip.load_state_dict(load_clip_weights(tmp_path / "clip" / "clip.safetensors"))


def test_clip_trainer_refuses_unknown_captions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown captions 'hard'; known: graded, closeness"):
        train_clip(str(tmp_path / "clip"), steps=1, captions="hard")


def test_clip_faces_lie_part_of_the_way_from_neutral_to_their_targets() -> None:
    names = [name for name in COVERED for _ in range(40)]
    parameters, drawn = expression_parameters(names, np.random.default_rng(0), INTENSITY)
    expression = parameters[:, len(NAMES) - len(EXPRESSION) :]
    parts = []
    for row, name, drawn_part in zip(expression, names, drawn):
        for j, parameter in enumerate(EXPRESSION):
            start = NEUTRAL[parameter]
            if parameter not in COVERED[name]:
                assert abs(row[j] - start) <= JITTER + 1e-6, (name, parameter)
                continue
            move = COVERED[name][parameter] - start
            part = (row[j] - start) / move
            assert INTENSITY[0] - JITTER / abs(move) - 1e-6 <= part <= 1 + JITTER / abs(move) + 1e-6, (name, parameter)
            if 0 < COVERED[name][parameter] < 1:  # not clipped at the range's end: the part returned is the part drawn
                assert abs(part - drawn_part) <= JITTER / abs(move) + 1e-6, (name, parameter)
            if abs(move) >= 0.5:
                parts.append(part)
    # faces at every intensity, not only at the targets
    assert min(parts) < 0.3 and max(parts) > 0.9 and 0.45 < float(np.median(parts)) < 0.7


def test_clip_negatives_lie_away_from_every_prompts_way_to_its_target() -> None:
    expression = negative_parameters(300, np.random.default_rng(1))[:, len(NAMES) - len(EXPRESSION) :]
    neutral = np.array([NEUTRAL[n] for n in EXPRESSION])
    for name, targets in COVERED.items():
        target = np.array([targets.get(n, NEUTRAL[n]) for n in EXPRESSION])
        way = neutral + np.linspace(INTENSITY[0], INTENSITY[1], 200)[:, None] * (target - neutral)
        nearest = np.abs(expression[:, None] - way[None]).max(axis=2).min(axis=1)
        assert nearest.min() >= NEGATIVE_MARGIN - 0.026, name  # the trainer checks points 0.05 apart on the way
    assert expression.std(axis=0).min() > 0.2  # spread over the whole range


def test_near_misses_leave_one_on_target_parameter_short_of_half_way() -> None:
    names = [name for name in COVERED for _ in range(20)]
    expressions = partial_parameters(names, np.random.default_rng(0))[:, -len(EXPRESSION) :]
    chosen: dict[str, set[str]] = {name: set() for name in COVERED}
    for row, name in zip(expressions, names):
        on = COVERED[name]
        short = [e for e, target in on.items() if abs(row[EXPRESSION.index(e)] - target) > JITTER + 1e-6]
        assert len(short) == 1, (name, short)  # every other on-target parameter at its target, jittered
        parameter = short[0]
        part = (row[EXPRESSION.index(parameter)] - NEUTRAL[parameter]) / (on[parameter] - NEUTRAL[parameter])
        assert 0.0 <= part <= 0.5 + 1e-6, (name, parameter, part)
        off = [e for e in EXPRESSION if e not in on]
        assert all(abs(row[EXPRESSION.index(e)] - NEUTRAL[e]) <= JITTER + 1e-6 for e in off)
        chosen[name].add(parameter)
    assert all(len(chosen[name]) == len(COVERED[name]) for name in COVERED), chosen  # each parameter in turn


def test_closeness_to_a_target_by_hand() -> None:
    neutral = np.array([0.5, 0.5])
    target = np.array([[1.0, 0.5]])  # the neutral face lies 0.5 from it
    faces = np.array([[1.0, 0.5], [0.5, 0.5], [0.75, 0.5], [1.0, 0.75], [0.9, 0.4], [0.0, 0.5]])
    # at the target, neutral, half way, on target but 0.25 off in the other parameter, 0.1 off in both, past neutral
    assert closeness(faces, target, neutral)[:, 0] == pytest.approx([1.0, 0.0, 0.5, 0.5, 0.8, 0.0])


def test_closeness_of_the_domains_faces_part_of_the_way() -> None:
    neutral = np.array([NEUTRAL[n] for n in EXPRESSION])
    smiling = np.array([COVERED["smiling"].get(n, NEUTRAL[n]) for n in EXPRESSION])
    frowning = neutral.copy()
    frowning[EXPRESSION.index("mouth_curve")] = 0.1  # 0.45 below neutral, as smiling's curve is 0.45 above it
    got = closeness(np.stack([neutral + 0.3 * (smiling - neutral), frowning]), smiling[None], neutral)[:, 0]
    assert got == pytest.approx([0.3, 0.0], abs=1e-6)


def test_caption_targets_grade_each_face_by_its_closeness() -> None:
    # a face at its sentence's target, one a quarter of the way, a face near none
    targets = caption_targets(torch.tensor([[1.0, 0.0], [0.0, 0.25], [0.0, 0.0]]))
    assert targets.tolist() == [[1.0, 0.0], [0.375, 0.625], [0.5, 0.5]]  # 0.25 of its sentence + 0.75 spread over two
    # near both sentences: shares in proportion once the closenesses sum past 1; below 1 the rest is spread
    targets = caption_targets(torch.tensor([[0.8, 0.4], [0.2, 0.4]]))
    assert targets.numpy() == pytest.approx(np.array([[2 / 3, 1 / 3], [0.4, 0.6]]))


def test_caption_schemes_draw_their_faces_and_closeness() -> None:
    expressions = ["smiling", "closing eyes", "opening mouth"]
    faces, negatives, graded = CAPTIONS["graded"](expressions, np.random.default_rng(0), 32)
    assert faces.shape == negatives.shape == (3, 32, 32, 3) and graded.shape == (6, 3)
    assert np.count_nonzero(graded) <= 3 and (np.diag(graded) > 0).all()  # each face close to its own sentence only
    faces, uniform, matrix = CAPTIONS["closeness"](expressions, np.random.default_rng(0), 32)
    assert faces.shape == uniform.shape == (3, 32, 32, 3) and matrix.shape == (6, 3)
    assert ((matrix >= 0) & (matrix <= 1)).all()
    # the same faces (one draw); jitter of 0.08 against ways of at least 0.45 moves closeness by at most 0.08 / 0.45
    assert np.abs(np.diag(matrix[:3]) - np.diag(graded[:3])).max() <= 0.08 / 0.45 + 1e-6
    faces, others, matrix = CAPTIONS["partial"](expressions, np.random.default_rng(1), 32)
    assert faces.shape == others.shape == (3, 32, 32, 3) and matrix.shape == (6, 3)
    # the one near miss: at least half of a way of at least 0.2 short of its target, in a scale of at most 1
    miss = matrix[3]
    assert 0.0 < miss.max() <= 1.0 - 0.5 * 0.2 + 1e-6


class FixedFeatures(torch.nn.Module):
    """A stand-in CLIP whose features are its inputs, at logit scale 1."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.zeros(()))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens


def log_softmax(*values: float) -> np.ndarray:
    v = np.array(values)
    return v - np.log(np.exp(v).sum())


def test_clip_contrastive_loss_with_a_negative_and_a_part_way_face_by_hand() -> None:
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # a face at its target, one half way, a negative
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # similarities: face 0 -> (1, 0.6), face 1 -> (0, 0.8), negative -> (0.6, 1.0)
    face0, face1, negative = log_softmax(1, 0.6), log_softmax(0, 0.8), log_softmax(0.6, 1.0)
    faces_pick = (-face0[0] - (0.25 * face1[0] + 0.75 * face1[1]) - (0.5 * negative[0] + 0.5 * negative[1])) / 3
    texts_pick = (-1.0 * log_softmax(1, 0, 0.6)[0] - 0.5 * log_softmax(0.6, 0.8, 1.0)[1]) / 1.5
    closeness = torch.tensor([[1.0, 0.0], [0.0, 0.5], [0.0, 0.0]])
    loss = contrastive_loss(FixedFeatures(), images, texts, closeness)
    assert loss.item() == pytest.approx((faces_pick + texts_pick) / 2, rel=1e-6)


def test_clip_contrastive_loss_with_faces_close_to_several_sentences_by_hand() -> None:
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # face 0 at sentence 0's target and 0.5 close to sentence 1; face 1 0.5 close to sentence 1; face 2 0.25 to sentence 0
    closeness = torch.tensor([[1.0, 0.5], [0.0, 0.5], [0.25, 0.0]])
    face0, face1, face2 = log_softmax(1, 0.6), log_softmax(0, 0.8), log_softmax(0.6, 1.0)
    faces_pick = -((2 / 3 * face0[0] + 1 / 3 * face0[1]) + (0.25 * face1[0] + 0.75 * face1[1])
                   + (0.625 * face2[0] + 0.375 * face2[1])) / 3  # fmt: skip
    # sentence 0 picks faces 0 and 2 as 1 : 0.25, weighted 1 (its closest face); sentence 1 faces 0 and 1 evenly, weighted 0.5
    text0, text1 = log_softmax(1, 0, 0.6), log_softmax(0.6, 0.8, 1.0)
    texts_pick = -(1.0 * (0.8 * text0[0] + 0.2 * text0[2]) + 0.5 * (0.5 * text1[0] + 0.5 * text1[1])) / 1.5
    loss = contrastive_loss(FixedFeatures(), images, texts, closeness)
    assert loss.item() == pytest.approx((faces_pick + texts_pick) / 2, rel=1e-6)


def test_reader_exports_into_a_bundle_and_runs_on_onnxruntime(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle_dir = copy_bundle(tiny_bundle, tmp_path)
    torch.manual_seed(3)
    reader = ParameterReader(32, width=8).eval()
    add_parameter_reader(bundle_dir, reader)
    bundle = Bundle.open(bundle_dir)  # hashes checked
    facts = bundle.manifest["face_domain"]
    assert set(facts["prompts"]) == set(COVERED)
    for entry in facts["prompts"].values():  # only identity parameters past the target on ground truth
        assert all(name in facts["identity"] and drift > 0.05 for name, drift in entry.get("unreadable_identity", {}).items())
    frames = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    backend = open_backend("onnxruntime", bundle, device="cpu")
    got = backend.run("parameter_reader", {"image": frames.numpy()})["parameters"]
    with torch.no_grad():
        want = reader(frames).numpy()
    assert got.shape == (3, len(NAMES))
    assert np.allclose(got, want, atol=1e-5)
    report = verify_bundle(bundle_dir)  # the extra graph passes structure, TensorRT operators and hashes
    assert report.ok, report.table()


def test_eval_refuses_an_expression_the_domain_does_not_cover(tiny_bundle: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    bundle_dir = copy_bundle(tiny_bundle, tmp_path)
    add_parameter_reader(bundle_dir, ParameterReader(32, width=8))
    code = main(["eval", "--bundle", str(bundle_dir), "--prompts", "biting tongues", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not covered by this face domain" in err and len(err.splitlines()) == 1


def test_phases_set_learning_rate_and_loss_weights_step_by_step() -> None:
    phases = [Phase(4, 3e-3, 3e-3), Phase(8, 2e-3, 0.0, 20.0, 1.0)]
    assert [phase_at(s, phases) for s in (0, 3)] == [(3e-3, phases[0]), (3e-3, phases[0])]
    assert [phase_at(s, phases)[0] for s in (4, 6, 7, 8)] == pytest.approx([2e-3, 1e-3, 5e-4, 0.0])
    assert phase_at(5, phases)[1].region_weight == 20.0 and phase_at(5, phases)[1].expression_code == 1.0
    with pytest.raises(OptionError, match="ends at step 8"):
        train_generator("unused", steps=10, phases=phases)


def test_expression_code_ties_the_first_eight_w_values_to_twice_the_expression() -> None:
    parameters = torch.zeros(2, len(NAMES))
    parameters[:, len(NAMES) - len(EXPRESSION) :] = torch.linspace(0, 1, 8)
    w = torch.zeros(2, 32)
    w[:, :8] = 2 * torch.linspace(0, 1, 8)
    assert expression_code_loss(w, parameters).item() == 0.0
    w[0, 0] += 1.0  # one of 16 values off by 1
    assert expression_code_loss(w, parameters).item() == pytest.approx(1 / 16)


def constant_reader(values: torch.Tensor) -> ParameterReader:
    """A reader that reads ``values`` [16] (in 0-1) off every image: zero last layer, bias logit(values)."""
    reader = ParameterReader(SIZE, 8)
    with torch.no_grad():
        reader.head[-1].weight.zero_()
        reader.head[-1].bias.copy_(torch.logit(values))
    return reader.eval()


def test_teacher_loss_is_the_l1_of_the_expressions_read_and_ignores_identity() -> None:
    parameters = torch.full((4, len(NAMES)), 0.5)
    parameters[:, len(NAMES) - len(EXPRESSION) :] = torch.linspace(0.1, 0.8, 8)
    images = torch.zeros(4, 3, SIZE, SIZE)
    read = parameters[0].clone()
    read[0] = 0.9  # an identity parameter read wrong costs nothing
    assert teacher_loss(constant_reader(read), images, parameters, 0, 0).item() == pytest.approx(0.0, abs=1e-6)
    read[-1] += 0.1  # one of 8 expression parameters read 0.1 off on every image
    assert teacher_loss(constant_reader(read), images, parameters, 0, 0).item() == pytest.approx(0.1 / 8, rel=1e-4)


def test_teacher_phases_move_the_generator_and_leave_the_teacher_frozen(tmp_path: Path, small_set: FaceSet) -> None:
    faces = FaceSet(small_set.parameters[:8], small_set.faces[:8], small_set.weights[:8])
    torch.manual_seed(3)
    teacher = ParameterReader(SIZE, 8)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    plain = train_generator(str(tmp_path / "plain"), steps=2, batch=4, n_faces=8, face_set=faces, phases=[Phase(2, 3e-3, 3e-3)])
    taught = train_generator(str(tmp_path / "taught"), steps=2, batch=4, n_faces=8, face_set=faces,
                             phases=[Phase(2, 3e-3, 3e-3, teacher=1.0)], teacher=teacher)  # fmt: skip
    moved = [not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), taught.state_dict().values())]
    assert any(moved)
    assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())  # batch norm statistics too
    with pytest.raises(OptionError, match="no teacher"):
        train_generator(str(tmp_path / "none"), steps=2, batch=4, n_faces=8, face_set=faces,
                        phases=[Phase(2, 3e-3, 3e-3, teacher=1.0)])


@pytest.mark.slow
def test_train_all_smoke_budget_runs_every_stage_and_resumes(tmp_path: Path) -> None:
    """The one command, on the smoke budget: every stage, export, reader, eval; run again, nothing is redone."""
    out = tmp_path / "run"
    assert train_all_main(["--out", str(out), "--budget", "smoke", "--ignore-gate", "--threads", "1"]) == 0
    bundle = Bundle.open(out / "bundle")
    assert bundle.manifest["model"]["preset"] == PRESET and PARAMETER_READER in bundle.graph_names
    saved = json.loads((out / "animation" / "train.json").read_text())["options"]
    assert saved["latents"] == str(out / "neutral_latents.pt") and saved["images"] is None  # latent mode
    assert saved["lambda_path"] == ANIMATION_OPTIONS["lambda_path"] != 1.0  # the paper's weight is 1.0
    contrastive = (saved["tau"], saved["lambda_contrastive"])
    assert contrastive == (ANIMATION_OPTIONS["tau"], ANIMATION_OPTIONS["lambda_contrastive"]) != (0.07, 0.5)  # the paper's
    assert saved["lambda_colour"] == ANIMATION_OPTIONS["lambda_colour"] > 0  # not one of the paper's terms
    assert saved["lambda_identity"] == ANIMATION_OPTIONS["lambda_identity"] > 0  # nor is this one
    assert saved["identity_reader"] == str(out / "teacher" / "reader.safetensors")  # the teacher's, not eval's reader
    assert json.loads((out / "clip" / "options.json").read_text())["captions"] == CLIP_CAPTIONS == "closeness"
    phases = json.loads((out / "generator" / "options.json").read_text())["phases"]
    assert phases[-1]["teacher"] > 0 and (out / "teacher" / "state.pt").is_file()  # a reader of its own, not the gate's
    seeds = [json.loads((out / stage / "options.json").read_text())["seed"] for stage in ("reader", "teacher")]
    assert seeds[0] != seeds[1]
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert {s["prompt"] for s in report["synthetic"]} == set(COVERED) and report["seeds"] == 2
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert train_all_main(["--out", str(out), "--budget", "smoke", "--ignore-gate", "--threads", "1"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if "animation" in p.parts and "checkpoints" in p.parts)
