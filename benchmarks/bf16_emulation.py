"""How much bf16 costs a bundle's frames, per choice of layers kept fp32, on any CPU (emulated).

A CPU without AVX512_BF16 or AMX cannot run OpenVINO's bf16 kernels, so this study emulates their
arithmetic in onnxruntime: every tensor a bf16 layer reads or writes is rounded to bf16 (a Cast to
BFLOAT16 and back; round to nearest even), the convolution weights too, and the arithmetic in
between runs in fp32, as oneDNN's bf16 kernels accumulate in fp32. Layers the policy of
:mod:`lgfa_deploy.backends.precision_policy` keeps fp32 are left untouched. Frames of W+ latents
from the bundle's own mapping network (seeds 0..N-1, each layer a different seed so that every
layer's style differs) are compared with the plain fp32 graph: PSNR over [-1, 1], worst frame.

    python benchmarks/bf16_emulation.py /tmp/i17/ffhq-256 /tmp/i17/ffhq-1024 --frames 2 \\
        --json benchmarks/results/cpu-amd-epyc-bf16-emulation-2026-11-30.json

This is an estimate of OpenVINO's bf16, not a measurement of it: OpenVINO fuses some layers and so
rounds less often than this emulation, which rounds after every layer.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lgfa_deploy import device_info  # noqa: E402
from lgfa_deploy.backends.precision_policy import keeps_fp32  # noqa: E402
from lgfa_deploy.bundle import Bundle  # noqa: E402

log = logging.getLogger("bf16_emulation")
COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def round_bf16(array: np.ndarray) -> np.ndarray:
    """fp32 -> the nearest bf16 value (ties to even), as fp32."""
    bits = array.astype(np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def _shapes(model: onnx.ModelProto, batch: int) -> dict[str, tuple[int | None, ...]]:
    """Every tensor's shape at ``batch`` by onnx shape inference with data propagation (the reshaped
    batch axis may stay unknown, None; the policy reads channels and width only)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = batch
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return {
        value.name: tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)
        for value in [*inferred.graph.value_info, *inferred.graph.output]
    }


def emulate_bf16(model: onnx.ModelProto, fp32_from: int | None) -> tuple[onnx.ModelProto, int, int]:
    """``model`` with bf16 rounding on every layer the policy does not keep (``fp32_from`` None: no layer
    kept, plain bf16); returns the model, the layers rounded and the layers kept."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    shapes = _shapes(model, batch=1)
    initializers = {t.name: t for t in model.graph.initializer}
    float_tensors = {name for name, t in initializers.items() if t.data_type == TensorProto.FLOAT}
    float_tensors |= {v.name for v in [*model.graph.value_info, *model.graph.input] if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    inferred = onnx.shape_inference.infer_shapes(model)
    float_tensors |= {v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    nodes = []
    rounded = kept = 0
    for node in model.graph.node:
        shape = shapes.get(node.output[0])
        if shape is None:
            raise ValueError(f"no inferred shape for {node.output[0]}: the policy cannot be applied")
        keep = fp32_from is not None and keeps_fp32(shape, fp32_from)
        kept += keep
        if keep or node.op_type in ("Constant", "Shape"):
            nodes.append(node)
            continue
        rounded += 1
        if node.op_type in COMPUTE_OPS:
            for i, name in enumerate(node.input):
                if name in initializers and initializers[name].data_type == TensorProto.FLOAT:
                    weights = round_bf16(numpy_helper.to_array(initializers[name]))
                    initializers[name].CopyFrom(numpy_helper.from_array(weights, name))
                elif name in float_tensors:
                    cast = f"{name}__bf16_in_{len(nodes)}"
                    nodes += _round_pair(name, cast)
                    node.input[i] = cast
        nodes.append(node)
        for i, name in enumerate(node.output):
            if name in float_tensors:
                raw = f"{name}__fp32"
                node.output[i] = raw
                nodes += _round_pair(raw, name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, rounded, kept


def _round_pair(source: str, target: str) -> list[onnx.NodeProto]:
    middle = f"{target}__as_bf16"
    return [
        helper.make_node("Cast", [source], [middle], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", [middle], [target], to=TensorProto.FLOAT),
    ]


def _session(model: onnx.ModelProto | str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _latents(bundle: Bundle, frames: int, threads: int) -> np.ndarray:
    """W+ [frames, L, S] from the mapping graph, a different seed per layer and frame."""
    mapping = _session(str(bundle.graph_path("mapping")), threads)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((frames * bundle.n_latent, bundle.style_dim)).astype(np.float32)
    w = np.concatenate([mapping.run(["w"], {"z": z[i : i + 1]})[0] for i in range(len(z))])
    return w.reshape(frames, bundle.n_latent, bundle.style_dim)


def psnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Worst-frame PSNR over the [-1, 1] range, in dB."""
    mse = ((reference.astype(np.float64) - candidate) ** 2).reshape(len(reference), -1).mean(1)
    return float(min(math.inf if m == 0 else 10 * math.log10(4.0 / m) for m in mse))


def study(bundle_dir: Path, frames: int, threads: int) -> dict:
    bundle = Bundle.open(bundle_dir, verify_hashes=False)
    model = onnx.load(str(bundle.graph_path("synthesis")))
    latents = _latents(bundle, frames, threads)
    fp32 = _session(model, threads)
    reference = np.concatenate([fp32.run(["image"], {"latents": latents[i : i + 1]})[0] for i in range(frames)])
    del fp32
    resolution = bundle.resolution
    policies = {"plain bf16": None, "vectors + ToRGB fp32": 0}
    width = resolution
    while width >= 64 and len(policies) < 5:
        policies[f"vectors + ToRGB + layers >= {width} px fp32"] = width
        width //= 2
    rows = []
    for label, fp32_from in policies.items():
        emulated, rounded, kept = emulate_bf16(model, fp32_from)
        session = _session(emulated, threads)
        images = np.concatenate([session.run(["image"], {"latents": latents[i : i + 1]})[0] for i in range(frames)])
        del session
        row = {"policy": label, "fp32_from": fp32_from, "layers_rounded": rounded, "layers_kept_fp32": kept,
               "psnr_db": round(psnr(reference, images), 2)}
        log.info("%s %d px: %s: %.2f dB (%d layers rounded, %d kept)", bundle.preset, resolution, label,
                 row["psnr_db"], rounded, kept)
        rows.append(row)
    return {"bundle": str(bundle_dir), "preset": bundle.preset, "resolution": resolution,
            "random_init": bundle.random_init, "frames": frames, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle directories")
    parser.add_argument("--frames", type=int, default=2, help="frames per bundle (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    doc = {
        "schema": "lgfa-bf16-emulation/1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bf16_emulation.py", *sys.argv[1:]]),
        "device": {"name": device_info.cpu_description()["model"], "cpu": device_info.cpu_description()},
        "method": "bf16 emulated in onnxruntime: Cast to BFLOAT16 and back on every input and output of the "
        "rounded layers, weights rounded to nearest even, fp32 arithmetic in between",
        "onnxruntime": ort.__version__,
        "results": [study(path, args.frames, args.threads) for path in args.bundles],
    }
    print(json.dumps(doc, indent=2))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
