"""The openvino backend, the CPU's description and the ``auto`` backend, on the tiny random bundle."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lgfa_deploy import api, device_info
from lgfa_deploy.backends import open_backend
from lgfa_deploy.backends.choice import choose_backend, fastest_fp32
from lgfa_deploy.backends.precision_policy import keeps_fp32
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.cli import main
from lgfa_deploy.errors import LgfaError
from tests.helpers import load_script, psnr

ov = pytest.importorskip("openvino")

TEXT = "The person is smiling."
# Flags lines as Linux prints them for three CPUs (the vendors' ISA lists): AMD Zen 3 (AVX2 only),
# AMD Zen 4 (AVX-512 with BF16 and VNNI) and Intel Sapphire Rapids (AMX and AVX512_FP16).
ZEN3 = "flags\t\t: fpu sse sse2 avx f16c fma avx2 vaes vpclmulqdq hypervisor"
ZEN4 = ZEN3 + " avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni avx512vbmi"
SAPPHIRE_RAPIDS = ZEN4 + " avx_vnni amx_bf16 amx_tile amx_int8 avx512_fp16"
NATIVE_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def openvino_backend(tiny_bundle: Path, cache: Path):
    with open_backend("openvino", Bundle.open(tiny_bundle), device="cpu", precision="fp32", threads=1, cache_dir=cache) as backend:
        yield backend


# -- the CPU ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cpuinfo", "precisions", "extensions"),
    [
        (ZEN3, ["fp32"], {"avx", "avx2", "fma", "f16c"}),
        (ZEN4, ["fp32", "bf16"], {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}),
        (SAPPHIRE_RAPIDS, ["fp32", "bf16", "fp16"], {"amx_bf16", "amx_tile", "amx_int8", "avx_vnni", "avx512_fp16"}),
        (ZEN3 + " amx_tile amx_bf16", ["fp32", "bf16"], {"amx_tile", "amx_bf16"}),  # either flag counts
        ("processor\t: 0\nmodel name\t: no flags line", ["fp32"], set()),
    ],
)
def test_cpu_flags_and_native_precisions(cpuinfo: str, precisions: list[str], extensions: set[str]) -> None:
    flags = device_info.cpu_flags(f"processor\t: 0\n{cpuinfo}\n")
    assert device_info.native_precisions(flags) == precisions
    assert extensions <= flags & set(device_info.CPU_FEATURES)
    assert "vaes" not in set(device_info.CPU_FEATURES)


def test_this_cpu_is_described_by_both_sources() -> None:
    """/proc/cpuinfo (the kernel's CPUID) and OpenVINO's own CPUID reading agree on bf16."""
    cpu = device_info.cpu_description()
    assert "FP32" in cpu["openvino_capabilities"]
    assert ("bf16" in cpu["native_precisions"]) == ("BF16" in cpu["openvino_capabilities"])
    assert set(cpu["vector_extensions"]) <= set(device_info.CPU_FEATURES)


# -- the backend ------------------------------------------------------------------------------------
def test_openvino_matches_onnxruntime(tiny_bundle: Path, openvino_backend) -> None:
    """Frames to a PSNR and text embeddings to a cosine, against onnxruntime on the same bundle."""
    bundle = Bundle.open(tiny_bundle)
    with open_backend("onnxruntime", bundle, device="cpu", threads=1) as ort:
        from lgfa_deploy.pipeline import Animator

        ours = Animator(bundle, openvino_backend).animate(TEXT, seed=5)
        theirs = Animator(bundle, ort).animate(TEXT, seed=5)
        tokens = Animator(bundle, ort).tokenizer([TEXT, "The person is angry."])
        a = openvino_backend.run("text_encoder", {"tokens": tokens})["text_embedding"]
        b = ort.run("text_encoder", {"tokens": tokens})["text_embedding"]
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    assert min(psnr(x, y) for x, y in zip(ours, theirs)) >= 45
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.9999


def test_static_shape_per_batch_compiled_on_first_use(openvino_backend) -> None:
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((3, *openvino_backend.spec("synthesis").inputs[0].shape[1:])).astype(np.float32)
    together = openvino_backend.run("synthesis", {"latents": latents})["image"]
    alone = np.concatenate([openvino_backend.run("synthesis", {"latents": latents[i : i + 1]})["image"] for i in range(3)])
    assert {("synthesis", 1), ("synthesis", 3)} <= set(openvino_backend._compiled)
    assert openvino_backend._compiled[("synthesis", 3)][0].inputs[0].get_shape() == [3, *latents.shape[1:]]
    assert np.abs(together - alone).max() < 1e-4
    # Outputs are copies: the next call does not change an earlier result.
    before = together.copy()
    openvino_backend.run("synthesis", {"latents": -latents})
    assert np.array_equal(before, together)


def test_compiled_models_are_cached_by_graph_openvino_and_cpu(tiny_bundle: Path, openvino_backend, cache: Path) -> None:
    openvino_backend.run("mapping", {"z": np.zeros((1, Bundle.open(tiny_bundle).style_dim), np.float32)})
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    folders = {p.name: p for p in cache.iterdir()}
    version = ov.get_version().split("-")[0].replace(".", "-")
    for graph in ("synthesis", "mapping"):
        digest = manifest["graphs"][graph]["files"]["fp32"]["sha256"][:16]
        folder = next(p for name, p in folders.items() if name.startswith(digest))
        assert f"-ov{version}-" in folder.name
        assert any(folder.iterdir()), "OpenVINO wrote no compiled model into the cache"
    # Another CPU or another OpenVINO is another folder.
    cpu = device_info.cpu_description()
    other = {**cpu, "vector_extensions": [*cpu["vector_extensions"], "amx_bf16"]}
    from lgfa_deploy.backends.openvino_backend import cache_key

    assert cache_key("ab" * 32, cpu) != cache_key("ab" * 32, other)


def test_executed_precision_is_what_openvino_reports(openvino_backend) -> None:
    latents = np.zeros((1, *openvino_backend.spec("synthesis").inputs[0].shape[1:]), np.float32)
    openvino_backend.run("synthesis", {"latents": latents})
    executed = openvino_backend.executed["synthesis"]
    assert executed["hint"] == "f32" and set(executed["layers"]) == {"f32"} and executed["layers"]["f32"] > 0
    assert openvino_backend.executed_precision == "f32"
    # An fp32 model passed off as bf16 is an error, never a silent fp32 run.
    compiled = openvino_backend._compiled[("synthesis", 1)][0]
    with pytest.raises(LgfaError, match="compiled synthesis for bf16 but runs it as f32"):
        openvino_backend._record("synthesis", compiled, "bf16", 0)
    openvino_backend.executed["synthesis"] = executed


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU computes bf16: the refusal is for CPUs without it")
def test_bf16_without_native_support_is_refused_in_one_line(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(LgfaError, match="no native bf16.*--precision fp32"):
        api.open(tiny_bundle, "openvino", precision="bf16", cache_dir=None)
    out = tmp_path / "clip.mp4"
    code = main(["animate", "--bundle", str(tiny_bundle), "--text", TEXT, "--backend", "openvino",
                 "--precision", "bf16", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.skipif(not NATIVE_BF16, reason="needs a CPU with native bf16 (AVX512_BF16 or AMX)")
def test_bf16_keeps_the_frames(tiny_bundle: Path, openvino_backend) -> None:
    with api.open(tiny_bundle, "openvino", precision="bf16", cache_dir=None) as bf16:
        frames = bf16.animate(TEXT, seed=5)
        executed = bf16.backend.executed["synthesis"]
    from lgfa_deploy.pipeline import Animator

    reference = Animator(openvino_backend.bundle, openvino_backend).animate(TEXT, seed=5)
    assert "bf16" in executed["layers"] and executed["kept_fp32"] > 0
    assert min(psnr(x, y) for x, y in zip(frames, reference)) >= 38


def test_other_backends_refuse_bf16_and_openvino_refuses_cuda(tiny_bundle: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    with pytest.raises(LgfaError, match="onnxruntime backend runs fp32, fp16, not bf16; bf16 runs on --backend openvino"):
        open_backend("onnxruntime", bundle, device="cpu", precision="bf16")
    with pytest.raises(LgfaError, match="runs on the CPU"):
        open_backend("openvino", bundle, device="cuda")
    with pytest.raises(LgfaError, match="hint 'fast' is unknown"):
        open_backend("openvino", bundle, device="cpu", hint="fast")


def test_vectors_torgb_and_widest_layers_keep_fp32() -> None:
    assert keeps_fp32((1, 512), fp32_from=0)  # a style or demodulation vector
    assert keeps_fp32((2, 512, 1, 1), fp32_from=0)  # the same, unsqueezed over a feature map
    assert keeps_fp32((1, 3, 64, 64), fp32_from=0)  # a ToRGB or the image skip path, any width
    assert keeps_fp32((2, 32, 1024, 1024), fp32_from=1024)
    assert keeps_fp32((None, 64, 512, 512), fp32_from=512)
    assert not keeps_fp32((1, 64, 512, 512), fp32_from=1024)
    assert not keeps_fp32((1, 64, 1024, 1024), fp32_from=0)
    assert not keeps_fp32((1, 512, 4, 4), fp32_from=0)


# -- auto -------------------------------------------------------------------------------------------
def test_auto_picks_by_the_cpu_and_says_so(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    bundle = Bundle.open(tiny_bundle)
    choice = choose_backend(bundle, "cpu", "auto")
    if NATIVE_BF16:
        assert (choice.backend, choice.precision) == ("openvino", "bf16")
    else:
        assert (choice.backend, choice.precision) == (fastest_fp32(bundle.resolution, ["openvino", "onnxruntime"]), "fp32")
        assert "no native bf16" in choice.reason
    # A CPU that reports bf16 gets openvino bf16; an explicit fp32 never becomes bf16.
    from lgfa_deploy.backends import choice as choice_module

    monkeypatch.setattr(choice_module, "_openvino_capabilities", lambda: ["FP32", "BF16", "INT8"])
    bf16 = choose_backend(bundle, "cpu", "auto")
    assert (bf16.backend, bf16.precision) == ("openvino", "bf16")
    assert choose_backend(bundle, "cpu", "fp32").precision == "fp32"
    monkeypatch.undo()
    caplog.set_level("INFO")
    with api.open(tiny_bundle, device="cpu") as animator:
        assert animator.backend.name == choice.backend and animator.backend.precision == choice.precision
    assert f"backend auto: {choice.backend} {choice.precision}" in caplog.text


def test_fastest_fp32_follows_the_measurements() -> None:
    assert fastest_fp32(256, ["openvino", "onnxruntime"]) == "onnxruntime"
    assert fastest_fp32(1024, ["openvino", "onnxruntime"]) == "openvino"
    assert fastest_fp32(1024, ["onnxruntime"]) == "onnxruntime"


# -- bench and verify --------------------------------------------------------------------------------
def test_bench_rows_carry_the_executed_precision(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime,openvino", "--precision", "fp32,bf16",
                 "--batch", "1", "--no-baseline", "--no-cpu-peak", "--iters", "2", "--warmup", "1", "--frames", "4",
                 "--stages", "synthesis,first_frame,stream", "--option", f"openvino.cache_dir={tmp_path / 'cache'}",
                 "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    rows = [r for r in doc["results"] if r["backend"] == "openvino"]
    assert {r["stage"] for r in rows} == {"synthesis", "first_frame", "stream"}
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    assert fp32 and all(r["executed_precision"] == "f32" and r["executed"]["synthesis"]["hint"] == "f32" for r in fp32)
    if NATIVE_BF16:
        assert all("bf16" in r["executed_precision"] for r in rows if r["precision"] == "bf16")
    else:
        assert not [r for r in rows if r["precision"] == "bf16"]
        assert {(s["backend"], s["precision"]) for s in doc["skipped"]} == {("onnxruntime", "bf16"), ("openvino", "bf16")}
        assert "no native bf16" in next(s["reason"] for s in doc["skipped"] if s["backend"] == "openvino")
    assert "openvino_capabilities" in doc["device"]["cpu"]


# -- the bf16 emulation behind the policy ------------------------------------------------------------
def test_bf16_rounding_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    emulation = load_script("bf16_emulation")
    values = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 10.0 ** np.arange(-5, 5).repeat(1000)
    values[:4] = [1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-8), 0.0]  # ties go to even
    expected = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    assert np.array_equal(emulation.round_bf16(values), expected)


def test_emulated_bf16_loses_precision_and_the_policy_wins_it_back(tiny_bundle: Path) -> None:
    import onnx

    emulation = load_script("bf16_emulation")
    model = onnx.load(str(tiny_bundle / "synthesis.onnx"))
    bundle = Bundle.open(tiny_bundle)
    latents = emulation._latents(bundle, 2, 1)
    run = lambda m: np.concatenate([emulation._session(m, 1).run(["image"], {"latents": latents[i : i + 1]})[0] for i in range(2)])  # noqa: E731
    reference = run(model)
    plain, rounded, kept = emulation.emulate_bf16(model, None)
    assert kept == 0 and rounded > 0
    policy, _, kept = emulation.emulate_bf16(model, 0)
    assert kept > 0
    plain_db, policy_db = emulation.psnr(reference, run(plain)), emulation.psnr(reference, run(policy))
    assert 25 < plain_db < 60, "bf16 rounding should cost something, and not everything"
    assert policy_db > plain_db + 1


def test_verify_runs_the_values_on_openvino(tiny_bundle: Path, capsys) -> None:
    """`lgfa verify --backend openvino`: every graph's values on the openvino backend against PyTorch."""
    assert main(["verify", str(tiny_bundle), "--backend", "openvino"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if " openvino b=" in line]
    graphs = {line.split()[0] for line in rows}
    assert graphs == set(Bundle.open(tiny_bundle).graph_names) and all(" ok " in line for line in rows)
    assert any(line.startswith("synthesis") and "PSNR" in line for line in rows)
    assert any(line.startswith("text_encoder") and "cosine" in line for line in rows)
    code = main(["verify", str(tiny_bundle), "--precision", "bf16"])
    assert code == 2 and "applies to --backend openvino" in capsys.readouterr().err
