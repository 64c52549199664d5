"""The synthetic face domain: renderer determinism, where each expression parameter draws, the
prompt table, the conditioned z."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from training.data import EXPRESSIONS
from training.faces.parameters import EXPRESSION, IDENTITY, INDEX, NAMES, NEUTRAL, parameters_to_z, sample_parameters
from training.faces.prompts import COVERED, MIN_MOVE, MIN_SEPARATION, NOT_COVERED, target_expression
from training.faces.render import REGION_OF, REGIONS, render_faces


def test_rendering_is_deterministic_and_seeded() -> None:
    a = sample_parameters(np.random.default_rng(3), 6, IDENTITY)
    assert np.array_equal(a, sample_parameters(np.random.default_rng(3), 6, IDENTITY))
    assert not np.array_equal(a, sample_parameters(np.random.default_rng(4), 6, IDENTITY))
    first, masks = render_faces(a, 64, with_masks=True)
    second, masks_again = render_faces(a, 64, with_masks=True)
    assert first.shape == (6, 64, 64, 3) and first.dtype == np.uint8
    assert masks.shape == (6, len(REGIONS), 64, 64)
    assert np.array_equal(first, second) and np.array_equal(masks, masks_again)
    assert render_faces(a[:1], 96)[0].shape == (1, 96, 96, 3)


def test_faces_are_anti_aliased() -> None:
    """Edges get intermediate values: more distinct colours than the palette of flat fills."""
    face = render_faces(sample_parameters(np.random.default_rng(0), 1, IDENTITY))[0][0]
    assert len(np.unique(face.reshape(-1, 3), axis=0)) > 100


@pytest.mark.parametrize("name", EXPRESSION)
def test_each_expression_parameter_draws_in_its_own_region_only(name: str) -> None:
    base = sample_parameters(np.random.default_rng(11), 4, IDENTITY)
    region = REGIONS.index(REGION_OF[name])
    for low, high in ((0.0, 1.0), (0.3, 0.6)):
        a, b = base.copy(), base.copy()
        a[:, INDEX[name]], b[:, INDEX[name]] = low, high
        faces_a, masks_a = render_faces(a, with_masks=True)
        faces_b, masks_b = render_faces(b, with_masks=True)
        changed = (faces_a != faces_b).any(axis=3)
        allowed = masks_a[:, region] | masks_b[:, region]
        assert changed.sum(axis=(1, 2)).min() > 0, f"{name} {low}->{high} changed nothing"
        assert not (changed & ~allowed).any(), f"{name} changed {int((changed & ~allowed).sum())} pixels outside {REGION_OF[name]}"


def test_prompt_table_accounts_for_all_28_expressions_once() -> None:
    assert set(COVERED) | set(NOT_COVERED) == set(EXPRESSIONS)
    assert not set(COVERED) & set(NOT_COVERED)
    assert len(EXPRESSIONS) == 28


def test_covered_targets_are_measurable_and_distinct() -> None:
    for expression, targets in COVERED.items():
        assert targets and set(targets) <= set(EXPRESSION), expression
        for name, value in targets.items():
            assert 0.0 <= value <= 1.0
            assert abs(value - NEUTRAL[name]) >= MIN_MOVE, (expression, name)
    for a, b in itertools.combinations(COVERED, 2):
        ta, tb = target_expression(a), target_expression(b)
        assert max(abs(ta[n] - tb[n]) for n in EXPRESSION) >= MIN_SEPARATION, (a, b)


@pytest.mark.parametrize("expression", list(COVERED))
def test_each_covered_target_shows_in_the_regions_it_claims(expression: str) -> None:
    """Rendering the target instead of neutral changes the picture inside every on-target parameter's region."""
    identity = np.full((1, len(IDENTITY)), 0.5, np.float32)
    neutral = np.concatenate([identity, [[NEUTRAL[n] for n in EXPRESSION]]], axis=1)
    target = np.concatenate([identity, [[target_expression(expression)[n] for n in EXPRESSION]]], axis=1)
    faces_n, masks = render_faces(neutral, with_masks=True)
    faces_t, _ = render_faces(target)
    changed = (faces_n != faces_t).any(axis=3)[0]
    for name in COVERED[expression]:
        if REGION_OF[name] != "head":
            assert changed[masks[0, REGIONS.index(REGION_OF[name])]].sum() >= 4, (expression, name)


def test_conditioned_z_is_inverse_normal_cdf_then_ones() -> None:
    p = np.full((2, len(NAMES)), 0.5)
    p[0, 0], p[0, 1], p[1, 2], p[1, 3] = 0.975, 0.8413447460685429, 0.0, 1.0
    z = parameters_to_z(p)
    assert z.shape == (2, 2 * len(NAMES))
    assert np.allclose(z[:, len(NAMES) :], 1.0)
    assert z[0, 0] == pytest.approx(1.959964, abs=1e-5)  # the textbook 97.5% quantile
    assert z[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert z[0, 5] == pytest.approx(0.0, abs=1e-7)
    assert np.isfinite(z).all() and z[1, 2] < -2.5 and z[1, 3] > 2.5
