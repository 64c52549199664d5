"""Put a trained bundle into the package as the embedded default (``lgfa_deploy/data/faces-64``).

    python -m export.ship_default runs/faces-64/bundle

The package carries the fp32 graphs, the tokenizer and the manifest: what onnxruntime and
openvino run, torch-free. The PyTorch weights stay in the run folder (the bundle there keeps them
for the torch backend and ``lgfa verify``), so the copy is a graphs-only bundle of at most
:data:`lgfa_deploy.default_bundle.MAX_BYTES`. It is written beside the destination, opened (hashes
checked) and then renamed into place, so a failed copy leaves the old default as it was.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path

from lgfa_deploy.atomic import write_json_atomic
from lgfa_deploy.bundle import MANIFEST, Bundle
from lgfa_deploy.default_bundle import DEFAULT_BUNDLE, MAX_BYTES
from lgfa_deploy.errors import LgfaError


def graphs_only_manifest(bundle: Bundle) -> dict:
    """The manifest of ``bundle`` with fp32 graphs only, no PyTorch weights and no engines."""
    manifest = copy.deepcopy(bundle.manifest)
    manifest.pop("weights", None)
    manifest["engines"] = {}
    for name, graph in manifest["graphs"].items():
        if "fp32" not in graph["files"]:
            raise LgfaError(f"bundle {bundle.root} has no fp32 {name} graph; re-export it")
        graph["files"] = {"fp32": graph["files"]["fp32"]}
    return manifest


def ship(source: str | Path, destination: Path = DEFAULT_BUNDLE, max_bytes: int = MAX_BYTES) -> int:
    """Copy ``source`` graphs-only into ``destination`` (at most ``max_bytes``); return the bytes shipped."""
    bundle = Bundle.open(source)
    if bundle.random_init:
        raise LgfaError(f"bundle {bundle.root} has random weights; the embedded default must be a trained model")
    manifest = graphs_only_manifest(bundle)
    staging = destination.with_name(f".{destination.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        kept = Bundle(staging, manifest).file_entries()
        for entry in kept:
            shutil.copy2(bundle.file_path(entry["file"]), staging / entry["file"])
        write_json_atomic(staging / MANIFEST, manifest)
        total = sum((staging / e["file"]).stat().st_size for e in kept) + (staging / MANIFEST).stat().st_size
        if total > max_bytes:
            raise LgfaError(f"the graphs-only bundle is {total / 2**20:.1f} MiB; the package carries at most "
                            f"{max_bytes / 2**20:.1f} MiB")  # fmt: skip
        Bundle.open(staging)
        shutil.rmtree(destination, ignore_errors=True)
        staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.ship_default", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="a trained bundle from 'lgfa export' (e.g. runs/faces-64/bundle)")
    parser.add_argument("--out", type=Path, default=DEFAULT_BUNDLE, help=f"destination (default: {DEFAULT_BUNDLE})")
    args = parser.parse_args(argv)
    try:
        total = ship(args.bundle, args.out)
    except LgfaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"shipped {args.bundle} as {args.out} ({total / 2**20:.1f} MiB, graphs only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
