"""Measurements that ``benchmarks/gpu_check.py`` runs each in a process of its own (a crash or an
overrun costs that step only): the training step's speed, the generator's synthesis alone, and a
profile of the torch backend's synthesis. Each writes one JSON document to ``--out``.

    python3 benchmarks/gpu_probes.py profile --bundle DIR --device cuda --batches 8 --out profile.json
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a plain checkout
    sys.path.insert(0, str(REPO))

PROFILE_VARIANTS = (
    {"channels_last": True, "cudnn_benchmark": True},  # the backend's defaults
    {"channels_last": False, "cudnn_benchmark": True},
    {"channels_last": True, "cudnn_benchmark": False},
    {"channels_last": False, "cudnn_benchmark": False},
)
"""The memory layout and cuDNN's algorithm search, each on and off (the first H200 run found FP16
synthesis no faster per frame at batch 32 than at batch 1)."""


def training_speed(preset_name: str, device: str, steps: int, batch: int = 2) -> dict[str, Any]:
    """Steps/s of the paper's training step on random weights (no data set): text -> motion (the
    training decay, T = preset.train_frames) -> W+ -> synthesis of the last frame -> the loss CLIP's
    contrastive term + the path, latent and endpoint regularisers; backward; Adam on the motion
    generator and mappers. Like ``training.train`` without the data loader and LPIPS (which need
    OpenCV and LPIPS weights)."""
    import torch

    from training.checkpoints import load_models
    from training.clip_model import clip_image_size, create_clip, tokenize
    from training.losses import (
        clip_normalize,
        contrastive_loss,
        endpoint_regularizer,
        latent_regularizer,
        path_regularizer,
        resize_images,
    )

    models = load_models(preset=preset_name, random_init=True)
    preset, model, generator = models.preset, models.model.to(device), models.generator.to(device).eval()
    generator.requires_grad_(False)
    model.encoder.requires_grad_(False)
    loss_clip = create_clip(preset.loss_clip_model).to(device).eval().requires_grad_(False)
    size = clip_image_size(loss_clip)
    trained = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    optimizer = torch.optim.Adam(trained, lr=1e-4)
    texts = ["The person is smiling.", "The person is angry."] * batch
    tokens = tokenize(texts[:batch]).to(device)
    with torch.no_grad():
        text_features = loss_clip.encode_text(tokens).float()
        content = generator.mapping(torch.randn(batch, preset.style_dim, device=device))[:, None]
        content = content.repeat(1, preset.n_latent, 1)

    def step() -> float:
        text_embedding = model.encode_text(tokens)
        h0 = torch.zeros(batch, preset.motion_hidden, device=device)
        offsets = model.motion_offsets(text_embedding, preset.train_frames, None, decay="constant", h0=h0)
        latents = model.compose(content, offsets, None)
        last = generator.synthesis(latents[:, -1])
        features = loss_clip.encode_image(clip_normalize(resize_images(last, size)))
        loss = (contrastive_loss(features, text_features, 0.07, 1) + path_regularizer(offsets)
                + latent_regularizer(latents, content) + endpoint_regularizer(offsets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - start
    result = {"preset": preset.name, "resolution": preset.resolution, "batch": batch, "train_frames": preset.train_frames,
              "steps": steps, "steps_per_s": steps / elapsed, "last_loss": loss, "precision": "fp32 (TF32 off)"}
    if device == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def synthesis_speed(preset_name: str, device: str, batches: list[int], iters: int) -> dict[str, Any]:
    """Frames/s of the generator's synthesis alone, eager, FP32 (TF32 off) and FP16, channels_last on a
    GPU: the fallback figures when no bundle could be exported for ``lgfa bench``."""
    import torch

    from lgfa_deploy.backends.torch_backend import to_channels_last
    from training.presets import get_preset
    from training.stylegan2 import generator_from_preset

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    preset = get_preset(preset_name)
    rows = []
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        if device == "cpu" and dtype == torch.float16:
            continue
        generator = generator_from_preset(preset).to(device, dtype).eval()
        if device == "cuda":
            generator = to_channels_last(generator)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for batch in batches:
            latents = torch.randn(batch, preset.n_latent, preset.style_dim, device=device, dtype=dtype)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                for _ in range(2):
                    generator.synthesis(latents)
                sync()
                start = time.perf_counter()
                for _ in range(iters):
                    generator.synthesis(latents)
                sync()
            seconds = (time.perf_counter() - start) / iters
            row = {"precision": precision, "batch": batch, "ms_per_call": seconds * 1000, "fps": batch / seconds}
            if device == "cuda":
                row["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            rows.append(row)
    return {"preset": preset.name, "resolution": preset.resolution, "mode": "eager, no CUDA graphs", "rows": rows}


def synthesis_profile(bundle_dir: Path, device: str, batch: int, iters: int, save: Callable[[dict], None]) -> dict[str, Any]:
    """Where the torch backend's synthesis (``frames``: synthesis and the uint8 conversion) spends its
    time, eager, so that the profiler sees every kernel: for each of :data:`PROFILE_VARIANTS` the time to
    open the bundle, the first call (cuDNN's search included) and the p50 of ``iters`` calls; with the
    defaults (the first variant) also torch.profiler over three calls: the kernels and the aten
    operators that take the most device time (CPU time on the CPU), and the same for a new sentence's
    first frame. ``save`` gets the document after each variant."""
    import numpy as np
    import torch

    from lgfa_deploy.backends import open_backend
    from lgfa_deploy.bench import time_calls
    from lgfa_deploy.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    precision = "fp16" if device == "cuda" else "fp32"  # the CPU runs FP32 only
    latents = np.random.default_rng(0).standard_normal((batch, bundle.n_latent, bundle.style_dim)).astype(np.float32)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    doc: dict[str, Any] = {"bundle": bundle.preset, "resolution": bundle.resolution, "precision": precision,
                           "batch": batch, "mode": "eager, no CUDA graphs", "variants": []}
    calls = 3
    # The defaults first, profiled: should the step run out of time, what matters most is saved.
    for index, options in enumerate(PROFILE_VARIANTS):
        started = time.perf_counter()
        with open_backend("torch", bundle, device=device, precision=precision, cuda_graphs=False, **options) as backend:
            opened = time.perf_counter() - started
            frames = functools.partial(backend.frames, latents)
            first_ms = time_calls(frames, 1, 0, sync)[0]
            p50_ms = statistics.median(time_calls(frames, iters, 0, sync))
            if index == 0:
                doc.update(_profiled(frames, device, calls, sync))
                doc["first_frame"] = _first_frame_profile(bundle, backend, device, calls, sync)
        doc["variants"].append({**options, "open_s": round(opened, 2), "first_call_s": round(first_ms / 1000, 3),
                                "frames_p50_ms": round(p50_ms, 3), "fps": round(batch * 1000 / p50_ms, 1)})
        save(doc)
    return doc


def _first_frame_profile(bundle: Any, backend: Any, device: str, calls: int, sync: Callable[[], None]) -> dict[str, Any]:
    """torch.profiler over the work of a new sentence's first frame (text encoder, motion, mapping: the
    clip's W+; then one frame), on the calling thread: the stream's producer thread would hide its
    operators from the profiler."""
    from lgfa_deploy.bench import time_calls
    from lgfa_deploy.pipeline import Animator

    animator = Animator(bundle, backend, micro_batch=1, cache_texts=0)

    def first() -> None:
        latents = animator.latents("The person is smiling.", seed=0)
        backend.frames(latents[:1])

    first()
    wall_ms = time_calls(first, 1, 0, sync)[0]
    return {"wall_ms": round(wall_ms, 3), **_profiled(first, device, calls, sync)}


def _profiled(fn: Callable[[], Any], device: str, calls: int, sync: Callable[[], None]) -> dict[str, Any]:
    """torch.profiler over ``calls`` calls of ``fn``: :func:`_top_events` of them."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        sync()
    return _top_events(prof.key_averages(), device, calls)


def _top_events(events: Any, device: str, calls: int) -> dict[str, Any]:
    """The kernels (or, on the CPU, operators) with the most self time, and the aten operators with the most
    time including their children, per call of ``frames``."""
    self_key, total_key = (("self_device_time_total", "device_time_total") if device == "cuda"
                           else ("self_cpu_time_total", "cpu_time_total"))
    all_self = sum(getattr(e, self_key, 0) for e in events) or 1.0

    def listed(chosen: list, key: str) -> list[dict[str, Any]]:
        return [{"name": e.key, "ms_per_call": round(getattr(e, key) / 1000 / calls, 3),
                 "share": round(getattr(e, key) / all_self, 4), "count_per_call": e.count / calls} for e in chosen]

    kernels = sorted(events, key=lambda e: getattr(e, self_key, 0), reverse=True)[:20]
    operators = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: getattr(e, total_key, 0),
                       reverse=True)[:15]
    return {"time_measured": "device (CUDA kernels)" if device == "cuda" else "CPU",
            "total_ms_per_call": round(all_self / 1000 / calls, 3),
            "top_self": listed(kernels, self_key), "top_aten_inclusive": listed(operators, total_key)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=("training", "synthesis", "profile"))
    parser.add_argument("--out", required=True, type=Path, help="the JSON document")
    parser.add_argument("--preset", default="ffhq-1024", help="training and synthesis: the preset (random weights)")
    parser.add_argument("--bundle", type=Path, default=None, help="profile: the bundle")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--steps", type=int, default=10, help="training: timed steps")
    parser.add_argument("--batches", default="1", help="synthesis: batch sizes, comma-separated; profile: the first")
    parser.add_argument("--iters", type=int, default=10, help="synthesis and profile: timed calls")
    args = parser.parse_args(argv)

    def save(doc: dict) -> None:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")

    batches = [int(b) for b in args.batches.split(",")]
    if args.probe == "training":
        save(training_speed(args.preset, args.device, args.steps))
    elif args.probe == "synthesis":
        save(synthesis_speed(args.preset, args.device, batches, args.iters))
    else:
        from lgfa_deploy.errors import LgfaError

        if args.bundle is None:
            parser.error("profile needs --bundle")
        try:
            synthesis_profile(args.bundle, args.device, batches[0], args.iters, save)
        except LgfaError as exc:
            print(f"gpu_probes: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
