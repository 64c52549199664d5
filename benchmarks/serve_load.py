"""Load test of ``lgfa serve`` on loopback: 1, 2, 4, 8 ... concurrent streams against one bundle.

Starts ``lgfa serve`` on free 127.0.0.1 ports, then for each stream count runs that many clients at
once, each asking for ``--sentences`` sentences (one ``animate`` request each, T frames), bounded in
count and by ``--timeout`` per frame. Per level: aggregate frames/s (all frames over the wall time
from the first request to the last frame), time to first frame and p50/p99 inter-frame latency
per stream, frames lost or out of order (the client refuses out-of-order frames), and the server's
synthesis batch sizes. Writes a ``lgfa-serve-load/1`` JSON document; ``make_table.py`` renders it.

    flock /tmp/lgfa-cpu.lock python benchmarks/serve_load.py --bundle engines/tiny \\
        --streams 1,2,4,8 --json benchmarks/results/cpu-<device>-serve-tiny-<date>.json
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lgfa_deploy.atomic import write_json_atomic
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.device_info import describe_device
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.serve.client import AnimationClient
from lgfa_deploy.serve.local import start_serve
from lgfa_deploy.serve.protocol import served_models

SCHEMA = "lgfa-serve-load/1"
TEXTS = ("The person is smiling.", "The person is angry.", "The person is surprised.", "The person is sad.")
log = logging.getLogger("serve_load")


def run_stream(url: str, seed: int, sentences: int, timeout: float, start: threading.Barrier) -> dict:
    """One client: ``sentences`` requests in a row; arrival times of every frame, relative to its request."""
    with AnimationClient(url, timeout=timeout) as client:
        start.wait(timeout=timeout)
        begun = time.perf_counter()
        arrivals: list[float] = []
        first: list[float] = []
        error = None
        for sentence in range(sentences):
            sent = time.perf_counter()
            try:
                for count, _ in enumerate(client.frames(TEXTS[(seed + sentence) % len(TEXTS)], seed=seed)):
                    now = time.perf_counter()
                    if count == 0:
                        first.append(now - sent)
                    arrivals.append(now)
            except LgfaError as exc:  # out of order, refused, or no frame in time: counted as lost
                error = str(exc)
                break
    gaps = np.diff(arrivals) if len(arrivals) > 1 else np.array([])
    return {
        "seed": seed,
        "frames": len(arrivals),
        "begun": begun,
        "ended": arrivals[-1] if arrivals else begun,
        "first_frame_ms": [1000 * t for t in first],
        "inter_frame_p50_ms": float(1000 * np.percentile(gaps, 50)) if len(gaps) else None,
        "inter_frame_p99_ms": float(1000 * np.percentile(gaps, 99)) if len(gaps) else None,
        "fps": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else None,
        "error": error,
    }


def run_level(url: str, streams: int, sentences: int, frames_per_text: int, timeout: float) -> dict:
    """``streams`` clients at once; the aggregate and per-stream figures and the server's batch sizes."""
    with AnimationClient(url, timeout=timeout) as client:
        client.stats(reset=True)
    start = threading.Barrier(streams)
    with ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda seed: run_stream(url, seed, sentences, timeout, start), range(streams)))
    with AnimationClient(url, timeout=timeout) as client:
        server = client.stats()
    total = sum(r["frames"] for r in results)
    wall = max(r["ended"] for r in results) - min(r["begun"] for r in results)
    expected = streams * sentences * frames_per_text
    firsts = [t for r in results for t in r["first_frame_ms"]]
    for r in results:
        del r["begun"], r["ended"]
    return {
        "streams": streams,
        "frames_expected": expected,
        "frames_received": total,
        "frames_lost": expected - total,
        "errors": [r["error"] for r in results if r["error"]],
        "wall_s": wall,
        "aggregate_fps": total / wall if wall > 0 else None,
        "first_frame_ms_p50": float(np.percentile(firsts, 50)) if firsts else None,
        "first_frame_ms_max": float(max(firsts)) if firsts else None,
        "per_stream": results,
        "server_batches": server["batches"],
        "server_mean_batch": server["mean_batch"],
        "server_max_batch": server["max_batch"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="bundle directory")
    parser.add_argument("--streams", default="1,2,4,8", help="concurrent stream counts, comma-separated")
    parser.add_argument("--sentences", type=int, default=1, help="sentences (requests) per stream")
    parser.add_argument("--micro-batch", type=int, default=None, help="the server's largest synthesis batch")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest wait for one frame, seconds")
    parser.add_argument("--json", required=True, help="result file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    levels = [int(n) for n in args.streams.split(",")]
    bundle = Bundle.open(args.bundle)
    frames_per_text = bundle.frames
    load_before = os.getloadavg()
    extra = ["--micro-batch", str(args.micro_batch)] if args.micro_batch else []
    with tempfile.TemporaryDirectory(prefix="lgfa-serve-load-") as tmp:
        server = start_serve(Path(args.bundle), Path(tmp) / "serve.log", *extra)
        try:
            server.wait_ready(tuple(served_models(bundle)))
            results = []
            for streams in levels:
                log.info("%d stream(s) x %d sentence(s) ...", streams, args.sentences)
                level = run_level(server.url, streams, args.sentences, frames_per_text, args.timeout)
                log.info(
                    "  %.2f frames/s aggregate, first frame p50 %.0f ms, %d lost, batches %s",
                    level["aggregate_fps"] or 0, level["first_frame_ms_p50"] or 0, level["frames_lost"], level["server_batches"],
                )
                results.append(level)
        finally:
            code = server.stop()
            server_log = (Path(tmp) / "serve.log").read_text()[-2000:]
    single = results[0]["aggregate_fps"] if results and results[0]["streams"] == 1 else None
    for level in results:
        level["x_one_stream"] = level["aggregate_fps"] / single if single and level["aggregate_fps"] else None
    document = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": describe_device("cpu", measure_cpu=False),
        "bundle": {"preset": bundle.preset, "resolution": bundle.resolution, "frames": frames_per_text,
                   "random_init": bundle.random_init},
        "server": {"backend": "onnxruntime", "micro_batch": args.micro_batch, "exit_code": code,
                   "log_tail": server_log.splitlines()[-3:]},
        "sentences_per_stream": args.sentences,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "levels": results,
    }
    write_json_atomic(args.json, document)
    log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
