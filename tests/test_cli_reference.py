"""The PyTorch reference animation and the front door of the ``lgfa`` command."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lgfa_deploy.cli import main
from tests.helpers import read_video
from training.checkpoints import save_checkpoint
from training.reference import animate_reference, content_from_seed, seed_z

TEXT = "The person is smiling."


def test_same_seed_and_text_give_the_same_frames(tiny_models) -> None:
    a = animate_reference(tiny_models, TEXT, seed=3)
    b = animate_reference(tiny_models, TEXT, seed=3)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, animate_reference(tiny_models, TEXT, seed=4))
    assert not np.array_equal(a, animate_reference(tiny_models, "The person is angry.", seed=3))
    assert not np.array_equal(a[0], a[-1]), "the face should move"


def test_seed_content_is_mapping_of_numpy_z(tiny_models) -> None:
    z = seed_z(5, 64)
    assert np.array_equal(z, np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32))
    with torch.no_grad():
        content = content_from_seed(tiny_models, 5)
        w = tiny_models.generator.mapping(torch.from_numpy(z))
    assert content.shape == (1, 8, 64)
    assert all(torch.equal(content[0, i], w[0]) for i in range(8))


def test_animate_reference_writes_mp4(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "clip.mp4"
    code = main(["animate", "--backend", "torch", "--preset", "tiny", "--random-init", "--text", TEXT,
                 "--seed", "0", "--out", str(out)])
    assert code == 0
    frames = read_video(out)
    assert len(frames) == 16 and frames[0].shape == (32, 32, 3)
    assert "random-init" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_animate_reference_png_folder_and_frames(tmp_path: Path, tiny_models) -> None:
    out = tmp_path / "frames"
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, tiny_models)
    assert main(["animate", "--checkpoint", str(ckpt), "--text", TEXT, "--frames", "5", "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 5
    want = animate_reference(tiny_models, TEXT, seed=0, frames=5)
    assert np.array_equal(cv2.imread(str(pngs[4])), want[4])


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["animate", "--preset", "nope", "--random-init", "--text", TEXT, "--out", "x.mp4"], "unknown preset"),
        (["animate", "--preset", "tiny", "--random-init", "--text", "  ", "--out", "x.mp4"], "text is empty"),
        (["animate", "--preset", "tiny", "--text", TEXT, "--out", "x.mp4"], "--random-init"),
        (["animate", "--preset", "tiny", "--random-init", "--text", TEXT, "--out", "/nonexistent/dir/x.mp4"],
         "does not exist"),
        (["animate", "--checkpoint", "missing.pt", "--text", TEXT, "--out", "x.mp4"], "does not exist"),
        (["inspect", "missing.bin"], "does not exist"),
        (["animate", "--preset", "tiny", "--random-init", "--text", "smile " * 80, "--out", "x.mp4"], "tokens long"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], expected: str, capsys: pytest.CaptureFixture,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_inspect_describes_files(tmp_path: Path, tiny_models, capsys: pytest.CaptureFixture) -> None:
    gen = tmp_path / "g.pt"
    torch.save({"g_ema": tiny_models.generator.state_dict()}, gen)
    assert main(["inspect", str(gen)]) == 0
    assert "rosinality StyleGAN2 generator, 32 px, 8 latents" in capsys.readouterr().out
    ckpt = tmp_path / "c.safetensors"
    save_checkpoint(ckpt, tiny_models)
    assert main(["inspect", str(ckpt)]) == 0
    assert "LGFA checkpoint, preset tiny" in capsys.readouterr().out
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01not a checkpoint")
    assert main(["inspect", str(junk)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lgfa inspect: error:") and "\n" not in err


def test_inspect_onnx(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "g.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ONNX graph" in out and "x float32[batch, 3]" in out and "y float32" in out


def test_help_teaches_and_no_command_fails() -> None:
    result = subprocess.run([sys.executable, "-m", "lgfa_deploy.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "examples:" in result.stdout and "animate" in result.stdout
    result = subprocess.run([sys.executable, "-m", "lgfa_deploy.cli"], capture_output=True, text=True)
    assert result.returncode == 2
