"""A bundle on Triton Inference Server through PyTriton: ``animate`` (decoupled), ``clip`` and ``stats``.

The models are async callables in one process: many streams are served at once, each waiting on
its frames from the :class:`~lgfa_deploy.serve.batcher.FrameBatcher` that batches synthesis across
them. A request's problems (empty or over-long text, a bad seed or latent) end that request with an
error response; Triton itself refuses a missing input or a wrong data type against the model
config. Stopping (SIGTERM or Ctrl-C) refuses new requests, lets the streams in flight finish (up to
a deadline), then stops Triton.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sysconfig
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgfa_deploy.errors import LgfaError
from lgfa_deploy.pipeline import Animator
from lgfa_deploy.serve.batcher import FrameBatcher
from lgfa_deploy.serve.protocol import ANIMATE, CLIP, STATS, FaceRequest, ServedModel, parse_face_request, served_models

log = logging.getLogger(__name__)

FRAMES_AHEAD = 2
"""Frames of one stream queued for synthesis at a time: the next one waits while this one is sent."""
_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Ports:
    """Where the server listens."""

    host: str
    grpc: int
    http: int
    metrics: int

    def named(self) -> dict[str, int]:
        return {"grpc": self.grpc, "http": self.http, "metrics": self.metrics}


def check_ports(ports: Ports) -> None:
    """Refuse, in one line, ports given twice and ports another program already listens on."""
    named = ports.named()
    if len(set(named.values())) != len(named):
        raise LgfaError(f"--grpc-port, --http-port and --metrics-port must differ, got {named}")
    for name, port in named.items():
        if not 1 <= port <= 65535:
            raise LgfaError(f"--{name}-port must be 1 to 65535, got {port}")
        family = socket.AF_INET6 if ":" in ports.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((ports.host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise LgfaError(
                        f"port {port} on {ports.host} ({name}) is taken, perhaps by another 'lgfa serve'; "
                        f"choose another with --{name}-port"
                    ) from None
                raise LgfaError(f"cannot listen on {ports.host}:{port} ({name}): {exc.strerror or exc}") from None


class AnimationService:
    """The served models' callables over one :class:`Animator` and its :class:`FrameBatcher`."""

    def __init__(self, animator: Animator, batcher: FrameBatcher) -> None:
        self.animator = animator
        self.batcher = batcher
        self.models = served_models(animator.bundle)
        self._active = 0
        self._served = 0
        self._lock = threading.Lock()
        self._draining = False

    # -- life of one request ------------------------------------------------------------------------
    def _begin(self) -> None:
        with self._lock:
            if self._draining:
                raise LgfaError("the server is shutting down; try another server or later")
            self._active += 1

    def _end(self) -> None:
        with self._lock:
            self._active -= 1
            self._served += 1

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def drain(self, timeout: float) -> bool:
        """Refuse new requests and wait for those in flight; True when all finished in time."""
        with self._lock:
            self._draining = True
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.active == 0

    def _face(self, inputs: dict[str, np.ndarray]) -> FaceRequest:
        bundle = self.animator.bundle
        return parse_face_request(inputs, self.animator.tokenizer, bundle.n_latent, bundle.style_dim)

    def _latents(self, face: FaceRequest) -> np.ndarray:
        if face.latent is not None:
            return self.animator.latents(face.text, latent=face.latent)
        return self.animator.latents(face.text, seed=face.seed)

    async def _frames(self, inputs: dict[str, np.ndarray]) -> AsyncIterator[np.ndarray]:
        """The frames of one request in order, at most FRAMES_AHEAD of them queued for synthesis."""
        face = self._face(inputs)
        latents = await asyncio.to_thread(self._latents, face)
        queued: deque[Future] = deque()
        try:
            for index in range(len(latents)):
                while len(queued) < FRAMES_AHEAD and index + len(queued) < len(latents):
                    queued.extend(self.batcher.submit(latents[index + len(queued)][None]))
                yield await asyncio.wrap_future(queued.popleft())
        finally:
            for future in queued:
                future.cancel()

    # -- the models ---------------------------------------------------------------------------------------
    async def animate(self, requests: list) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        """Decoupled: one response per frame, each as soon as it is made."""
        self._begin()
        try:
            index = 0
            async for frame in self._frames(requests[0]):
                yield [{"frame": frame, "index": np.array([index], np.int32)}]
                index += 1
        finally:
            self._end()

    async def clip(self, requests: list) -> list[dict[str, np.ndarray]]:
        """The whole clip in one response."""
        self._begin()
        try:
            frames = [frame async for frame in self._frames(requests[0])]
            return [{"frames": np.stack(frames)}]
        finally:
            self._end()

    def stats(self, requests: list) -> list[dict[str, np.ndarray]]:
        """Synthesis batch sizes so far and the streams in flight, as JSON."""
        reset = bool(np.asarray(requests[0]["reset"]).reshape(-1)[0])
        document = self.batcher.stats(reset=reset)
        with self._lock:
            document.update(active_streams=self._active, served_requests=self._served)
        return [{"stats": np.array([json.dumps(document).encode()], dtype=np.object_)}]


def _python_library_path() -> None:
    """Triton's Python backend stub links the interpreter's libpython: put its directory on LD_LIBRARY_PATH
    (an interpreter built outside the system, e.g. by pyenv, keeps it where the loader does not look)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and Path(libdir).is_dir():
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        if libdir not in paths:
            os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def _tensors(model: ServedModel) -> tuple[list, list]:
    from pytriton.model_config import Tensor

    def tensor(spec):
        return Tensor(name=spec.name, dtype=spec.numpy_dtype, shape=spec.shape, optional=spec.optional)

    return [tensor(t) for t in model.inputs], [tensor(t) for t in model.outputs]


def serve(
    service: AnimationService,
    ports: Ports,
    drain_timeout: float,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Serve until SIGTERM or Ctrl-C, then drain the streams in flight and stop; returns the exit code."""
    check_ports(ports)
    _python_library_path()
    try:
        from pytriton.model_config import ModelConfig
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        raise LgfaError(
            f"'lgfa serve' needs PyTriton ({exc.name or exc}), which is not installed; "
            "install it with: pip install 'lgfa-deploy[serve]'"
        ) from None
    config = TritonConfig(
        http_address=ports.host, http_port=ports.http,
        grpc_address=ports.host, grpc_port=ports.grpc,
        metrics_address=ports.host, metrics_port=ports.metrics,
        exit_timeout_secs=max(1, int(drain_timeout)), log_verbose=0,
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Triton(config=config) as triton:
            callables = {ANIMATE: service.animate, CLIP: service.clip, STATS: service.stats}
            for name, model in service.models.items():
                inputs, outputs = _tensors(model)
                triton.bind(
                    model_name=name, infer_func=callables[name], inputs=inputs, outputs=outputs,
                    config=ModelConfig(batching=False, decoupled=model.decoupled),
                )
            triton.run()
            log.info(
                "serving %s on %s: gRPC port %d, HTTP port %d, metrics port %d (SIGTERM or Ctrl-C stops)",
                ", ".join(service.models), ports.host, ports.grpc, ports.http, ports.metrics,
            )
            if on_ready is not None:
                on_ready()
            while not stop.wait(_POLL_SECONDS):
                if not triton.is_alive():
                    raise LgfaError("Triton Inference Server stopped unexpectedly; run with -v to see its log")
            log.info("stopping: %d stream(s) in flight, waiting up to %g s for them", service.active, drain_timeout)
            if not service.drain(drain_timeout):
                log.warning("%d stream(s) still running after %g s; stopping anyway", service.active, drain_timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        service.batcher.close()
    stats = service.batcher.stats()
    log.info("stopped after %d frames; synthesis batch sizes %s", stats["frames"], stats["batches"])
    return 0
