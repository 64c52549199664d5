"""Add the synthetic face domain's parameter reader to an exported bundle.

The reader becomes the ``parameter_reader`` graph (declared in :mod:`lgfa_deploy.graphs`) and the
domain's facts (parameter names, neutral expression, covered prompts and their targets, how z is
made from parameters) go into the manifest as ``face_domain``, so that ``lgfa eval`` measures a
bundle of this domain with ground truth on any backend, without torch. Each covered prompt also
records its ``unreadable_identity``: the identity parameters whose reading drifts by more than the
identity target on the renderer's own faces moving along the prompt's path (identity unchanged),
which ``lgfa eval`` therefore leaves out of that prompt's identity drift.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from export.onnx_export import OPSET
from lgfa_deploy.atomic import atomic_path
from lgfa_deploy.bundle import Bundle, file_entry, graph_file
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.evaluation import TARGETS, largest_departure
from lgfa_deploy.face_domain import target_path_parameters
from lgfa_deploy.graphs import PARAMETER_READER, parameter_reader_spec
from training.faces.parameters import NAMES
from training.faces.prompts import domain_facts
from training.faces.reader import ParameterReader, faces_to_tensor, read_parameters
from training.faces.render import render_faces

MIN_COSINE = 0.9999
"""Agreement of onnxruntime with PyTorch on random frames that the export must reach."""
FLOOR_SEEDS = 32
"""Faces per prompt on which the reader's identity drift on ground truth is measured (seeds 0..31, as ``lgfa eval``'s)."""


def add_parameter_reader(bundle_dir: str | Path, reader: ParameterReader) -> None:
    """Export ``reader`` into the bundle at ``bundle_dir``, check it with onnxruntime, record it and the domain."""
    bundle = Bundle.open(bundle_dir)
    if bundle.resolution != reader.size:
        raise LgfaError(f"the reader reads {reader.size} px frames but bundle {bundle.root} makes {bundle.resolution} px")
    spec = parameter_reader_spec(bundle.resolution, len(NAMES))
    name = graph_file(PARAMETER_READER, "fp32")
    sample = torch.rand(2, 3, reader.size, reader.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    reader = reader.eval()
    with atomic_path(bundle.root / name, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(reader, (sample,), str(tmp), dynamo=False, opset_version=OPSET, input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=spec.dynamic_axes())  # fmt: skip
        _check_values(tmp, reader, sample)
    bundle.manifest["graphs"][PARAMETER_READER] = {**spec.to_dict(), "opset": OPSET, "files": {"fp32": file_entry(bundle.root, name)}}
    facts = domain_facts()
    for prompt, drift in unreadable_identity(reader, facts, bundle.frames).items():
        facts["prompts"][prompt]["unreadable_identity"] = drift
    bundle.manifest["face_domain"] = facts
    bundle.save_manifest()


@torch.no_grad()
def unreadable_identity(
    reader: ParameterReader, facts: dict, frames: int, seeds: int = FLOOR_SEEDS
) -> dict[str, dict[str, float]]:
    """Per prompt, {identity parameter: drift} for those whose reading on renders along the prompt's path
    (seeds' neutral faces to the target, identity unchanged) moves by more than the identity target."""
    bound = TARGETS["identity_drift"][1]
    identity = [facts["parameters"].index(n) for n in facts["identity"]]
    reader = reader.eval()
    found = {}
    for prompt in facts["prompts"]:
        path = np.concatenate([target_path_parameters(s, facts, prompt, frames) for s in range(seeds)])
        read = read_parameters(reader, faces_to_tensor(render_faces(path, reader.size)[0])).numpy()
        drift = largest_departure(read.reshape(seeds, frames, -1)[:, :, identity]).mean(axis=0)
        found[prompt] = {facts["identity"][i]: round(float(d), 3) for i, d in enumerate(drift) if d > bound}
    return {prompt: drift for prompt, drift in found.items() if drift}


def _check_values(path: Path, reader: ParameterReader, sample: torch.Tensor) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": sample.numpy()})[0]
    with torch.no_grad():
        want = reader(sample).numpy()
    cosine = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
    if cosine < MIN_COSINE:
        path.unlink()
        raise LgfaError(f"the exported parameter reader disagrees with PyTorch (cosine {cosine:.6f} < {MIN_COSINE})")
