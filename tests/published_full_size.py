"""By-hand check at full size (too slow and too large for CI): files written from the published layouts
at ``ffhq-256`` sizes (a reference ``Iter_*.pth`` with the full OpenAI RN50 and 14 latents, a 256 px
rosinality generator, an e4e with 14 styles at full IR-SE-50 width; about 2.7 GB) go through
``lgfa export`` and ``lgfa verify``, and the exported motion graph is compared with the reference's
motion computed by hand.

    PYTHONPATH=. python -m tests.published_full_size /tmp/published-256
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from lgfa_deploy.cli import main as lgfa
from tests.published_layouts import (
    e4e_checkpoint,
    e4e_encoder_layout,
    openai_clip_layout,
    openai_clip_tensors,
    reference_iter_checkpoint,
    reference_model_layout,
    reference_motion,
    rosinality_checkpoint,
    rosinality_g_ema_layout,
)

log = logging.getLogger("published_full_size")


def write_files(root: Path) -> dict[str, Path]:
    """The three files, written once into ``root``."""
    files = {"--checkpoint": root / "Iter_005000.pth", "--stylegan": root / "256.pt", "--e4e": root / "e4e_256.pt"}
    if not all(path.is_file() for path in files.values()):
        root.mkdir(parents=True, exist_ok=True)
        clip = openai_clip_tensors(openai_clip_layout(), seed=3)
        layout = reference_model_layout(1024, 384, 14, 512, 1024)
        torch.save(reference_iter_checkpoint(clip, layout, step=5000, seed=4), files["--checkpoint"])
        torch.save(rosinality_checkpoint(256, 512, 8, seed=5), files["--stylegan"])
        encoder = e4e_encoder_layout(n_styles=14)
        torch.save(e4e_checkpoint(encoder, rosinality_g_ema_layout(256), 14, 512, seed=6), files["--e4e"])
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for the files and the bundle")
    root = parser.parse_args().out
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files = write_files(root)
    bundle = root / "bundle"
    began = time.perf_counter()
    options = [f"{name}={path}" for name, path in files.items()]
    if lgfa(["export", "--preset", "ffhq-256", *options, "--out", str(bundle), "--force"]) != 0:
        return 1
    log.info("export (with its verification): %.0f s", time.perf_counter() - began)
    if lgfa(["verify", str(bundle)]) != 0:
        return 1
    state = torch.load(files["--checkpoint"], weights_only=True)["state_dict"]
    text = torch.nn.functional.normalize(torch.randn(2, 1024, generator=torch.Generator().manual_seed(9)), dim=-1).numpy()
    session = ort.InferenceSession(str(bundle / "motion.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["motion_offsets"], {"text_embedding": text, "image_embedding": np.zeros_like(text)})
    want = reference_motion(state, text.astype(np.float64), 16)
    error = float(np.abs(got.reshape(want.shape) - want).max() / np.abs(want).max())
    log.info("motion graph against the reference's motion by hand: max error %.2e of the largest offset", error)
    log.info(json.dumps(json.loads((bundle / "manifest.json").read_text())["provenance"]))
    return 0 if error < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
