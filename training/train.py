"""The training loop of ``lgfa train`` (PAPER-NOTES, "Training").

One step: sentences -> trained CLIP text tower (and, in image mode, its image tower) -> recurrent
motion generator with the training decay and a random h_0 -> mappers -> W+ per frame -> frozen
StyleGAN2 renders frames 0 and T-1 -> LPIPS against the input face (image mode), the contrastive
loss of a frozen loss CLIP on frame T-1, and the three latent regularisers. Adam with the paper's
betas; one learning rate for the encoder, one for the motion generator, one for the mappers.

Determinism: every random draw comes from per-step generators (see :mod:`training.data`), the
networks stay in eval mode (no dropout; BatchNorm keeps its running statistics), and each process's
loss is a mean over its own samples, so ``torchrun`` with N processes of batch b follows the same
path as one process of batch N*b (with ``--contrastive-group b``) and a resumed run follows the
path of a straight one.

Outputs in ``--out``: ``checkpoints/step_NNNNNN.safetensors`` (the project's checkpoint, what
``lgfa export`` reads), ``checkpoints/step_NNNNNN.state.safetensors`` (optimiser, scheduler and RNG
states; JSON in its metadata), ``checkpoints/last.safetensors`` and ``checkpoints/last.json`` (the
newest), ``metrics.jsonl`` (one object per step), ``samples/step_NNNNNN.png`` (prompts x frames)
and ``train.json`` (the options).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import torch
import torch.distributed as dist
from open_clip.model import CLIP
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from training.atomic import atomic_path, write_bytes_atomic, write_json_atomic
from training.checkpoints import (
    Models,
    load_clip_weights,
    load_models,
    save_checkpoint,
    sha256_file,
)
from training.cli import TRAIN_OPTIONS_FILE, TrainConfig
from training.clip_model import clip_image_size, create_clip, tokenize
from training.data import (
    ImageDataset,
    default_texts,
    read_contents,
    read_texts,
    sample_content_z,
    sample_image_ids,
    sample_initial_state,
    sample_text_ids,
)
from training.errors import CheckpointError, DataError, OptionError
from training.faces.reader import IdentityReading, load_reader
from training.losses import (
    ContentReferences,
    clip_normalize,
    colour_statistics,
    colour_statistics_loss,
    contrastive_loss,
    endpoint_regularizer,
    identity_loss,
    latent_regularizer,
    path_regularizer,
    resize_images,
)
from training.lpips import LPIPS, build_lpips
from training.motion import AnimationModel, Decay
from training.reference import seed_z, to_uint8_bgr

log = logging.getLogger(__name__)

STATE_FORMAT = "lgfa-train-state"
STATE_SCHEMA = 1
RANDOM_NOTE = " [random-init: {} random weights; nothing here is a trained model]"
# Seed offsets of the frozen loss networks, so that they differ from the trained model's weights.
LOSS_CLIP_SEED, LPIPS_SEED = 1, 2
TEXT_CHUNK = 256


# -- processes and devices ---------------------------------------------------------------------
@dataclass(frozen=True)
class Processes:
    """This process's place among ``torchrun``'s processes, and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_processes(device_option: str) -> Processes:
    """Read torchrun's environment, pick the device, and join the process group when there are several."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_option == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_option)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"--device {device_option}: no CUDA GPU is visible to this process")
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world_size, device)


def mean_over_processes(values: Tensor, processes: Processes) -> Tensor:
    """The average of ``values`` over every process (itself with one process)."""
    if processes.world_size > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= processes.world_size
    return values


# -- networks ----------------------------------------------------------------------------------
def load_clip_into(clip: CLIP, path: str, what: str) -> None:
    """Load CLIP weights from a local file into ``clip``; a mismatch names the file."""
    try:
        clip.load_state_dict(load_clip_weights(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not fit the {what} ({first[:160]})") from None


def build_loss_clips(name: str, paths: list[str], seed: int) -> tuple[list[CLIP], list[dict[str, str]]]:
    """The frozen CLIPs of the contrastive loss: one per weights file, or one on seeded random weights."""
    clips, sources = [], []
    for path in paths or [None]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = create_clip(name)
        if path:
            load_clip_into(clip, path, f"loss CLIP {name}")
            sources.append({"role": "loss_clip", "path": path, "sha256": sha256_file(path)})
        clips.append(clip.eval().requires_grad_(False))
    return clips, sources


def build_models(config: TrainConfig, resume_checkpoint: Path | None) -> Models:
    """The trained model and the frozen generator: from a resumed step, a checkpoint, files or random weights."""
    if resume_checkpoint is not None:
        return load_models(checkpoint=resume_checkpoint)
    if config.random_init:
        return load_models(preset=config.preset, random_init=True, seed=config.seed)
    if config.checkpoint:
        return load_models(preset=config.preset, checkpoint=config.checkpoint, stylegan=config.stylegan)
    models = load_models(preset=config.preset, stylegan=config.stylegan, seed=config.seed)
    load_clip_into(models.model.encoder, config.clip, f"encoder CLIP {models.preset.clip_model}")
    models.sources.append({"role": "clip", "path": config.clip, "sha256": sha256_file(config.clip)})
    # The motion generator and mappers start random by design; every pretrained part came from a file.
    models.random_init = False
    return models


def select_trained(model: AnimationModel, image_mode: bool) -> list[dict]:
    """Freeze what a step does not use and return Adam's parameter groups: encoder, motion, mapper."""
    for name, parameter in model.encoder.named_parameters():
        used = not name.startswith("logit_") and (image_mode or not name.startswith("visual."))
        parameter.requires_grad_(used)
    model.rnn.requires_grad_(True)
    model.mapper.t_mapper.requires_grad_(True)
    model.mapper.v_mapper.requires_grad_(image_mode)
    return [
        {"name": "encoder", "params": [p for p in model.encoder.parameters() if p.requires_grad]},
        {"name": "motion", "params": list(model.rnn.parameters())},
        {"name": "mapper", "params": [p for p in model.mapper.parameters() if p.requires_grad]},
    ]


class TrainedForward(nn.Module):
    """The trained part of a step, one module so that DistributedDataParallel wraps it whole.

    Returns the motion offsets ``H_t(m_t)`` and the per-frame latents ``w_t = content + H_v(E_v) +
    H_t(m_t)``, both [B, T, L, S], with the training decay and the given h_0.
    """

    def __init__(self, model: AnimationModel, frames: int, decay: Decay) -> None:
        super().__init__()
        self.model = model
        self.frames = frames
        self.decay = decay

    def forward(self, tokens: Tensor, content: Tensor, h0: Tensor, images: Tensor | None) -> tuple[Tensor, Tensor]:
        text_embedding = self.model.encode_text(tokens)
        image_embedding = None if images is None else self.model.encode_image(images)
        offsets = self.model.motion_offsets(text_embedding, self.frames, image_embedding, decay=self.decay, h0=h0)
        return offsets, self.model.compose(content, offsets, image_embedding)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Learning-rate factor of a linear warm-up over ``warmup_steps`` steps; constant 1 after (and without) it."""
    return 1.0 if warmup_steps == 0 else min(1.0, (step + 1) / warmup_steps)


# -- files -------------------------------------------------------------------------------------
def link_atomic(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source`` (a hard link, or a copy where links fail), atomically."""
    with atomic_path(target) as tmp:
        tmp.unlink()  # os.link makes the name itself
        try:
            os.link(source, tmp)
        except OSError:
            tmp.write_bytes(source.read_bytes())


def rng_state() -> dict:
    """This process's random-generator states: torch (CPU and CUDA) as tensors, Python and NumPy as JSON."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, mt, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt), gauss],
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def save_train_state(
    path: Path,
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng_states: list[dict],
) -> None:
    """Optimiser tensors and per-process torch RNG states as safetensors; everything else as JSON metadata."""
    optimizer_state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, object] = {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    json_rng = []
    for rank, state in enumerate(rng_states):
        for key in ("torch", "cuda"):
            if key in state:
                tensors[f"rng.{rank}.{key}"] = state[key].cpu()
        json_rng.append({"python": state["python"], "numpy": state["numpy"]})
    metadata = {
        "format": STATE_FORMAT,
        "schema_version": str(STATE_SCHEMA),
        "step": str(step),
        "param_groups": json.dumps(optimizer_state["param_groups"]),
        "optimizer_scalars": json.dumps(scalars),
        "scheduler": json.dumps(scheduler.state_dict()),
        "rng": json.dumps(json_rng),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_train_state(
    path: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    processes: Processes,
) -> int:
    """Restore what :func:`save_train_state` wrote into the optimiser, scheduler and RNGs; return the step."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; expected the training state beside the checkpoint")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != STATE_FORMAT or metadata.get("schema_version") != str(STATE_SCHEMA):
        raise CheckpointError(f"{path} is not an lgfa training state of schema {STATE_SCHEMA}")
    tensors = load_file(str(path))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in json.loads(metadata["optimizer_scalars"]).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    except ValueError as exc:
        raise CheckpointError(f"{path} does not fit this run's optimiser ({exc})") from None
    scheduler.load_state_dict(json.loads(metadata["scheduler"]))
    json_rng = json.loads(metadata["rng"])
    if len(json_rng) == processes.world_size:
        own = {"torch": tensors[f"rng.{processes.rank}.torch"], **json_rng[processes.rank]}
        if f"rng.{processes.rank}.cuda" in tensors:
            own["cuda"] = tensors[f"rng.{processes.rank}.cuda"]
        set_rng_state(own)
    else:
        log.warning("%s was saved by %d processes, this run has %d: random states start afresh",
                    path, len(json_rng), processes.world_size)  # fmt: skip
    return int(metadata["step"])


# -- the loop ----------------------------------------------------------------------------------
class Trainer:
    """Everything of one training run: networks, data, optimiser, outputs."""

    def __init__(self, config: TrainConfig, processes: Processes, resume: bool) -> None:
        self.config = config
        self.processes = processes
        self.device = processes.device
        self.out = Path(config.out)
        self.checkpoints = self.out / "checkpoints"
        self.samples = self.out / "samples"
        self.metrics_path = self.out / "metrics.jsonl"
        last = json.loads((self.checkpoints / "last.json").read_text()) if resume else None

        self.models = build_models(config, self.checkpoints / last["checkpoint"] if last else None)
        self.preset = self.models.preset
        self.random_init = self.models.random_init or config.random_init
        self.models.random_init = self.random_init
        networks = "every network but the identity reader has" if config.identity_reader else "every network has"
        self.note = RANDOM_NOTE.format(networks) if self.random_init else ""
        self.model = self.models.model.to(self.device)
        self.generator = self.models.generator.to(self.device).eval().requires_grad_(False)
        self.image_mode = config.image_mode

        loss_clips, loss_sources = build_loss_clips(
            self.preset.loss_clip_model, config.loss_clip, config.seed + LOSS_CLIP_SEED
        )
        self.loss_clips = [clip.to(self.device) for clip in loss_clips]
        self.clip_size = clip_image_size(self.loss_clips[0])
        self.lpips_size = config.lpips_size or self.clip_size
        self.encoder_size = clip_image_size(self.model.encoder)
        self.lpips: LPIPS | None = None
        lpips_sources: list[dict[str, str]] = []
        if self.image_mode and config.lambda_lpips > 0:
            lpips, lpips_sources = build_lpips(config.lpips_weights or None, config.seed + LPIPS_SEED)
            self.lpips = lpips.to(self.device)
        self.loss_sources = loss_sources + lpips_sources

        self.texts = read_texts(config.texts) if config.texts else default_texts(
            config.prompt_template or self.preset.prompt_template
        )
        self.group = config.contrastive_group or config.batch
        if self.group > len(self.texts):
            raise DataError(f"a contrastive group of {self.group} needs at least {self.group} distinct sentences; "
                            f"{config.texts or 'the default list'} has {len(self.texts)}")  # fmt: skip
        self.dataset = (
            ImageDataset(config.images, config.latents, self.preset.n_latent, self.preset.style_dim)
            if self.image_mode
            else None
        )
        self.contents = (
            read_contents(config.latents, self.preset.n_latent, self.preset.style_dim) if config.latent_mode else None
        )
        self.weights = {
            "lpips_first": config.lambda_lpips if self.lpips is not None else 0.0,
            "lpips_last": config.lambda_lpips if self.lpips is not None else 0.0,
            "contrastive": config.lambda_contrastive,
            "path": config.lambda_path,
            "latent": config.lambda_latent,
            "endpoints": config.lambda_endpoints,
            "colour": config.lambda_colour,
            "identity": config.lambda_identity,
        }
        self.terms = [name for name, weight in self.weights.items() if weight > 0]
        if not self.terms:
            raise OptionError("every loss weight is zero: nothing to train")
        self.text_features = self.encode_loss_texts() if "contrastive" in self.terms else None
        self.identity_reading = (
            IdentityReading(load_reader(config.identity_reader)).to(self.device) if "identity" in self.terms else None
        )
        if self.identity_reading is not None:
            self.loss_sources.append({"role": "identity_reader", "path": config.identity_reader,
                                      "sha256": sha256_file(config.identity_reader)})  # fmt: skip
        statistics = {"colour": colour_statistics, "identity": self.identity_reading}
        self.references = ContentReferences(
            {name: statistic for name, statistic in statistics.items() if name in self.terms},
            self.generator.synthesis,
            len(self.contents) if self.contents is not None else None,
        )

        groups = select_trained(self.model, self.image_mode)
        rates = {"encoder": config.lr_encoder, "motion": config.lr_motion, "mapper": config.lr_mapper}
        for group in groups:
            group["lr"] = rates[group["name"]]
        self.optimizer = torch.optim.Adam(groups, betas=tuple(config.adam_betas), eps=config.adam_eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(warmup_factor, warmup_steps=config.warmup_steps)
        )
        self.forward = TrainedForward(self.model, config.frames, config.decay)
        if processes.world_size > 1:
            self.forward = nn.parallel.DistributedDataParallel(
                self.forward,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )
        self.step = 0
        if last:
            self.step = load_train_state(self.checkpoints / last["state"], self.optimizer, self.scheduler, processes)
        else:
            torch.manual_seed(config.seed + processes.rank)
            np.random.seed(config.seed + processes.rank)
            random.seed(config.seed + processes.rank)

    # -- one step ------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp == "bf16")

    def batch(self, step: int) -> dict:
        """This process's slice of the step's global batch, on the device."""
        config, processes = self.config, self.processes
        size = config.batch
        total = size * processes.world_size
        rows = slice(processes.rank * size, (processes.rank + 1) * size)
        text_ids = sample_text_ids(config.seed, step, len(self.texts), total // self.group, self.group)[rows]
        batch = {
            "text_ids": text_ids,
            "tokens": tokenize([self.texts[i] for i in text_ids]).to(self.device),
            "h0": sample_initial_state(config.seed, step, total, self.preset.motion_hidden, config.h0_std)[rows],
            "images": None,
            "targets": None,
        }
        if self.dataset is not None:
            ids = sample_image_ids(config.seed, step, len(self.dataset), total)[rows]
            pairs = [self.dataset.images(i, (self.encoder_size, self.lpips_size)) for i in ids]
            batch["content"] = torch.stack([self.dataset.items[i].latent for i in ids])
            batch["images"] = clip_normalize(torch.stack([p[0] for p in pairs])).to(self.device)
            batch["targets"] = torch.stack([p[1] for p in pairs]).to(self.device)
        elif self.contents is not None:
            batch["content_ids"] = sample_image_ids(config.seed, step, len(self.contents), total)[rows]
            batch["content"] = self.contents[batch["content_ids"]]
        else:
            z = sample_content_z(config.seed, step, total, self.preset.style_dim)[rows].to(self.device)
            with torch.no_grad():
                batch["content"] = self.generator.mapping(z)[:, None].repeat(1, self.preset.n_latent, 1)
        batch["content"] = batch["content"].to(self.device)
        batch["h0"] = batch["h0"].to(self.device)
        return batch

    @torch.no_grad()
    def encode_loss_texts(self) -> list[Tensor]:
        """Each frozen loss CLIP's features of every sentence [N, E], in fixed chunks so that they never vary."""
        features = []
        for clip in self.loss_clips:
            chunks = []
            for start in range(0, len(self.texts), TEXT_CHUNK):
                tokens = tokenize(self.texts[start : start + TEXT_CHUNK]).to(self.device)
                chunks.append(clip.encode_text(tokens).float())
            features.append(torch.cat(chunks))
        return features

    def losses(self, batch: dict) -> dict[str, Tensor]:
        """Every active loss term of one batch (unweighted)."""
        offsets, latents = self.forward(batch["tokens"], batch["content"], batch["h0"], batch["images"])
        terms: dict[str, Tensor] = {}
        last = self.generator.synthesis(latents[:, -1])
        if "lpips_first" in self.terms:
            first = self.generator.synthesis(latents[:, 0])
            terms["lpips_first"] = self.lpips(resize_images(first, self.lpips_size), batch["targets"]).mean()
            terms["lpips_last"] = self.lpips(resize_images(last, self.lpips_size), batch["targets"]).mean()
        if "contrastive" in self.terms:
            images = clip_normalize(resize_images(last, self.clip_size))
            terms["contrastive"] = torch.stack([
                contrastive_loss(clip.encode_image(images), texts[batch["text_ids"]], self.config.tau, self.group)
                for clip, texts in zip(self.loss_clips, self.text_features)
            ]).mean()  # fmt: skip
        if "path" in self.terms:
            terms["path"] = path_regularizer(offsets)
        if "latent" in self.terms:
            terms["latent"] = latent_regularizer(latents, batch["content"])
        if "endpoints" in self.terms:
            terms["endpoints"] = endpoint_regularizer(offsets)
        if self.references.statistics:
            references = self.references(batch["content"], batch.get("content_ids"))
            if "colour" in references:
                terms["colour"] = colour_statistics_loss(last, references["colour"])
            if "identity" in references:
                readings = self.identity_reading(last)
                terms["identity"] = identity_loss(readings, references["identity"], self.config.identity_margin)
        return {name: value.float() for name, value in terms.items()}

    def train_step(self, step: int) -> dict[str, float]:
        """One optimiser step; returns the loss and terms averaged over processes."""
        batch = self.batch(step)
        with self.autocast():
            terms = self.losses(batch)
        loss = torch.stack([self.weights[name] * value for name, value in terms.items()]).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        values = torch.stack([loss.detach(), *(value.detach() for value in terms.values())])
        values = mean_over_processes(values, self.processes)
        return dict(zip(["loss", *terms], values.tolist()))

    # -- outputs -------------------------------------------------------------------------------
    def options_record(self) -> dict:
        return {
            "options": self.config.to_dict(),
            "preset": self.preset.to_dict(),
            "world_size": self.processes.world_size,
            "random_init": self.random_init,
            "loss_sources": self.loss_sources,
        }

    def save(self, step: int) -> Path:
        """Checkpoint, training state, ``last.safetensors`` and ``last.json`` of ``step`` (main process writes)."""
        states = [rng_state()]
        if self.processes.world_size > 1:
            states = [None] * self.processes.world_size
            dist.all_gather_object(states, rng_state())
        name = f"step_{step:06d}"
        checkpoint = self.checkpoints / f"{name}.safetensors"
        if not self.processes.main:
            return checkpoint
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        metadata = {"step": str(step), "training": json.dumps(self.options_record())}
        save_checkpoint(checkpoint, self.models, metadata)
        save_train_state(self.checkpoints / f"{name}.state.safetensors", step, self.optimizer, self.scheduler, states)
        link_atomic(checkpoint, self.checkpoints / "last.safetensors")
        write_json_atomic(
            self.checkpoints / "last.json",
            {"step": step, "checkpoint": checkpoint.name, "state": f"{name}.state.safetensors"},
        )
        log.info("step %d: saved %s%s", step, checkpoint, self.note)
        return checkpoint

    @torch.no_grad()
    def write_samples(self, step: int) -> Path:
        """A PNG grid of inference clips (rows: the first sentences; columns: frames) for ``step``."""
        count = min(self.config.sample_prompts, len(self.texts))
        frames = self.preset.frames
        if self.dataset is not None:
            image = self.dataset.images(0, (self.encoder_size,))[0]
            content = self.dataset.items[0].latent[None].to(self.device)
            image_embedding = self.model.encode_image(clip_normalize(image[None].to(self.device))).expand(count, -1)
        elif self.contents is not None:
            content, image_embedding = self.contents[:1].to(self.device), None
        else:
            z = torch.from_numpy(seed_z(0, self.preset.style_dim)).to(self.device)
            content = self.generator.mapping(z)[:, None].repeat(1, self.preset.n_latent, 1)
            image_embedding = None
        text_embedding = self.model.encode_text(tokenize(self.texts[:count]).to(self.device))
        latents = self.model.latents(content.expand(count, -1, -1), text_embedding, frames, image_embedding)
        cell = min(self.preset.resolution, self.config.sample_size)
        rows = []
        for clip in latents:
            images = resize_images(self.generator.synthesis(clip), cell)
            rows.append(torch.cat(list(images), dim=-1))
        grid = to_uint8_bgr(torch.cat(rows, dim=-2)[None])[0]
        self.samples.mkdir(parents=True, exist_ok=True)
        path = self.samples / f"step_{step:06d}.png"
        ok, encoded = cv2.imencode(".png", grid)
        if not ok:
            raise DataError(f"OpenCV could not encode the sample grid {path}")
        write_bytes_atomic(path, encoded.tobytes())
        log.info("step %d: sample grid %s (%d sentences x %d frames)%s", step, path, count, frames, self.note)
        return path

    def open_metrics(self) -> TextIO:
        """``metrics.jsonl`` to write: new for a new run; for a resumed one, cut back to its step and appended to."""
        if not self.step:
            return self.metrics_path.open("w", encoding="utf-8")
        if self.metrics_path.is_file():
            kept = [
                line
                for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= self.step
            ]
            write_bytes_atomic(self.metrics_path, "".join(f"{line}\n" for line in kept).encode())
        return self.metrics_path.open("a", encoding="utf-8")

    def describe(self) -> str:
        config, processes = self.config, self.processes
        data = (
            f"image mode: {len(self.dataset)} faces from {config.images}"
            if self.dataset is not None
            else f"latent mode: no image, {len(self.contents)} contents from {config.latents} (LPIPS off)"
            if self.contents is not None
            else "no-image mode: content sampled through the mapping network (LPIPS off)"
        )
        return (
            f"training preset {self.preset.name} on {self.device} x {processes.world_size} process(es), "
            f"batch {config.batch} per process, {config.frames} frames ({config.decay} steps), steps {self.step} -> {config.steps}; "
            f"{data}; {len(self.texts)} sentences; losses {', '.join(f'{n} x{self.weights[n]:g}' for n in self.terms)}"
            f"{self.note}"
        )

    def run(self) -> Path | None:
        """Train from the current step to ``--steps``; return the last checkpoint."""
        config, main = self.config, self.processes.main
        if self.step >= config.steps:
            log.info("%s already trained %d of %d steps; nothing to do%s", self.out, self.step, config.steps, self.note)
            return self.checkpoints / "last.safetensors"
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            if not self.step:
                write_json_atomic(self.out / TRAIN_OPTIONS_FILE, self.options_record())
            log.info(self.describe())
        metrics = self.open_metrics() if main else contextlib.nullcontext()
        started, first_step = time.perf_counter(), self.step
        checkpoint = None
        desc = "train [random-init]" if self.random_init else "train"
        with metrics as sink, tqdm(total=config.steps, initial=self.step, desc=desc, disable=not main) as bar:
            while self.step < config.steps:
                began = time.perf_counter()
                rates = {group["name"]: group["lr"] for group in self.optimizer.param_groups}
                values = self.train_step(self.step)
                self.step += 1
                record = {"step": self.step, **values, "lr": rates, "seconds": time.perf_counter() - began}
                if main:
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                    bar.update()
                final = self.step == config.steps
                if self.step % config.save_every == 0 or final:
                    checkpoint = self.save(self.step)
                if main and config.sample_every and (self.step % config.sample_every == 0 or final):
                    self.write_samples(self.step)
        elapsed = time.perf_counter() - started
        log.info("trained steps %d -> %d in %.1f s (%.2f steps/s); last checkpoint %s; "
                 "make a bundle with: lgfa export --checkpoint %s --out DIR%s",
                 first_step, self.step, elapsed, (self.step - first_step) / elapsed, checkpoint,
                 self.checkpoints / "last.safetensors", self.note)  # fmt: skip
        return checkpoint


def train(config: TrainConfig, resume: bool = False) -> Path | None:
    """Run (or, with ``resume``, continue) the training described by ``config``; return the last checkpoint."""
    processes = start_processes(config.device)
    if not processes.main:
        logging.getLogger().setLevel(logging.WARNING)
    if config.tf32:
        if processes.device.type != "cuda":
            log.warning("--tf32 only affects CUDA matmuls and convolutions; this run is on %s", processes.device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        trainer = Trainer(config, processes, resume)
        checkpoint = trainer.run()
        if processes.world_size > 1:
            dist.barrier()
        return checkpoint
    finally:
        if processes.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
