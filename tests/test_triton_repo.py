"""``lgfa triton-repo``: configs parsed by Triton's own model-config protobuf, and the CPU flavour
served by the real ``tritonserver`` that PyTriton ships (tiny bundle, loopback)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from lgfa_deploy.bundle import Bundle
from lgfa_deploy.cli import main

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
pytest.importorskip("pytriton")

from google.protobuf import text_format

from lgfa_deploy.serve.client import AnimationClient
from lgfa_deploy.serve.local import start_tritonserver

TEXT = "The person is smiling."
DATA_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}


def parse_config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def gpu_repo(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("repos") / "gpu"
    assert main(["triton-repo", "--bundle", str(tiny_bundle), "--out", str(out), "--instances", "2"]) == 0
    return out


def test_graph_models_follow_the_graph_declarations(gpu_repo, tiny_bundle) -> None:
    bundle = Bundle.open(tiny_bundle)
    assert sorted(p.name for p in gpu_repo.iterdir()) == sorted([*bundle.graph_names, "animate", "clip"])
    for name in bundle.graph_names:
        spec = bundle.graph(name)
        config = parse_config(gpu_repo / name / "config.pbtxt")
        assert config.name == name
        assert config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == spec.batch.max
        for declared, written in ((spec.inputs, config.input), (spec.outputs, config.output)):
            assert [t.name for t in written] == [t.name for t in declared]
            for tensor, entry in zip(declared, written):
                assert list(entry.dims) == [d for d in tensor.shape if d != "batch"]
                assert model_config_pb2.DataType.Name(entry.data_type) == DATA_TYPES[tensor.dtype]
        assert list(config.dynamic_batching.preferred_batch_size) == sorted({spec.batch.opt, spec.batch.max})
        assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 2)]
        assert (gpu_repo / name / "1" / "model.onnx").read_bytes() == bundle.graph_path(name).read_bytes()


def test_pipeline_models_are_python_bls_animate_decoupled(gpu_repo, tiny_bundle) -> None:
    bundle = Bundle.open(tiny_bundle)
    animate = parse_config(gpu_repo / "animate" / "config.pbtxt")
    clip = parse_config(gpu_repo / "clip" / "config.pbtxt")
    assert animate.backend == clip.backend == "python"
    assert animate.model_transaction_policy.decoupled and not clip.model_transaction_policy.decoupled
    inputs = {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims), t.optional) for t in animate.input}
    assert inputs == {
        "text": ("TYPE_STRING", [1], False),
        "seed": ("TYPE_INT64", [1], False),
        "latent": ("TYPE_FP32", [bundle.n_latent, bundle.style_dim], True),
    }
    side = bundle.resolution
    assert {t.name: list(t.dims) for t in animate.output} == {"frame": [side, side, 3], "index": [1]}
    assert {t.name: list(t.dims) for t in clip.output} == {"frames": [bundle.frames, side, side, 3]}
    assert "PipelineModel" in (gpu_repo / "animate" / "1" / "model.py").read_text()


def test_cpu_flavour_runs_graphs_in_the_python_backend(tiny_bundle, tmp_path) -> None:
    out = tmp_path / "cpu"
    assert main(["triton-repo", "--bundle", str(tiny_bundle), "--out", str(out), "--flavour", "cpu", "--no-photo"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["text_encoder", "motion", "synthesis", "mapping", "animate", "clip"])
    config = parse_config(out / "synthesis" / "config.pbtxt")
    assert config.backend == "python"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.parameters["precision"].string_value == "fp32"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--graphs", "tensorrt"], "has no TensorRT engine for text_encoder in fp32; build them"),
        (["--flavour", "tpu"], "unknown flavour 'tpu'"),
        (["--flavour", "cpu", "--graphs", "tensorrt"], "TensorRT plans need a GPU"),
        (["--precision", "fp16", "--pipeline-instances", "0"], "--pipeline-instances must be at least 1"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tiny_bundle, tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "repo"
    assert main(["triton-repo", "--bundle", str(tiny_bundle), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_refused(tiny_bundle, tmp_path, capsys) -> None:
    assert main(["triton-repo", "--bundle", str(tiny_bundle), "--out", str(tmp_path)]) == 2
    assert "exists; choose a new --out folder" in capsys.readouterr().err


def test_tritonserver_serves_the_cpu_repository(tiny_bundle, tmp_path) -> None:
    """The real tritonserver binary: frames equal lgfa animate's on onnxruntime (the cpu flavour's runtime), two
    streams at once through BLS."""
    from tritonclient import grpc

    repo = tmp_path / "repo"
    assert main(["triton-repo", "--bundle", str(tiny_bundle), "--out", str(repo), "--flavour", "cpu", "--no-photo",
                 "--pipeline-instances", "2"]) == 0
    expected = {}
    for seed in (3, 4):
        frames_dir = tmp_path / f"animate{seed}"
        assert main(["animate", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--text", TEXT, "--seed", str(seed),
                     "--out", str(frames_dir)]) == 0
        expected[seed] = np.stack([cv2.imread(str(p)) for p in sorted(frames_dir.glob("*.png"))])
    work = tmp_path / "triton"
    work.mkdir()
    server = start_tritonserver(repo, work)
    try:
        server.wait_ready(("animate", "clip", "synthesis", "text_encoder", "motion", "mapping"))

        def stream(seed: int) -> np.ndarray:
            with AnimationClient(server.url) as client:
                return np.stack(list(client.frames(TEXT, seed=seed)))

        with ThreadPoolExecutor(2) as pool:
            served = dict(zip((3, 4), pool.map(stream, (3, 4))))
        for seed in (3, 4):
            np.testing.assert_array_equal(served[seed], expected[seed])
        client = grpc.InferenceServerClient(server.url)
        text = grpc.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([TEXT.encode()], dtype=np.object_))
        seed = grpc.InferInput("seed", [1], "INT64")
        seed.set_data_from_numpy(np.array([3], dtype=np.int64))
        np.testing.assert_array_equal(client.infer("clip", [text, seed]).as_numpy("frames"), expected[3])
        empty = grpc.InferInput("text", [1], "BYTES")
        empty.set_data_from_numpy(np.array([b""], dtype=np.object_))
        with pytest.raises(grpc.InferenceServerException, match="the text is empty"):
            client.infer("clip", [empty, seed])
        stats = client.get_inference_statistics("synthesis", as_json=True)["model_stats"][0]
        client.close()
        assert int(stats["inference_count"]) == 3 * 16
        assert 1 <= int(stats["execution_count"]) <= int(stats["inference_count"])
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()[-3000:]
