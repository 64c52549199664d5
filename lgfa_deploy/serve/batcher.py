"""Synthesis batched across streams: the pipeline's own micro-batcher behind the served models.

Each live stream hands in the W+ of its next frames and waits for them; one worker thread takes
whatever frames are waiting, oldest first, up to ``max_batch``, runs them through synthesis in one
call and hands each stream its frames back. Nothing waits on purpose: while one batch runs, the
frames of every other stream queue up, so under load batches fill by themselves and a lone stream
is never held back. Every batch size is counted (:meth:`FrameBatcher.stats`), so that the batches
a load really forms can be shown.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from concurrent.futures import Future

import numpy as np

from lgfa_deploy.errors import LgfaError
from lgfa_deploy.pipeline import Animator

log = logging.getLogger(__name__)


class FrameBatcher:
    """One synthesis call at a time for the frames of every stream, at most ``max_batch`` frames each."""

    def __init__(self, animator: Animator, max_batch: int) -> None:
        if not 1 <= max_batch <= animator.micro_batch:
            raise LgfaError(f"max_batch must be 1 to the animator's micro-batch {animator.micro_batch}, got {max_batch}")
        self.animator = animator
        self.max_batch = max_batch
        self._waiting: deque[tuple[np.ndarray, Future]] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._batches: Counter[int] = Counter()
        self._worker = threading.Thread(target=self._work, name="lgfa-frame-batcher", daemon=True)
        self._worker.start()

    def submit(self, latents: np.ndarray) -> list[Future]:
        """Queue per-frame W+ [N, L, S]; one future per frame, resolved to its uint8 BGR frame [H, W, 3]."""
        futures = [Future() for _ in range(len(latents))]
        with self._condition:
            if self._closed:
                raise LgfaError("the server is shutting down")
            self._waiting.extend(zip(latents, futures))
            self._condition.notify()
        return futures

    def _next_batch(self) -> list[tuple[np.ndarray, Future]] | None:
        with self._condition:
            while not self._waiting and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            batch = []
            while self._waiting and len(batch) < self.max_batch:
                latent, future = self._waiting.popleft()
                if future.set_running_or_notify_cancel():  # a cancelled frame (its stream has gone) is skipped
                    batch.append((latent, future))
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            try:
                frames = self.animator.render(np.stack([latent for latent, _ in batch]))
            except BaseException as exc:  # every stream of the batch gets the error
                log.warning("synthesis of a batch of %d frames failed: %s", len(batch), exc)
                for _, future in batch:
                    future.set_exception(exc)
                continue
            with self._condition:
                self._batches[len(batch)] += 1
            for (_, future), frame in zip(batch, frames):
                future.set_result(frame)

    def stats(self, reset: bool = False) -> dict[str, object]:
        """Synthesis calls by batch size so far (``{"batches": {size: count}, "frames": n, ...}``)."""
        with self._condition:
            batches = dict(sorted(self._batches.items()))
            waiting = len(self._waiting)
            if reset:
                self._batches.clear()
        frames = sum(size * count for size, count in batches.items())
        calls = sum(batches.values())
        return {
            "max_batch": self.max_batch,
            "batches": {str(size): count for size, count in batches.items()},
            "frames": frames,
            "mean_batch": frames / calls if calls else 0.0,
            "waiting": waiting,
        }

    def close(self) -> None:
        """Stop the worker after the batch in flight; frames still waiting fail with an :class:`LgfaError`."""
        with self._condition:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
            self._condition.notify_all()
        for _, future in waiting:
            if future.set_running_or_notify_cancel():
                future.set_exception(LgfaError("the server is shutting down"))
        self._worker.join(timeout=60)
