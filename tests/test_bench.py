"""``lgfa bench`` on a tiny bundle: the results file's shape, every stage measured, ratios from measured numbers.

No timing assertions: the numbers of a shared CI machine say nothing; their bookkeeping does.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from lgfa_deploy.bench import LATENCY_STAGES, PHOTO_STAGES, STAGES
from lgfa_deploy.bench_report import format_table
from lgfa_deploy.cli import main
from training.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"backend", "precision", "batch", "stage", "p50_ms", "p90_ms", "p99_ms", "fps", "ratio"}


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_run(tiny_bundle, tmp_path_factory) -> tuple[dict, Path, Path]:
    """One full run: onnxruntime and torch, batches 1 and 2, every stage."""
    out = tmp_path_factory.mktemp("bench-out")
    json_path, png_path = out / "bench.json", out / "bench.png"
    code = main([
        "bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime,torch", "--batch", "1,2",
        "--iters", "3", "--warmup", "1", "--frames", "18", "--json", str(json_path), "--plot", str(png_path),
    ])
    assert code == 0
    return json.loads(json_path.read_text()), json_path, png_path


def test_results_document_describes_device_and_bundle(bench_run) -> None:
    doc, _, _ = bench_run
    assert doc["schema"] == "lgfa-bench/1"
    device = doc["device"]
    assert device["kind"] == "cpu" and device["name"] and device["cpu"]["usable_cpus"] >= 1
    assert {"onnxruntime", "numpy", "torch"} <= set(device["libraries"])
    assert device["peaks"]["source"].startswith("measured")
    assert device["peaks"]["fp32_tflops"] > 0 and device["peaks"]["bandwidth_gbps"] > 0
    bundle = doc["bundle"]
    assert (bundle["preset"], bundle["resolution"], bundle["random_init"]) == ("tiny", 32, True)
    assert "provenance" in bundle and {"text_encoder", "motion", "synthesis", "mapping"} <= set(bundle["graphs"])


def test_every_stage_is_measured_for_every_configuration(bench_run) -> None:
    doc, _, _ = bench_run
    rows = doc["results"]
    assert rows and all(ROW_KEYS <= set(r) for r in rows)
    configs = {(r["backend"], r["precision"], r["batch"], r["baseline"]) for r in rows}
    compared = {(b, "fp32", n, False) for b in ("onnxruntime", "torch") for n in (1, 2)}
    assert configs == compared | {("torch", "fp32", 1, True)}
    for config in configs:
        stages = [r["stage"] for r in rows if (r["backend"], r["precision"], r["batch"], r["baseline"]) == config]
        assert sorted(stages) == sorted(STAGES), config
    for r in rows:
        assert 0 <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and math.isfinite(r["p99_ms"])
        if r["stage"] in LATENCY_STAGES:
            assert r["fps"] is None
        else:
            assert r["fps"] > 0
        assert r["samples"] >= 1


def styled_convs(resolution: int) -> int:
    """StyleGAN2's activated convolutions: one at 4 px, then two per doubling (rosinality's Generator)."""
    return 1 + 2 * (int(math.log2(resolution)) - 2)


def test_onnxruntime_rows_name_their_cpu_rewrites(bench_run) -> None:
    doc, _, _ = bench_run
    for r in doc["results"]:
        if r["backend"] == "onnxruntime":
            # Winograd takes 3x3 convolutions from 256 input channels: the tiny generator's are at most 32
            # wide (its preset's channel cap). Every activated convolution's gain folds.
            assert get_preset("tiny").channel_cap < 256
            assert r["cpu_rewrites"] == {"winograd": 0, "fold_gain": styled_convs(32)}, r["stage"]
        else:
            assert "cpu_rewrites" not in r


def test_ratios_come_from_the_measured_baseline(bench_run) -> None:
    doc, _, _ = bench_run
    rows = doc["results"]
    baseline = [r for r in rows if r["baseline"]]
    # The baseline is its own run in the reference formulation, even where torch fp32 batch 1 is compared.
    assert {(r["backend"], r["precision"], r["batch"]) for r in baseline} == {("torch", "fp32", 1)}
    assert all(r["options"] == {"formulation": "reference"} for r in baseline)
    assert sorted(r["stage"] for r in baseline) == sorted(STAGES)
    assert doc["baseline"]["formulation"] == "reference" and doc["baseline"]["options"] == {"formulation": "reference"}
    torch_rows = [r for r in rows if r["backend"] == "torch" and not r["baseline"]]
    assert len(torch_rows) == 2 * len(STAGES) and all(r["options"] == {} for r in torch_rows)
    assert all(r["ratio"] is not None and r["ratio"] > 0 for r in torch_rows)
    assert "* torch eager fp32, reference formulation (baseline)" in format_table(doc)
    base = {r["stage"]: r for r in baseline}
    for r in rows:
        b = base[r["stage"]]
        expected = b["p50_ms"] / r["p50_ms"] if r["stage"] in LATENCY_STAGES else r["fps"] / b["fps"]
        assert r["ratio"] == pytest.approx(expected, rel=1e-3), (r["backend"], r["batch"], r["stage"])
        if r["baseline"]:
            assert r["ratio"] == pytest.approx(1.0)
        if r["stage"] not in LATENCY_STAGES and r["stage"] not in ("stream", "stream_encode"):
            assert r["fps"] == pytest.approx(r["items_per_call"] * 1000 / r["p50_ms"], rel=1e-3)


def test_synthesis_rows_carry_the_physical_limit(bench_run) -> None:
    doc, _, _ = bench_run
    cost = doc["physical_limit"]["synthesis"]["fp32"]
    assert cost["graph"] == "synthesis.onnx" and cost["batch_1"]["flops"] > cost["batch_1"]["macs"] > 0
    assert cost["batch_1"]["weight_bytes"] > 0 and cost["batch_1"]["bytes"] > cost["batch_1"]["min_bytes"]
    peaks = doc["physical_limit"]["peaks"]
    for r in (r for r in doc["results"] if r["stage"] == "synthesis"):
        per_frame = cost["per_frame"][str(r["batch"])]
        assert r["flops_per_frame"] == pytest.approx(per_frame["flops_per_frame"])
        assert r["achieved_tflops"] == pytest.approx(per_frame["flops_per_frame"] * r["fps"] / 1e12, rel=1e-3)
        assert r["math"] == "fp32" and r["peak_used"] == "fp32_tflops"  # the CPU has no TF32
        assert r["flops_fraction"] == pytest.approx(r["achieved_tflops"] / peaks["fp32_tflops"], rel=1e-3)
        assert r["bandwidth_fraction"] == pytest.approx(r["achieved_gbps"] / peaks["bandwidth_gbps"], rel=1e-3)


def test_tensorrt_alone_resolves_to_cuda() -> None:
    """TensorRT runs on a GPU only: --backend tensorrt with --device auto must not be sent to the CPU."""
    from lgfa_deploy.bench import _resolve_device

    assert _resolve_device("auto", ["tensorrt"]) == "cuda"
    assert _resolve_device("cpu", ["tensorrt"]) == "cpu"  # an explicit device is kept (and refused by the backend)


def test_plot_is_a_png(bench_run) -> None:
    _, _, png = bench_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_baseline_runs_when_torch_is_not_compared(tiny_bundle, tmp_path) -> None:
    out = tmp_path / "ort.json"
    code = main([
        "bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--batch", "2",
        "--stages", "synthesis,first_frame", "--iters", "2", "--warmup", "0", "--no-cpu-peak", "--json", str(out),
    ])
    assert code == 0
    doc = json.loads(out.read_text())
    base = [r for r in doc["results"] if r["baseline"]]
    assert {(r["backend"], r["precision"], r["batch"], r["stage"]) for r in base} == {
        ("torch", "fp32", 1, "synthesis"), ("torch", "fp32", 1, "first_frame")
    }
    assert all(r["options"] == {"formulation": "reference"} for r in base)
    ort = [r for r in doc["results"] if r["backend"] == "onnxruntime"]
    assert len(ort) == 2 and all(r["ratio"] is not None and r["ratio"] > 0 for r in ort)
    assert doc["physical_limit"]["peaks"]["fp32_tflops"] is None
    assert [r["flops_fraction"] for r in ort if r["stage"] == "synthesis"] == [None]


def test_gpu_baseline_options_exist_in_the_torch_backend(tiny_bundle) -> None:
    """The baseline's GPU-only option names, opened on the CPU (which ignores them): a misspelt one would
    otherwise first fail on a GPU machine."""
    from lgfa_deploy.backends import open_backend
    from lgfa_deploy.bench import _baseline_options
    from lgfa_deploy.bundle import Bundle

    options = _baseline_options("cuda")
    assert {"cuda_graphs", "channels_last", "compile", "cudnn_benchmark"} <= set(options)
    with open_backend("torch", Bundle.open(tiny_bundle), device="cpu", **options) as backend:
        assert backend.frames(np.zeros((1, 8, 64), np.float32)).shape == (1, 32, 32, 3)


def test_a_run_stopped_part_way_keeps_its_figures(tiny_bundle, tmp_path, monkeypatch, capsys) -> None:
    """--json is rewritten after each batch size: a run that dies before the end leaves every row measured so
    far, with its ratio, marked incomplete; a finished run is marked complete."""
    import lgfa_deploy.bench as bench

    out = tmp_path / "partial.json"
    args = ["bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--batch", "1,2", "--stages", "synthesis",
            "--iters", "2", "--warmup", "0", "--no-cpu-peak", "--json", str(out)]

    def interrupted(*_args, **_kwargs):  # what runs only after the last measurement: Ctrl-C there
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(bench, "synthesis_costs", interrupted)
        assert main(args) == 130
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and partial["device"]["kind"] == "cpu"
    rows = {(r["backend"], r["batch"], r["baseline"]): r for r in partial["results"]}
    assert set(rows) == {("torch", 1, True), ("onnxruntime", 1, False), ("onnxruntime", 2, False)}
    base = rows["torch", 1, True]["fps"]
    assert all(math.isclose(rows[k]["ratio"], rows[k]["fps"] / base, rel_tol=1e-5) for k in rows)
    assert main(args) == 0
    assert json.loads(out.read_text())["complete"] is True


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch", "17"], "batch 17"),
        (["--precision", "fp8"], "fp8"),
        (["--option", "threads=2"], "BACKEND.NAME=VALUE"),
        (["--stages", "synthesis,render"], "render"),
        (["--iters", "0"], "--iters"),
        (["--json", "out.txt"], ".json"),
    ],
)
def test_bad_input_is_one_line(tiny_bundle, capsys, extra: list[str], message: str) -> None:
    base = ["bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--no-baseline", "--batch", "1"]
    code = main([*base, *extra])  # a later --batch in extra wins
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_missing_bundle_is_one_line(tmp_path, capsys) -> None:
    assert main(["bench", "--bundle", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_readme_table_is_generated_from_results(bench_run, tmp_path) -> None:
    doc, json_path, png_path = bench_run
    results = tmp_path / "results"
    results.mkdir()
    (results / "cpu-test-2026-01-01.json").write_text(json_path.read_text())
    (results / "cpu-test-2026-01-01.png").write_bytes(png_path.read_bytes())
    make_table = _load_script("make_table")
    readme = tmp_path / "README.md"
    assert make_table.main(["--results", str(results), "--out", str(readme)]) == 0
    text = readme.read_text()
    assert "Generated by benchmarks/make_table.py" in text and "results/cpu-test-2026-01-01.png" in text
    syn = next(r for r in doc["results"] if r["stage"] == "synthesis" and r["backend"] == "onnxruntime" and r["batch"] == 2)
    assert f"{syn['ratio']:.2f}x" in text
    assert "| torch (reference formulation, baseline) | fp32 | 1 |" in text
    assert make_table.main(["--results", str(results), "--out", str(readme), "--check"]) == 0
    readme.write_text(text + "edited by hand\n")
    assert make_table.main(["--results", str(results), "--out", str(readme), "--check"]) == 1


def test_ort_graph_rewrites_keep_the_image(tiny_bundle, tmp_path) -> None:
    import onnx
    import onnxruntime as ort

    steps = _load_script("ort_cpu_steps")
    path = tiny_bundle / "synthesis.onnx"
    model = onnx.load(str(path))
    doublings = int(math.log2(32)) - 2  # the tiny generator's up-sampling convolutions: 8, 16 and 32 px
    assert steps.phase_convtranspose(model) == doublings and steps.fold_gain(model) == styled_convs(32)
    onnx.checker.check_model(model)
    rewritten = tmp_path / "rewritten.onnx"
    onnx.save(model, str(rewritten))
    latents = np.random.default_rng(1).standard_normal((3, 8, 64)).astype(np.float32)
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"latents": latents})[0]
    after = ort.InferenceSession(str(rewritten), providers=["CPUExecutionProvider"]).run(None, {"latents": latents})[0]
    groups = [onnx.helper.get_attribute_value(a) for n in model.graph.node if n.op_type == "ConvTranspose"
              for a in n.attribute if a.name == "group"]
    assert groups == [3] * doublings, "only the depthwise RGB up-sampling keeps a ConvTranspose"
    np.testing.assert_allclose(after, before, atol=1e-4)


def test_photo_path_stages_are_measured(tiny_bundle, tmp_path) -> None:
    from skimage import data as skimage_data

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), skimage_data.astronaut()[:, :, ::-1])
    json_path = tmp_path / "photo.json"
    code = main([
        "bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--batch", "1,2", "--no-baseline",
        "--no-cpu-peak", "--stages", "synthesis", "--iters", "2", "--warmup", "1", "--image", str(photo),
        "--json", str(json_path),
    ])
    assert code == 0
    rows = json.loads(json_path.read_text())["results"]
    assert not any(r["baseline"] for r in rows) and all(r["ratio"] is None for r in rows)  # --no-baseline
    photo_rows = {r["stage"]: r for r in rows if r["stage"].startswith("photo_")}
    assert set(photo_rows) == set(PHOTO_STAGES)
    assert all(r["batch"] == 1 and r["p50_ms"] > 0 and r["fps"] > 0 for r in photo_rows.values())


def test_photo_without_a_face_is_one_line(tiny_bundle, tmp_path, capsys) -> None:
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((128, 128, 3), 127, np.uint8))
    code = main(["bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--no-baseline", "--no-cpu-peak",
                 "--stages", "synthesis", "--batch", "1", "--iters", "1", "--image", str(flat)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no face" in err and len(err.splitlines()) == 1
