"""The animation's identity term: a frozen parameter reader, its weights file, and ``lgfa train --lambda-identity``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lgfa_deploy.cli import main
from training.errors import CheckpointError
from training.faces.parameters import IDENTITY, NAMES
from training.faces.reader import IdentityReading, ParameterReader, load_reader, save_reader

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def constant_reader(values: torch.Tensor, size: int = 32) -> ParameterReader:
    """A reader that reads ``values`` [16] from every image: its last layer's weights zero, its bias their logit."""
    reader = ParameterReader(size, 8)
    with torch.no_grad():
        reader.head[-1].weight.zero_()
        reader.head[-1].bias.copy_(torch.logit(values))
    return reader.eval()


def test_reader_file_round_trip_and_files_that_are_no_reader(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reader = ParameterReader(32, 8).eval()
    save_reader(reader, tmp_path / "reader.safetensors")
    loaded = load_reader(tmp_path / "reader.safetensors")
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(images), reader(images), rtol=0, atol=0)
    assert (loaded.size, loaded.width) == (32, 8) and not loaded.training
    (tmp_path / "text.safetensors").write_text("not a tensor file")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"size": "32", "width": "8"})
    save_file(reader.state_dict(), str(tmp_path / "huge.safetensors"), metadata={"size": "1048576", "width": "8"})
    for name, reason in (("text", "is not a safetensors file"), ("other", "does not hold a parameter reader"),
                         ("huge", "input size 1048576 px")):
        with pytest.raises(CheckpointError, match=reason) as error:
            load_reader(tmp_path / f"{name}.safetensors")
        assert "\n" not in str(error.value)


def test_identity_reading_is_the_first_eight_readings_at_any_frame_size() -> None:
    values = torch.linspace(0.1, 0.9, len(NAMES))
    reading = IdentityReading(constant_reader(values))
    for size in (32, 64, 16):
        torch.testing.assert_close(reading(torch.zeros(2, 3, size, size)), values[: len(IDENTITY)].expand(2, -1))
    assert not any(p.requires_grad for p in reading.parameters())


def test_identity_reading_passes_gradients_to_the_frames_and_keeps_its_statistics() -> None:
    torch.manual_seed(0)
    reader = ParameterReader(32, 8)
    statistics = {k: v.clone() for k, v in reader.state_dict().items() if "running" in k}
    reading = IdentityReading(reader)
    frames = (torch.rand(4, 3, 64, 64) * 2 - 1).requires_grad_(True)
    reading(frames).sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0
    assert all(torch.equal(reader.state_dict()[k], v) for k, v in statistics.items())  # eval mode: batch norm not updated


def lgfa_train(*args: str) -> int:
    return main(["train", "--preset", "tiny", "--random-init", "--sample-every", "0", *args])


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_identity_term_weighs_the_readers_difference_between_frame_and_content(tmp_path: Path, capsys, caplog) -> None:
    """The term enters the loss with its weight and is recorded with the reader's file; a reader that reads
    the same from every image sees no difference between frame T-1 and the content's render, so the term is 0,
    and so is it when the margin lets every change pass."""
    torch.manual_seed(0)
    save_reader(ParameterReader(32, 8), tmp_path / "random.safetensors")
    save_reader(constant_reader(torch.full((len(NAMES),), 0.3)), tmp_path / "constant.safetensors")
    weights = {"contrastive": 0.5, "path": 1.0, "latent": 1.0, "endpoints": 1.0, "identity": 50.0}
    caplog.set_level("INFO", logger="training.train")
    for name in ("random", "constant"):
        reader = str(tmp_path / f"{name}.safetensors")
        caplog.clear()
        assert lgfa_train("--steps", "2", "--identity-reader", reader, "--lambda-identity", "50", "--out", str(tmp_path / name)) == 0
        for r in metrics(tmp_path / name):
            assert r["loss"] == pytest.approx(sum(w * r[k] for k, w in weights.items()), rel=1e-5)
            assert (r["identity"] > 0) if name == "random" else (r["identity"] == 0)
        record = json.loads((tmp_path / name / "train.json").read_text())
        assert record["options"]["lambda_identity"] == 50.0
        assert [s["path"] for s in record["loss_sources"] if s["role"] == "identity_reader"] == [reader]
        assert "every network but the identity reader has random weights" in caplog.text  # the reader is a file
    # a margin as wide as the readings' range lets every change pass
    margin = ["--identity-reader", str(tmp_path / "random.safetensors"), "--lambda-identity", "50", "--identity-margin", "1"]
    assert lgfa_train("--steps", "2", *margin, "--out", str(tmp_path / "margin")) == 0
    assert [r["identity"] for r in metrics(tmp_path / "margin")] == [0, 0]
    assert lgfa_train("--steps", "2", "--out", str(tmp_path / "off")) == 0
    assert all("identity" not in r for r in metrics(tmp_path / "off"))
    (tmp_path / "broken.safetensors").write_bytes(b"\0" * 64)
    for args, message in ((["--lambda-identity", "5"], "go together"),
                          (["--identity-reader", str(tmp_path / "random.safetensors")], "go together"),
                          (["--identity-reader", str(tmp_path / "none.safetensors"), "--lambda-identity", "5"], "does not exist"),
                          (["--identity-reader", str(tmp_path / "broken.safetensors"), "--lambda-identity", "5"],
                           "is not a safetensors file")):  # fmt: skip
        capsys.readouterr()
        assert lgfa_train("--steps", "1", *args, "--out", str(tmp_path / "bad")) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
