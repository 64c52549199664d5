"""The one place that reads checkpoint files, foreign and our own.

Foreign formats (rosinality StyleGAN2, the reference implementation's ``Iter_*.pth``, open_clip
weight files, e4e) are read with ``torch.load(weights_only=True)``; nothing is unpickled beyond
tensors, containers and ``argparse.Namespace``. Our own format is one safetensors file with the
configuration as JSON metadata. A file that is not what an option expects raises
:class:`CheckpointError` naming what was found and what was expected.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from training.atomic import atomic_path
from training.clip_model import openai_to_open_clip
from training.e4e import E4E, E4E_FORMAT, e4e_config_for, load_e4e, random_e4e
from training.errors import CheckpointError
from training.motion import AnimationModel
from training.presets import PRESETS, Preset, get_preset
from training.stylegan2 import Generator, generator_from_preset, rosinality_layout

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lgfa-checkpoint"
CHECKPOINT_SCHEMA = 1
PRESET_BY_RESOLUTION = {1024: "ffhq-1024", 512: "stylegan-512", 256: "ffhq-256"}


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Models:
    """Everything one animation needs, in PyTorch; ``e4e`` (the photo path's inversion) once attached."""

    preset: Preset
    model: AnimationModel
    generator: Generator
    random_init: bool
    sources: list[dict[str, str]] = field(default_factory=list)
    e4e: E4E | None = None

    def eval(self) -> Models:
        self.model.eval()
        self.generator.eval()
        if self.e4e is not None:
            self.e4e.eval()
        return self


# -- reading torch files safely ----------------------------------------------------------------
def torch_load(path: str | os.PathLike, expected: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for missing, truncated or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; expected {expected}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path} holds Python objects that are unsafe to unpickle ({first[:120]}); "
                f"expected {expected} with tensors only"
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({first[:120]}); expected {expected}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint (truncated or another format: {first[:120]}); "
            f"expected {expected}"
        ) from None


def _tensor_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    return None


# -- rosinality StyleGAN2 ----------------------------------------------------------------------
@dataclass
class RosinalityGenerator:
    """A rosinality ``g_ema`` state dict and the architecture read off its shapes."""

    state_dict: dict[str, torch.Tensor]
    size: int
    style_dim: int
    n_mlp: int
    channel_multiplier: int
    channel_cap: int
    latent_avg: torch.Tensor | None


def _rosinality_architecture(sd: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int, int] | None:
    """(size, style_dim, n_mlp, channel_multiplier, cap) whose published layout matches ``sd`` exactly."""
    n_rgbs = sum(1 for k in sd if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    n_mlp = sum(1 for k in sd if k.startswith("style.") and k.endswith(".weight"))
    if "style.1.weight" not in sd or "input.input" not in sd:
        return None
    size = 2 ** (n_rgbs + 2)
    style_dim = sd["style.1.weight"].shape[1]
    const_channels = sd["input.input"].shape[1]
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    for cm in (2, 1, 4):
        for cap in sorted({512, const_channels}):
            if rosinality_layout(size, style_dim, n_mlp, cm, cap) == shapes:
                return size, style_dim, n_mlp, cm, cap
    return None


def load_rosinality(path: str | os.PathLike, expected_size: int | None = None) -> RosinalityGenerator:
    """Read a rosinality checkpoint (``g_ema``, optional ``latent_avg``)."""
    expected = "a rosinality StyleGAN2 checkpoint (a dict with 'g_ema')"
    obj = torch_load(path, expected)
    if not isinstance(obj, Mapping) or "g_ema" not in obj:
        raise CheckpointError(f"{path}: found {describe_object(obj)}; expected {expected}")
    sd = _tensor_dict(obj["g_ema"])
    arch = _rosinality_architecture(sd) if sd else None
    if arch is None:
        raise CheckpointError(
            f"{path}: 'g_ema' does not have the rosinality StyleGAN2 layout (keys or shapes differ); expected {expected}"
        )
    size, style_dim, n_mlp, cm, cap = arch
    if expected_size is not None and size != expected_size:
        raise CheckpointError(
            f"{path} is a {size} px generator; expected {expected_size} px "
            f"(choose --preset {PRESET_BY_RESOLUTION.get(size, 'matching its size')} or another generator)"
        )
    latent_avg = obj.get("latent_avg")
    return RosinalityGenerator(sd, size, style_dim, n_mlp, cm, cap, latent_avg if torch.is_tensor(latent_avg) else None)


# -- the reference implementation's Iter_*.pth --------------------------------------------------
REFERENCE_ITER = (
    "the reference implementation's training checkpoint (a dict {iter, arch, state_dict, optimizer} whose "
    "state_dict has module.rnn.fc1-3.*, module.mapper.{v,t}_mapper.{1,2,3}.* and module.encoder.*)"
)
MAPPER_LAYERS = (1, 2, 3)
"""Indices of the EqualLinear layers in the reference's mapper ``nn.Sequential`` (0 is the PixelNorm)."""


def _reference_mapper_names(sd: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Reference mapper key -> ours: ``mapper.t_mapper.1.weight`` -> ``mapper.t_mapper.mapping.1.weight``."""
    names = {}
    for mapper in ("v_mapper", "t_mapper"):
        for index in MAPPER_LAYERS:
            for kind in ("weight", "bias"):
                key = f"mapper.{mapper}.{index}.{kind}"
                if key in sd:
                    names[key] = f"mapper.{mapper}.mapping.{index}.{kind}"
    return names


def load_reference_iter(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an ``Iter_*.pth`` model state dict in our names.

    The file is what the reference's training script saves: ``{iter, arch, state_dict, optimizer}``
    (a bare state dict is accepted too); the state dict's keys carry DDP's ``module.`` prefix, the
    text and image towers are OpenAI CLIP (mapped to open_clip), the mappers are stored as their
    ``nn.Sequential`` (mapped to our ``mapping.`` level). The optimiser state is not read.
    """
    obj = torch_load(path, REFERENCE_ITER)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    sd = _tensor_dict(obj)
    if sd is None:
        raise CheckpointError(f"{path}: found {describe_object(obj)}; expected {REFERENCE_ITER}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    required = ["rnn.fc1.weight", "encoder.token_embedding.weight"] + [
        f"mapper.{m}.{i}.{kind}" for m in ("v_mapper", "t_mapper") for i in MAPPER_LAYERS for kind in ("weight", "bias")
    ]
    missing = [k for k in required if k not in sd]
    if missing:
        staged = " (its mappers have a 'mapping.' level: not the reference's layout)" if any(
            ".mapping." in k for k in sd
        ) else ""
        raise CheckpointError(
            f"{path}: found {describe_object(sd)} without {missing[:3]}{staged}; expected {REFERENCE_ITER}"
        )
    mapper_names = _reference_mapper_names(sd)
    encoder = openai_to_open_clip({k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")})
    rest = {mapper_names.get(k, k): v for k, v in sd.items() if not k.startswith("encoder.")}
    return {**{f"encoder.{k}": v for k, v in encoder.items()}, **rest}


# -- open_clip weights and e4e -----------------------------------------------------------------
def load_clip_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An open_clip (or OpenAI-named) CLIP state dict from a .safetensors, .bin or .pt file."""
    expected = "a CLIP state dict (open_clip or OpenAI key names)"
    path = Path(path)
    if path.suffix == ".safetensors":
        sd = load_safetensors(path, expected)
    else:
        obj = torch_load(path, expected)
        if isinstance(obj, Mapping) and "state_dict" in obj:
            obj = obj["state_dict"]
        sd = _tensor_dict(obj)
        if sd is None:
            raise CheckpointError(f"{path}: found {describe_object(obj)}; expected {expected}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if "token_embedding.weight" not in sd or "text_projection" not in sd:
        raise CheckpointError(f"{path}: found {describe_object(sd)}; expected {expected}")
    return openai_to_open_clip(sd)


def load_inception_weights(path: str | os.PathLike, expected_keys: set[str]) -> dict[str, torch.Tensor]:
    """torchvision's Inception v3 state dict (``inception_v3_google-*.pth`` or .safetensors) for FID; the
    auxiliary classifier and BatchNorm counters may be absent, every other key of ``expected_keys`` must be there."""
    expected = "torchvision's Inception v3 weights (inception_v3_google-*.pth, a state dict)"
    path = Path(path)
    obj = load_safetensors(path, expected) if path.suffix == ".safetensors" else torch_load(path, expected)
    sd = _tensor_dict(obj)
    if sd is None:
        raise CheckpointError(f"{path}: found {describe_object(obj)}; expected {expected}")
    optional = {k for k in expected_keys if k.startswith("AuxLogits.") or k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected_keys - optional - sd.keys()), sorted(sd.keys() - expected_keys)
    if missing or unexpected:
        raise CheckpointError(f"{path}: {len(missing)} keys missing (e.g. {missing[:2]}) and {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:2]}); expected {expected}")  # fmt: skip
    return sd


def load_e4e_latent_avg(path: str | os.PathLike) -> torch.Tensor:
    """e4e's ``latent_avg`` [L, 512] from ``e4e_ffhq_encode.pt``."""
    expected = "an e4e checkpoint (a dict with 'state_dict' and 'latent_avg')"
    obj = torch_load(path, expected)
    latent_avg = obj.get("latent_avg") if isinstance(obj, Mapping) else None
    if not torch.is_tensor(latent_avg) or latent_avg.dim() != 2:
        raise CheckpointError(f"{path}: found {describe_object(obj)}; expected {expected}")
    return latent_avg


# -- the project's own checkpoint --------------------------------------------------------------
def load_safetensors(path: Path, expected: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing or unreadable file raises :class:`CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; expected {expected}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); expected {expected}") from None


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, str] | None:
    """The metadata of a safetensors file, or None when the file is not safetensors."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None


def save_checkpoint(path: str | os.PathLike, models: Models, metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``models`` as one safetensors file, atomically."""
    path = Path(path)
    tensors = {f"model.{k}": v for k, v in models.model.state_dict().items()}
    tensors.update({f"generator.{k}": v for k, v in models.generator.state_dict().items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "schema_version": str(CHECKPOINT_SCHEMA),
        "preset": json.dumps(models.preset.to_dict()),
        "random_init": json.dumps(models.random_init),
        "sources": json.dumps(models.sources),
    }
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _own_checkpoint(path: Path) -> tuple[Preset, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    meta = read_checkpoint_metadata(path) or {}
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an lgfa checkpoint (no lgfa metadata)")
    if meta.get("schema_version") != str(CHECKPOINT_SCHEMA):
        raise CheckpointError(
            f"{path} is an lgfa checkpoint of schema {meta.get('schema_version')}; this version reads {CHECKPOINT_SCHEMA}"
        )
    try:
        preset = Preset.from_stored(json.loads(meta["preset"]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}; re-export or re-train it with this version") from None
    if preset.mapper_lr_mul != 1.0:
        log.warning(
            "%s records mapper lr_mul %g (written before the reference's multiplier 1 was the default): "
            "its mappers keep computing what they computed when it was written",
            path, preset.mapper_lr_mul,
        )  # fmt: skip
    tensors = load_safetensors(path, "an lgfa checkpoint")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    generator = {k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")}
    return preset, model, generator, meta


# -- the front door ----------------------------------------------------------------------------
def _load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str, path: Path) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = (
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(wrong)} of another shape (e.g. {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:1]]})"
        )
        raise CheckpointError(f"{path}: its {what} does not fit this preset: {detail}")
    module.load_state_dict(state, strict=True)


def _preset_for(preset: str | None, resolution: int | None) -> Preset:
    if preset is not None:
        chosen = get_preset(preset)
        if resolution is not None and chosen.resolution != resolution:
            raise CheckpointError(
                f"preset {chosen.name} is {chosen.resolution} px but the generator is {resolution} px; "
                f"use --preset {PRESET_BY_RESOLUTION.get(resolution, 'with that size')}"
            )
        return chosen
    if resolution is None:
        raise CheckpointError("no preset and no generator to take the resolution from; pass --preset NAME")
    name = PRESET_BY_RESOLUTION.get(resolution)
    if name is None:
        return dataclasses.replace(PRESETS["ffhq-1024"], name=f"custom-{resolution}", resolution=resolution)
    return PRESETS[name]


def _random_modules(preset: Preset, seed: int) -> tuple[AnimationModel, Generator]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AnimationModel(preset), generator_from_preset(preset)


def load_models(
    *,
    preset: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    stylegan: str | os.PathLike | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> Models:
    """Build the networks from a checkpoint, a generator file, random weights, or a mix.

    ``checkpoint`` is an lgfa checkpoint or the reference implementation's ``Iter_*.pth``;
    ``stylegan`` a rosinality generator (it decides the resolution where the checkpoint does not
    record one); ``random_init`` fills whatever no file provides with weights seeded by ``seed``.
    """
    if checkpoint is None and stylegan is None and not random_init:
        raise CheckpointError("no weights given: pass --checkpoint FILE, --stylegan FILE or --random-init")
    if checkpoint is not None and random_init:
        raise CheckpointError("--random-init and --checkpoint exclude each other; drop one")
    sources: list[dict[str, str]] = []
    rosinality = load_rosinality(stylegan) if stylegan is not None else None
    generator_size = rosinality.size if rosinality else None

    own_generator: dict[str, torch.Tensor] | None = None
    model_state: dict[str, torch.Tensor] | None = None
    file_random = False
    if checkpoint is not None:
        path = Path(checkpoint)
        meta = read_checkpoint_metadata(path) if path.is_file() else None
        if meta is not None:
            chosen, model_state, own_generator, meta = _own_checkpoint(path)
            file_random = json.loads(meta.get("random_init", "false"))
            if preset is not None and preset != chosen.name:
                raise CheckpointError(f"{path} is a {chosen.name} checkpoint; it cannot be used as --preset {preset}")
            if generator_size is not None and generator_size != chosen.resolution:
                raise CheckpointError(
                    f"{stylegan} is a {generator_size} px generator but {path} is a {chosen.resolution} px checkpoint"
                )
        else:
            model_state = load_reference_iter(path)
            style_dim = rosinality.style_dim if rosinality else get_preset(preset).style_dim if preset else 512
            n_latent = model_state["mapper.t_mapper.mapping.3.weight"].shape[0] // style_dim
            chosen = _preset_for(preset, generator_size or 2 ** ((n_latent + 2) // 2))
            if n_latent != chosen.n_latent:
                raise CheckpointError(f"{path} maps to {n_latent} latents; preset {chosen.name} has {chosen.n_latent}")
        sources.append({"role": "checkpoint", "path": str(path), "sha256": sha256_file(path)})
    else:
        chosen = _preset_for(preset, generator_size)
    if rosinality is not None:
        # The preset records the generator it drives: a file's mapping depth and channel table win.
        chosen = dataclasses.replace(
            chosen, n_mlp=rosinality.n_mlp, channel_multiplier=rosinality.channel_multiplier,
            channel_cap=rosinality.channel_cap,
        )  # fmt: skip

    model, generator = _random_modules(chosen, seed)
    if model_state is not None:
        _load_into(model, model_state, "animation model", Path(checkpoint))
    if rosinality is not None:
        if rosinality.style_dim != chosen.style_dim:
            raise CheckpointError(f"{stylegan} has style_dim {rosinality.style_dim}; preset {chosen.name} needs {chosen.style_dim}")
        _load_into(generator, rosinality.state_dict, "generator", Path(stylegan))
        sources.append({"role": "stylegan", "path": str(stylegan), "sha256": sha256_file(stylegan)})
    elif own_generator:
        _load_into(generator, own_generator, "generator", Path(checkpoint))
    generator_random = rosinality is None and not own_generator
    is_random = file_random or model_state is None or generator_random
    if is_random:
        log.info("random-init: %s weights are random", "some" if sources else "all")
    for p in generator.parameters():
        p.requires_grad_(False)
    return Models(chosen, model, generator, is_random, sources).eval()


def attach_e4e(models: Models, path: str | os.PathLike | None = None, seed: int = 0) -> Models:
    """Give ``models`` the e4e encoder of the photo path and return them.

    From ``path`` (``e4e_ffhq_encode.pt`` or this project's e4e file), recorded in ``sources`` with
    role ``e4e``; without one, a random e4e seeded by ``seed`` whose ``latent_avg`` is the generator's
    mean latent, and the models count as random-init. An e4e that does not fit the generator's
    W+ layers raises :class:`CheckpointError`.
    """
    n_latent, style_dim = models.generator.n_latent, models.generator.style_dim
    if path is not None:
        e4e = load_e4e(path, n_latent=n_latent)
        if e4e.config.style_dim != style_dim:
            raise CheckpointError(
                f"{path} predicts styles of {e4e.config.style_dim}; the generator's are {style_dim}"
            )
        models.sources.append({"role": "e4e", "path": str(path), "sha256": sha256_file(path)})
    else:
        try:
            config = e4e_config_for(n_latent, style_dim, tiny=models.preset.name == "tiny")
        except ValueError as exc:
            raise CheckpointError(f"no e4e fits preset {models.preset.name}: {exc}") from None
        with torch.no_grad():
            latent_avg = models.generator.mean_latent(seed=seed)
        e4e = random_e4e(config, latent_avg, seed)
        models.random_init = True
        log.info("random-init: the e4e encoder is random (it inverts no face)")
    models.e4e = e4e
    return models


# -- describing files --------------------------------------------------------------------------
def describe_object(obj: Any) -> str:
    """A short phrase for what a loaded object is, for error messages."""
    if isinstance(obj, Mapping):
        keys = list(obj)[:4]
        return f"a dict with keys {keys}{' ...' if len(obj) > 4 else ''}"
    if torch.is_tensor(obj):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


def _count(sd: Mapping[str, torch.Tensor]) -> int:
    return sum(v.numel() for v in sd.values() if torch.is_tensor(v) and v.is_floating_point())


def describe_file(path: str | os.PathLike) -> str:
    """One line saying what a checkpoint file is; :class:`CheckpointError` when it is none we know."""
    path = Path(path)
    meta = read_checkpoint_metadata(path)
    if meta is not None:
        if meta.get("format") == CHECKPOINT_FORMAT:
            preset = json.loads(meta["preset"])
            tensors = load_safetensors(path, "an lgfa checkpoint")
            random = " (random-init weights)" if json.loads(meta.get("random_init", "false")) else ""
            step = f", step {meta['step']}" if "step" in meta else ""
            return (
                f"LGFA checkpoint, preset {preset['name']}, {preset['resolution']} px, "
                f"{2 * int(preset['resolution']).bit_length() - 4} latents, {_count(tensors):,} parameters{step}{random}"
            )
        if meta.get("format") == E4E_FORMAT:
            e4e = load_e4e(path)
            config = e4e.config
            return (
                f"lgfa e4e encoder ({config.name}), {config.input_size} px faces -> {config.n_styles} latents of "
                f"{config.style_dim}, {_count(e4e.encoder.state_dict()):,} parameters"
            )
        return f"safetensors file with {len(load_file(str(path)))} tensors, not an lgfa checkpoint"
    obj = torch_load(path, "a checkpoint")
    if isinstance(obj, Mapping) and "g_ema" in obj:
        gen = load_rosinality(path)
        avg = ", with latent_avg" if gen.latent_avg is not None else ""
        return (
            f"rosinality StyleGAN2 generator, {gen.size} px, {2 * gen.size.bit_length() - 4} latents, "
            f"style_dim {gen.style_dim}, channel multiplier {gen.channel_multiplier}, "
            f"{_count(gen.state_dict):,} parameters{avg}"
        )
    if isinstance(obj, Mapping) and "latent_avg" in obj and "state_dict" in obj:
        sd = _tensor_dict(obj["state_dict"]) or {}
        encoder = {k: v for k, v in sd.items() if k.startswith("encoder.")}
        return f"e4e encoder checkpoint, latent_avg {tuple(obj['latent_avg'].shape)}, {_count(encoder):,} encoder parameters"
    try:
        sd = load_reference_iter(path)
        return f"reference-implementation LGFA checkpoint (Iter_*.pth), {_count(sd):,} parameters"
    except CheckpointError:
        pass
    try:
        sd = load_clip_weights(path)
        return f"CLIP weights, embed dim {sd['text_projection'].shape[1]}, {_count(sd):,} parameters"
    except CheckpointError:
        pass
    raise CheckpointError(f"{path}: found {describe_object(obj)}, which is no checkpoint lgfa knows")
