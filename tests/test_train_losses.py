"""Each training loss against a hand computation on small tensors; LPIPS weights; data sampling and errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.data import DataError, ImageDataset, sample_image_ids, sample_text_ids
from training.errors import CheckpointError
from training.losses import (
    ContentReferences,
    colour_statistics,
    colour_statistics_loss,
    identity_loss,
    contrastive_loss,
    endpoint_regularizer,
    latent_regularizer,
    path_regularizer,
    resize_images,
)
from training.lpips import CHANNELS, LPIPS, build_lpips, load_lpips_weights


def test_contrastive_loss_matches_hand_computation() -> None:
    rng = np.random.default_rng(0)
    images, texts = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    tau = 0.07

    def by_hand(group: int) -> float:
        rows = []
        for start in range(0, 6, group):
            for i in range(start, start + group):
                v = images[i] / np.linalg.norm(images[i])
                s_ii = v @ (texts[i] / np.linalg.norm(texts[i]))
                total = 0.0
                for j in range(start, start + group):  # j = i included, as PAPER-NOTES writes it
                    s_ij = v @ (texts[j] / np.linalg.norm(texts[j]))
                    total += math.exp((s_ij - s_ii) / tau)
                rows.append(math.log(1 + total))
        return float(np.mean(rows))

    for group in (None, 2, 3):
        got = contrastive_loss(torch.from_numpy(images), torch.from_numpy(texts), tau, group).item()
        assert got == pytest.approx(by_hand(group or 6), rel=1e-6)
    with pytest.raises(ValueError, match="does not split"):
        contrastive_loss(torch.zeros(6, 5), torch.zeros(6, 5), tau, 4)


def test_contrastive_loss_of_perfect_pairs_is_log2() -> None:
    """Orthogonal pairs: s_ii = 1, s_ij = 0 -> log(1 + 1 + (n-1) exp(-1/tau))."""
    eye = torch.eye(4)
    want = math.log(2 + 3 * math.exp(-1 / 0.07))
    assert contrastive_loss(eye, eye).item() == pytest.approx(want, rel=1e-6)


def test_regularisers_match_hand_computation() -> None:
    rng = np.random.default_rng(1)
    offsets = rng.standard_normal((2, 4, 3, 5))  # [B, T, L, S]
    content = rng.standard_normal((2, 3, 5))
    latents = content[:, None] + offsets + 0.3

    second = [(offsets[:, t + 1] - offsets[:, t]) - (offsets[:, t] - offsets[:, t - 1]) for t in (1, 2)]
    path = np.mean([np.mean(d**2) for d in second])
    latent = sum(np.mean((latents[:, t] - content) ** 2) for t in range(4))
    endpoints = np.mean((offsets[:, 0] - offsets[:, 3]) ** 2)

    o, w, c = (torch.from_numpy(a) for a in (offsets, latents, content))
    assert path_regularizer(o).item() == pytest.approx(path, rel=1e-12)
    assert latent_regularizer(w, c).item() == pytest.approx(latent, rel=1e-12)
    assert endpoint_regularizer(o).item() == pytest.approx(endpoints, rel=1e-12)
    with pytest.raises(ValueError, match="at least 3 frames"):
        path_regularizer(o[:, :2])


def test_colour_statistics_loss_holds_colours_and_frees_shapes() -> None:
    rng = np.random.default_rng(2)
    reference = rng.uniform(-1, 1, (2, 3, 8, 8))
    images = rng.uniform(-1, 1, (2, 3, 8, 8))
    pixels_a, pixels_b = images.reshape(2, 3, -1), reference.reshape(2, 3, -1)
    by_hand = np.mean((pixels_a.mean(-1) - pixels_b.mean(-1)) ** 2) + np.mean((pixels_a.std(-1) - pixels_b.std(-1)) ** 2)
    ref = colour_statistics(torch.from_numpy(reference))
    assert ref.shape == (2, 2, 3)
    np.testing.assert_allclose(ref[:, 1].numpy(), pixels_b.std(-1), rtol=1e-6)  # numpy's std: the population's
    assert colour_statistics_loss(torch.from_numpy(images), ref).item() == pytest.approx(by_hand, rel=1e-5)
    shuffled = reference.reshape(2, 3, -1)[:, :, rng.permutation(64)].reshape(2, 3, 8, 8)  # same colours, other shapes
    assert colour_statistics_loss(torch.from_numpy(shuffled), ref).item() == pytest.approx(0.0, abs=1e-10)
    tinted = reference.copy()
    tinted[:, 0] += 0.1  # the red channel of both images brighter by 0.1: its mean moves, its spread does not
    assert colour_statistics_loss(torch.from_numpy(tinted), ref).item() == pytest.approx(0.01 / 3, rel=1e-4)
    with pytest.raises(ValueError, match="differ in shape"):
        colour_statistics_loss(torch.from_numpy(images), ref[:1])


def test_identity_loss_by_hand_lets_changes_within_the_margin_pass() -> None:
    reference = torch.full((2, 8), 0.5)
    readings = reference.clone()
    readings[0, 3] = 0.6  # one reading 0.1 off, another 0.02 off, of 16
    readings[1, 7] = 0.48
    assert identity_loss(readings, reference).item() == pytest.approx((0.1 + 0.02) / 16)
    assert identity_loss(readings, reference, margin=0.03).item() == pytest.approx((0.1 - 0.03) / 16)
    assert identity_loss(readings, reference, margin=0.2).item() == 0
    with pytest.raises(ValueError, match="differ in shape"):
        identity_loss(readings, reference[:, :4])


def _image_of(contents: torch.Tensor) -> torch.Tensor:
    """A stand-in generator: one image per content row."""
    return contents[:, None].expand(-1, 3, -1, -1) * torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1)


def _corner(images: torch.Tensor) -> torch.Tensor:
    """A second statistic: each image's top-left value per channel."""
    return images[:, :, 0, 0]


def test_references_render_each_fixed_content_once_for_every_statistic() -> None:
    """Latent mode's references: each content rendered the first time it is drawn, its statistics kept."""
    rendered: list[int] = []

    def render(contents: torch.Tensor) -> torch.Tensor:
        rendered.extend(contents[:, 0, 0].long().tolist())
        return _image_of(contents)

    contents = torch.rand(5, 4, 4)
    contents[:, 0, 0] = torch.arange(5).float()  # each content names itself in its first value
    references = ContentReferences({"colour": colour_statistics, "corner": _corner}, render, len(contents))
    for ids in ([3, 1, 3], [1, 4], [0, 3, 4, 2], [2, 0]):
        got = references(contents[ids], ids)
        torch.testing.assert_close(got["colour"], colour_statistics(_image_of(contents[ids])))
        torch.testing.assert_close(got["corner"], _image_of(contents[ids])[:, :, 0, 0])
    assert rendered == [3, 1, 3, 4, 0, 2]  # a new content once per row it fills, for both; a known one never again
    with pytest.raises(ValueError, match="give ids"):
        references(contents[:2])


def test_references_of_fresh_contents_render_once_per_call() -> None:
    """Contents drawn anew each step: one render per call feeds every statistic."""
    calls: list[int] = []

    def render(contents: torch.Tensor) -> torch.Tensor:
        calls.append(len(contents))
        return _image_of(contents)

    references = ContentReferences({"colour": colour_statistics, "corner": _corner}, render)
    for batch in (torch.rand(3, 4, 4), torch.rand(2, 4, 4)):
        got = references(batch)
        torch.testing.assert_close(got["colour"], colour_statistics(_image_of(batch)))
        torch.testing.assert_close(got["corner"], _image_of(batch)[:, :, 0, 0])
    assert calls == [3, 2]


def test_resize_pools_down_and_interpolates_up() -> None:
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(resize_images(images, 32), F.avg_pool2d(images, 2))
    assert resize_images(images, 64) is images
    assert resize_images(images, 100).shape == (2, 3, 100, 100)


def _alexnet_by_hand(lpips: LPIPS, x: torch.Tensor) -> list[torch.Tensor]:
    """AlexNet to relu1..relu5 written out with functional ops in float64."""
    f = lpips.features

    def conv(i: int, y: torch.Tensor) -> torch.Tensor:
        layer = f[i]
        return F.conv2d(y, layer.weight.double(), layer.bias.double(), layer.stride, layer.padding)

    shift, scale = torch.tensor([-0.030, -0.088, -0.188]), torch.tensor([0.458, 0.448, 0.450])
    x = (x - shift.view(1, 3, 1, 1)) / scale.view(1, 3, 1, 1)
    relu1 = F.relu(conv(0, x))
    relu2 = F.relu(conv(3, F.max_pool2d(relu1, 3, 2)))
    relu3 = F.relu(conv(6, F.max_pool2d(relu2, 3, 2)))
    relu4 = F.relu(conv(8, relu3))
    relu5 = F.relu(conv(10, relu4))
    return [relu1, relu2, relu3, relu4, relu5]


def test_lpips_matches_hand_computation() -> None:
    lpips, _ = build_lpips(None, seed=3)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    want = torch.zeros(2, dtype=torch.float64)
    for k, (fa, fb) in enumerate(zip(_alexnet_by_hand(lpips, a.double()), _alexnet_by_hand(lpips, b.double()))):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        weight = lpips.heads[k].weight.double().view(1, -1, 1, 1)
        want += ((na - nb) ** 2 * weight).sum(1).mean(dim=(1, 2))
    torch.testing.assert_close(lpips(a, b).double(), want, rtol=1e-4, atol=1e-6)
    assert torch.all(lpips(a, a) == 0)
    assert not any(p.requires_grad for p in lpips.parameters())


def test_lpips_weights_load_from_package_and_torchvision_files(tmp_path) -> None:
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS)}
    source = LPIPS()
    backbone = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(3, 3)  # torchvision's classifier is ignored
    torch.save(heads, tmp_path / "alex.pth")
    torch.save(backbone, tmp_path / "alexnet.pth")

    lpips = LPIPS()
    load_lpips_weights(lpips, [tmp_path / "alex.pth", tmp_path / "alexnet.pth"])
    for k in range(5):
        torch.testing.assert_close(lpips.heads[k].weight, heads[f"lin{k}.model.1.weight"])
    torch.testing.assert_close(lpips.features[10].weight, source.features[10].weight)

    with pytest.raises(CheckpointError, match="AlexNet backbone"):
        load_lpips_weights(LPIPS(), [tmp_path / "alex.pth"])
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no LPIPS tensors"):
        load_lpips_weights(LPIPS(), [tmp_path / "other.pth"])


def test_sampling_splits_the_global_batch() -> None:
    """Two halves of a global batch are what one process with the whole batch draws."""
    ids = sample_text_ids(0, 5, n_texts=28, n_groups=4, group=2)
    assert len(ids) == 8
    assert all(ids[g] != ids[g + 1] for g in range(0, 8, 2))
    assert ids == sample_text_ids(0, 5, 28, 4, 2)
    assert ids != sample_text_ids(0, 6, 28, 4, 2)
    images = [sample_image_ids(0, step, 5, 4) for step in range(5)]
    flat = [i for batch in images for i in batch]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))  # each epoch a permutation
    with pytest.raises(ValueError, match="at least 4 sentences"):
        sample_text_ids(0, 0, 3, 1, 4)


def _faces(folder, count: int) -> None:
    import cv2

    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"face{i}.png"), np.full((40, 36, 3), 40 * i, np.uint8))


def test_dataset_errors_name_the_file(tmp_path) -> None:
    _faces(tmp_path / "faces", 3)
    torch.save(torch.zeros(3, 8, 64), tmp_path / "latents.pt")
    dataset = ImageDataset(tmp_path / "faces", tmp_path / "latents.pt", 8, 64)
    encoder, target = dataset.images(1, (64, 32))
    assert encoder.shape == (3, 64, 64) and target.shape == (3, 32, 32)
    assert target.min().item() == pytest.approx(40 / 127.5 - 1, abs=1e-6)

    torch.save({"face0.png": torch.zeros(8, 64), "face1": torch.zeros(8, 64)}, tmp_path / "by_name.pt")
    with pytest.raises(DataError, match="no latent for .*face2.png"):
        ImageDataset(tmp_path / "faces", tmp_path / "by_name.pt", 8, 64)
    torch.save({f"face{i}.png": torch.zeros(8, 64 if i != 1 else 32) for i in range(3)}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match=r"face1.png in .*bad.pt has shape \[8, 32\]"):
        ImageDataset(tmp_path / "faces", tmp_path / "bad.pt", 8, 64)
    torch.save(torch.zeros(2, 8, 64), tmp_path / "short.pt")
    with pytest.raises(DataError, match=r"short.pt holds a tensor of shape \[2, 8, 64\]"):
        ImageDataset(tmp_path / "faces", tmp_path / "short.pt", 8, 64)
