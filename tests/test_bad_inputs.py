"""Bad input across the commands: one line on stderr naming the problem, exit 2, no traceback, and
the folder the command works in exactly as it was (no temporary file, no partial output, no side
file). Validation runs before any model loads (every loader is a tripwire here), so the cases take
no model but the tiny bundle's."""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lgfa_deploy.cli import main

TEXT = "The person is smiling."
ZERO_WIDTH = "\u200b\u200b\ufeff\u2060 \u200b"


@dataclass
class Place:
    """The working folder of a case (the command's cwd and output folder) and the files around it."""

    work: Path  # the command runs here; must be unchanged afterwards
    outside: Path  # files a case points at, outside the working folder
    bundle: Path  # the tiny bundle, read-only
    bad_bundles: Path


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (hidden ones too), links not followed: kind, size, mtime."""
    entries = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root) / name
            info = path.lstat()
            entries[str(path.relative_to(folder))] = (path.is_symlink(), path.is_dir(), info.st_size, info.st_mtime_ns)
    return entries


# -- inputs a case needs -------------------------------------------------------------------------------------
def _write(path: Path, data: bytes | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def huge_png_header(path: Path) -> str:
    """A 45-byte PNG whose header declares 20,000 x 20,000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return _write(path, b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 8)


class _MakesAFolder:
    """Unpickling this creates a folder: a .npy holding it proves whether lgfa unpickles."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __reduce__(self):
        return os.mkdir, (self.folder,)


def pickled_latent(place: Place) -> str:
    path = place.outside / "evil.npy"
    array = np.empty(1, dtype=object)
    array[0] = _MakesAFolder(str(place.work / "UNPICKLED"))
    np.save(path, array, allow_pickle=True)
    return str(path)


def symlink_to_elsewhere(place: Place, name: str) -> str:
    target = place.outside / f"target-{name}"
    target.write_bytes(b"someone else's file")
    (place.work / name).symlink_to(target)
    return name


def bad_manifest(place: Place, name: str, change: Callable[[dict], None]) -> str:
    """A bundle folder holding only a manifest: the tiny bundle's with ``change`` applied."""
    manifest = json.loads((place.bundle / "manifest.json").read_text())
    change(manifest)
    folder = place.bad_bundles / name
    _write(folder / "manifest.json", json.dumps(manifest))
    return str(folder)


def graph_links_outside(place: Place) -> str:
    """A copy of the tiny bundle whose synthesis graph is a symbolic link to a file outside it."""
    folder = place.bad_bundles / "linked-graph"
    if not folder.exists():
        shutil.copytree(place.bundle, folder)
        outside = place.outside / "synthesis.onnx"
        shutil.copyfile(folder / "synthesis.onnx", outside)
        (folder / "synthesis.onnx").unlink()
        (folder / "synthesis.onnx").symlink_to(outside)
    return str(folder)


def _set(*keys: str, value: object) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        record = manifest
        for key in keys[:-1]:
            record = record[key]
        record[keys[-1]] = value

    return change


def _drop(key: str) -> Callable[[dict], None]:
    return lambda manifest: manifest.pop(key)


def _batch_min_above_max(manifest: dict) -> None:
    manifest["graphs"]["synthesis"]["batch"] = {"min": 8, "opt": 4, "max": 2}


# -- the cases ---------------------------------------------------------------------------------------------
Argv = Callable[[Place], list[str]]


def animate(*extra: str, text: str = TEXT) -> Argv:
    return lambda p: ["animate", "--bundle", str(p.bundle), "--text", text, "--out", "clip.mp4", *extra]


def animate_with(option: str, make: Callable[[Place], str], *extra: str) -> Argv:
    return lambda p: ["animate", "--bundle", str(p.bundle), "--text", TEXT, "--out", "clip.mp4", option, make(p), *extra]


def on_bundle(command: str, make: Callable[[Place], str], *extra: str) -> Argv:
    """``command`` on a bundle made by ``make``: positional for verify and inspect, --bundle otherwise."""
    def argv(p: Place) -> list[str]:
        bundle = make(p)
        if command in ("verify", "inspect"):
            return [command, bundle]
        if command == "bench":
            return ["bench", "--bundle", bundle, "--backend", "onnxruntime", "--no-baseline", *extra]
        return [command, "--bundle", bundle, "--text", TEXT, "--out", "clip.mp4", *extra]

    return argv


def stream(*extra: str, texts: Callable[[Place], str] | None = None) -> Argv:
    def argv(p: Place) -> list[str]:
        texts_file = texts(p) if texts else _write(p.outside / "texts.txt", TEXT + "\n")
        return ["stream", "--bundle", str(p.bundle), "--texts", texts_file, "--quiet", *extra]

    return argv


def folder(name: str) -> Callable[[Place], str]:
    def make(p: Place) -> str:
        (p.work / name).mkdir()
        return name

    return make


def export(*extra: str) -> Argv:
    return lambda p: ["export", "--preset", "tiny", "--random-init", *extra]


def train(*extra: str) -> Argv:
    return lambda p: ["train", "--preset", "tiny", "--random-init", "--steps", "1", *extra]


CASES: list[tuple[str, Argv, str]] = [
    # animate: numbers, text, outputs, face inputs
    ("fps-inf", animate("--fps", "inf"), "--fps must be a finite number"),
    ("fps-nan", animate("--fps", "nan"), "--fps must be a finite number"),
    ("fps-zero", animate("--fps", "0"), "--fps must be above 0"),
    ("fps-negative", animate("--fps", "-5"), "--fps must be above 0"),
    ("crf-too-high", animate("--crf", "99"), "--crf must be at most 51"),
    ("unknown-encoder", animate("--encoder", "vp9"), "unknown encoder 'vp9'"),
    ("frames-not-a-number", animate("--frames", "many"), "invalid int value: 'many'"),
    ("frames-below-2", animate("--frames", "1"), "--frames must be at least 2"),
    ("micro-batch-zero", animate("--micro-batch", "0"), "micro-batch must be a whole number from 1"),
    ("seed-negative", animate("--seed", "-1"), "seed must be a whole number of 0 or more"),
    ("zero-width-text", animate(text=ZERO_WIDTH), "the text is empty"),
    ("text-10-MB", animate(text="smile " * (10 * 2**20 // 6)), "characters long"),
    ("text-control-char", animate(text="The person\x1b[2J is smiling."), "control character U+001B"),
    ("out-is-a-folder", lambda p: ["animate", "--bundle", str(p.bundle), "--text", TEXT, "--out", folder("clip.mp4")(p)],
     "is a folder"),
    ("out-symlink-elsewhere", lambda p: ["animate", "--bundle", str(p.bundle), "--text", TEXT,
                                         "--out", symlink_to_elsewhere(p, "clip.mp4")], "symbolic link"),
    ("out-missing-folder", lambda p: ["animate", "--bundle", str(p.bundle), "--text", TEXT, "--out", "no/such/clip.mp4"],
     "does not exist"),
    ("out-folder-not-empty", lambda p: ["animate", "--bundle", str(p.bundle), "--text", TEXT,
                                        "--out", _write(p.work / "frames" / "x.png", b"x") and "frames"],
     "exists and is not an empty folder"),
    ("latent-holds-python-objects", animate_with("--latent", pickled_latent), "not a readable .npy array"),
    ("save-latent-not-npy", animate_with("--save-latent", lambda p: "content.txt"), "choose a file ending in .npy"),
    ("save-latent-symlink", animate_with("--save-latent", lambda p: symlink_to_elsewhere(p, "w.npy")), "symbolic link"),
    ("photo-header-20000-px", animate_with("--image", lambda p: huge_png_header(p.outside / "huge.png")),
     "20000x20000 px"),
    ("reference-frames-unbounded", lambda p: ["animate", "--backend", "torch", "--preset", "tiny", "--random-init",
                                              "--text", TEXT, "--frames", "100000", "--out", "clip.mp4"], "at most 256"),
    # bundles: the manifest as a whole, and files that leave the bundle
    ("manifest-resolution-text", on_bundle("animate", lambda p: bad_manifest(p, "res", _set("model", "resolution", value="big"))),
     'manifest.json: model.resolution must be an integer, got "big"; re-export the bundle'),
    ("manifest-graphs-list", on_bundle("animate", lambda p: bad_manifest(p, "list", _set("graphs", value=[]))),
     "manifest.json: graphs must be an object, got []"),
    ("manifest-no-tokenizer", on_bundle("animate", lambda p: bad_manifest(p, "tok", _drop("tokenizer"))),
     "manifest.json: tokenizer is missing"),
    ("manifest-batch-min-above-max", on_bundle("animate", lambda p: bad_manifest(p, "batch", _batch_min_above_max)),
     "graphs.synthesis.batch must satisfy min <= opt <= max"),
    ("manifest-resolution-not-power-of-2", on_bundle("inspect", lambda p: bad_manifest(p, "r48", _set("model", "resolution", value=48))),
     "model.resolution must be a power of two"),
    ("manifest-file-outside", on_bundle("verify", lambda p: bad_manifest(p, "dots", _set("weights", "file", value="../w.safetensors"))),
     "weights.file must be a file name inside the bundle"),
    ("graph-symlink-outside", on_bundle("animate", graph_links_outside), "synthesis.onnx is a symbolic link or lies outside"),
    ("verify-graph-symlink", on_bundle("verify", graph_links_outside), "synthesis.onnx is a symbolic link or lies outside"),
    ("bench-bad-manifest", on_bundle("bench", lambda p: bad_manifest(p, "std", _set("model", "clip_std", value=[1, 0, 1]))),
     "model.clip_std[1] must be above 0"),
    # stream
    ("stream-fps-inf", stream("--out", "talk.mp4", "--fps", "inf"), "--fps must be a finite number"),
    ("stream-texts-nul", stream("--out", "talk.mp4", texts=lambda p: _write(p.outside / "nul.txt", b"smile\x00\n")),
     "holds NUL bytes"),
    ("stream-text-10-MB", stream("--out", "talk.mp4", texts=lambda p: _write(p.outside / "big.txt", "ha" * (5 * 2**20))),
     "characters long"),
    ("stream-out-avi", stream("--out", "talk.avi"), "--out must be a video file (.mp4, .mkv)"),
    ("stream-out-folder", lambda p: stream("--out", folder("talk.mp4")(p))(p), "is a folder"),
    ("stream-texts-missing", stream("--out", "talk.mp4", texts=lambda p: str(p.outside / "none.txt")), "does not exist"),
    # export, verify
    ("export-out-symlink", lambda p: export("--out", symlink_to_elsewhere(p, "engines"))(p), "symbolic link"),
    ("export-missing-checkpoint", lambda p: ["export", "--checkpoint", "missing.safetensors", "--out", "b"], "does not exist"),
    ("export-frames-1", export("--out", "b", "--frames", "1"), "give a whole number of at least 2"),
    ("export-seed-negative", export("--out", "b", "--seed", "-3"), "--seed must be 0 or more"),
    ("export-precision", export("--out", "b", "--precision", "fp8"), "give precisions from fp32, fp16"),
    ("verify-missing", lambda p: ["verify", "no-bundle"], "does not exist"),
    # align
    ("align-photo-header-20000-px", lambda p: ["align", huge_png_header(p.outside / "huge.png"), "--out", "face.png"],
     "20000x20000 px"),
    ("align-out-symlink", lambda p: ["align", huge_png_header(p.outside / "huge.png"), "--out",
                                     symlink_to_elsewhere(p, "face.png")], "symbolic link"),
    ("align-out-suffix", lambda p: ["align", "photo.jpg", "--out", "face.gif"], "choose a file ending in"),
    # train
    ("train-lr-nan", train("--out", "run", "--lr-encoder", "nan"), "--lr-encoder must be a finite number"),
    ("train-tau-inf", train("--out", "run", "--tau", "inf"), "--tau must be a finite number"),
    ("train-out-is-a-file", lambda p: train("--out", _write(p.work / "run.txt", "x") and "run.txt")(p), "is a file"),
    ("train-texts-nul", lambda p: train("--out", "run", "--texts", _write(p.outside / "t.txt", b"a\x00b\n"))(p),
     "holds NUL bytes"),
    # bench, inspect
    ("bench-frames-zero", lambda p: ["bench", "--bundle", str(p.bundle), "--batch", "1", "--frames", "0"],
     "--frames must be at least 1"),
    ("bench-json-folder", lambda p: ["bench", "--bundle", str(p.bundle), "--json", folder("out.json")(p)], "is a folder"),
    ("inspect-garbage-onnx", lambda p: ["inspect", _write(p.outside / "g.onnx", b"\x00garbage")], "not a readable ONNX graph"),
    ("inspect-missing", lambda p: ["inspect", "nothing.bin"], "does not exist"),
]


MODEL_LOADERS = [
    ("lgfa_deploy.commands.common", "open_backend"),
    ("lgfa_deploy.bench", "open_backend"),
    ("training.checkpoints", "load_models"),
    ("export.bundle_writer", "load_models"),
    ("training.train", "train"),
]
"""Where a model loads (a backend opens, networks are built, training starts): a bad input must be
refused before any of them runs."""


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model loader raises, outside the user-error types, so that a case reaching one fails."""
    import importlib

    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model loaded before the bad input was refused")

    # Import every module first: one imported after a patch would keep the tripwire for good.
    modules = [importlib.import_module(module) for module, _ in MODEL_LOADERS]
    for module, (_, name) in zip(modules, MODEL_LOADERS):
        monkeypatch.setattr(module, name, tripwire)


@pytest.fixture(scope="module")
def bad_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-bundles")


@pytest.mark.parametrize("argv", [case[1] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_refused_in_one_line(
    argv: Argv, request: pytest.FixtureRequest, tiny_bundle: Path, bad_bundles: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, no_model_loads: None,
) -> None:
    expected = next(case[2] for case in CASES if case[0] == request.node.callspec.id)
    place = Place(tmp_path / "work", tmp_path / "outside", tiny_bundle, bad_bundles)
    place.work.mkdir()
    place.outside.mkdir()
    monkeypatch.chdir(place.work)
    args = argv(place)
    before, outside_before = _snapshot(place.work), _snapshot(place.outside)
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert expected in err, err
    assert "\n" not in err and "Traceback" not in err and err.startswith("lgfa"), err
    assert _snapshot(place.work) == before, "the working folder changed"
    assert _snapshot(place.outside) == outside_before, "a file outside was changed"

