"""``training.faces.clip_probe`` on random face-domain networks: probabilities over the covered
sentences, gradients against finite differences, and the table's marks by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.clip_model import create_clip
from training.faces.clip_probe import PARTS, ClipProbe, main, table
from training.faces.parameters import EXPRESSION, GENERATOR_IDENTITY, IDENTITY, NAMES, neutral_parameters, sample_identity
from training.faces.prompts import COVERED
from training.presets import get_preset
from training.stylegan2 import generator_from_preset


@pytest.fixture(scope="module")
def clip_probe() -> ClipProbe:
    torch.manual_seed(0)
    generator = generator_from_preset(get_preset("faces-64"))
    # a sharp temperature: a random CLIP's features barely differ, and the gradients checked must be well above float noise
    return ClipProbe(generator, create_clip("faces-rn"), list(COVERED), tau=0.02)


def test_probabilities_are_a_distribution_over_the_covered_sentences(clip_probe: ClipProbe) -> None:
    identity = sample_identity(np.random.default_rng(0), 3, GENERATOR_IDENTITY)
    parameters = torch.from_numpy(neutral_parameters(identity)).double()
    with torch.no_grad():
        total = sum(clip_probe.log_probability(parameters, prompt).exp() for prompt in COVERED)
    torch.testing.assert_close(total, torch.ones(3, dtype=total.dtype), rtol=0, atol=1e-5)


def test_gradient_matches_finite_differences_and_passes_the_clamp(clip_probe: ClipProbe) -> None:
    identity = sample_identity(np.random.default_rng(1), 2, GENERATOR_IDENTITY)
    row = clip_probe.along_the_way(identity, "opening mouth", parts=(0.5,))  # every parameter inside (0, 1)
    base = torch.from_numpy(neutral_parameters(identity)).double()
    base[:, len(IDENTITY) :] += 0.5 * torch.tensor(row["way"], dtype=torch.float64)
    h = 0.01
    for name in EXPRESSION:
        column = NAMES.index(name)
        up, down = base.clone(), base.clone()
        up[:, column] += h
        down[:, column] -= h
        with torch.no_grad():
            rise = clip_probe.log_probability(up, "opening mouth") - clip_probe.log_probability(down, "opening mouth")
        slope = float(rise.mean()) / (2 * h)
        analytic = row["gradient"][0][EXPRESSION.index(name)]
        assert abs(analytic - slope) <= 0.03 * abs(slope) + 2e-3, (name, analytic, slope)
    assert abs(row["gradient"][0][EXPRESSION.index("mouth_open")]) > 0.05  # the check above is not all noise
    # mouth_open is 0 at the neutral face, outside the generator's z range: the gradient still comes through
    at_neutral = clip_probe.along_the_way(identity, "opening mouth", parts=(0.0,))
    assert at_neutral["gradient"][0][EXPRESSION.index("mouth_open")] != 0.0


def test_table_marks_parameters_pulled_the_wrong_way_by_hand() -> None:
    gradient = [0.0] * len(EXPRESSION)
    gradient[EXPRESSION.index("brow_tilt")] = -0.2  # toward angry's target (the way is negative)
    gradient[EXPRESSION.index("brow_height")] = 0.05  # away from it
    way = [0.0] * len(EXPRESSION)
    way[EXPRESSION.index("brow_tilt")], way[EXPRESSION.index("brow_height")] = -0.5, -0.35
    way[EXPRESSION.index("mouth_curve")] = -0.3  # its gradient is 0: no pull, marked too
    result = {"angry": {"parts": list(PARTS), "probability": [0.1, 0.15, 0.2, 0.22, 0.25], "gradient": [gradient] * 5,
                        "way": way}}
    line = table(result).splitlines()[1]
    assert line.startswith("angry          0.10 0.15 0.20 0.22 0.25")
    assert "brow_tilt -0.20/-0.20 (-0.50) " in line
    assert "brow_height +0.05/+0.05 (-0.35)!" in line and "mouth_curve +0.00/+0.00 (-0.30)!" in line


def test_a_checkpoint_of_another_domain_is_one_line(tmp_path, capsys) -> None:
    from training.checkpoints import Models, save_checkpoint
    from training.motion import AnimationModel

    preset = get_preset("tiny")
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, Models(preset, AnimationModel(preset), generator_from_preset(preset), random_init=True, sources=[]),
                    {"stage": "test"})
    assert main(["--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not the face domain's" in err and len(err.strip().splitlines()) == 1
    assert main(["--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "cannot load" in capsys.readouterr().err
    for bad in (["--faces", "0"], ["--tau", "0"]):
        assert main(["--checkpoint", str(path), *bad]) == 2
        assert capsys.readouterr().err.strip() == "clip_probe: --faces must be at least 1 and --tau positive"
