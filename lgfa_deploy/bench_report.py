"""How ``lgfa bench`` shows its results document: a fixed-width text table with the physical-limit
lines, and a plot of frames per second against batch."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lgfa_deploy.atomic import atomic_path
from lgfa_deploy.bench import BASELINE_LABEL
from lgfa_deploy.errors import LgfaError


def format_table(doc: dict[str, Any]) -> str:
    """The results as a fixed-width text table, with the physical-limit lines."""
    lines = [
        f"{doc['device']['name']} ({doc['settings']['device']}, {doc['settings']['threads']} threads); "
        f"bundle {doc['bundle']['preset']} {doc['bundle']['resolution']} px"
        + (" [random-init]" if doc["bundle"]["random_init"] else ""),
        f"{'backend':<12} {'prec':<5} {'batch':>5} {'stage':<14} {'p50 ms':>10} {'p90 ms':>10} "
        f"{'p99 ms':>10} {'fps':>10} {'ratio':>7}",
    ]
    for r in doc["results"]:
        fps = f"{r['fps']:.2f}" if r.get("fps") is not None else "-"
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        name = r["backend"] + ("*" if r.get("baseline") else "")
        lines.append(
            f"{name:<12} {r['precision']:<5} {r['batch']:>5} {r['stage']:<14} {r['p50_ms']:>10.3f} "
            f"{r['p90_ms']:>10.3f} {r['p99_ms']:>10.3f} {fps:>10} {ratio:>7}"
        )
    lines.append(f"* {BASELINE_LABEL}: batch 1, its own run in this process (ratio 1.00x)")
    peaks = doc["physical_limit"]["peaks"]
    lines.append(
        f"peaks: fp32 {_num(peaks.get('fp32_tflops'))} TFLOP/s, fp16 {_num(peaks.get('fp16_tflops'))} TFLOP/s, "
        f"bandwidth {_num(peaks.get('bandwidth_gbps'))} GB/s ({peaks.get('source')})"
    )
    for precision, cost in doc["physical_limit"]["synthesis"].items():
        one = cost["batch_1"]
        lines.append(
            f"synthesis {precision}: {one['flops_per_frame'] / 1e9:.2f} GFLOP/frame, "
            f"{one['bytes_per_frame'] / 2**20:.1f} MiB moved/frame unfused "
            f"({one['min_bytes_per_frame'] / 2**20:.1f} MiB fused) at batch 1"
        )
    for r in doc["results"]:
        if r["stage"] == "synthesis" and r.get("achieved_tflops") is not None:
            lines.append(
                f"  {r['backend']} {r['precision']} batch {r['batch']}: {r['achieved_tflops'] * 1000:.1f} GFLOP/s "
                f"({_pct(r.get('flops_fraction'))} of peak), {r['achieved_gbps']:.1f} GB/s "
                f"({_pct(r.get('bandwidth_fraction'))} of bandwidth)"
            )
    for s in doc["skipped"]:
        lines.append(f"skipped {s['backend']} {s['precision']}: {s['reason']}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}"


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{100 * value:.1f}%"


def plot(doc: dict[str, Any], path: Path) -> None:
    """fps against batch, one line per backend and precision: synthesis and stream side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LgfaError("--plot needs matplotlib: pip install matplotlib") from None
    panels = [s for s in ("synthesis", "stream") if any(r["stage"] == s for r in doc["results"])]
    if not panels:
        raise LgfaError("nothing to plot: neither synthesis nor stream was measured")
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    batches = sorted({r["batch"] for r in doc["results"]})
    for ax, stage in zip(axes[0], panels):
        rows = [r for r in doc["results"] if r["stage"] == stage and r.get("fps") is not None]
        lines: dict[tuple[str, str, bool], list[tuple[int, float]]] = {}
        for r in rows:
            lines.setdefault((r["backend"], r["precision"], bool(r["baseline"])), []).append((r["batch"], r["fps"]))
        for (backend, precision, baseline), points in sorted(lines.items()):
            points.sort()
            xs, ys = zip(*points)
            label = BASELINE_LABEL if baseline else f"{backend} {precision}"
            ax.plot(xs, ys, marker="o", linestyle="--" if baseline else "-", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch (frames per synthesis call)")
        ax.set_ylabel("frames per second")
        ax.set_title(f"{stage} fps")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    device = doc["device"]["name"]
    bundle = doc["bundle"]
    fig.suptitle(f"{bundle['preset']} {bundle['resolution']} px on {device} ({doc['created'][:10]})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
