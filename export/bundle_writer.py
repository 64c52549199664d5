"""Checkpoints -> a verified bundle directory, written atomically.

Everything is written into a hidden temporary directory beside the target (``.NAME.XXXX.partial``)
and renamed into place only after the bundle has passed verification, so an interrupted or failed
export never leaves a directory that looks like a bundle. With ``force`` an existing bundle is
replaced only after the new one succeeded. Graphs are exported one at a time, memory freed between
them, so the full 1024 px model exports on a small machine.
"""
from __future__ import annotations

import gc
import logging
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import torch
from tqdm import tqdm

from export.fp16 import convert_to_fp16
from export.onnx_export import (
    OPSET,
    TRACE_BATCH,
    build_module,
    bundle_specs,
    export_onnx,
    sample_inputs,
    save_onnx,
)
from lgfa_deploy.bundle import (
    FORMAT,
    MANIFEST,
    PRECISIONS,
    SCHEMA_VERSION,
    Bundle,
    file_entry,
    graph_file,
    write_json_atomic,
)
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import CONTEXT_LENGTH
from training.checkpoints import attach_e4e, load_models, save_checkpoint
from training.clip_model import CLIP_MEAN, CLIP_STD, clip_image_size, vocabulary_path
from training.e4e import save_e4e

if TYPE_CHECKING:
    from training.checkpoints import Models

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
E4E_WEIGHTS = "e4e.safetensors"


@dataclass
class GraphSummary:
    """What exporting one graph took: seconds and bytes per precision (external data included)."""

    name: str
    seconds: float
    bytes: dict[str, int]


@dataclass
class ExportSummary:
    """What an export wrote, for the closing log lines."""

    out: Path
    graphs: list[GraphSummary] = field(default_factory=list)
    export_seconds: float = 0.0
    verify_seconds: float = 0.0


def check_output_dir(out: Path, force: bool) -> Path:
    """Refuse an output directory that cannot be written or would lose files; return it absolute."""
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise LgfaError(f"--out {out} is a file; give a directory for the bundle")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise LgfaError(f"{out} is not empty; choose another --out, or add --force to replace the bundle there")
        if not (out / MANIFEST).is_file():
            raise LgfaError(
                f"{out} holds files but no {MANIFEST}, so it is not a bundle and --force will not replace it; "
                "choose another --out"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LgfaError(f"cannot create {out.parent} ({exc.strerror}); choose another --out") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise LgfaError(f"cannot write to {out.parent}; choose another --out")
    return out


class StagedDirectory:
    """A temporary directory beside ``target`` that becomes ``target`` on :meth:`commit`, else vanishes.

    A non-empty ``target`` is replaced only when ``replace`` is set.
    """

    def __init__(self, target: Path, replace: bool) -> None:
        self.target = target
        self.replace = replace
        self.path = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        self.committed = False

    def __enter__(self) -> StagedDirectory:
        try:
            self.path.mkdir()
        except OSError as exc:
            raise LgfaError(f"cannot create a directory in {self.target.parent} ({exc.strerror})") from None
        return self

    def commit(self) -> None:
        """Move the staged directory to the target (files made readable as the umask allows); an
        existing target is removed only afterwards."""
        _apply_umask(self.path)
        old = None
        if self.target.exists():
            if not self.replace and any(self.target.iterdir()):
                raise LgfaError(f"{self.target} filled up during the export; add --force to replace it")
            old = self.target.with_name(f".{self.target.name}.{secrets.token_hex(4)}.old")
            os.rename(self.target, old)
        os.rename(self.path, self.target)
        self.committed = True
        if old is not None:
            shutil.rmtree(old)

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)


def _apply_umask(root: Path) -> None:
    """Give every file and folder under ``root`` the default permissions: temporary-file helpers
    create theirs private (0600), which would keep other users from running the bundle."""
    umask = os.umask(0)
    os.umask(umask)
    for path in (root, *root.rglob("*")):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _graph_files(root: Path, names: list[str]) -> dict[str, Any]:
    """The manifest record of one graph file, with its external data file when it has one."""
    entry = file_entry(root, names[0])
    if len(names) > 1:
        entry["external_data"] = file_entry(root, names[1])
    return entry


def _entry_bytes(entry: dict[str, Any]) -> int:
    return entry["bytes"] + entry.get("external_data", {}).get("bytes", 0)


def write_graphs(
    models: Models, root: Path, *, frames: int, precisions: Sequence[str], max_batch: int
) -> tuple[dict[str, Any], list[GraphSummary]]:
    """Export every graph into ``root``, one at a time; return their manifest records and timings."""
    specs = bundle_specs(models, frames, max_batch)
    records: dict[str, Any] = {}
    summaries = []
    scratch = root / ".scratch"
    for name in tqdm(specs, desc="export", unit="graph"):
        start = time.perf_counter()
        spec = specs[name]
        scratch.mkdir()
        inputs = sample_inputs(name, models, TRACE_BATCH)
        model = export_onnx(build_module(name, models, frames), spec, inputs, scratch / spec.file)
        shutil.rmtree(scratch)
        files: dict[str, Any] = {}
        for precision in (p for p in PRECISIONS if p in precisions):
            if precision == "fp16":
                model = convert_to_fp16(model)
            file_name = graph_file(name, precision)
            files[precision] = _graph_files(root, save_onnx(model, root / file_name))
        del model, inputs
        gc.collect()
        records[name] = {**spec.to_dict(), "opset": OPSET, "files": files}
        summaries.append(GraphSummary(name, time.perf_counter() - start, {p: _entry_bytes(e) for p, e in files.items()}))
        log.debug("%s exported in %.1f s", name, summaries[-1].seconds)
    return records, summaries


def manifest_for(models: Models, root: Path, frames: int, graphs: dict[str, Any], tokenizer: str) -> dict[str, Any]:
    """The manifest of a bundle whose files are already in ``root``.

    ``model`` carries what the runtime needs to prepare a photo without torch: the aligned face's
    side for e4e (``face_size``, with the photo graphs) and the CLIP image tower's input size, mean
    and standard deviation.
    """
    preset = models.preset
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "exporter": {"torch": torch.__version__, "onnx": onnx.__version__, "opset": OPSET},
        "model": {
            "preset": preset.name,
            "resolution": models.generator.size,
            "n_latent": models.generator.n_latent,
            "style_dim": models.generator.style_dim,
            "embed_dim": preset.embed_dim,
            "frames": frames,
            "prompt_template": preset.prompt_template,
            "context_length": CONTEXT_LENGTH,
            "clip_image_size": clip_image_size(models.model.encoder),
            "clip_mean": list(CLIP_MEAN),
            "clip_std": list(CLIP_STD),
            "config": preset.to_dict(),
        },
        "provenance": {"random_init": models.random_init, "sources": models.sources},
        "tokenizer": file_entry(root, tokenizer),
        "weights": file_entry(root, WEIGHTS),
        "graphs": graphs,
        "engines": {},
    }
    if models.e4e is not None:
        manifest["model"]["face_size"] = models.e4e.config.input_size
        manifest["e4e"] = file_entry(root, E4E_WEIGHTS)
    return manifest


def attach_photo_encoder(models: Models, e4e: str | None, seed: int) -> None:
    """Give ``models`` the e4e of ``e4e``, or a random one where the models are random-init anyway;
    a real model without an e4e file raises :class:`LgfaError` saying what to pass."""
    if e4e is None and not models.random_init:
        raise LgfaError(
            "the photo graphs need the e4e encoder of this generator: add --e4e FILE (e.g. e4e_ffhq_encode.pt), "
            "or --no-photo to export without them"
        )
    attach_e4e(models, e4e, seed=seed)


def export_bundle(
    out: Path,
    *,
    preset: str | None = None,
    checkpoint: str | None = None,
    stylegan: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames: int | None = None,
    precisions: Sequence[str] = ("fp32",),
    max_batch: int = 16,
    force: bool = False,
    e4e: str | None = None,
    photo: bool = True,
) -> ExportSummary:
    """Load models, write a bundle to ``out`` and verify it; raises :class:`LgfaError` on bad input.

    ``frames`` defaults to the preset's inference length. With ``photo`` (the default) the bundle
    also gets the photo graphs, from the e4e file ``e4e`` or, for random-init models, a random e4e.
    Verification runs on the staged bundle with the weights read back from it; the bundle is moved
    into place only when every check passes.
    """
    from export.verify import verify_bundle

    if e4e is not None and not photo:
        raise LgfaError("--e4e and --no-photo exclude each other: the e4e encoder is only used by the photo graphs")
    out = check_output_dir(out, force)
    summary = ExportSummary(out)
    models = load_models(preset=preset, checkpoint=checkpoint, stylegan=stylegan, random_init=random_init, seed=seed)
    if photo:
        attach_photo_encoder(models, e4e, seed)
    frames = models.preset.frames if frames is None else frames
    start = time.perf_counter()
    with StagedDirectory(out, replace=force) as staged:
        graphs, summary.graphs = write_graphs(
            models, staged.path, frames=frames, precisions=precisions, max_batch=max_batch
        )
        save_checkpoint(staged.path / WEIGHTS, models)
        if models.e4e is not None:
            save_e4e(staged.path / E4E_WEIGHTS, models.e4e)
        vocabulary = vocabulary_path()
        shutil.copyfile(vocabulary, staged.path / vocabulary.name)
        write_json_atomic(staged.path / MANIFEST, manifest_for(models, staged.path, frames, graphs, vocabulary.name))
        Bundle.open(staged.path)
        del models
        gc.collect()
        summary.export_seconds = time.perf_counter() - start
        report = verify_bundle(staged.path)
        summary.verify_seconds = time.perf_counter() - start - summary.export_seconds
        print(report.table(title=f"verify {out} (staged in {staged.path.name})"))
        if not report.ok:
            raise LgfaError(
                f"the exported bundle failed {report.failures} verification check(s) (table above); "
                f"nothing was written to {out}"
            )
        staged.commit()
    return summary
