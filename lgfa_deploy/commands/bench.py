"""``lgfa bench``: latency per stage and fps per backend, precision and batch, in one process."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from lgfa_deploy.backends.base import RUNTIME_PRECISIONS
from lgfa_deploy.bundle import write_json_atomic
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.validate import check_output_file

log = logging.getLogger(__name__)

DESCRIPTION = """Measure a bundle per backend, precision and batch: p50/p90/p99 latency of every pipeline
stage (tokenize, text encoder, motion, synthesis, uint8 conversion, mp4 encoding), the time to
the first frame of a clip and the sustained fps of 'lgfa stream' with and without encoding.
Everything runs in this one process, after a warm-up. The baseline, measured first as its own
run, is PyTorch eager FP32 at batch 1 in the reference formulation (the way the reference
implementation runs: per-sample weights, grouped convolutions); each row, the torch ones
included, states its ratio to it. The synthesis rows also state the FLOPs and bytes of the
network per frame (counted from its ONNX graph) and the fraction of the device's peak compute
and bandwidth they reach."""

EPILOG = """examples:
  lgfa bench --bundle engines/tiny --backend onnxruntime,torch --batch 1,4 --json bench.json --plot bench.png
  lgfa bench --bundle engines/ffhq --backend tensorrt,onnxruntime,torch --precision fp32,fp16 --batch 1,4,16 \\
      --device cuda --json benchmarks/results/h100.json --plot benchmarks/results/h100.png
  lgfa bench --bundle engines/tiny --backend onnxruntime --option onnxruntime.threads=1 --stages synthesis
  lgfa bench --bundle engines/ffhq-256 --backend onnxruntime,openvino --precision fp32,bf16 --batch 1 --device cpu"""


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _batches(text: str) -> list[int]:
    try:
        values = [int(t) for t in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batches must be whole numbers separated by commas, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batches must be 1 or more, got {text!r}")
    return sorted(set(values))


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["onnxruntime.threads=2", "torch.compile=true"]`` -> ``{"onnxruntime": {"threads": 2}, ...}``."""
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        backend, dot, name = key.partition(".")
        if not sep or not dot or not backend or not name:
            raise LgfaError(f"--option takes BACKEND.NAME=VALUE, e.g. onnxruntime.threads=2; got {item!r}")
        options.setdefault(backend, {})[name] = _value(value)
    return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lgfa_deploy.bench import STAGES

    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--bundle", required=True, help="bundle directory (from 'lgfa export')")
    parser.add_argument("--backend", default="onnxruntime,torch", help="backends, comma-separated: onnxruntime, openvino, torch, tensorrt")
    parser.add_argument("--batch", type=_batches, default=[1, 4, 16], help="batch sizes, comma-separated (default 1,4,16)")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16, bf16 (openvino), comma-separated; a backend without one is skipped")
    parser.add_argument("--frames", type=int, default=64, help="frames streamed for each sustained-fps measurement (default 64)")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per stage (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each stage (default 3)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: cuda if found)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch, onnxruntime and openvino (default: all usable CPUs)")
    parser.add_argument("--stages", default=None, help=f"only these stages, comma-separated (default: all of {', '.join(STAGES)})")
    parser.add_argument("--text", action="append", default=None, help="sentence to animate (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="face seed (default 0)")
    parser.add_argument(
        "--image", default=None, metavar="PHOTO",
        help="also time the photo path at batch 1: face detection, landmarks, alignment, e4e, CLIP image tower",
    )
    parser.add_argument(
        "--option", action="append", default=[], metavar="BACKEND.NAME=VALUE",
        help="option passed to open_backend, e.g. onnxruntime.threads=2 (repeatable)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline run (torch eager fp32, reference formulation; no ratios)")
    parser.add_argument("--no-cpu-peak", action="store_true", help="do not measure the CPU's peak rates (left unknown)")
    parser.add_argument(
        "--json", default=None, metavar="OUT.json",
        help='write the results here (rewritten after each batch size, "complete": true once the run has finished)',
    )
    parser.add_argument("--plot", default=None, metavar="OUT.png", help="plot fps against batch here")


def run(args: argparse.Namespace) -> int:
    from lgfa_deploy.bench import DEFAULT_TEXTS, STAGES, BenchConfig, run_bench
    from lgfa_deploy.bench_report import format_table, plot

    backends = _list(args.backend)
    if not backends:
        raise LgfaError("--backend is empty; choose from onnxruntime, torch, tensorrt")
    precisions = _list(args.precision)
    bad = [p for p in precisions if p not in RUNTIME_PRECISIONS]
    if bad or not precisions:
        raise LgfaError(f"unknown precision {', '.join(bad) or '(none)'}; choose from {', '.join(RUNTIME_PRECISIONS)}, e.g. fp32,bf16")
    for option, path, suffix in (("--json", args.json, ".json"), ("--plot", args.plot, ".png")):
        if path is not None:
            check_output_file(path, option, (suffix,))
    stages = tuple(_list(args.stages)) if args.stages else STAGES
    config = BenchConfig(
        bundle=Path(args.bundle),
        backends=backends,
        batches=args.batch,
        precisions=precisions,
        frames=args.frames,
        iters=args.iters,
        warmup=args.warmup,
        device=args.device,
        threads=args.threads,
        texts=args.text or list(DEFAULT_TEXTS),
        seed=args.seed,
        backend_options=parse_options(args.option),
        baseline=not args.no_baseline,
        measure_cpu_peak=not args.no_cpu_peak,
        stages=stages,
        image=None if args.image is None else Path(args.image),
    )
    command = shlex.join(["lgfa", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None

    def write_partial(doc: dict[str, Any]) -> None:  # a run stopped part-way keeps its figures so far
        write_json_atomic(Path(args.json), {**doc, "command": command})

    doc = run_bench(config, on_partial=write_partial if args.json else None)
    doc["command"] = command
    print(format_table(doc))
    if args.json:
        write_json_atomic(Path(args.json), doc)
        log.info("wrote %s", args.json)
    if args.plot:
        plot(doc, Path(args.plot))
        log.info("wrote %s", args.plot)
    return 0
