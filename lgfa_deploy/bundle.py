"""The bundle: graphs, weights, tokenizer vocabulary and the manifest that describes them.

This module is the one reader and writer of ``manifest.json``. ``export`` writes bundles through
it; the runtime opens them with :meth:`Bundle.open`, which checks the whole manifest against its
schema (:mod:`lgfa_deploy.manifest_schema`) and every hash. Every file a manifest names is a plain
file inside the bundle: a symbolic link or a name that leads outside is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgfa_deploy.atomic import write_json_atomic
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import PHOTO_GRAPHS, GraphSpec
from lgfa_deploy.manifest_schema import MANIFEST, PRECISIONS, REQUIRED_GRAPHS, check_manifest

__all__ = ["FORMAT", "MANIFEST", "PRECISIONS", "SCHEMA_VERSION", "Bundle", "file_entry", "graph_file", "sha256_file",
           "write_json_atomic"]

FORMAT = "lgfa-bundle"
SCHEMA_VERSION = 2
"""2: the motion graph takes an image embedding; photo graphs, e4e weights and CLIP image facts."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(root: Path, name: str) -> dict[str, Any]:
    """The manifest record of one file inside a bundle: name, sha256 and size."""
    path = root / name
    return {"file": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def graph_file(name: str, precision: str) -> str:
    """File name of a graph at a precision: ``synthesis.onnx``, ``synthesis.fp16.onnx``."""
    return f"{name}.onnx" if precision == "fp32" else f"{name}.{precision}.onnx"


@dataclass
class Bundle:
    """An opened, checked bundle directory."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(
        cls, path: str | os.PathLike, verify_hashes: bool = True, required_graphs: tuple[str, ...] = REQUIRED_GRAPHS
    ) -> Bundle:
        """Open a bundle; a missing, foreign, newer or tampered bundle raises :class:`LgfaError`.

        ``required_graphs``: the graphs it must declare; the four of an animation unless it is one
        graph's share of a Triton model repository (``lgfa triton-repo``)."""
        root = Path(path)
        manifest_path = root / MANIFEST
        if not root.is_dir():
            raise LgfaError(f"bundle {root} does not exist; create one with 'lgfa export --out {root}'")
        if not manifest_path.is_file():
            raise LgfaError(f"{root} has no {MANIFEST}, so it is not a bundle; create one with 'lgfa export'")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LgfaError(f"{manifest_path} is not valid JSON ({exc}); re-export the bundle") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise LgfaError(f"{manifest_path} is not an lgfa bundle manifest; re-export the bundle")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            older = (
                " (from before the photo path: its motion graph takes no image embedding)"
                if isinstance(version, int) and version < SCHEMA_VERSION else ""
            )
            raise LgfaError(
                f"bundle {root} has schema version {version}{older}, this lgfa-deploy reads {SCHEMA_VERSION}; "
                "re-export it with 'lgfa export'"
            )
        check_manifest(manifest, required_graphs)
        bundle = cls(root, manifest)
        for entry in bundle.file_entries():
            bundle.file_path(entry["file"])
        if verify_hashes:
            bundle.verify_hashes()
        return bundle

    # -- model facts ---------------------------------------------------------------------------
    @property
    def model(self) -> dict[str, Any]:
        return self.manifest["model"]

    @property
    def preset(self) -> str:
        return self.model["preset"]

    @property
    def resolution(self) -> int:
        return int(self.model["resolution"])

    @property
    def n_latent(self) -> int:
        return int(self.model["n_latent"])

    @property
    def style_dim(self) -> int:
        return int(self.model["style_dim"])

    @property
    def embed_dim(self) -> int:
        return int(self.model["embed_dim"])

    @property
    def frames(self) -> int:
        return int(self.model["frames"])

    @property
    def prompt_template(self) -> str:
        return self.model["prompt_template"]

    @property
    def random_init(self) -> bool:
        return bool(self.manifest["provenance"]["random_init"])

    # -- the photo path ------------------------------------------------------------------------
    @property
    def has_photo(self) -> bool:
        """Whether the bundle has the photo graphs (exported without ``--no-photo``)."""
        return all(name in self.manifest["graphs"] for name in PHOTO_GRAPHS)

    def require_photo(self) -> None:
        """Raise :class:`LgfaError` when the bundle cannot animate a photo."""
        if not self.has_photo:
            raise LgfaError(
                f"bundle {self.root} was exported without the photo graphs (--no-photo); "
                "re-export it without --no-photo to animate a photo"
            )

    @property
    def face_size(self) -> int:
        """Side in pixels of the aligned face e4e takes (256 for FFHQ)."""
        self.require_photo()
        return int(self.model["face_size"])

    @property
    def clip_image_size(self) -> int:
        """Side in pixels of the images CLIP's image tower takes (224 for RN50)."""
        return int(self.model["clip_image_size"])

    @property
    def clip_mean(self) -> tuple[float, float, float]:
        """CLIP's per-channel RGB mean of pixels in [0, 1]."""
        return tuple(float(v) for v in self.model["clip_mean"])

    @property
    def clip_std(self) -> tuple[float, float, float]:
        """CLIP's per-channel RGB standard deviation of pixels in [0, 1]."""
        return tuple(float(v) for v in self.model["clip_std"])

    # -- files ---------------------------------------------------------------------------------
    def file_path(self, name: str) -> Path:
        """The bundle's file ``name``; a symbolic link or a path leading outside the bundle raises :class:`LgfaError`."""
        path = self.root / name
        if path.resolve() != self.root.resolve() / name:  # a link on the way, or a name with ".."
            raise LgfaError(
                f"bundle {self.root}: {name} is a symbolic link or lies outside the bundle; "
                "a bundle holds its own files, re-export it"
            )
        return path

    @property
    def tokenizer_path(self) -> Path:
        return self.file_path(self.manifest["tokenizer"]["file"])

    @property
    def weights_path(self) -> Path:
        """The PyTorch weights (safetensors) for the torch backend and ``lgfa verify``; a graphs-only
        bundle (such as the embedded default) has none."""
        if "weights" not in self.manifest:
            raise LgfaError(f"bundle {self.root} carries graphs only, no PyTorch weights: the torch backend and "
                            "'lgfa verify' need a bundle from 'lgfa export'; run it on onnxruntime or openvino")  # fmt: skip
        return self.file_path(self.manifest["weights"]["file"])

    @property
    def e4e_path(self) -> Path:
        """The e4e encoder's weights (safetensors), for the torch backend and ``lgfa verify``."""
        self.require_photo()
        return self.file_path(self.manifest["e4e"]["file"])

    @property
    def graph_names(self) -> list[str]:
        return list(self.manifest["graphs"])

    def graph(self, name: str) -> GraphSpec:
        """The declaration of graph ``name`` as written into the manifest."""
        try:
            return GraphSpec.from_dict(self.manifest["graphs"][name])
        except KeyError:
            raise LgfaError(f"bundle {self.root} has no graph {name!r}; it has {', '.join(self.graph_names)}") from None

    def precisions(self, name: str) -> list[str]:
        return list(self.manifest["graphs"][name]["files"])

    def graph_path(self, name: str, precision: str = "fp32") -> Path:
        files = self.manifest["graphs"][name]["files"]
        if precision not in files:
            raise LgfaError(
                f"bundle {self.root} has no {precision} {name} graph; re-export with '--precision {precision}'"
            )
        return self.file_path(files[precision]["file"])

    def file_entries(self) -> list[dict[str, Any]]:
        """Every file record of the manifest (graphs, weights, e4e weights, tokenizer, engines)."""
        entries = [self.manifest[key] for key in ("tokenizer", "weights", "e4e") if key in self.manifest]
        for graph in self.manifest["graphs"].values():
            for entry in graph["files"].values():
                entries.append(entry)
                if "external_data" in entry:  # graphs over 2 GiB keep their weights beside them
                    entries.append(entry["external_data"])
        entries.extend(self.manifest.get("engines", {}).values())
        return entries

    def verify_hashes(self) -> None:
        """Raise :class:`LgfaError` naming the first missing or altered file."""
        for entry in self.file_entries():
            path = self.file_path(entry["file"])
            if not path.is_file():
                raise LgfaError(f"bundle {self.root} is missing {entry['file']}; re-export the bundle")
            if sha256_file(path) != entry["sha256"]:
                raise LgfaError(
                    f"{path} does not match the sha256 in {MANIFEST} (changed or truncated); re-export the bundle"
                )

    def save_manifest(self) -> None:
        write_json_atomic(self.root / MANIFEST, self.manifest)
