"""One trainer's output folder: its options, a resumable checkpoint, the metrics log, a progress bar.

``out/options.json`` records the options; ``out/state.pt`` holds the step, the networks and the
optimiser (written atomically, read with ``torch.load(weights_only=True)``); ``out/metrics.jsonl``
holds one object per logged step. A trainer draws each step's batch from ``(seed, step)``, so a
resumed run follows the path of a straight one. Resuming with other options is refused.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.atomic import atomic_path
from training.errors import OptionError

STATE = "state.pt"
OPTIONS = "options.json"
METRICS = "metrics.jsonl"


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """The dataset rows of one step: a pure function of (seed, step)."""
    return np.random.default_rng([seed, step]).integers(0, n, size=batch)


class Run:
    """Checkpointing and logging of one trainer in ``out``."""

    def __init__(self, out: str | os.PathLike, options: dict, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer):
        self.out = Path(out)
        self.options = options
        self.modules = modules
        self.optimizer = optimizer
        self.step = 0
        self.out.mkdir(parents=True, exist_ok=True)
        saved = self.out / OPTIONS
        if saved.is_file():
            previous = json.loads(saved.read_text())
            if previous != json.loads(json.dumps(options)):
                changed = sorted(k for k in set(previous) | set(options) if previous.get(k) != options.get(k))
                raise OptionError(f"{self.out} holds a run with other options ({', '.join(changed)}); use a new --out")
        else:
            saved.write_text(json.dumps(options, indent=1))
        if (self.out / STATE).is_file():
            state = torch.load(self.out / STATE, map_location="cpu", weights_only=True)
            for name, module in self.modules.items():
                module.load_state_dict(state["modules"][name])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        path = self.out / METRICS
        if path.is_file():
            lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= self.step]
            path.write_text("".join(line + "\n" for line in lines))

    def steps(self, total: int, desc: str, save_every: int = 500) -> Iterator[int]:
        """Steps from the resumed one to ``total`` with a progress bar; the state is saved every
        ``save_every`` steps and at the end."""
        with tqdm(total=total, initial=self.step, desc=desc, unit="step") as bar:
            while self.step < total:
                yield self.step
                self.step += 1
                bar.update(1)
                if self.step % save_every == 0:
                    self.save()
        self.save()

    def log(self, metrics: dict[str, float]) -> None:
        """Append one metrics line for the current step (before it is counted done)."""
        record = {"step": self.step, **{k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}}
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def save(self) -> None:
        """Write the step, networks and optimiser atomically."""
        state = {
            "step": self.step,
            "modules": {name: m.state_dict() for name, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
        }
        with atomic_path(self.out / STATE) as tmp:
            torch.save(state, tmp)

    def metrics(self) -> list[dict]:
        path = self.out / METRICS
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []
