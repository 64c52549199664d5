"""``lgfa train`` on the tiny preset (CPU): overfitting, exact resume, two-process DDP, export."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lgfa_deploy.cli import main
from training.checkpoints import read_checkpoint_metadata
from training.clip_model import create_clip
from training.lpips import CHANNELS, LPIPS
from training.presets import get_preset
from training.stylegan2 import generator_from_preset

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["The person is smiling.", "The person is angry.", "The person is crying.", "The person is winking."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lgfa_train(*args: str) -> int:
    return main(["train", "--preset", "tiny", "--random-init", *args])


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def model_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(folder / "checkpoints" / "last.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> list[str]:
    """Image-mode data for the tiny preset: 4 faces, their W+ [4, 8, 64] and 4 sentences."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(4):
        cv2.imwrite(str(root / "images" / f"{i:02d}.png"), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    torch.save(torch.randn(4, 8, 64, generator=torch.Generator().manual_seed(0)), root / "latents.pt")
    (root / "texts.txt").write_text("\n".join(SENTENCES) + "\n")
    return ["--images", str(root / "images"), "--latents", str(root / "latents.pt"), "--texts", str(root / "texts.txt")]


@pytest.mark.slow
def test_overfitting_one_batch_lowers_the_loss(tmp_path, faces) -> None:
    out = tmp_path / "run"
    assert lgfa_train(*faces, "--steps", "30", "--sample-every", "30", "--out", str(out)) == 0
    records = metrics(out)
    assert [r["step"] for r in records] == list(range(1, 31))
    weights = {"lpips_first": 1.0, "lpips_last": 1.0, "contrastive": 0.5, "path": 1.0, "latent": 1.0, "endpoints": 1.0}
    for r in records:
        assert set(r) == {"step", "loss", "lr", "seconds", *weights}
        assert r["loss"] == pytest.approx(sum(w * r[k] for k, w in weights.items()), rel=1e-5)
        assert r["lr"] == {"encoder": 1e-5, "motion": 1e-3, "mapper": 1e-3}
    first, last = np.mean([r["loss"] for r in records[:5]]), np.mean([r["loss"] for r in records[-5:]])
    assert last < 0.7 * first, (first, last)

    grid = cv2.imread(str(out / "samples" / "step_000030.png"))
    assert grid.shape == (4 * 32, 16 * 32, 3)  # 4 sentences x 16 inference frames of 32 px
    assert json.loads((out / "checkpoints" / "last.json").read_text())["step"] == 30
    saved = json.loads((out / "train.json").read_text())
    assert saved["random_init"] is True and saved["options"]["images"] == faces[1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["text", "image"])
def test_resumed_run_equals_a_straight_run(tmp_path, faces, mode) -> None:
    """Image mode adds LPIPS, the CLIP image tower and H_v to what a resumed run must restore."""
    data = faces if mode == "image" else []
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert lgfa_train(*data, "--steps", "4", "--save-every", "2", "--sample-every", "0", "--out", str(straight)) == 0
    assert lgfa_train(*data, "--steps", "2", "--sample-every", "0", "--out", str(resumed)) == 0
    assert main(["train", "--resume", str(resumed), "--steps", "4"]) == 0

    a, b = model_tensors(straight), model_tensors(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses = [r["loss"] for r in metrics(straight)]
    assert [r["loss"] for r in metrics(resumed)] == losses
    if mode == "image":
        assert all(r["lpips_first"] > 0 for r in metrics(resumed))
    for name in ("step_000002.safetensors", "step_000002.state.safetensors", "last.safetensors", "last.json"):
        assert (resumed / "checkpoints" / name).is_file()


def alter_saved_run(folder: Path, bias: str, frozen_group: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Shift the saved ``bias`` by 0.5 and make the second moments of ``frozen_group`` huge (Adam then barely
    moves it); return the original bias and the frozen group's saved tensors."""
    last = json.loads((folder / "checkpoints" / "last.json").read_text())
    checkpoint, state = folder / "checkpoints" / last["checkpoint"], folder / "checkpoints" / last["state"]
    tensors, meta = load_file(str(checkpoint)), read_checkpoint_metadata(checkpoint)
    original = tensors[bias].clone()
    tensors[bias] = tensors[bias] + 0.5
    save_file(tensors, str(checkpoint), metadata=meta)
    state_tensors, state_meta = load_file(str(state)), read_checkpoint_metadata(state)
    group = next(g for g in json.loads(state_meta["param_groups"]) if g["name"] == frozen_group)
    for index in group["params"]:
        key = f"optimizer.{index}.exp_avg_sq"
        state_tensors[key] = torch.full_like(state_tensors[key], 1e12)
    save_file(state_tensors, str(state), metadata=state_meta)
    return original, tensors


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["text", "image"])
def test_resume_continues_from_the_saved_state(tmp_path, faces, mode) -> None:
    """A resumed run starts from the saved weights and optimiser moments, not from step 0 or a fresh Adam."""
    data, mapper, frozen, prefix = (
        (faces, "v_mapper", "encoder", "model.encoder.visual.") if mode == "image" else ([], "t_mapper", "motion", "model.rnn.")
    )
    out = tmp_path / "run"
    assert lgfa_train(*data, "--steps", "2", "--sample-every", "0", "--out", str(out)) == 0
    bias = f"model.mapper.{mapper}.mapping.3.bias"
    original, saved = alter_saved_run(out, bias, frozen)
    assert main(["train", "--resume", str(out), "--steps", "4"]) == 0
    final = model_tensors(out)
    # Two Adam steps move a parameter by about 2 x lr_mapper (1e-3): the shift of 0.5 must still be there.
    assert (final[bias] - saved[bias]).abs().max() < 0.01
    assert (final[bias] - original).abs().min() > 0.49
    # The group whose second moments were made huge moves by lr x gradient / 1e7 at most; the mapper moves ~lr.
    frozen_keys = [k for k in final if k.startswith(prefix) and final[k].is_floating_point()]
    assert frozen_keys
    assert max((final[k] - saved[k]).abs().max().item() for k in frozen_keys if "running_" not in k) < 1e-8
    weight = f"model.mapper.{mapper}.mapping.1.weight"
    assert (final[weight] - saved[weight]).abs().max() > 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path, faces) -> None:
    # Adam with beta1 0 divides each gradient by its own running size, so it would follow the same path from a
    # gradient summed over the processes instead of averaged. With eps far above that size Adam is plain SGD
    # with the learning rate lr / eps, which a doubled gradient would visibly throw off.
    sgd = ["--adam-eps", "1e6", "--lr-encoder", "10", "--lr-motion", "1e3", "--lr-mapper", "1e3"]
    common = [*faces, "--steps", "3", "--contrastive-group", "2", "--sample-every", "0", *sgd]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=1",
        "--master-addr=127.0.0.1", f"--master-port={_free_port()}",
        "-m", "lgfa_deploy.cli", "train", "--preset", "tiny", "--random-init",
        *common, "--batch", "2", "--out", str(tmp_path / "ddp"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert lgfa_train(*common, "--batch", "4", "--out", str(tmp_path / "single")) == 0

    two, one = model_tensors(tmp_path / "ddp"), model_tensors(tmp_path / "single")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    for r2, r1 in zip(metrics(tmp_path / "ddp"), metrics(tmp_path / "single")):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
    assert json.loads((tmp_path / "ddp" / "train.json").read_text())["world_size"] == 2


def test_option_and_data_errors_are_one_line(tmp_path, faces, capsys) -> None:
    assert main(["train", "--preset", "tiny", "--steps", "1", "--out", str(tmp_path / "a")]) == 2
    assert "give --stylegan, --clip, --loss-clip" in capsys.readouterr().err
    assert lgfa_train("--images", faces[1], "--out", str(tmp_path / "b")) == 2
    assert "image mode needs --latents FILE" in capsys.readouterr().err
    torch.save(torch.zeros(4, 8, 32), tmp_path / "narrow.pt")
    assert lgfa_train(*faces[:3], str(tmp_path / "narrow.pt"), "--out", str(tmp_path / "c")) == 2
    err = capsys.readouterr().err
    assert "00.png" in err and "narrow.pt" in err and "[8, 64]" in err and "\n" == err[-1] and err.count("\n") == 1


@pytest.mark.slow
def test_latent_mode_trains_on_the_given_contents(tmp_path, capsys, caplog) -> None:
    """``--latents`` alone: the no-image path on the file's W+, so the contents change what frame T-1 shows."""
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES) + "\n")
    caplog.set_level("INFO")
    contrastive = []
    for name, scale in (("small", 0.1), ("large", 3.0)):
        torch.save(scale * torch.randn(6, 8, 64, generator=torch.Generator().manual_seed(1)), tmp_path / f"{name}.pt")
        out = tmp_path / name
        args = ["--latents", str(tmp_path / f"{name}.pt"), "--texts", str(texts), "--steps", "1", "--out", str(out)]
        assert lgfa_train(*args, "--sample-every", "0") == 0
        record = metrics(out)[0]
        assert "lpips_first" not in record and record["latent"] >= 0
        contrastive.append(record["contrastive"])
    assert contrastive[0] != pytest.approx(contrastive[1], rel=1e-3)
    assert "latent mode: no image, 6 contents" in caplog.text
    # the colour term's references: each content's render, kept once drawn (3 steps of 4 revisit contents)
    args = ["--latents", str(tmp_path / "large.pt"), "--texts", str(texts), "--steps", "3", "--batch", "4"]
    assert lgfa_train(*args, "--lambda-colour", "100", "--sample-every", "0", "--out", str(tmp_path / "colour")) == 0
    weights = {"contrastive": 0.5, "path": 1.0, "latent": 1.0, "endpoints": 1.0, "colour": 100.0}
    for r in metrics(tmp_path / "colour"):
        assert r["colour"] > 0 and r["loss"] == pytest.approx(sum(w * r[k] for k, w in weights.items()), rel=1e-5)
    torch.save(torch.zeros(3, 8, 32), tmp_path / "narrow.pt")
    capsys.readouterr()
    assert lgfa_train("--latents", str(tmp_path / "narrow.pt"), "--out", str(tmp_path / "bad")) == 2
    err = capsys.readouterr().err
    assert "row 0" in err and "[8, 64]" in err and err.count("\n") == 1


def test_colour_term_enters_the_loss_only_when_weighted(tmp_path, capsys) -> None:
    """``--lambda-colour`` (off by default, as in the paper) logs the term and weighs it into the loss."""
    assert lgfa_train("--steps", "2", "--sample-every", "0", "--out", str(tmp_path / "off")) == 0
    assert all("colour" not in r for r in metrics(tmp_path / "off"))
    assert lgfa_train("--steps", "2", "--sample-every", "0", "--lambda-colour", "1000", "--out", str(tmp_path / "on")) == 0
    weights = {"contrastive": 0.5, "path": 1.0, "latent": 1.0, "endpoints": 1.0, "colour": 1000.0}
    for r in metrics(tmp_path / "on"):
        assert set(r) == {"step", "loss", "lr", "seconds", *weights}
        assert r["colour"] > 0
        assert r["loss"] == pytest.approx(sum(w * r[k] for k, w in weights.items()), rel=1e-5)
    assert json.loads((tmp_path / "on" / "train.json").read_text())["options"]["lambda_colour"] == 1000.0
    capsys.readouterr()
    assert lgfa_train("--steps", "1", "--lambda-colour", "-1", "--out", str(tmp_path / "bad")) == 2
    err = capsys.readouterr().err
    assert "--lambda-colour must be a finite number of 0 or more" in err and err.count("\n") == 1


def test_training_decay_is_recorded_and_drives_the_recurrence(tmp_path) -> None:
    """``--decay linear`` trains on the inference schedule: same seed and data, another path of offsets."""
    latent = {}
    for decay in ("constant", "linear"):
        out = tmp_path / decay
        assert lgfa_train("--steps", "1", "--frames", "6", "--decay", decay, "--sample-every", "0", "--out", str(out)) == 0
        assert json.loads((out / "train.json").read_text())["options"]["decay"] == decay
        latent[decay] = metrics(out)[0]["latent"]
    assert latent["constant"] != pytest.approx(latent["linear"], rel=1e-4)


def test_resume_keeps_the_saved_options(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert lgfa_train("--steps", "2", "--sample-every", "0", "--out", str(out)) == 0
    assert main(["train", "--resume", str(out), "--lr-motion", "0.1"]) == 2
    assert "drop --lr-motion" in capsys.readouterr().err
    assert lgfa_train("--steps", "2", "--out", str(out)) == 2
    assert f"--resume {out}" in capsys.readouterr().err


def test_several_loss_clips_average_their_contrastive_losses(tmp_path) -> None:
    """``--loss-clip A B``: the first step's contrastive term (before any update) is the mean of the runs with A
    alone and B alone; both files are recorded; a run saved when the option took one file still resumes."""
    torch.manual_seed(5)
    torch.save({"g_ema": generator_from_preset(get_preset("tiny")).state_dict()}, tmp_path / "stylegan.pt")
    torch.save(create_clip("tiny-rn").state_dict(), tmp_path / "clip.pt")
    for name in ("a", "b"):
        torch.save(create_clip("tiny-vit").state_dict(), tmp_path / f"{name}.pt")
    files = ["--stylegan", str(tmp_path / "stylegan.pt"), "--clip", str(tmp_path / "clip.pt")]
    first = {}
    for run, clips in (("a", ["a"]), ("b", ["b"]), ("ab", ["a", "b"])):
        loss_clips = [str(tmp_path / f"{name}.pt") for name in clips]
        args = ["--preset", "tiny", *files, "--loss-clip", *loss_clips, "--steps", "1", "--sample-every", "0"]
        assert main(["train", *args, "--out", str(tmp_path / run)]) == 0
        first[run] = metrics(tmp_path / run)[0]["contrastive"]
        record = json.loads((tmp_path / run / "train.json").read_text())
        assert [s["path"] for s in record["loss_sources"] if s["role"] == "loss_clip"] == loss_clips
    assert first["a"] != pytest.approx(first["b"], rel=1e-3)
    assert first["ab"] == pytest.approx((first["a"] + first["b"]) / 2, rel=1e-5)
    options_file = tmp_path / "a" / "train.json"
    record = json.loads(options_file.read_text())
    record["options"]["loss_clip"] = str(tmp_path / "a.pt")  # as runs saved it before several files were taken
    options_file.write_text(json.dumps(record))
    assert main(["train", "--resume", str(tmp_path / "a"), "--steps", "2"]) == 0
    assert [r["step"] for r in metrics(tmp_path / "a")] == [1, 2]


@pytest.mark.skipif(
    importlib.util.find_spec("export.cli") is None, reason="export/cli.py (lgfa export) has not landed yet"
)
def test_trained_checkpoint_exports_and_animates(tmp_path) -> None:
    out = tmp_path / "run"
    assert lgfa_train("--steps", "2", "--sample-every", "0", "--out", str(out)) == 0
    bundle, frames = tmp_path / "bundle", tmp_path / "frames"
    assert main(["export", "--checkpoint", str(out / "checkpoints" / "last.safetensors"), "--out", str(bundle)]) == 0
    assert main(["animate", "--bundle", str(bundle), "--text", SENTENCES[0], "--out", str(frames)]) == 0
    assert len(list(frames.glob("*.png"))) == 16


def test_pretrained_parts_come_from_local_files(tmp_path, faces, caplog) -> None:
    """Without --random-init every pretrained part is read from a file and the run says nothing of random weights."""
    torch.manual_seed(5)
    files = {
        "--stylegan": tmp_path / "stylegan.pt",
        "--clip": tmp_path / "clip.pt",
        "--loss-clip": tmp_path / "loss_clip.pt",
    }
    torch.save({"g_ema": generator_from_preset(get_preset("tiny")).state_dict()}, files["--stylegan"])
    torch.save(create_clip("tiny-rn").state_dict(), files["--clip"])
    torch.save(create_clip("tiny-vit").state_dict(), files["--loss-clip"])
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS)}
    torch.save(heads, tmp_path / "alex.pth")
    torch.save({f"features.{k}": v for k, v in LPIPS().features.state_dict().items()}, tmp_path / "alexnet.pth")
    options = [f"{name}={path}" for name, path in files.items()]
    lpips = ["--lpips-weights", str(tmp_path / "alex.pth"), str(tmp_path / "alexnet.pth")]

    out = tmp_path / "run"
    caplog.set_level("INFO")
    assert main(["train", "--preset", "tiny", *options, *lpips, *faces, "--steps", "2", "--out", str(out)]) == 0
    assert not any("random-init:" in r.getMessage() and r.name.startswith("training.train") for r in caplog.records)
    meta = read_checkpoint_metadata(out / "checkpoints" / "last.safetensors")
    assert json.loads(meta["random_init"]) is False
    assert {s["role"] for s in json.loads(meta["sources"])} == {"stylegan", "clip"}
    assert {s["role"] for s in json.loads(meta["training"])["loss_sources"]} == {"loss_clip", "lpips"}
