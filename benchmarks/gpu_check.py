"""The one command to run first on a GPU machine: GPU tests, an ffhq-1024 bundle, where synthesis
spends its time, the torch backend's speed, training steps/s; results as JSON and a PNG in ``--out``.

It runs from a plain checkout on the GPU machine as it comes (python3 3.12, torch 2.11 with CUDA 13,
torchvision, onnx, onnxruntime, OpenCV, matplotlib, pytest; no open_clip or TensorRT), once the three
wheels it lacks are installed from ``.whl/`` (git-ignored: download them on any machine with PyPI,
2.3 MB, and carry the folder along with the tree)::

    python3 -m pip download --only-binary=:all: --no-deps --python-version 3.12 \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl open_clip_torch ftfy wcwidth
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    python3 benchmarks/gpu_check.py --out $OUT

Steps, each in its own process with its own time budget, in order: ``environment``; ``gpu_tests``
(``pytest -m gpu tests/test_gpu.py``); ``bundle`` (``lgfa export --preset ffhq-1024 --random-init
--no-photo --max-batch 32``; should it fail or overrun, ``synthesis_direct`` times the generator's
synthesis alone, eager FP32 and FP16, so that some figures come back); ``profile``
(``benchmarks/gpu_probes.py profile``: FP16 eager at batch 8, channels_last and cuDNN's algorithm
search each on and off, then the kernels and operators that take the time); ``bench_graphs`` (``lgfa bench`` of
the torch backend, FP16 then FP32 with CUDA graphs, batch 1, 4, 16, 32: synthesis, frames, first
frame of a 16-frame clip, stream; peak GPU
memory; each run has its own eager FP32 baseline); ``bench_eager`` (the same without CUDA graphs);
``training`` (steps/s of the paper's step at 1024 px: text -> motion -> W+ -> synthesis -> CLIP
loss, backward, Adam); ``bench_compile`` (FP16, CUDA graphs around ``torch.compile`` in its default
mode, batch 32: the backend's own default, max-autotune, would not fit the budget). A
step that fails or overruns is recorded with the tail of its output and the rest go on; the JSON is
rewritten after every step, and each bench step's JSON after each batch size, so whatever finished
before a kill or an overrun is there. The summary compares the
best figures with issue 8's targets (>= 400 frames/s at the best batch, first frame <= 10 ms,
>= 6x eager FP32 in the same run, <= 4 GiB at batch 1). ``--out`` gets at most 6 files, flat:
``gpu_check.json``, ``gpu_check.png`` and the ``bench_*.json`` of each bench step (the profile's
figures are inside ``gpu_check.json``). Commit them under
``benchmarks/results/`` with the GPU and date in front of their names (``h200-2026-12-04-bench_graphs.json``)
and regenerate ``benchmarks/README.md`` with ``python benchmarks/make_table.py``.

``--rehearse`` runs the same steps on the CPU with the tiny preset and small counts (the test
suite does, so the first GPU run is not the script's first run); a whole GPU run takes about
9 minutes at most (``--budget``, seconds, default 540: give the device call a limit of 570 s).
The first H200 run (2026-12-04) found the torch backend's channels_last conversion broken on a GPU
(fixed: tests/test_runtime.py covers it on the CPU); the second ran every step.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGETS = {
    "synthesis_fps": 400.0,  # 1024 px frames/s at the best batch (H100/H200)
    "frames_fps": 400.0,  # the same as uint8 frames on the host, what the pipeline streams (synthesis: float images)
    "first_frame_ms": 10.0,  # first frame of a 16-frame clip
    "ratio_to_eager_fp32": 6.0,  # in the same run
    "batch1_gpu_memory_gib": 4.0,
}
log = logging.getLogger("gpu_check")


@dataclass(frozen=True)
class Plan:
    """What one run measures: the GPU run, or its CPU rehearsal."""

    device: str
    preset: str
    batches: tuple[int, ...]
    compile_batches: tuple[int, ...]
    compile_precision: str  # the CPU runs fp32 only (and ignores compile: the step still runs)
    iters: int
    stream_frames: int
    train_steps: int
    profile_batch: int
    budgets: dict[str, float] = field(default_factory=dict)


# Budgets from the H200 runs of 2026-12-04: tests 69 s, bundle 42 s, training 15 s, compile at batch 32
# 66 s; bench_graphs had measured FP16 at every batch and FP32 at batch 1-4 when its 160 s ran out.
GPU_PLAN = Plan("cuda", "ffhq-1024", (1, 4, 16, 32), (32,), "fp16", 20, 200, 10, 8, {
    "gpu_tests": 120, "bundle": 90, "synthesis_direct": 60, "profile": 75, "bench_graphs": 170, "bench_eager": 60,
    "training": 40, "bench_compile": 90,
})
REHEARSAL = Plan("cpu", "tiny", (1, 4), (4,), "fp32", 2, 6, 2, 2, {
    "gpu_tests": 60, "bundle": 200, "synthesis_direct": 60, "profile": 120, "bench_graphs": 150, "bench_eager": 120,
    "training": 60, "bench_compile": 120,
})


# -- the steps' own work -------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """The machine and the packages the figures depend on (never fails)."""
    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                           "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}
    except ImportError:
        info["torch"] = None
    for name in ("onnx", "onnxruntime", "open_clip", "torchvision", "tensorrt", "cupy", "triton", "cv2", "matplotlib",
                 "pytest"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "present")
        except Exception as exc:  # noqa: BLE001 - a broken package is reported, not fatal
            info[name] = None if isinstance(exc, ImportError) else f"broken: {type(exc).__name__}"
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    return info


# -- the orchestration ---------------------------------------------------------------------------


class Check:
    """Runs the steps one after the other within the budget, rewriting the results after each."""

    def __init__(self, out: Path, plan: Plan, budget: float, rehearse: bool) -> None:
        self.out, self.plan, self.rehearse = out, plan, rehearse
        self.deadline = time.monotonic() + budget
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.bundle = self.work / f"{plan.preset}-bundle"
        self.doc: dict[str, Any] = {"schema": "lgfa-gpu-check/1", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds"), "rehearsal": rehearse, "plan": plan.__dict__,
                                    "targets": TARGETS, "steps": {}}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        if rehearse:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the rehearsal is the CPU's, even on a GPU machine
        self.env = env

    def save(self) -> None:
        path = self.out / "gpu_check.json"
        path.write_text(json.dumps(self.doc, indent=1, default=str) + "\n")

    def record(self, name: str, status: str, started: float, **details: Any) -> dict[str, Any]:
        entry = {"status": status, "seconds": round(time.perf_counter() - started, 1), **details}
        self.doc["steps"][name] = entry
        log.info("%s: %s (%.0f s)", name, status, entry["seconds"])
        self.save()
        return entry

    def run(self, name: str, args: list[str]) -> dict[str, Any]:
        """One step as a subprocess of this Python, within its budget and what is left of the whole."""
        started = time.perf_counter()
        timeout = min(self.plan.budgets[name], self.deadline - time.monotonic())
        if timeout < 10:
            return self.record(name, "not run: out of time", started)
        try:
            done = subprocess.run([sys.executable, *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:  # its output so far comes as bytes, whatever text= says
            streams = [s.decode(errors="replace") if isinstance(s, bytes) else s for s in (exc.stdout, exc.stderr) if s]
            return self.record(name, f"overran its {timeout:.0f} s", started, output_tail="".join(streams)[-6000:])
        status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        return self.record(name, status, started, output_tail=(done.stdout + done.stderr)[-6000:])

    def probe(self, name: str, args: list[str]) -> None:
        """A measurement of gpu_probes.py, in a process of its own; its result (even a partial one) goes into the step."""
        result = self.work / f"{name}.json"
        self.run(name, [str(Path(__file__).resolve().with_name("gpu_probes.py")), *args, "--device", self.plan.device,
                        "--out", str(result)])
        if result.is_file():
            self.doc["steps"][name]["result"] = json.loads(result.read_text())
            self.save()

    def bench(self, name: str, precisions: str, batches: tuple[int, ...], stages: str, options: list[str]) -> None:
        if not (self.bundle / "manifest.json").is_file():
            self.record(name, "not run: no bundle", time.perf_counter())
            return
        result = self.out / f"{name}.json"
        args = ["-m", "lgfa_deploy.cli", "bench", "--bundle", str(self.bundle), "--backend", "torch",
                "--device", self.plan.device, "--precision", precisions, "--batch", ",".join(map(str, batches)),
                "--stages", stages, "--iters", str(self.plan.iters), "--warmup", "2",
                "--frames", str(self.plan.stream_frames), "--no-cpu-peak", "--json", str(result)]
        for option in options:
            args += ["--option", option]
        if self.rehearse:
            args += ["--threads", "2"]
        self.run(name, args)
        if result.is_file():  # lgfa bench rewrites it after each batch size: an overrun keeps its figures
            self.doc["steps"][name]["complete"] = json.loads(result.read_text()).get("complete", False)
            self.save()

    def steps(self) -> None:
        started = time.perf_counter()
        self.record("environment", "ok", started, **environment())
        # -v: one line per test as it ends, so an overrun still shows which passed.
        self.run("gpu_tests", ["-m", "pytest", "-v", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_gpu.py"])
        max_batch = max(self.plan.batches)
        self.run("bundle", ["-m", "lgfa_deploy.cli", "export", "--preset", self.plan.preset, "--random-init",
                            "--no-photo", "--max-batch", str(max_batch), "--out", str(self.bundle), "--force"])
        if not (self.bundle / "manifest.json").is_file():  # no lgfa bench without a bundle: synthesis alone
            self.probe("synthesis_direct", ["synthesis", "--preset", self.plan.preset, "--iters", str(self.plan.iters),
                                            "--batches", ",".join(map(str, self.plan.batches))])
        else:
            self.probe("profile", ["profile", "--bundle", str(self.bundle), "--batches", str(self.plan.profile_batch),
                                   "--iters", str(min(self.plan.iters, 10))])
        stages = "synthesis,frames,first_frame,stream"
        # FP16 first: the targets' figures come before FP32's should the step overrun.
        self.bench("bench_graphs", "fp16,fp32", self.plan.batches, stages, [])
        self.bench("bench_eager", "fp16,fp32", self.plan.batches, stages, ["torch.cuda_graphs=false"])
        self.probe("training", ["training", "--preset", self.plan.preset, "--steps", str(self.plan.train_steps)])
        # Last: compiling 1024 px synthesis is the step most likely to overrun.
        self.bench("bench_compile", self.plan.compile_precision, self.plan.compile_batches, "synthesis,frames",
                   ["torch.compile=default"])
        self.summarise()

    def summarise(self) -> None:
        """The best figures against issue 8's targets, and the plot."""
        rows = []
        for name in ("bench_graphs", "bench_eager", "bench_compile"):
            path = self.out / f"{name}.json"
            if path.is_file():
                for row in json.loads(path.read_text())["results"]:
                    rows.append({**row, "run": name})
        direct = self.doc["steps"].get("synthesis_direct", {}).get("result", {})
        for row in direct.get("rows", []):  # the fallback's figures, in the bench's terms
            memory = row.get("peak_gpu_memory_gib")
            rows.append({**row, "run": "synthesis_direct", "stage": "synthesis", "baseline": False,
                         "peak_gpu_memory_mib": None if memory is None else memory * 1024})
        self.doc["summary"] = summary = compare_with_targets(rows)
        self.save()
        plot_path = self.out / "gpu_check.png"
        try:
            plot(rows, plot_path, self.doc["steps"]["environment"].get("gpu", {}).get("name", self.plan.device))
        except ImportError:
            summary["plot"] = "not drawn: matplotlib is missing"
        self.save()

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def compare_with_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Best synthesis and frames fps, best first frame, best ratio to eager FP32 (same run), batch-1 peak memory."""
    def best(stage: str, key: str, lowest: bool = False) -> dict[str, Any] | None:
        found = [r for r in rows if r["stage"] == stage and not r.get("baseline") and r.get(key) is not None]
        if not found:
            return None
        return (min if lowest else max)(found, key=lambda r: r[key])

    def label(row: dict[str, Any] | None) -> str | None:
        return None if row is None else f"{row['run']} {row['precision']} batch {row['batch']}"

    fps, first, ratio = best("synthesis", "fps"), best("first_frame", "p50_ms", lowest=True), best("synthesis", "ratio")
    frames = best("frames", "fps")
    batch1 = [r["peak_gpu_memory_mib"] for r in rows if r["batch"] == 1 and r.get("peak_gpu_memory_mib") is not None
              and not r.get("baseline")]
    figures = {
        "synthesis_fps": (fps or {}).get("fps"),
        "frames_fps": (frames or {}).get("fps"),
        "first_frame_ms": (first or {}).get("p50_ms"),
        "ratio_to_eager_fp32": (ratio or {}).get("ratio"),
        "batch1_gpu_memory_gib": min(batch1) / 1024 if batch1 else None,
    }
    where = {"synthesis_fps": label(fps), "frames_fps": label(frames), "first_frame_ms": label(first),
             "ratio_to_eager_fp32": label(ratio)}
    lower_is_better = {"first_frame_ms", "batch1_gpu_memory_gib"}
    return {
        name: {
            "value": value,
            "target": TARGETS[name],
            "met": None if value is None else (value <= TARGETS[name] if name in lower_is_better else value >= TARGETS[name]),
            "where": where.get(name),
        }
        for name, value in figures.items()
    }


def plot(rows: list[dict[str, Any]], path: Path, device: str) -> None:
    """Synthesis, frames and stream frames/s against batch, one line per run and precision, with the 400 fps target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for ax, stage in zip(axes, ("synthesis", "frames", "stream")):
        lines: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if r["stage"] == stage and r.get("fps") and not r.get("baseline"):
                lines.setdefault(f"{r['run'].removeprefix('bench_')} {r['precision']}", []).append((r["batch"], r["fps"]))
        for name, points in sorted(lines.items()):
            points.sort()
            ax.plot([b for b, _ in points], [f for _, f in points], marker="o", label=name)
        ax.axhline(TARGETS["synthesis_fps"], color="grey", linestyle="--", linewidth=1, label="target 400 fps")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch")
        ax.set_ylabel("frames/s")
        ax.set_title(f"{stage} on {device}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="results folder (created; at most 6 files)")
    parser.add_argument("--rehearse", action="store_true", help="the same steps on the CPU with the tiny preset")
    parser.add_argument("--budget", type=float, default=None, help="seconds for everything (default 540; 900 rehearsing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    plan = REHEARSAL if args.rehearse else GPU_PLAN
    check = Check(args.out, plan, args.budget or (900.0 if args.rehearse else 540.0), args.rehearse)
    try:
        check.steps()
    finally:
        check.close()
    failed = [name for name, step in check.doc["steps"].items() if step["status"] != "ok"]
    log.info("results in %s%s", args.out, f"; not ok: {', '.join(failed)}" if failed else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
