"""``lgfa serve`` and ``lgfa client`` against a real Triton server (PyTriton's) on loopback, tiny bundle."""
from __future__ import annotations

import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from lgfa_deploy.cli import main
from lgfa_deploy.serve.local import REPO, ServerProcess, free_ports, lgfa_command, lgfa_env, start_serve
from tests.helpers import read_video

pytest.importorskip("pytriton")
pytest.importorskip("tritonclient.grpc")

from lgfa_deploy.errors import LgfaError
from lgfa_deploy.serve.client import AnimationClient

TEXT = "The person is smiling."
MODELS = ("animate", "clip", "stats")


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory) -> ServerProcess:
    """One ``lgfa serve`` for the module; the last test stops it with SIGTERM."""
    process = start_serve(tiny_bundle, tmp_path_factory.mktemp("serve") / "serve.log")
    process.wait_ready(MODELS)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def animate_frames(tiny_bundle) -> dict[int, list[np.ndarray]]:
    """Frames of TEXT made in this process by the pipeline, for seeds 0 to 7."""
    import lgfa_deploy

    with lgfa_deploy.open(tiny_bundle) as animator:
        return {seed: list(animator.animate(TEXT, seed=seed)) for seed in range(8)}


def test_served_frames_equal_lgfa_animate(server, tiny_bundle, tmp_path) -> None:
    out = tmp_path / "frames"
    assert main(["animate", "--bundle", str(tiny_bundle), "--text", TEXT, "--seed", "3", "--out", str(out)]) == 0
    expected = [cv2.imread(str(path)) for path in sorted(out.glob("*.png"))]  # PNG: lossless
    with AnimationClient(server.url) as client:
        served = list(client.frames(TEXT, seed=3))
    assert len(served) == len(expected) == 16
    for got, want in zip(served, expected):
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_clip_model_over_plain_http_equals_lgfa_animate(server, animate_frames) -> None:
    from tritonclient import http

    client = http.InferenceServerClient(server.http_url)
    text = http.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([TEXT.encode()], dtype=np.object_))
    seed = http.InferInput("seed", [1], "INT64")
    seed.set_data_from_numpy(np.array([5], dtype=np.int64))
    frames = client.infer("clip", [text, seed]).as_numpy("frames")
    client.close()
    np.testing.assert_array_equal(frames, np.stack(animate_frames[5]))


def test_a_latent_is_the_face(server, animate_frames, tiny_bundle) -> None:
    import lgfa_deploy

    with lgfa_deploy.open(tiny_bundle) as animator:
        content = animator.content(seed=6)
    with AnimationClient(server.url) as client:
        served = list(client.frames(TEXT, seed=0, latent=content[0]))
    np.testing.assert_array_equal(np.stack(served), np.stack(animate_frames[6]))


def test_concurrent_streams_are_batched_in_order_and_complete(server, animate_frames) -> None:
    with AnimationClient(server.url) as client:
        client.stats(reset=True)

    def stream(seed: int) -> list[np.ndarray]:
        with AnimationClient(server.url) as client:
            return list(client.frames(TEXT, seed=seed))  # the client checks every index arrives in order

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(stream, range(8)))
    for seed, frames in enumerate(results):
        np.testing.assert_array_equal(np.stack(frames), np.stack(animate_frames[seed]))
    with AnimationClient(server.url) as client:
        stats = client.stats()
    assert stats["frames"] == 8 * 16
    assert stats["active_streams"] == 0
    batches = {int(size): count for size, count in stats["batches"].items()}
    assert max(batches) > 1, f"8 concurrent streams never shared a synthesis call: {batches}"


def _bad_request(server: ServerProcess, inputs: list) -> str:
    from tritonclient import grpc

    client = grpc.InferenceServerClient(server.url)
    try:
        with pytest.raises(grpc.InferenceServerException) as raised:
            client.infer("clip", inputs)
    finally:
        client.close()
    return str(raised.value)


def _tensor(name: str, array: np.ndarray, dtype: str):
    from tritonclient import grpc

    tensor = grpc.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_bad_requests_get_errors_while_a_stream_goes_on(server, animate_frames) -> None:
    text = _tensor("text", np.array([TEXT.encode()], dtype=np.object_), "BYTES")
    seed = _tensor("seed", np.array([1], dtype=np.int64), "INT64")
    streamed: list[np.ndarray] = []
    with AnimationClient(server.url) as client:
        frames = client.frames(TEXT, seed=2)
        streamed.append(next(frames))
        messages = {
            "empty": _bad_request(server, [_tensor("text", np.array([b"  "], dtype=np.object_), "BYTES"), seed]),
            "long": _bad_request(server, [_tensor("text", np.array([b"word " * 100], dtype=np.object_), "BYTES"), seed]),
            "dtype": _bad_request(server, [text, _tensor("seed", np.array([1.0], dtype=np.float32), "FP32")]),
            "missing": _bad_request(server, [text]),
            "latent": _bad_request(server, [text, seed, _tensor("latent", np.full((8, 64), np.nan, np.float32), "FP32")]),
        }
        streamed.extend(frames)
    np.testing.assert_array_equal(np.stack(streamed), np.stack(animate_frames[2]))
    assert "the text is empty" in messages["empty"]
    assert "tokens long" in messages["long"]
    assert "seed" in messages["dtype"] and re.search(r"FP32|data ?type", messages["dtype"], re.IGNORECASE)
    assert "seed" in messages["missing"]
    assert "NaN" in messages["latent"]


def test_the_client_says_a_refusal_in_one_line(server) -> None:
    with AnimationClient(server.url) as client:
        with pytest.raises(LgfaError, match=r"^the server refused the request: the text is empty") as raised:
            list(client.frames(""))
    assert "\n" not in str(raised.value)


def test_a_client_leaving_mid_stream_frees_its_slot(server, animate_frames) -> None:
    with AnimationClient(server.url) as client:
        frames = client.frames(TEXT, seed=4)
        next(frames)
        frames.close()  # cancels the stream
    with AnimationClient(server.url) as client:
        deadline = 60.0
        waited = 0.0
        while client.stats()["active_streams"] and waited < deadline:
            threading.Event().wait(0.2)
            waited += 0.2
        assert client.stats()["active_streams"] == 0

    def stream(seed: int) -> list[np.ndarray]:
        with AnimationClient(server.url) as client:
            return list(client.frames(TEXT, seed=seed))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(stream, range(8)))
    assert [len(frames) for frames in results] == [16] * 8


def test_client_writes_raw_frames_and_mp4(server, animate_frames, tmp_path) -> None:
    raw = subprocess.run(
        lgfa_command("client", "--url", server.url, "--text", TEXT, "--seed", "1", "--raw"),
        capture_output=True, env=lgfa_env(), cwd=REPO, timeout=120,
    )
    assert raw.returncode == 0, raw.stderr.decode()
    frames = np.frombuffer(raw.stdout, np.uint8).reshape(-1, 32, 32, 3)
    np.testing.assert_array_equal(frames, np.stack(animate_frames[1]))

    video = tmp_path / "two.mp4"
    assert main(["client", "--url", server.url, "--text", TEXT, "--text", "The person is angry.", "--out", str(video)]) == 0
    decoded = read_video(video)
    assert len(decoded) == 32 and decoded[0].shape == (32, 32, 3)


def test_client_without_a_server_is_one_line(tmp_path, capsys) -> None:
    (port,) = free_ports(1)
    code = main(["client", "--url", f"127.0.0.1:{port}", "--text", TEXT, "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("lgfa client: error: no server answers at") and "\n" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_a_second_server_on_a_taken_port_says_so(server, tiny_bundle) -> None:
    http_port, metrics_port = free_ports(2)
    second = subprocess.run(
        lgfa_command("serve", "--bundle", str(tiny_bundle), "--grpc-port", str(server.grpc_port),
                     "--http-port", str(http_port), "--metrics-port", str(metrics_port)),
        capture_output=True, text=True, env=lgfa_env(), cwd=REPO, timeout=120,
    )
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"port {server.grpc_port} on 127.0.0.1 (grpc) is taken" in lines[0]


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_load_test_level_counts_frames_and_batches_and_renders(server) -> None:
    serve_load, make_table = _script("serve_load"), _script("make_table")
    level = serve_load.run_level(server.url, streams=3, sentences=2, frames_per_text=16, timeout=120)
    assert level["frames_expected"] == level["frames_received"] == 3 * 2 * 16 and level["frames_lost"] == 0
    assert not level["errors"]
    assert sum(int(size) * count for size, count in level["server_batches"].items()) == 96
    assert all(len(stream["first_frame_ms"]) == 2 and stream["frames"] == 32 for stream in level["per_stream"])
    assert level["aggregate_fps"] > 0
    level["x_one_stream"] = None
    document = {
        "created": "2026-11-30T00:00:00", "command": "serve_load.py", "cpus": 2, "sentences_per_stream": 2,
        "bundle": {"preset": "tiny", "resolution": 32, "frames": 16}, "device": {"name": "test CPU"},
        "server": {"backend": "onnxruntime"}, "load_average_before": [1, 1, 1], "load_average_after": [1, 1, 1],
        "levels": [level],
    }
    lines = make_table.serve_section(document, "cpu-test-serve")
    row = next(line for line in lines if line.startswith("| 3 |"))
    assert "| 96 (0) |" in row and f"mean {level['server_mean_batch']:.2f}" in row


def test_sigterm_drains_streams_in_flight_then_exits_0(server, animate_frames) -> None:
    """Run last in this module: it stops the module's server, once every stream has its first frame."""
    streaming = threading.Barrier(9)

    def stream(seed: int) -> list[np.ndarray]:
        with AnimationClient(server.url) as client:
            frames = client.frames(TEXT, seed=seed)
            received = [next(frames)]
            streaming.wait(timeout=60)
            received.extend(frames)
            return received

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(stream, seed) for seed in range(8)]
        streaming.wait(timeout=60)
        code = server.stop()
        results = [future.result(timeout=120) for future in futures]
    assert code == 0, server.log.read_text()[-3000:]
    for seed, frames in enumerate(results):
        np.testing.assert_array_equal(np.stack(frames), np.stack(animate_frames[seed]))
    log = server.log.read_text()
    assert re.search(r"stopping: [1-8] stream\(s\) in flight", log), log[-3000:]


def test_serve_listens_on_loopback_by_default() -> None:
    import argparse

    from lgfa_deploy.commands import serve as serve_command

    parser = argparse.ArgumentParser()
    serve_command.add_arguments(parser)
    assert parser.parse_args(["--bundle", "x"]).host == "127.0.0.1"
