"""The runtime on a tiny random bundle: backends, pipeline, chaining, the API and the commands."""
from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lgfa_deploy import api
from lgfa_deploy.backends import open_backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.cli import main
from lgfa_deploy.pipeline import Animator
from tests.helpers import psnr, read_video

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The person is smiling."
TEXTS = ["The person is smiling.", "The person is angry.", "The person is closing eyes."]
T, RES, L, S = 16, 32, 8, 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runtime") / "tiny"
    assert main(["export", "--preset", "tiny", "--random-init", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def ort(bundle_dir: Path) -> Animator:
    with api.open(bundle_dir, "onnxruntime", device="cpu") as animator:
        yield animator


@pytest.fixture(scope="module")
def torch_animator(bundle_dir: Path) -> Animator:
    with api.open(bundle_dir, "torch", device="cpu") as animator:
        yield animator


# -- pipeline and backends -------------------------------------------------------------------------
def test_animate_frames_and_determinism(ort: Animator) -> None:
    frames = ort.animate(TEXT, seed=3)
    assert frames.shape == (T, RES, RES, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, ort.animate(TEXT, seed=3))
    assert not np.array_equal(frames, ort.animate(TEXT, seed=4))
    assert not np.array_equal(frames, ort.animate("The person is angry.", seed=3))
    assert not np.array_equal(frames[0], frames[-1]), "the face should move"


def test_onnxruntime_matches_the_pytorch_reference(ort: Animator, bundle_dir: Path) -> None:
    from training.checkpoints import load_models
    from training.reference import animate_reference

    models = load_models(checkpoint=str(bundle_dir / "weights.safetensors"))
    reference = animate_reference(models, TEXT, seed=5)
    frames = ort.animate(TEXT, seed=5)
    assert np.abs(reference.astype(int) - frames.astype(int)).max() <= 1


def test_onnxruntime_and_torch_backends_agree(ort: Animator, torch_animator: Animator) -> None:
    assert torch_animator.backend.name == "torch"
    for seed, text in ((0, TEXT), (7, "The person is surprised.")):
        a, b = ort.animate(text, seed=seed), torch_animator.animate(text, seed=seed)
        assert min(psnr(x, y) for x, y in zip(a, b)) >= 40


def test_torch_reference_formulation_matches_export(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lgfa_deploy.backends import torch_backend
    from lgfa_deploy.errors import LgfaError

    calls: list[int] = []
    synthesis_reference = torch_backend.synthesis_reference
    monkeypatch.setattr(
        torch_backend, "synthesis_reference", lambda g, x: calls.append(len(x)) or synthesis_reference(g, x)
    )
    bundle = Bundle.open(tiny_bundle)
    rng = np.random.default_rng(3)
    with (
        open_backend("torch", bundle, device="cpu") as export,
        open_backend("torch", bundle, device="cpu", formulation="reference") as reference,
    ):
        w = export.run("mapping", {"z": rng.standard_normal((2, S)).astype(np.float32)})["w"]
        latents = (w[:, None] + 0.3 * rng.standard_normal((2, L, S))).astype(np.float32)
        frames, reference_frames = export.frames(latents), reference.frames(latents)
        assert frames.shape == (2, RES, RES, 3) and len(np.unique(frames)) > 100
        assert np.abs(frames.astype(int) - reference_frames.astype(int)).max() <= 1
        images = export.run("synthesis", {"latents": latents})["image"]
        reference_images = reference.run("synthesis", {"latents": latents})["image"]
        assert np.abs(images - reference_images).max() < 1e-4 * np.abs(images).max()
        assert calls == [2, 2], "frames and run('synthesis') of the reference backend, none of the export one"
    with pytest.raises(LgfaError, match=r"torch formulation 'rosinality' is unknown; choose export or reference"):
        open_backend("torch", bundle, device="cpu", formulation="rosinality")
    with pytest.raises(LgfaError, match="reference formulation runs fp32 only"):
        open_backend("torch", bundle, device="cpu", precision="fp16", formulation="reference")


def test_channels_last_layout_keeps_the_generator_and_its_images(tiny_bundle: Path) -> None:
    """The GPU path's memory layout, checked on the CPU (the first H200 run failed here: ``Module.to`` with a
    memory format refuses the modulated convolutions' 5-D weights)."""
    import torch

    from lgfa_deploy.backends.torch_backend import to_channels_last
    from training.checkpoints import load_models

    generator = load_models(checkpoint=str(Bundle.open(tiny_bundle).weights_path)).generator.eval()
    latents = torch.randn(2, L, S, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = generator.synthesis(latents)
    assert to_channels_last(generator) is generator
    tensors = list(itertools.chain(generator.parameters(), generator.buffers()))
    four_d = [t for t in tensors if t.dim() == 4]
    assert four_d and all(t.is_contiguous(memory_format=torch.channels_last) for t in four_d)
    assert any(not t.is_contiguous() for t in four_d), "the constant input [1, C, 4, 4] changed its layout"
    assert all(t.is_contiguous() for t in tensors if t.dim() == 5)
    with torch.no_grad():
        torch.testing.assert_close(generator.synthesis(latents), before, rtol=1e-5, atol=1e-5)


def test_backend_run_checks_batch_and_inputs(bundle_dir: Path) -> None:
    from lgfa_deploy.errors import LgfaError

    with open_backend("onnxruntime", Bundle.open(bundle_dir), device="cpu") as backend:
        w = backend.run("mapping", {"z": np.zeros((2, S), np.float32)})["w"]
        assert w.shape == (2, S) and w.dtype == np.float32
        with pytest.raises(LgfaError, match="batches of 1 to 16, got 17"):
            backend.run("mapping", {"z": np.zeros((17, S), np.float32)})
        with pytest.raises(LgfaError, match="takes inputs"):
            backend.run("mapping", {"x": np.zeros((1, S), np.float32)})
        with pytest.raises(LgfaError, match="must have shape"):
            backend.run("synthesis", {"latents": np.zeros((1, L + 1, S), np.float32)})
        with pytest.raises(LgfaError, match="has no graph 'decoder'"):
            backend.run("decoder", {})
        with pytest.raises(LgfaError, match=r"takes inputs \['text_embedding', 'image_embedding'\]"):
            backend.run("motion", {"text_embedding": np.zeros((1, S), np.float32)})


def test_device_binding_copies_each_call_into_the_same_buffers(bundle_dir: Path) -> None:
    """The onnxruntime backend's I/O binding (device buffers made once), run here on CPU buffers."""
    import onnxruntime

    from lgfa_deploy.backends.onnxruntime_backend import DeviceBinding

    bundle = Bundle.open(bundle_dir)
    session = onnxruntime.InferenceSession(str(bundle.graph_path("synthesis")), providers=["CPUExecutionProvider"])
    binding = DeviceBinding(session, bundle.graph("synthesis"), 2, "cpu", 0)
    buffers = [value.data_ptr() for value in (*binding.inputs.values(), *binding.outputs)]
    rng = np.random.default_rng(0)
    for _ in range(2):
        latents = rng.standard_normal((2, bundle.n_latent, bundle.style_dim)).astype(np.float32)
        (image,) = binding.run({"latents": latents})
        np.testing.assert_allclose(image, session.run(["image"], {"latents": latents})[0], atol=1e-5)
    assert [value.data_ptr() for value in (*binding.inputs.values(), *binding.outputs)] == buffers


def test_latent_content_matches_seed_content(ort: Animator, tmp_path: Path) -> None:
    content = ort.content(seed=2)
    assert content.shape == (1, L, S)
    flat, batched = tmp_path / "w.npy", tmp_path / "w1.npy"
    np.save(flat, content[0])
    np.save(batched, content.astype(np.float64))
    expected = ort.animate(TEXT, seed=2)
    assert np.array_equal(ort.animate(TEXT, latent=flat), expected)
    assert np.array_equal(ort.animate(TEXT, latent=str(batched)), expected)
    assert np.array_equal(ort.animate(TEXT, latent=content), expected)


def test_text_embedding_is_cached(ort: Animator, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    run = ort.backend.run
    monkeypatch.setattr(ort.backend, "run", lambda graph, inputs: calls.append(graph) or run(graph, inputs))
    ort.offsets("The person is winking.")
    ort.offsets(" The person is winking. ")
    ort.offsets("The person is pouting.")
    assert calls == ["text_encoder", "motion", "motion", "text_encoder", "motion"]


def test_warm_up_runs_every_stream_batch_size(ort: Animator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm-up covers every micro-batch size streams and clips use, for every micro-batch setting."""
    sizes: list[int] = []
    frames = ort.backend.frames
    monkeypatch.setattr(ort.backend, "frames", lambda latents: sizes.append(len(latents)) or frames(latents))
    ort.warm_up()
    assert sizes == ort.stream_batch_sizes()
    spec = ort.bundle.graph("synthesis").batch
    for micro_batch in range(spec.min, spec.max + 1):
        animator = Animator(ort.bundle, ort.backend, micro_batch=micro_batch)  # not closed: it shares the backend
        sizes.clear()
        for _ in range(3):  # the first batch of later segments depends on how fast the consumer is
            list(animator.stream([TEXT, "The person is angry.", TEXT], seed=1))
        animator.animate(TEXT, seed=1)
        used = set(sizes)
        warmed = animator.stream_batch_sizes()
        assert used <= set(warmed), (micro_batch, used, warmed)
        assert set(warmed) - used <= {1, (animator.frames_per_text - 2) % micro_batch}  # nothing warmed in vain


def test_stream_of_one_text_is_animate(ort: Animator) -> None:
    frames = np.stack(list(ort.stream(TEXT, seed=3)))
    assert np.array_equal(frames, ort.animate(TEXT, seed=3))


def test_chaining_continues_where_the_last_segment_ended(ort: Animator) -> None:
    segments = list(ort.segment_latents(TEXTS, seed=4))
    assert [s.shape for s in segments] == [(T, L, S)] * 3
    for before, after in zip(segments, segments[1:]):
        # Segment k+1's frame 0 is segment k's last frame: content_{k+1} = w_{T-1}^k - offsets_{k+1}[0].
        assert np.array_equal(after[0], before[-1])
        assert not np.allclose(after[1], after[0])
    rendered = [ort.render(s) for s in segments]
    for before, after in zip(rendered, rendered[1:]):
        assert np.abs(after[0].astype(int) - before[-1].astype(int)).max() <= 1
    # A stream emits the shared frame once: T frames, then T - 1 for each further sentence.
    streamed = np.stack(list(ort.stream(TEXTS, seed=4)))
    assert len(streamed) == T + 2 * (T - 1)
    expected = np.concatenate([rendered[0], rendered[1][1:], rendered[2][1:]])
    assert np.abs(streamed.astype(int) - expected.astype(int)).max() <= 1
    # The first segment starts from the seed's face like a single clip.
    assert np.array_equal(streamed[:T], ort.animate(TEXTS[0], seed=4))


def _parked_in(thread_name: str, function: str, timeout: float = 120.0) -> bool:
    """Wait until the thread called ``thread_name`` is inside ``function`` (checked every 10 ms, up to ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        thread = next((t for t in threading.enumerate() if t.name == thread_name), None)
        frame = sys._current_frames().get(thread.ident) if thread is not None else None
        while frame is not None:
            if frame.f_code.co_name == function:
                return True
            frame = frame.f_back
        time.sleep(0.01)
    return False


def test_stream_is_bounded_and_stops_with_its_consumer(ort: Animator) -> None:
    pulled: list[str] = []
    second = threading.Event()

    def endless():
        for text in itertools.cycle(TEXTS):
            pulled.append(text)
            if len(pulled) == 2:
                second.set()
            yield text

    frames = ort.stream_frames(endless(), seed=0)
    first = next(frames)
    assert first.index == 0 and first.segment == 0 and first.image.shape == (RES, RES, 3)
    # The queue holds queue_batches (4) micro-batches (4 frames): the rest of sentence 1, then the
    # producer takes up sentence 2 and waits to put it. It does not run ahead through the endless texts.
    assert second.wait(timeout=120), "the producer never took up sentence 2"
    assert _parked_in("lgfa-producer", "_put"), "the producer never waited on its full queue"
    assert len(pulled) == 2
    frames.close()
    assert not any(t.name == "lgfa-producer" and t.is_alive() for t in threading.enumerate())


# -- commands ------------------------------------------------------------------------------------------
def test_animate_command_writes_mp4_and_pngs(bundle_dir: Path, ort: Animator, tmp_path: Path, capsys) -> None:
    out = tmp_path / "clip.mp4"
    assert main(["animate", "--bundle", str(bundle_dir), "--text", TEXT, "--seed", "1", "--out", str(out)]) == 0
    frames = read_video(out)
    assert len(frames) == T and frames[0].shape == (RES, RES, 3)
    assert "random-init" in capsys.readouterr().out
    pngs = tmp_path / "frames"
    assert main(["animate", "--bundle", str(bundle_dir), "--text", TEXT, "--backend", "onnxruntime",
                 "--micro-batch", "3", "--out", str(pngs)]) == 0
    assert sorted(p.name for p in pngs.iterdir())[-1] == f"frame_{T - 1:04d}.png"
    assert np.array_equal(cv2.imread(str(pngs / "frame_0000.png")), ort.animate(TEXT, seed=0)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "frames"]


def test_stream_command_writes_chained_mp4(bundle_dir: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("# a comment\nThe person is smiling.\n\nThe person is angry.\n")
    out = tmp_path / "talk.mp4"
    args = ["stream", "--bundle", str(bundle_dir), "--texts", str(texts), "--out", str(out), "--seed", "2", "--quiet"]
    assert main(args) == 0
    frames = read_video(out)
    assert len(frames) == 2 * T - 1 and frames[0].shape == (RES, RES, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4", "texts.txt"]


def _subprocess(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, timeout=120, **kwargs)


def test_runs_without_torch(bundle_dir: Path, ort: Animator, tmp_path: Path) -> None:
    """animate and stream --raw with torch made unimportable; the torch backend then names its extra."""
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS[:2]) + "\n")
    out = tmp_path / "clip.mp4"
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None\n"
        "from lgfa_deploy.cli import main\n"
        "b, texts, out = sys.argv[1:4]\n"
        "s = main(['stream', '--bundle', b, '--backend', 'onnxruntime', '--texts', texts, '--raw'])\n"
        "a = main(['animate', '--bundle', b, '--backend', 'onnxruntime', '--text', 'The person is smiling.', '--out', out])\n"
        "t = main(['animate', '--bundle', b, '--backend', 'torch', '--text', 'x', '--out', out + '.2.mp4'])\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write(json.dumps([a, s, t, sorted(m for m, v in sys.modules.items() if v and m.startswith(('torch', 'training')))]))\n"
    )
    result = _subprocess(code, str(bundle_dir), str(texts), str(out))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    *log, last = result.stderr.decode().strip().splitlines()
    animate_code, stream_code, torch_code, imported = json.loads(last)
    assert (animate_code, stream_code, torch_code) == (0, 0, 2)
    assert imported == [], "lgfa_deploy imported torch or training on the onnxruntime path"
    assert any("lgfa-deploy[train]" in line for line in log)
    assert len(read_video(out)) == T
    size = (2 * T - 1) * RES * RES * 3  # raw bgr24 frames first, then animate's summary line
    raw = np.frombuffer(result.stdout[:size], np.uint8).reshape(2 * T - 1, RES, RES, 3)
    assert np.array_equal(raw, np.stack(list(ort.stream(TEXTS[:2]))))
    assert result.stdout[size:].startswith(b"wrote 16 frames")
    assert not (tmp_path / "clip.mp4.2.mp4").exists()


def test_ctrl_c_ends_stream_keeping_a_playable_file_and_side_files(bundle_dir: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "endless.mp4"
    # A shell that runs the suite in the background passes SIGINT on ignored, and Python then keeps
    # ignoring it: the child restores Ctrl-C's default handler before the command starts.
    ctrl_c_enabled = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from lgfa_deploy.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", ctrl_c_enabled, "stream", "--bundle", str(bundle_dir), "--texts", str(texts),
         "--loop", "--fps", "200", "--out", str(out), "--save-latent", str(tmp_path / "w.npy")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if line.startswith("sentence 3"):
                break
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    lines.append(rest)
    assert process.returncode == 0, "".join(lines)
    assert "stopped by Ctrl-C" in "".join(lines)
    assert len(read_video(out)) >= 2 * T  # at least up to the first frame of sentence 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["endless.mp4", "texts.txt", "w.npy"]  # no temporary file


# -- TensorRT: what can be checked without it -------------------------------------------------------------
def _engine(graph: str, cc: str = "9.0", version: str = "10.3.0.26", precision: str = "fp16",
            name: str = "NVIDIA H100 80GB HBM3") -> dict:
    return {"graph": graph, "file": f"{graph}.{precision}.sm{cc.replace('.', '')}.plan", "sha256": "0" * 64,
            "tensorrt_version": version, "device_name": name, "compute_capability": cc, "precision": precision,
            "profile": {"min": 1, "opt": 4, "max": 16}}


def test_tensorrt_engine_selection(bundle_dir: Path) -> None:
    from lgfa_deploy.backends.tensorrt_backend import select_engine
    from lgfa_deploy.errors import LgfaError

    manifest = dict(Bundle.open(bundle_dir).manifest)
    manifest["engines"] = {
        "synthesis.fp16.sm80": _engine("synthesis", cc="8.0", name="NVIDIA A100-SXM4-80GB"),
        "synthesis.fp16.sm90": _engine("synthesis", cc="9.0"),
        "motion.fp32.sm90": _engine("motion", precision="fp32"),
    }
    bundle = Bundle(bundle_dir, manifest)
    h100 = "NVIDIA H100 80GB HBM3"
    assert select_engine(bundle, "synthesis", "fp16", "10.3.0.26", "9.0", h100)["file"] == "synthesis.fp16.sm90.plan"
    assert select_engine(bundle, "synthesis", "fp16", "10.3.0", "8.0", "NVIDIA A100-SXM4-80GB")["compute_capability"] == "8.0"
    cases = [
        (("synthesis", "fp16", "10.3.0", "8.9", "NVIDIA L4"),
         r"built for NVIDIA A100-SXM4-80GB \(compute capability 8.0\) with TensorRT 10.3.0.26, "
         r"but this machine has NVIDIA L4 \(compute capability 8.9\)"),
        (("synthesis", "fp16", "10.4.0", "9.0", h100), "with TensorRT 10.4.0"),
        (("synthesis", "fp16", "10.3.0", "9.0", "NVIDIA H200"), "this machine has NVIDIA H200"),  # same sm, other GPU
        (("synthesis", "fp32", "10.3.0", "9.0", h100), "synthesis engines in fp16, none in fp32"),
        (("mapping", "fp16", "10.3.0", "9.0", h100), "no TensorRT engine for graph mapping"),
    ]
    for args, message in cases:
        with pytest.raises(LgfaError, match=message) as error:
            select_engine(bundle, *args)
        assert "lgfa build-engines" in str(error.value) and "\n" not in str(error.value)


def test_tensorrt_engine_io_is_checked_against_the_manifest(bundle_dir: Path) -> None:
    from lgfa_deploy.backends.tensorrt_backend import check_engine_io
    from lgfa_deploy.errors import LgfaError

    synthesis = Bundle.open(bundle_dir).graph("synthesis")
    check_engine_io("s.plan", synthesis, ["latents"], ["image"])
    check_engine_io("s.plan", synthesis, ["latents"], ["image", "frames"])
    for inputs, outputs in ((["latents"], []), (["w"], ["image"]), (["latents"], ["image", "extra"])):
        with pytest.raises(LgfaError, match="rebuild it with 'lgfa build-engines'") as error:
            check_engine_io("s.plan", synthesis, inputs, outputs)
        assert "\n" not in str(error.value)


def test_tensorrt_not_installed_says_how_to_install(bundle_dir: Path) -> None:
    from lgfa_deploy.errors import LgfaError

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(LgfaError, match=r"pip install 'lgfa-deploy\[tensorrt\]'"):
            open_backend("tensorrt", Bundle.open(bundle_dir))
    else:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(LgfaError, match="runs on an NVIDIA GPU only"):
        open_backend("tensorrt", Bundle.open(bundle_dir), device="cpu")


# -- bad input: one line, exit 2, no traceback, no output file ---------------------------------------------
def fails(capsys: pytest.CaptureFixture, args: list[str], match: str) -> None:
    """``lgfa ARGS`` ends with exit code 2 and one error line matching ``match``."""
    code = main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("lgfa ")]
    assert code == 2 and "Traceback" not in err, err
    assert len(errors) == 1 and ": error: " in errors[0], err
    assert re.search(match, errors[0]), errors[0]


@pytest.fixture
def broken_copy(bundle_dir: Path, tmp_path: Path):
    """A fresh copy of the bundle to damage."""
    import shutil

    def make(name: str = "copy") -> Path:
        return Path(shutil.copytree(bundle_dir, tmp_path / name))

    return make


def test_missing_tampered_and_truncated_bundles(broken_copy, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lgfa_deploy.bundle import file_entry

    out = tmp_path / "clip.mp4"
    animate = ["animate", "--backend", "onnxruntime", "--text", TEXT, "--out", str(out), "--bundle"]
    fails(capsys, [*animate, str(tmp_path / "nowhere")], "bundle .*nowhere does not exist")
    tampered = broken_copy("tampered")
    data = bytearray((tampered / "synthesis.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "synthesis.onnx").write_bytes(bytes(data))
    fails(capsys, [*animate, str(tampered)], r"synthesis.onnx does not match the sha256 in manifest.json")
    truncated = broken_copy("truncated")
    graph = truncated / "synthesis.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    fails(capsys, [*animate, str(truncated)], r"synthesis.onnx does not match the sha256 .*changed or truncated")
    # Re-hashed, as if exported broken: onnxruntime's refusal still comes out as one line.
    bundle = Bundle.open(truncated, verify_hashes=False)
    bundle.manifest["graphs"]["synthesis"]["files"]["fp32"] = file_entry(truncated, "synthesis.onnx")
    bundle.save_manifest()
    fails(capsys, [*animate, str(truncated)], r"onnxruntime cannot load .*synthesis.onnx .*truncated or damaged")
    assert not out.exists()


def test_unknown_and_missing_backends(bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lgfa_deploy.errors import LgfaError

    out = tmp_path / "clip.mp4"
    base = ["animate", "--bundle", str(bundle_dir), "--text", TEXT, "--out", str(out)]
    fails(capsys, [*base, "--backend", "tensorflow"], r"unknown backend 'tensorflow'; choose one of: auto, onnxruntime, openvino, tensorrt, torch")
    fails(capsys, [*base, "--device", "gpu"], r"unknown device 'gpu'; choose one of: auto, cpu, cuda")
    fails(capsys, [*base, "--precision", "int8"], r"unknown precision 'int8'")
    fails(capsys, [*base, "--backend", "onnxruntime", "--precision", "fp16"], r"no fp16 synthesis graph; re-export with '--precision fp16'")
    fails(capsys, [*base, "--compile"], r"--compile works with --backend torch only")
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        fails(capsys, [*base, "--device", "cuda"], r"pip install 'lgfa-deploy\[gpu\]'")
    with pytest.raises(LgfaError, match="unknown backend"):
        api.open(bundle_dir, "tensorflow")
    assert list(tmp_path.iterdir()) == []


def test_bad_texts(bundle_dir: Path, ort: Animator, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lgfa_deploy.errors import LgfaError

    out = tmp_path / "clip.mp4"
    base = ["animate", "--bundle", str(bundle_dir), "--out", str(out), "--text"]
    fails(capsys, [*base, "   "], "empty")
    too_long = " ".join(["very"] * 74) + " happy."  # 78 tokens with start and end of text
    fails(capsys, [*base, too_long], r"is 78 tokens long, CLIP reads at most 77 \(start and end of text included\)")
    assert ort.check_text(" ".join(["very"] * 74) + " happy") == " ".join(["very"] * 74) + " happy"  # 77: fine
    with pytest.raises(LgfaError, match="empty"):
        ort.animate("")
    with pytest.raises(LgfaError, match="78 tokens"):
        ort.stream(["The person is smiling.", too_long])  # a list is checked before anything runs
    texts = tmp_path / "texts.txt"
    texts.write_text(f"The person is smiling.\n{too_long}\n")
    stream = ["stream", "--bundle", str(bundle_dir), "--out", str(out), "--texts"]
    fails(capsys, [*stream, str(texts)], "78 tokens")
    texts.write_text("# only a comment\n\n")
    fails(capsys, [*stream, str(texts)], "has no sentences")
    fails(capsys, [*stream, str(tmp_path / "none.txt")], "none.txt does not exist")
    texts.unlink()
    assert list(tmp_path.iterdir()) == []


def test_bad_texts_on_stdin_leave_no_file(bundle_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """stdin is read as lines arrive: a bad line ends the stream with the error and removes the video."""
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("The person is smiling.\n" + "very " * 80 + "\n"))
    out = tmp_path / "talk.mp4"
    fails(capsys, ["stream", "--bundle", str(bundle_dir), "--texts", "-", "--out", str(out)], "tokens long")
    assert list(tmp_path.iterdir()) == []


def test_bad_content(bundle_dir: Path, ort: Animator, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lgfa_deploy.errors import LgfaError

    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    base = ["animate", "--bundle", str(bundle_dir), "--text", TEXT, "--out", str(out)]
    latents = tmp_path / "latents"
    latents.mkdir()
    np.save(latents / "wrong_shape.npy", np.zeros((L + 1, S), np.float32))
    fails(capsys, [*base, "--latent", str(latents / "wrong_shape.npy")],
          rf"has shape \[{L + 1}, {S}\]; this bundle takes W\+ of shape \[{L}, {S}\] or \[1, {L}, {S}\]")
    np.save(latents / "nan.npy", np.full((L, S), np.nan, np.float32))
    fails(capsys, [*base, "--latent", str(latents / "nan.npy")], "contains NaN or infinite values")
    fails(capsys, [*base, "--seed", "-1"], "the seed must be a whole number of 0 or more")
    np.save(latents / "batch2.npy", np.zeros((2, L, S), np.float32))
    np.save(latents / "ints.npy", np.zeros((L, S), np.int64))
    (latents / "text.npy").write_text("not an array")
    np.savez(latents / "two.npz", a=np.zeros((L, S)))
    cases = {
        "batch2.npy": r"has shape \[2, ",
        "ints.npy": r"holds int64 values; W\+ must be floating point",
        "text.npy": "is not a readable .npy array",
        "two.npz": "is an .npz archive",
        "missing.npy": "latent file .*missing.npy does not exist",
    }
    for name, message in cases.items():
        with pytest.raises(LgfaError, match=message):
            ort.content(latent=latents / name)
    fails(capsys, [*base, "--micro-batch", "17"], "micro-batch must be a whole number from 1 to 16")
    fails(capsys, [*base, "--frames", "8"], "unrolled for 16 frames")
    with pytest.raises(LgfaError, match="not both"):
        ort.animate(TEXT, seed=1, latent=np.zeros((L, S), np.float32))
    with pytest.raises(LgfaError, match="NaN or infinite"):
        ort.content(latent=np.full((1, L, S), np.inf))
    assert list(out.parent.iterdir()) == []


def test_bad_outputs(bundle_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXT + "\n")
    animate = ["animate", "--bundle", str(bundle_dir), "--text", TEXT, "--out"]
    fails(capsys, [*animate, str(tmp_path / "missing" / "clip.mp4")], "does not exist")
    fails(capsys, [*animate, str(texts / "clip.mp4")], "does not exist")
    stream = ["stream", "--bundle", str(bundle_dir), "--texts", str(texts)]
    fails(capsys, [*stream, "--out", str(tmp_path / "missing" / "talk.mp4")], "does not exist")
    fails(capsys, [*stream, "--out", str(tmp_path / "talk.png")], r"--out must be a video file")
    fails(capsys, [*stream, "--out", str(tmp_path / "talk.mp4"), "--fps", "0"], "--fps must be above 0")
    fails(capsys, ["stream", "--bundle", str(bundle_dir), "--texts", "-", "--loop", "--raw"], "cannot repeat stdin")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    fails(capsys, [*stream, "--window"], "--window needs a display, and DISPLAY is not set")
    monkeypatch.setenv("DISPLAY", ":99")
    if not _opencv_has_gui():
        fails(capsys, [*stream, "--window"], r"no GUI \(opencv-python-headless\)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]


def _opencv_has_gui() -> bool:
    line = next((x for x in cv2.getBuildInformation().splitlines() if x.strip().startswith("GUI:")), "")
    return "NONE" not in line.upper()


def test_onnxruntime_optimization_levels_agree(tiny_bundle) -> None:
    from lgfa_deploy.backends import open_backend
    from lgfa_deploy.bundle import Bundle
    from lgfa_deploy.errors import LgfaError

    bundle = Bundle.open(tiny_bundle)
    latents = np.random.default_rng(0).standard_normal((2, bundle.n_latent, bundle.style_dim)).astype(np.float32)
    images = []
    for level in ("disable", "all"):
        with open_backend("onnxruntime", bundle, device="cpu", optimization=level,
                          session_config={"session.intra_op.allow_spinning": "0"}) as backend:
            images.append(backend.run("synthesis", {"latents": latents})["image"])
    np.testing.assert_allclose(images[0], images[1], atol=1e-4)
    with pytest.raises(LgfaError, match="optimization 'max' is unknown"):
        open_backend("onnxruntime", bundle, device="cpu", optimization="max")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_graph_file_other_than_its_declaration_is_refused_in_one_line(tiny_bundle: Path, tmp_path: Path, backend: str) -> None:
    """A manifest that declares another output than the graph file gives: one line naming both."""
    from lgfa_deploy.errors import LgfaError
    from tests.helpers import copy_bundle

    pytest.importorskip(backend)
    bundle_dir = copy_bundle(tiny_bundle, tmp_path)
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["graphs"]["synthesis"]["outputs"][0]["name"] = "picture"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(LgfaError, match=r"outputs \['image'\], but the manifest declares \['latents'\] -> \['picture'\]; re-export the bundle"):
        with api.open(bundle_dir, backend=backend, device="cpu", precision="fp32") as animator:
            animator.animate("The person is smiling.", seed=0)
