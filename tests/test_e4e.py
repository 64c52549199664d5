"""e4e: the published checkpoint layout, the forward pass, loading through checkpoint I/O, ONNX export."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training.e4e import (
    E4E,
    E4E_CONFIGS,
    Encoder4Editing,
    e4e_input,
    e4e_layout,
    load_e4e,
)
from training.errors import CheckpointError


def published_e4e_layout() -> dict[str, tuple[int, ...]]:
    """``encoder.*`` of ``e4e_ffhq_encode.pt``, written from the description of e4e alone (not from our model).

    IR-SE-50: input layer Conv3x3(3->64, no bias), BN, PReLU; 24 bottleneck_IR_SE units in stages of
    64x3, 128x4, 256x14, 512x3 (unit: BN, Conv3x3, PReLU, Conv3x3, BN, SE(1/16); Conv1x1+BN shortcut
    where the width changes); 18 GradualStyleBlocks with log2(spatial) stride-2 convs (spatial 16 for
    styles 0-2, 32 for 3-6, 64 for 7-17) and an EqualLinear 512->512; latlayer1 256->512, latlayer2 128->512.
    """
    layout: dict[str, tuple[int, ...]] = {}

    def batch_norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{name}"] = (channels,)
        layout[f"{prefix}.num_batches_tracked"] = ()

    layout["encoder.input_layer.0.weight"] = (64, 3, 3, 3)
    batch_norm("encoder.input_layer.1", 64)
    layout["encoder.input_layer.2.weight"] = (64,)
    unit = 0
    previous = 64
    for depth, count in ((64, 3), (128, 4), (256, 14), (512, 3)):
        for k in range(count):
            cin = previous if k == 0 else depth
            prefix = f"encoder.body.{unit}"
            if cin != depth:
                layout[f"{prefix}.shortcut_layer.0.weight"] = (depth, cin, 1, 1)
                batch_norm(f"{prefix}.shortcut_layer.1", depth)
            batch_norm(f"{prefix}.res_layer.0", cin)
            layout[f"{prefix}.res_layer.1.weight"] = (depth, cin, 3, 3)
            layout[f"{prefix}.res_layer.2.weight"] = (depth,)
            layout[f"{prefix}.res_layer.3.weight"] = (depth, depth, 3, 3)
            batch_norm(f"{prefix}.res_layer.4", depth)
            layout[f"{prefix}.res_layer.5.fc1.weight"] = (depth // 16, depth, 1, 1)
            layout[f"{prefix}.res_layer.5.fc2.weight"] = (depth, depth // 16, 1, 1)
            unit += 1
        previous = depth
    for i in range(18):
        spatial = 16 if i < 3 else 32 if i < 7 else 64
        for j in range(int(math.log2(spatial))):
            layout[f"encoder.styles.{i}.convs.{2 * j}.weight"] = (512, 512, 3, 3)
            layout[f"encoder.styles.{i}.convs.{2 * j}.bias"] = (512,)
        layout[f"encoder.styles.{i}.linear.weight"] = (512, 512)
        layout[f"encoder.styles.{i}.linear.bias"] = (512,)
    layout["encoder.latlayer1.weight"] = (512, 256, 1, 1)
    layout["encoder.latlayer1.bias"] = (512,)
    layout["encoder.latlayer2.weight"] = (512, 128, 1, 1)
    layout["encoder.latlayer2.bias"] = (512,)
    return layout


def test_published_layout_has_the_published_size() -> None:
    layout = published_e4e_layout()
    assert len({k.split(".")[2] for k in layout if k.startswith("encoder.body.")}) == 24
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(math.prod(s) for k, s in layout.items() if not k.endswith(buffers))
    assert params == 267_136_704


def test_model_is_key_for_key_the_published_e4e() -> None:
    with torch.device("meta"):
        model = E4E("ffhq")
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    published = published_e4e_layout()
    assert own.pop("latent_avg") == (18, 512)
    assert own == published
    assert e4e_layout("ffhq") == published
    assert model.encoder.feature_units == (6, 20, 23)


@pytest.fixture(scope="module")
def ffhq_e4e() -> E4E:
    torch.manual_seed(0)
    model = E4E("ffhq").eval()
    model.latent_avg.normal_()
    return model


@pytest.mark.slow
def test_ffhq_forward_gives_w_plus_with_latent_avg(ffhq_e4e: E4E) -> None:
    images = torch.rand(1, 3, 256, 256) * 2 - 1
    seen: list[torch.Tensor] = []
    hook = ffhq_e4e.encoder.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        with torch.no_grad():
            w = ffhq_e4e(images)
    finally:
        hook.remove()
    assert w.shape == (1, 18, 512) and torch.isfinite(w).all()
    assert seen[0].shape == (1, 18, 512)
    torch.testing.assert_close(w, seen[0] + ffhq_e4e.latent_avg)
    assert not torch.allclose(w[:, 0], w[:, 17])


def tiny_e4e(seed: int = 0) -> E4E:
    torch.manual_seed(seed)
    model = E4E("tiny")
    # non-trivial BatchNorm statistics and latent_avg, so that loading and export are really checked
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(7)
    model.latent_avg.normal_()
    return model.eval()


def test_style_zero_is_the_base_and_others_add_deltas() -> None:
    model = tiny_e4e()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        w = model.encoder(images)
        x = model.encoder.input_layer(images)
        c3 = model.encoder.body(x)
        w0 = model.encoder.styles[0](c3)
        delta1 = model.encoder.styles[1](c3)  # style 1 < coarse_ind=2 still reads c3
    assert w.shape == (2, 8, 64)
    torch.testing.assert_close(w[:, 0], w0)
    torch.testing.assert_close(w[:, 1], w0 + delta1)


def test_wrong_input_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\[batch, 3, 64, 64\]"):
        tiny_e4e()(torch.zeros(1, 3, 32, 32))


def test_e4e_input_is_rgb_in_minus_one_one() -> None:
    face = np.zeros((256, 256, 3), np.uint8)
    face[..., 2] = 255  # red in BGR
    x = e4e_input(face)
    assert x.shape == (1, 3, 256, 256)
    assert torch.equal(x[0, 0], torch.ones(256, 256)) and torch.equal(x[0, 2], -torch.ones(256, 256))
    assert e4e_input(np.zeros((2, 1024, 1024, 3), np.uint8)).shape == (2, 3, 256, 256)


# -- loading -----------------------------------------------------------------------------------


def write_e4e_checkpoint(path: Path, model: E4E, **changes) -> None:
    """A file shaped like e4e_ffhq_encode.pt: state_dict (encoder.*, decoder.*), latent_avg, opts."""
    state = {f"encoder.{k}": v.clone() for k, v in model.encoder.state_dict().items()}
    state["decoder.style.1.weight"] = torch.zeros(4, 4)
    opts = {"stylegan_size": 32, "encoder_type": "Encoder4Editing"}
    ckpt = {"state_dict": state, "latent_avg": model.latent_avg.clone(), "opts": opts}
    ckpt.update(changes)
    torch.save(ckpt, path)


def test_load_e4e_round_trip(tmp_path: Path) -> None:
    source = tiny_e4e()
    path = tmp_path / "e4e_tiny.pt"
    write_e4e_checkpoint(path, source)
    loaded = load_e4e(path, n_latent=8)
    assert loaded.config == E4E_CONFIGS["tiny"] and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), source(images))


def test_load_e4e_takes_the_style_count_from_the_file(tmp_path: Path) -> None:
    import dataclasses

    torch.manual_seed(1)
    source = E4E(dataclasses.replace(E4E_CONFIGS["tiny"], n_styles=6)).eval()
    path = tmp_path / "e4e_six.pt"
    write_e4e_checkpoint(path, source)
    loaded = load_e4e(path)
    assert loaded.config.name == "tiny-6" and loaded.config.n_styles == 6
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), source(images))


def test_load_e4e_recognises_the_published_layout(tmp_path: Path) -> None:
    # the full published layout without 1 GB of weights: every tensor a stride-0 view of one number
    one = torch.zeros(1)
    state = {k: (torch.zeros((), dtype=torch.long) if k.endswith("num_batches_tracked") else one.expand(s))
             for k, s in published_e4e_layout().items()}
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save({"state_dict": state, "latent_avg": one.expand(18, 512), "opts": {}}, path)
    assert path.stat().st_size < 1_000_000
    model = load_e4e(path, n_latent=18)
    assert model.config == E4E_CONFIGS["ffhq"]
    assert model.latent_avg.shape == (18, 512)
    with pytest.raises(CheckpointError, match="18 latents but the generator has 16"):
        load_e4e(path, n_latent=16)


def test_load_e4e_refuses_what_is_not_e4e(tmp_path: Path) -> None:
    model = tiny_e4e()
    missing = tmp_path / "nothing.pt"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_e4e(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="expected an e4e checkpoint"):
        load_e4e(garbage)
    generator = tmp_path / "550000.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}}, generator)
    with pytest.raises(CheckpointError, match=r"found a dict with keys \['g_ema'\]"):
        load_e4e(generator)
    decoder_only = tmp_path / "decoder_only.pt"
    decoder = {"decoder.style.1.weight": torch.zeros(2, 2)}
    torch.save({"state_dict": decoder, "latent_avg": torch.zeros(8, 64)}, decoder_only)
    with pytest.raises(CheckpointError, match="no encoder"):
        load_e4e(decoder_only)
    no_avg = tmp_path / "no_latent_avg.pt"
    write_e4e_checkpoint(no_avg, model, latent_avg=None)
    with pytest.raises(CheckpointError, match="no 'latent_avg'"):
        load_e4e(no_avg)
    bad_avg = tmp_path / "bad_latent_avg.pt"
    write_e4e_checkpoint(bad_avg, model, latent_avg=torch.zeros(18, 512))
    with pytest.raises(CheckpointError, match=r"latent_avg has shape \(18, 512\); expected \(8, 64\)"):
        load_e4e(bad_avg)
    reshaped = tmp_path / "reshaped.pt"
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state["encoder.latlayer1.weight"] = torch.zeros(128, 32, 1, 1)
    torch.save({"state_dict": state, "latent_avg": model.latent_avg}, reshaped)
    with pytest.raises(CheckpointError, match=r"1 of another shape \(e.g. encoder.latlayer1.weight"):
        load_e4e(reshaped)


# -- ONNX --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")  # no tensor-valued size baked into the graph
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter (dynamo=False) is on purpose
def test_onnx_export_matches_torch_and_suits_tensorrt(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from export.tensorrt_ops import check_operators, check_opset

    model = tiny_e4e()
    path = tmp_path / "e4e.onnx"
    torch.onnx.export(
        model, (torch.zeros(1, 3, 64, 64),), str(path), opset_version=17, dynamo=False,
        input_names=["images"], output_names=["latents"],
        dynamic_axes={"images": {0: "batch"}, "latents": {0: "batch"}},
    )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert check_opset(graph) == []
    errors = [str(i) for i in check_operators(graph) if i.severity == "error"]
    assert errors == []
    resizes = [n for n in graph.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 2
    for node in resizes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["mode"] == b"linear" and attrs["coordinate_transformation_mode"] == b"align_corners"
    ops = {n.op_type for n in graph.graph.node}
    assert {"PRelu", "BatchNormalization", "GlobalAveragePool", "Sigmoid", "LeakyRelu"} <= ops

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        images = torch.rand(batch, 3, 64, 64) * 2 - 1
        with torch.no_grad():
            expected = model(images).numpy()
        (got,) = session.run(None, {"images": images.numpy()})
        assert got.shape == (batch, 8, 64)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_encoder_alone_keeps_the_checkpoint_names() -> None:
    with torch.device("meta"):
        encoder = Encoder4Editing("tiny")
    assert {f"encoder.{k}" for k in encoder.state_dict()} == set(e4e_layout("tiny"))
