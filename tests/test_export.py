"""lgfa export and lgfa verify on the tiny preset: bundle contents, verification, bad input, atomicity."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file

from export.bundle_writer import export_bundle
from export.onnx_export import build_module, bundle_specs, export_onnx, sample_inputs, save_onnx
from export.verify import verify_bundle
from lgfa_deploy.bundle import (
    MANIFEST,
    SCHEMA_VERSION,
    Bundle,
    file_entry,
    write_json_atomic,
)
from lgfa_deploy.cli import main
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import PHOTO_GRAPHS, graph_specs
from tests.helpers import TINY_MAX_BATCH, copy_bundle
from training.checkpoints import load_models
from training.clip_model import CLIP_MEAN, CLIP_STD
from training.presets import get_preset

BASE_GRAPHS = ("text_encoder", "motion", "synthesis", "mapping")
REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_tiny_bundle_manifest(tiny_bundle: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    preset = get_preset("tiny")
    manifest = bundle.manifest
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["provenance"] == {"random_init": True, "sources": []}
    assert (bundle.preset, bundle.resolution, bundle.n_latent, bundle.frames) == ("tiny", 32, 8, 16)
    assert bundle.prompt_template == preset.prompt_template
    assert manifest["model"]["config"] == preset.to_dict()
    assert bundle.weights_path.name == "weights.safetensors" and bundle.tokenizer_path.is_file()
    assert bundle.e4e_path.name == "e4e.safetensors" and bundle.has_photo
    assert (bundle.face_size, bundle.clip_image_size) == (64, 64)
    assert bundle.clip_mean == CLIP_MEAN and bundle.clip_std == CLIP_STD
    expected = graph_specs(
        embed_dim=64, n_latent=8, style_dim=64, resolution=32, frames=16, max_batch=TINY_MAX_BATCH,
        face_size=64, clip_image_size=64,
    )
    assert bundle.graph_names == [*BASE_GRAPHS, *PHOTO_GRAPHS] == list(expected)
    for name, spec in expected.items():
        assert bundle.graph(name) == spec
        entry = manifest["graphs"][name]
        assert entry["opset"] == 17
        assert entry["files"]["fp32"]["file"] == f"{name}.onnx"
        assert entry["files"]["fp16"]["file"] == f"{name}.fp16.onnx"
    assert manifest["engines"] == {}
    assert manifest["graphs"]["motion"]["outputs"][0]["shape"] == ["batch", 16, 8, 64]
    assert [t["name"] for t in manifest["graphs"]["motion"]["inputs"]] == ["text_embedding", "image_embedding"]
    assert manifest["graphs"]["image_encoder"]["inputs"][0]["shape"] == ["batch", 3, 64, 64]
    assert manifest["graphs"]["image_encoder"]["outputs"][0]["shape"] == ["batch", 8, 64]
    assert manifest["graphs"]["clip_image"]["outputs"][0]["shape"] == ["batch", 64]
    assert manifest["graphs"]["visual_mapper"]["outputs"][0]["shape"] == ["batch", 8, 64]


def test_tiny_bundle_verifies(tiny_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(tiny_bundle)]) == 0
    table = capsys.readouterr().out
    assert "all checks passed" in table
    for name in (*BASE_GRAPHS, *PHOTO_GRAPHS):
        for precision in ("fp32", "fp16"):
            for check in ("onnx checker", "opset", "tensorrt operators", "names", "shapes", "values b=1", "values b=3"):
                assert any(
                    line.split()[:2] == [name, precision] and check in line for line in table.splitlines()
                ), (name, precision, check)


def test_fp16_graphs_keep_statistics_in_fp32(tiny_bundle: Path) -> None:
    model = onnx.shape_inference.infer_shapes(onnx.load(str(tiny_bundle / "synthesis.fp16.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    squares = {n.output[0] for n in model.graph.node if n.op_type == "Pow"}
    demodulations = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in squares]
    convolutions = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert squares and demodulations and convolutions
    for node in demodulations:  # sum_i s_i^2 * sum_k W_ik^2, in FP32 on both sides
        assert types[node.input[0]] == types[node.input[1]] == TensorProto.FLOAT, node.name
    for node in convolutions:
        assert types[node.input[1]] == TensorProto.FLOAT16, node.name
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    text = onnx.shape_inference.infer_shapes(onnx.load(str(tiny_bundle / "text_encoder.fp16.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in text.graph.value_info}
    norms = [n for n in text.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert norms and all(types[n.input[0]] == TensorProto.FLOAT for n in norms)


def test_synthesis_same_image_whatever_the_batch(tiny_bundle: Path) -> None:
    session = ort.InferenceSession(str(tiny_bundle / "synthesis.onnx"), providers=["CPUExecutionProvider"])
    latents = np.random.default_rng(0).standard_normal((3, 8, 64)).astype(np.float32)
    together = session.run(["image"], {"latents": latents})[0]
    reversed_batch = session.run(["image"], {"latents": latents[::-1].copy()})[0][::-1]
    for i in range(3):
        alone = session.run(["image"], {"latents": latents[i : i + 1]})[0][0]
        np.testing.assert_allclose(together[i], alone, rtol=0, atol=1e-5)
        np.testing.assert_allclose(reversed_batch[i], alone, rtol=0, atol=1e-5)


def test_tampered_files_fail_verification(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    with open(bundle / "motion.onnx", "ab") as f:
        f.write(b"\0")
    # A graph with an operator TensorRT lacks, recorded in the manifest with its true hash.
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 64])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, ["batch", 64])
    nodes = [
        helper.make_node("Cast", ["z"], ["zi"], to=TensorProto.UINT32),
        helper.make_node("BitShift", ["zi", "one"], ["shifted"], direction="LEFT"),
        helper.make_node("Cast", ["shifted"], ["w"], to=TensorProto.FLOAT),
    ]
    one = helper.make_tensor("one", TensorProto.UINT32, [], [1])
    graph = helper.make_graph(nodes, "bitshift", [z], [w], [one])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(bundle / "mapping.onnx"))
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["graphs"]["mapping"]["files"]["fp32"] = file_entry(bundle, "mapping.onnx")
    write_json_atomic(bundle / MANIFEST, manifest)

    with pytest.raises(LgfaError, match="motion.onnx does not match"):
        Bundle.open(bundle)
    assert main(["verify", str(bundle)]) == 1
    rows = [line.split(None, 4) for line in capsys.readouterr().out.splitlines()]
    failed = {(r[0], r[1], r[2]) for r in rows if len(r) == 5 and "FAIL" in r[3:5]}
    assert ("motion", "fp32", "sha256") in failed
    hash_row = next(r for r in rows if r[:3] == ["motion", "fp32", "sha256"])
    assert "does NOT match" in hash_row[4]
    trt_row = next(" ".join(r) for r in rows if r[:2] == ["mapping", "fp32"] and "tensorrt" in " ".join(r))
    assert "FAIL" in trt_row and "BitShift" in trt_row
    assert ("mapping", "fp16", "sha256") not in failed


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_graph_from_other_weights_fails_values(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """motion.onnx re-exported with one mapper weight changed, its hash recorded: only the values can tell."""
    bundle = copy_bundle(tiny_bundle, tmp_path)
    models = load_models(checkpoint=bundle / "weights.safetensors")
    with torch.no_grad():
        models.model.mapper.t_mapper.mapping[3].weight[0, 0] += 50.0
    frames = json.loads((bundle / MANIFEST).read_text())["model"]["frames"]
    spec = bundle_specs(models, frames, TINY_MAX_BATCH)["motion"]
    module = build_module("motion", models, frames)
    save_onnx(export_onnx(module, spec, sample_inputs("motion", models, 2), tmp_path / "scratch.onnx"), bundle / "motion.onnx")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["graphs"]["motion"]["files"]["fp32"] = file_entry(bundle, "motion.onnx")
    write_json_atomic(bundle / MANIFEST, manifest)

    Bundle.open(bundle)  # the hashes agree: the bundle opens
    assert main(["verify", str(bundle)]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if " FAIL " in f" {line} "]
    assert failed and all(line.split()[:2] == ["motion", "fp32"] for line in failed), failed
    assert any("values" in line and "cosine" in line for line in failed), failed


def test_export_cli_force_replaces_bundle_after_success(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = copy_bundle(tiny_bundle, tmp_path)
    code = main(["export", "--preset", "tiny", "--random-init", "--seed", "3", "--frames", "4", "--out", str(out), "--force"])
    assert code == 0, capsys.readouterr().err
    bundle = Bundle.open(out)
    assert bundle.frames == 4
    assert bundle.graph("motion").outputs[0].shape == ("batch", 4, 8, 64)
    assert bundle.precisions("synthesis") == ["fp32"]
    assert not (out / "synthesis.fp16.onnx").exists()
    assert _leftovers(tmp_path) == []


def test_non_empty_out_refused_without_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", "--preset", "tiny", "--random-init", "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert "not empty" in line and "--force" in line
    assert main(["export", "--preset", "tiny", "--random-init", "--out", str(out), "--force"]) == 2
    assert "not a bundle" in _one_line_error(capsys)
    assert (out / "notes.txt").read_text() == "mine"
    file_out = tmp_path / "file"
    file_out.write_text("x")
    assert main(["export", "--preset", "tiny", "--random-init", "--out", str(file_out)]) == 2
    assert "is a file" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: p.write_bytes(b"this is not a checkpoint"), [], "PyTorch checkpoint"),
        (lambda p: save_file({"x": torch.zeros(1)}, str(p)), [], "not an lgfa checkpoint"),
        (None, ["--preset", "ffhq-256"], "cannot be used as --preset ffhq-256"),
    ],
    ids=["garbage", "wrong-kind", "wrong-preset"],
)
def test_bad_checkpoint_exits_2_with_one_line(
    make, extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = tmp_path / "model.pt"
    if make is None:
        from training.checkpoints import load_models, save_checkpoint

        checkpoint = tmp_path / "tiny.safetensors"
        save_checkpoint(checkpoint, load_models(preset="tiny", random_init=True))
    else:
        make(checkpoint)
    out = tmp_path / "out"
    assert main(["export", "--checkpoint", str(checkpoint), *extra, "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("lgfa export: error:") and message in line
    assert not out.exists() and _leftovers(tmp_path) == []


def test_no_weights_source_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "--preset", "tiny", "--out", str(tmp_path / "out")]) == 2
    assert "--random-init" in _one_line_error(capsys)


def test_interrupted_export_leaves_no_bundle(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import export.bundle_writer as writer

    def interrupted(models, root: Path, **kwargs):
        (root / "text_encoder.onnx").write_bytes(b"half a graph")
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_graphs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(tmp_path / "new", preset="tiny", random_init=True)
    assert not (tmp_path / "new").exists()
    old = copy_bundle(tiny_bundle, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(old, preset="tiny", random_init=True, force=True)
    Bundle.open(old)  # the previous bundle is untouched
    assert _leftovers(tmp_path) == []


def test_large_graphs_use_external_data(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    weight = onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "weight")
    graph = helper.make_graph([helper.make_node("Add", ["x", "weight"], ["y"])], "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert save_onnx(model, tmp_path / "small.onnx") == ["small.onnx"]
    assert save_onnx(model, tmp_path / "big.onnx", limit=16) == ["big.onnx", "big.onnx.data"]
    session = ort.InferenceSession(str(tmp_path / "big.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": np.ones(4, np.float32)})[0], [1, 2, 3, 4])


def test_verify_refuses_a_directory_that_is_no_bundle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(tmp_path)]) == 2
    assert "not a bundle" in _one_line_error(capsys)
    with pytest.raises(LgfaError):
        verify_bundle(tmp_path)


def test_export_help_teaches_without_importing_torch() -> None:
    code = (
        "import sys\n"
        "from lgfa_deploy.cli import main\n"
        "try:\n    main(['export', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip().endswith("NO-TORCH")
    assert "--random-init" in result.stdout and "examples:" in result.stdout and "lgfa export --preset tiny" in result.stdout
