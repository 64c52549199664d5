"""``lgfa verify DIR``: is a bundle intact, TensorRT-ready and faithful to its PyTorch model?

Per file: the sha256 in the manifest. Per graph and precision, in the order of Hugging Face
optimum's validation (names, then shapes, then values), stopping a graph at its first failing step:

1. ``onnx`` checker (full check, with shape inference) and opset within TensorRT 10's 9-20;
2. every operator and its restrictions against TensorRT 10's operator table (export/tensorrt_ops.py);
3. input and output names as declared;
4. input and output dtypes and shapes as declared (dynamic axes named);
5. onnxruntime (CPU) against PyTorch on the same inputs at two batch sizes (the smallest declared and
   3, never the traced batch of 2): output shapes, then values, within :data:`THRESHOLDS`.

The PyTorch reference is rebuilt from the bundle's own ``weights.safetensors`` (and ``e4e.safetensors``
for the photo graphs); FP16 graphs are compared with the FP32 PyTorch model. Prints one table row per check; exit status 1 when any fails.
"""
from __future__ import annotations

import argparse
import logging
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lgfa_deploy.bundle import Bundle, sha256_file
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import PARAMETER_READER

if TYPE_CHECKING:
    import onnx

    from lgfa_deploy.graphs import GraphSpec, TensorSpec
    from training.checkpoints import Models

log = logging.getLogger(__name__)

VERIFY_BATCH = 3
CPU_DISABLED_OPTIMIZERS: dict[str, list[str]] = {"fp32": [], "fp16": ["NchwcTransformer"]}
"""onnxruntime 1.32's CPU NchwcTransformer crashes (SIGSEGV) on the FP16 text encoder once the CPU
provider has cast its FP16 nodes to FP32; FP16 graphs are for GPU providers, the CPU runs them only here."""
IMAGE_RANGE = 2.0
"""Peak-to-peak range of the frames ([-1, 1]) that PSNR is measured against."""


@dataclass(frozen=True)
class Thresholds:
    """Pass marks of one precision against the FP32 PyTorch model.

    ``max_abs`` is relative to the reference's largest magnitude (at least 1); ``cosine`` is the
    smallest per-sample cosine similarity (embedding graphs); ``psnr`` the smallest per-sample PSNR
    in dB over the [-1, 1] range (frame graphs).
    """

    max_abs: float
    cosine: float
    psnr: float


THRESHOLDS: dict[str, Thresholds] = {
    "fp32": Thresholds(max_abs=1e-3, cosine=0.9999, psnr=60.0),
    "fp16": Thresholds(max_abs=5e-2, cosine=0.999, psnr=35.0),
    "bf16": Thresholds(max_abs=1e-1, cosine=0.999, psnr=38.0),
}
"""bf16 keeps 8 mantissa bits to fp16's 11; its 38 dB are issue 17's target for frames at 256 and
1024 px (plain bf16 measured 41 and 34 dB; the openvino backend keeps the widest layers fp32)."""
VALUE_BACKENDS = ("onnxruntime", "openvino")
"""What ``--backend`` may run the value checks on: onnxruntime on each exported graph file, or the
openvino backend on the FP32 files at ``--precision`` (the runtime path, with its own lowering)."""


@dataclass(frozen=True)
class Check:
    """One row of the verification table."""

    graph: str
    precision: str
    check: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    """All checks of one bundle."""

    root: Path
    checks: list[Check] = field(default_factory=list)

    def add(self, graph: str, precision: str, check: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(graph, precision, check, ok, detail))
        return ok

    @property
    def failures(self) -> int:
        return sum(not c.ok for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.failures == 0

    def table(self, title: str | None = None) -> str:
        """The checks as an aligned text table under ``title`` (default: the bundle), with a verdict."""
        header = ("graph", "precision", "check", "result", "detail")
        rows = [(c.graph, c.precision, c.check, "ok" if c.ok else "FAIL", c.detail) for c in self.checks]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in (header, *rows)]
        verdict = "all checks passed" if self.ok else f"{self.failures} check(s) FAILED"
        return "\n".join([title or f"verify {self.root}", *lines, verdict])


# -- comparisons ------------------------------------------------------------------------------------


def compare(reference: np.ndarray, candidate: np.ndarray, metric: str, thresholds: Thresholds) -> tuple[bool, str]:
    """Max abs error plus the graph's metric (cosine or PSNR, worst sample), against ``thresholds``."""
    ref = reference.astype(np.float64).reshape(reference.shape[0], -1)
    out = candidate.astype(np.float64).reshape(candidate.shape[0], -1)
    if not np.isfinite(out).all():
        return False, "non-finite values in the output"
    max_abs = float(np.abs(ref - out).max())
    abs_limit = thresholds.max_abs * max(1.0, float(np.abs(ref).max()))
    ok = max_abs <= abs_limit
    detail = f"max|diff| {max_abs:.2e} (<= {abs_limit:.1e})"
    if metric == "cosine":
        dots = (ref * out).sum(1)
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
        cosine = float(np.min(np.where(norms > 0, dots / np.maximum(norms, 1e-30), 1.0)))
        ok &= cosine >= thresholds.cosine
        detail += f", cosine {cosine:.6f} (>= {thresholds.cosine})"
    else:
        mse = ((ref - out) ** 2).mean(1)
        psnr = float(np.min([math.inf if m == 0 else 10 * math.log10(IMAGE_RANGE**2 / m) for m in mse]))
        ok &= psnr >= thresholds.psnr
        detail += f", PSNR {psnr:.1f} dB (>= {thresholds.psnr:g})"
    return bool(ok), detail


def verification_batches(spec: GraphSpec) -> list[int]:
    """The smallest declared batch and :data:`VERIFY_BATCH` (or the largest declared, if smaller)."""
    return sorted({spec.batch.min, min(spec.batch.max, VERIFY_BATCH)})


# -- per-graph checks -----------------------------------------------------------------------------


def _declared(values, tensors: tuple[TensorSpec, ...]) -> list[str]:
    """Differences between an ONNX graph's inputs or outputs and their declarations."""
    import onnx

    problems = []
    for value, tensor in zip(values, tensors):
        elem = value.type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "undefined"
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        if dtype != tensor.dtype:
            problems.append(f"{tensor.name} is {dtype}, declared {tensor.dtype}")
        if dims != list(tensor.shape):
            problems.append(f"{tensor.name} has shape {dims}, declared {list(tensor.shape)}")
    return problems


def _check_structure(report: VerifyReport, model: onnx.ModelProto, path: Path, spec: GraphSpec, precision: str) -> bool:
    """Checker, opset, TensorRT operators, names, declared shapes; False stops this graph's checks."""
    import onnx

    from export.tensorrt_ops import OPSET_MAX, OPSET_MIN, check_operators, check_opset

    name = spec.name
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return report.add(name, precision, "onnx checker", False, str(exc).splitlines()[0])
    report.add(name, precision, "onnx checker", True, f"{len(model.graph.node)} nodes")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    problems = check_opset(model)
    report.add(name, precision, "opset", not problems, "; ".join(problems) or f"opset {opset} within {OPSET_MIN}-{OPSET_MAX}")
    issues = check_operators(model)
    errors = [str(i) for i in issues if i.severity == "error"]
    warnings = [str(i) for i in issues if i.severity == "warning"]
    kinds = len({n.op_type for n in model.graph.node})
    detail = "; ".join(errors[:5]) + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")
    report.add(name, precision, "tensorrt operators", not errors, detail or f"{kinds} operator kinds accepted")
    for warning in warnings:
        log.warning("%s %s: %s", name, precision, warning)
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    outputs = [o.name for o in model.graph.output]
    names_ok = inputs == spec.input_names and outputs == spec.output_names
    report.add(
        name, precision, "names", names_ok,
        f"{inputs} -> {outputs}" + ("" if names_ok else f", declared {spec.input_names} -> {spec.output_names}"),
    )
    if not names_ok:
        return False
    problems = _declared(model.graph.input, spec.inputs) + _declared(model.graph.output, spec.outputs)
    shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in (*spec.inputs, *spec.outputs))
    return report.add(name, precision, "shapes", not problems, "; ".join(problems) or shapes)


def _check_values(
    report: VerifyReport, path: Path, spec: GraphSpec, precision: str, references: dict[int, tuple[dict, dict]]
) -> None:
    """Run the graph in onnxruntime on each reference's inputs; compare output shapes, then values."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=CPU_DISABLED_OPTIMIZERS[precision]
    )
    for batch, (inputs, expected) in references.items():
        outputs = dict(zip(spec.output_names, session.run(spec.output_names, inputs)))
        for tensor in spec.outputs:
            got = outputs[tensor.name]
            want = tensor.concrete(batch)
            if got.shape != want:
                report.add(spec.name, precision, f"values b={batch}", False, f"{tensor.name} shape {list(got.shape)}, declared {list(want)}")
                continue
            ok, detail = compare(expected[tensor.name], got, spec.metric, THRESHOLDS[precision])
            report.add(spec.name, precision, f"values b={batch}", ok, f"{tensor.name}: {detail}")


def _check_backend_values(
    report: VerifyReport, backend, spec: GraphSpec, references: dict[int, tuple[dict, dict]]
) -> None:
    """Run the graph on an opened lgfa backend on each reference's inputs; compare values at the
    precision the backend runs this graph at."""
    precision = backend.graph_precision(spec.name)
    for batch, (inputs, expected) in references.items():
        outputs = backend.run(spec.name, inputs)
        for tensor in spec.outputs:
            ok, detail = compare(expected[tensor.name], outputs[tensor.name], spec.metric, THRESHOLDS[precision])
            report.add(spec.name, precision, f"{backend.name} b={batch}", ok, f"{tensor.name}: {detail}")


def _references(models: Models, spec: GraphSpec, frames: int) -> dict[int, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """PyTorch inputs and outputs of one graph at each verification batch."""
    import torch

    from export.onnx_export import build_module, sample_inputs

    module = build_module(spec.name, models, frames)
    references = {}
    for batch in verification_batches(spec):
        inputs = sample_inputs(spec.name, models, batch, seed=batch)
        with torch.no_grad():
            outputs = module(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        references[batch] = (
            {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)},
            {t.name: y.numpy() for t, y in zip(spec.outputs, outputs)},
        )
    return references


def _check_hashes(report: VerifyReport, bundle: Bundle) -> set[str]:
    """One row per file of the manifest; returns the names of files that are missing or altered."""
    bad = set()
    entries = []
    for name, graph in bundle.manifest["graphs"].items():
        for precision, entry in graph["files"].items():
            entries.append((name, precision, entry))
            if "external_data" in entry:
                entries.append((name, precision, entry["external_data"]))
    for role in ("weights", "e4e", "tokenizer"):
        if role in bundle.manifest:
            entries.append(("bundle", "-", bundle.manifest[role]))
    for key, entry in bundle.manifest.get("engines", {}).items():
        entries.append((entry.get("graph", key), entry.get("precision", "-"), entry))
    for graph, precision, entry in entries:
        path = bundle.root / entry["file"]
        if not path.is_file():
            ok, detail = False, f"{entry['file']} is missing"
        else:
            ok = sha256_file(path) == entry["sha256"]
            detail = f"{entry['file']} " + ("matches the manifest" if ok else "does NOT match the manifest (changed or truncated)")
        report.add(graph, precision, "sha256", ok, detail)
        if not ok:
            bad.add(entry["file"])
    return bad


def verify_bundle(root: Path, backend: str = "onnxruntime", precision: str = "fp32") -> VerifyReport:
    """Run every check on the bundle in ``root``; bad input (not a bundle) raises :class:`LgfaError`.

    ``backend`` "onnxruntime" checks the values of every graph file (``precision`` unused);
    "openvino" runs the FP32 files on the openvino backend at ``precision`` instead.
    """
    import gc

    import onnx
    from google.protobuf.message import DecodeError
    from tqdm import tqdm

    from training.checkpoints import attach_e4e, load_models

    bundle = Bundle.open(root, verify_hashes=False)
    report = VerifyReport(bundle.root)
    altered = _check_hashes(report, bundle)
    models = None
    weights = [bundle.manifest[role]["file"] for role in ("weights", "e4e") if role in bundle.manifest]
    if altered & set(weights):
        report.add("bundle", "-", "values", False, "skipped: a weights file does not match the manifest")
    else:
        models = load_models(checkpoint=str(bundle.weights_path))
        if bundle.has_photo:
            attach_e4e(models, bundle.e4e_path)
    runtime = None
    if backend != "onnxruntime" and models is not None:
        from lgfa_deploy.backends import open_backend

        runtime = open_backend(backend, bundle, device="cpu", precision=precision)
    for name in tqdm(bundle.graph_names, desc="verify", unit="graph"):
        spec = bundle.graph(name)
        references = None
        files = bundle.precisions(name) if runtime is None else ["fp32"]
        for file_precision in files:
            path = bundle.graph_path(name, file_precision)
            if not path.is_file():
                continue
            try:
                model = onnx.load(str(path), load_external_data=False)
            except DecodeError:
                report.add(name, file_precision, "onnx checker", False, f"{path.name} is not an ONNX model")
                continue
            if not _check_structure(report, model, path, spec, file_precision) or models is None:
                continue
            if name == PARAMETER_READER:  # its weights are not in the bundle's checkpoint
                report.add(name, precision, "values", True, "checked against PyTorch when added (export/parameter_reader.py)")
                continue
            if references is None:
                references = _references(models, spec, bundle.frames)
            if runtime is None:
                _check_values(report, path, spec, file_precision, references)
            else:
                _check_backend_values(report, runtime, spec, references)
        gc.collect()
    if runtime is not None:
        runtime.close()
    return report


# -- command line ---------------------------------------------------------------------------------


def thresholds_text() -> str:
    """The pass marks in words, for help texts."""
    return "; ".join(
        f"{p.upper()}: max|diff| <= {t.max_abs:g} x max|ref|, cosine >= {t.cosine:g} or PSNR >= {t.psnr:g} dB"
        for p, t in THRESHOLDS.items()
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Check a bundle: file hashes against the manifest; per graph the ONNX checker, opset 9-20, every "
        "operator against TensorRT 10's list, input/output names, shapes, then onnxruntime against the "
        f"PyTorch model rebuilt from the bundle's weights at two batch sizes ({thresholds_text()}). "
        "Prints a table; exit status 1 when any check fails."
    )
    parser.epilog = (
        "examples:\n  lgfa verify engines/tiny\n"
        "  lgfa verify engines/ffhq-256 --backend openvino --precision bf16   # needs a CPU with native bf16"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("bundle", metavar="DIR", help="bundle directory written by 'lgfa export'")
    parser.add_argument(
        "--backend", default="onnxruntime", choices=VALUE_BACKENDS,
        help="run the value checks on onnxruntime (every graph file) or on the openvino backend (the FP32 files at --precision)",
    )
    parser.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
        help="with --backend openvino: the precision synthesis runs at (the other graphs run fp32)",
    )


def run(args: argparse.Namespace) -> int:
    if args.backend == "onnxruntime" and args.precision != "fp32":
        raise LgfaError("--precision applies to --backend openvino; onnxruntime checks every exported precision")
    report = verify_bundle(Path(args.bundle), backend=args.backend, precision=args.precision)
    print(report.table())
    if not report.ok:
        log.error("%s failed %d check(s)", report.root, report.failures)
        return 1
    return 0
