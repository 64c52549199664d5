"""The schema of ``manifest.json``, as data, and the one check that walks it.

:func:`check_manifest` checks a whole manifest (types, required keys, ranges, the relations between
fields) before anything reads it, and names the first bad field in one line, e.g.
``manifest.json: model.resolution must be an integer, got "big"; re-export the bundle``.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import METRICS, PHOTO_GRAPHS

MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "fp16")
REQUIRED_GRAPHS = ("text_encoder", "motion", "synthesis", "mapping")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(LgfaError):
    """A manifest that does not follow the schema; the message names the field."""

    def __init__(self, where: str, problem: str, value: Any = ...) -> None:
        got = "" if value is ... else f", got {_shown(value)}"
        super().__init__(f"{MANIFEST}: {where} {problem}{got}; re-export the bundle")


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class Rule:
    """One field's expectation; :meth:`check` raises :class:`ManifestError` naming ``where``."""

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Integer(Rule):
    minimum: int = 0
    power_of_two: bool = False

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(where, "must be an integer", value)
        if value < self.minimum:
            raise ManifestError(where, f"must be at least {self.minimum}", value)
        if self.power_of_two and value & (value - 1):
            raise ManifestError(where, "must be a power of two", value)


@dataclass(frozen=True)
class Number(Rule):
    positive: bool = False

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ManifestError(where, "must be a finite number", value)
        if self.positive and value <= 0:
            raise ManifestError(where, "must be above 0", value)


@dataclass(frozen=True)
class Text(Rule):
    choices: tuple[str, ...] = ()
    pattern: re.Pattern | None = None

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str) or not value:
            raise ManifestError(where, "must be a non-empty string", value)
        if self.choices and value not in self.choices:
            raise ManifestError(where, f"must be one of {', '.join(self.choices)}", value)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise ManifestError(where, f"must match {self.pattern.pattern}", value)


@dataclass(frozen=True)
class Boolean(Rule):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise ManifestError(where, "must be true or false", value)


@dataclass(frozen=True)
class FileName(Rule):
    """A relative path inside the bundle (``synthesis.onnx``, ``tensorrt/synthesis.fp16.sm90.plan``)."""

    def check(self, value: Any, where: str) -> None:
        Text().check(value, where)
        parts = value.split("/")
        if value.startswith("/") or "\\" in value or "\0" in value or any(p in ("", ".", "..") for p in parts):
            raise ManifestError(where, "must be a file name inside the bundle", value)


@dataclass(frozen=True)
class ListOf(Rule):
    item: Rule
    length: int | None = None
    min_length: int = 0

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise ManifestError(where, "must be a list", value)
        if self.length is not None and len(value) != self.length:
            raise ManifestError(where, f"must hold {self.length} items", value)
        if len(value) < self.min_length:
            raise ManifestError(where, f"must hold at least {self.min_length} item(s)", value)
        for i, item in enumerate(value):
            self.item.check(item, f"{where}[{i}]")


@dataclass(frozen=True)
class Either(Rule):
    """A value that satisfies one of ``rules``; ``description`` says which kinds."""

    rules: tuple[Rule, ...]
    description: str

    def check(self, value: Any, where: str) -> None:
        for rule in self.rules:
            try:
                rule.check(value, where)
                return
            except ManifestError:
                continue
        raise ManifestError(where, f"must be {self.description}", value)


@dataclass(frozen=True)
class Record(Rule):
    """An object with named fields; ``optional`` ones may be absent, others are ignored."""

    fields: Mapping[str, Rule]
    optional: frozenset[str] = field(default_factory=frozenset)

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ManifestError(where, "must be an object", value)
        for key, rule in self.fields.items():
            inner = f"{where}.{key}" if where else key
            if key not in value:
                if key in self.optional:
                    continue
                raise ManifestError(inner, "is missing")
            rule.check(value[key], inner)


@dataclass(frozen=True)
class Table(Rule):
    """An object whose keys the data chooses (graph names, precisions), each value one ``item``."""

    item: Rule
    keys: tuple[str, ...] = ()
    min_length: int = 0

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ManifestError(where, "must be an object", value)
        if len(value) < self.min_length:
            raise ManifestError(where, f"must hold at least {self.min_length} entry", value)
        for key, item in value.items():
            if self.keys and key not in self.keys:
                raise ManifestError(f"{where}.{key}", f"is not one of {', '.join(self.keys)}")
            self.item.check(item, f"{where}.{key}")


@dataclass(frozen=True)
class Batch(Rule):
    """``{min, opt, max}`` with 1 <= min <= opt <= max."""

    def check(self, value: Any, where: str) -> None:
        Record({"min": Integer(1), "opt": Integer(1), "max": Integer(1)}).check(value, where)
        if not value["min"] <= value["opt"] <= value["max"]:
            raise ManifestError(where, "must satisfy min <= opt <= max", value)


POSITIVE = Integer(1)
FILE = Record({"file": FileName(), "sha256": Text(pattern=_SHA256), "bytes": Integer(0)})
GRAPH_FILE = Record({**FILE.fields, "external_data": FILE}, optional=frozenset({"external_data"}))
TENSOR = Record({
    "name": Text(),
    "dtype": Text(),
    "shape": ListOf(Either((POSITIVE, Text()), "an integer of at least 1 or an axis name"), min_length=1),
})
GRAPH = Record({
    "name": Text(),
    "inputs": ListOf(TENSOR, min_length=1),
    "outputs": ListOf(TENSOR, min_length=1),
    "batch": Batch(),
    "metric": Text(choices=METRICS),
    "files": Table(GRAPH_FILE, keys=PRECISIONS, min_length=1),
})
ENGINE = Record({
    **FILE.fields,
    "graph": Text(),
    "tensorrt_version": Text(),
    "compute_capability": Text(),
    "precision": Text(),
    "profile": Batch(),
})
RGB = ListOf(Number(), length=3)
MANIFEST_SCHEMA = Record(
    {
        "model": Record(
            {
                "preset": Text(),
                "resolution": Integer(4, power_of_two=True),
                "n_latent": POSITIVE,
                "style_dim": POSITIVE,
                "embed_dim": POSITIVE,
                "frames": Integer(2),
                "prompt_template": Text(),
                "clip_image_size": POSITIVE,
                "clip_mean": RGB,
                "clip_std": ListOf(Number(positive=True), length=3),
                "face_size": POSITIVE,
            },
            optional=frozenset({"face_size"}),
        ),
        "provenance": Record({"random_init": Boolean()}),
        "tokenizer": FILE,
        "weights": FILE,
        "e4e": FILE,
        "graphs": Table(GRAPH),
        "engines": Table(ENGINE),
    },
    optional=frozenset({"e4e", "engines", "weights"}),
)
"""Every field the runtime reads; ``format`` and ``schema_version`` are checked before this."""


def check_manifest(manifest: dict[str, Any], required_graphs: tuple[str, ...] = REQUIRED_GRAPHS) -> None:
    """Raise :class:`ManifestError` for the first field of ``manifest`` off :data:`MANIFEST_SCHEMA`,
    then for the relations between fields (``required_graphs``, the photo path's parts, engines)."""
    MANIFEST_SCHEMA.check(manifest, "")
    graphs = manifest["graphs"]
    for name in required_graphs:
        if name not in graphs:
            raise ManifestError(f"graphs.{name}", "is missing")
    for name, graph in graphs.items():
        if graph["name"] != name:
            raise ManifestError(f"graphs.{name}.name", f"must be {name!r}", graph["name"])
    photo = [name for name in PHOTO_GRAPHS if name in graphs]
    if photo:
        for name in PHOTO_GRAPHS:
            if name not in graphs:
                raise ManifestError(f"graphs.{name}", f"is missing (the photo path needs {', '.join(PHOTO_GRAPHS)})")
        if "face_size" not in manifest["model"]:
            raise ManifestError("model.face_size", "is missing (the bundle has the photo graphs)")
        if "e4e" not in manifest:
            raise ManifestError("e4e", "is missing (the bundle has the photo graphs)")
    for key, engine in manifest.get("engines", {}).items():
        if engine["graph"] not in graphs:
            raise ManifestError(f"engines.{key}.graph", "must name a graph of the bundle", engine["graph"])
