"""How far onnxruntime gets past PyTorch eager on the CPU for synthesis, one setting at a time.

Times the synthesis graph of one or more bundles at batch 1 with N threads (default 2): PyTorch
eager FP32 (the torch backend, ``torch.set_num_threads(N)``) in the reference formulation (the
1.0x baseline, as ``lgfa bench`` has it) and in ours, against onnxruntime sessions that add one
setting or graph rewrite per step, and the onnxruntime backend exactly as ``lgfa`` opens it. All configurations are opened first and then timed in
interleaved rounds (each round runs every configuration once), so a noisy machine disturbs them
alike; the table gives the median and the best round. Every configuration's output is compared
with the torch output (max |difference|) so a rewrite that changes the image is caught.

Graph rewrites (written to a temporary file, never into the bundle):

``phase-convtranspose``
    A stride-2 3x3 ``ConvTranspose`` (the up-sampling modulated convolution) becomes four ordinary
    convolutions on the input grid, one per output phase (kernels 2x2, 2x1, 1x2, 1x1: exactly the
    transposed convolution's multiply-adds, no zero-inserted work), concatenated and interleaved
    by ``DepthToSpace``. The following blur convolution absorbs the extra zero row and column by
    padding one side less. onnxruntime runs ordinary convolutions in its blocked NCHWc layout;
    it has no such kernel for ConvTranspose, which goes through im2col/col2im.
``fold-gain``, ``winograd`` (from 256 input channels; ``winograd-128``, ``winograd-512``: other thresholds)
    The rewrites the onnxruntime backend applies on the CPU; see
    :mod:`lgfa_deploy.backends.onnxruntime_cpu_graph`.

Usage::

    python benchmarks/ort_cpu_steps.py --bundle /tmp/ffhq256 --json benchmarks/results/ort-steps.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lgfa_deploy import device_info
from lgfa_deploy.backends.onnxruntime_cpu_graph import (
    DISABLED_OPTIMIZERS,
    attributes,
    fold_gain,
    replace_nodes,
    winograd_conv3x3,
)
from lgfa_deploy.bundle import Bundle, write_json_atomic
from lgfa_deploy.errors import LgfaError

log = logging.getLogger("ort_cpu_steps")


# ----------------------------------------------------------------------------------------------
# Graph rewrites


def phase_convtranspose(model: Any) -> int:
    """Replace stride-2 3x3 ConvTranspose (group 1, no padding, constant weight) by phase convolutions.

    Returns how many were replaced. Output index o of the transposed convolution is 2i + k: even
    outputs 2m take x[m] w[0] + x[m-1] w[2], odd outputs 2m+1 take x[m] w[1] (per axis).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes, added, count = [], [], 0
    taps = {0: [2, 0], 1: [1]}  # correlation taps per output phase, over x[m-1], x[m]
    for node in graph.node:
        a = attributes(node)
        if not (
            node.op_type == "ConvTranspose"
            and a.get("group", 1) == 1
            and list(a.get("strides", [1, 1])) == [2, 2]
            and list(a.get("kernel_shape", [])) == [3, 3]
            and list(a.get("pads", [0, 0, 0, 0])) == [0, 0, 0, 0]
            and list(a.get("output_padding", [0, 0])) == [0, 0]
            and list(a.get("dilations", [1, 1])) == [1, 1]
            and len(node.input) == 2
            and node.input[1] in inits
        ):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).transpose(1, 0, 2, 3)  # [Cout, Cin, 3, 3]
        phases = []
        for ph in (0, 1):
            for pw in (0, 1):
                kernel = np.ascontiguousarray(weight[:, :, taps[ph], :][:, :, :, taps[pw]])
                name = f"{node.output[0]}/phase{ph}{pw}"
                added.append(numpy_helper.from_array(kernel, name + "/weight"))
                # pads [top, left, bottom, right]: every phase yields (H + 1) x (W + 1); the odd
                # phases' extra last row/column is zero (it lies past the transposed conv's output).
                pads = [1 if ph == 0 else 0, 1 if pw == 0 else 0, 1, 1]
                nodes.append(helper.make_node(
                    "Conv", [node.input[0], name + "/weight"], [name], name=name,
                    kernel_shape=list(kernel.shape[2:]), pads=pads, strides=[1, 1],
                ))
                phases.append(name)
        stacked = node.output[0] + "/phases"
        nodes.append(helper.make_node("Concat", phases, [stacked], name=stacked, axis=1))
        users = consumers.get(node.output[0], [])
        blur = users[0] if len(users) == 1 and users[0].op_type == "Conv" else None
        if blur is not None and list(attributes(blur).get("pads", [])) == [1, 1, 1, 1]:
            # The interleaved result is (2H + 2) wide; its last row/column is zero, so the blur
            # needs no bottom/right padding to give the same 2H output.
            nodes.append(helper.make_node("DepthToSpace", [stacked], [node.output[0]], name=stacked + "/d2s", blocksize=2, mode="DCR"))
            for attr in blur.attribute:
                if attr.name == "pads":
                    attr.ints[:] = [1, 1, 0, 0]
        else:
            full = node.output[0] + "/full"
            nodes.append(helper.make_node("DepthToSpace", [stacked], [full], name=full, blocksize=2, mode="DCR"))
            names = [full + s for s in ("/starts", "/ends", "/axes")]
            for n, v in zip(names, ([0, 0], [-1, -1], [2, 3])):
                added.append(numpy_helper.from_array(np.array(v, np.int64), n))
            nodes.append(helper.make_node("Slice", [full, *names], [node.output[0]], name=full + "/crop"))
        count += 1
    replace_nodes(model, nodes, added)
    return count


REWRITES: dict[str, Callable[[Any], int]] = {
    "phase-convtranspose": phase_convtranspose,
    "fold-gain": fold_gain,
    "winograd": winograd_conv3x3,
    "winograd-128": lambda model: winograd_conv3x3(model, min_channels=128),
    "winograd-512": lambda model: winograd_conv3x3(model, min_channels=512),
}


# ----------------------------------------------------------------------------------------------
# Steps


def steps(threads: int) -> list[dict[str, Any]]:
    """The configurations, in order; each names its session settings and graph rewrites."""
    base = {"intra_op_num_threads": threads}
    tuned = {**base, "level": "ORT_ENABLE_ALL", "sequential": True, "inter_op_num_threads": 1, "batch": 1}
    winograd = {**tuned, "disabled_optimizers": DISABLED_OPTIMIZERS}
    return [
        {"step": "onnxruntime defaults (no SessionOptions)", "defaults": True},
        {"step": f"ORT_DISABLE_ALL, {threads} intra-op threads", "options": {**base, "level": "ORT_DISABLE_ALL"}},
        {"step": "+ ORT_ENABLE_BASIC (constant folding, redundant nodes)", "options": {**base, "level": "ORT_ENABLE_BASIC"}},
        {"step": "+ ORT_ENABLE_EXTENDED (operator fusions)", "options": {**base, "level": "ORT_ENABLE_EXTENDED"}},
        {"step": "+ ORT_ENABLE_LAYOUT (NCHWc blocked layout for Conv)", "options": {**base, "level": "ORT_ENABLE_LAYOUT"}},
        {"step": "+ ORT_ENABLE_ALL", "options": {**base, "level": "ORT_ENABLE_ALL"}},
        {"step": "+ sequential, 1 inter-op thread", "options": {**base, "level": "ORT_ENABLE_ALL", "sequential": True, "inter_op_num_threads": 1}},
        {"step": "+ static batch (free dimension override batch=1)", "options": {**base, "level": "ORT_ENABLE_ALL", "sequential": True, "inter_op_num_threads": 1, "batch": 1}},
        {"step": "  (variant: memory pattern off)", "options": {**base, "level": "ORT_ENABLE_ALL", "sequential": True, "inter_op_num_threads": 1, "batch": 1, "enable_mem_pattern": False}},
        {"step": "  (variant: CPU memory arena off)", "options": {**base, "level": "ORT_ENABLE_ALL", "sequential": True, "inter_op_num_threads": 1, "batch": 1, "enable_cpu_mem_arena": False}},
        {"step": "  (variant: rewrite phase-convtranspose)", "options": tuned, "rewrites": ["phase-convtranspose"]},
        {"step": "+ rewrite fold-gain", "options": tuned, "rewrites": ["fold-gain"]},
        {"step": "+ rewrite winograd (3x3 convs from 256 channels)", "options": winograd, "rewrites": ["fold-gain", "winograd"]},
        {"step": "  (variant: winograd from 128 channels)", "options": winograd, "rewrites": ["fold-gain", "winograd-128"]},
        {"step": "  (variant: winograd from 512 channels)", "options": winograd, "rewrites": ["fold-gain", "winograd-512"]},
        {"step": "  (variant: no spinning threads)", "options": {**winograd, "config": {"session.intra_op.allow_spinning": "0"}},
         "rewrites": ["fold-gain", "winograd"]},
    ]


def session(path: Path, step: dict[str, Any]) -> Any:
    import onnxruntime as ort

    if step.get("defaults"):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    opts = dict(step["options"])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, opts.pop("level"))
    if opts.pop("sequential", False):
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    disabled = opts.pop("disabled_optimizers", None)
    batch = opts.pop("batch", None)
    if batch is not None:
        so.add_free_dimension_override_by_name("batch", batch)
    for key, value in opts.pop("config", {}).items():
        so.add_session_config_entry(key, value)
    for key, value in opts.items():
        setattr(so, key, value)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def rewritten(path: Path, names: list[str], tmp: Path, cache: dict[tuple[str, ...], Path]) -> Path:
    import onnx

    key = tuple(names)
    if key not in cache:
        model = onnx.load(str(path))
        for name in names:
            log.info("  rewrite %s: %d sites", name, REWRITES[name](model))
        out = tmp / f"synthesis.{'+'.join(names)}.onnx"
        onnx.save(model, str(out))
        cache[key] = out
    return cache[key]


def run_bundle(bundle_dir: Path, threads: int, rounds: int, only: list[int] | None) -> dict[str, Any]:
    import torch

    from lgfa_deploy.backends import open_backend

    bundle = Bundle.open(bundle_dir)
    torch.set_num_threads(threads)
    baseline = open_backend("torch", bundle, device="cpu", precision="fp32", formulation="reference")
    torch_backend = open_backend("torch", bundle, device="cpu", precision="fp32")
    latents = np.random.default_rng(0).standard_normal((1, bundle.n_latent, bundle.style_dim)).astype(np.float32)
    reference = torch_backend.run("synthesis", {"latents": latents})["image"]
    path = bundle.graph_path("synthesis", "fp32")
    configs: list[tuple[str, Callable[[], Any], dict[str, Any]]] = [
        (f"PyTorch eager FP32, reference formulation, {threads} threads (baseline)",
         lambda: baseline.run("synthesis", {"latents": latents}), {"baseline": True}),
        (f"PyTorch eager FP32, our formulation (the torch backend), {threads} threads",
         lambda: torch_backend.run("synthesis", {"latents": latents}), {}),
    ]
    cache: dict[tuple[str, ...], Path] = {}
    with tempfile.TemporaryDirectory(prefix="ort-steps-") as tmp:
        for index, step in enumerate(steps(threads)):
            if only is not None and index not in only:
                continue
            graph = rewritten(path, step.get("rewrites", []), Path(tmp), cache) if step.get("rewrites") else path
            started = time.perf_counter()
            sess = session(graph, step)
            load_s = time.perf_counter() - started
            out = sess.run(None, {"latents": latents})[0]
            diff = float(np.abs(out - reference).max())
            log.info("%s: loaded in %.1f s, max |diff| vs torch %.2e", step["step"], load_s, diff)
            configs.append((step["step"], lambda s=sess: s.run(None, {"latents": latents}), {**step, "load_s": round(load_s, 2), "max_abs_diff": diff}))
        started = time.perf_counter()
        ort_backend = open_backend("onnxruntime", bundle, device="cpu", precision="fp32", threads=threads)
        load_s = time.perf_counter() - started
        diff = float(np.abs(ort_backend.run("synthesis", {"latents": latents})["image"] - reference).max())
        configs.append(("onnxruntime backend as lgfa opens it (default options)",
                        lambda: ort_backend.run("synthesis", {"latents": latents}),
                        {"rewrites": ort_backend.rewrites, "load_s": round(load_s, 2), "max_abs_diff": diff}))
        for _, fn, _ in configs:  # warm-up
            fn()
        samples: list[list[float]] = [[] for _ in configs]
        for r in range(rounds):
            for i, (_, fn, _) in enumerate(configs):
                start = time.perf_counter()
                fn()
                samples[i].append((time.perf_counter() - start) * 1000.0)
            log.info("round %d/%d done", r + 1, rounds)
    base_median = statistics.median(samples[0])
    base_best = min(samples[0])
    rows = []
    for (label, _, meta), s in zip(configs, samples):
        rows.append({
            "step": label,
            "median_ms": round(statistics.median(s), 1),
            "best_ms": round(min(s), 1),
            "ratio_median": round(base_median / statistics.median(s), 3),
            "ratio_best": round(base_best / min(s), 3),
            "samples_ms": [round(x, 1) for x in s],
            **{k: v for k, v in meta.items() if k != "step"},
        })
    for backend in (baseline, torch_backend, ort_backend):
        backend.close()
    return {"bundle": str(bundle_dir), "preset": bundle.preset, "resolution": bundle.resolution, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", action="append", required=True, help="bundle directory (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--steps", default=None,
        help="only these step indices, comma-separated (each open session holds about 1 GiB at 1024 px: "
        "all 16 steps need more than 24 GiB there)",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    only = [int(s) for s in args.steps.split(",")] if args.steps else None
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        results = [run_bundle(Path(b), args.threads, args.rounds, only) for b in args.bundle]
    except LgfaError as exc:
        print(f"ort_cpu_steps: error: {exc}", file=sys.stderr)
        return 2
    doc = {
        "schema": "lgfa-ort-steps/1",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device_info.describe_device("cpu", measure_cpu=False),
        "threads": args.threads,
        "rounds": args.rounds,
        "batch": 1,
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "bundles": results,
    }
    for res in results:
        print(f"\n{res['preset']} {res['resolution']} px, batch 1, {args.threads} threads, {args.rounds} interleaved rounds")
        print(f"{'step':<62} {'median ms':>10} {'best ms':>9} {'x eager':>8} {'max|diff|':>10}")
        for row in res["rows"]:
            diff = row.get("max_abs_diff")
            print(f"{row['step']:<62} {row['median_ms']:>10.1f} {row['best_ms']:>9.1f} {row['ratio_median']:>7.2f}x "
                  f"{'' if diff is None else f'{diff:.1e}':>10}")
    if args.json:
        write_json_atomic(Path(args.json), doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
