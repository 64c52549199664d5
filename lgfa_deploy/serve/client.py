"""Frames from ``lgfa serve`` over gRPC: one ``animate`` request, its responses frame by frame, in order.

Used by ``lgfa client``, the serving tests and the load test (``benchmarks/serve_load.py``).
"""
from __future__ import annotations

import queue
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lgfa_deploy.errors import LgfaError
from lgfa_deploy.serve.protocol import ANIMATE, STATS

DEFAULT_URL = "127.0.0.1:8001"
_FINAL = "triton_final_response"


def _grpc():
    try:
        from tritonclient import grpc
    except ImportError as exc:
        raise LgfaError(
            f"talking to 'lgfa serve' needs tritonclient ({exc.name or exc}), which is not installed; "
            "install it with: pip install 'lgfa-deploy[serve]'"
        ) from None
    return grpc


@dataclass(frozen=True)
class ServerFacts:
    """What a server's ``animate`` model makes."""

    resolution: int
    n_latent: int
    style_dim: int


def face_inputs(text: str, seed: int, latent: np.ndarray | None = None) -> list:
    """The ``animate``/``clip`` inputs of a sentence and a face as tritonclient gRPC inputs."""
    grpc = _grpc()
    text_input = grpc.InferInput("text", [1], "BYTES")
    text_input.set_data_from_numpy(np.array([text.encode("utf-8")], dtype=np.object_))
    seed_input = grpc.InferInput("seed", [1], "INT64")
    seed_input.set_data_from_numpy(np.array([seed], dtype=np.int64))
    inputs = [text_input, seed_input]
    if latent is not None:
        latent = np.ascontiguousarray(latent, dtype=np.float32).reshape(latent.shape[-2:])
        latent_input = grpc.InferInput("latent", list(latent.shape), "FP32")
        latent_input.set_data_from_numpy(latent)
        inputs.append(latent_input)
    return inputs


class AnimationClient:
    """A gRPC connection to ``lgfa serve``; ``timeout`` bounds the wait for each response, in seconds."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 60.0) -> None:
        grpc = _grpc()
        self.url = url
        self.timeout = timeout
        self._client = grpc.InferenceServerClient(url)
        try:
            ready = self._client.is_model_ready(ANIMATE, client_timeout=timeout)
        except Exception as exc:  # tritonclient raises its own error types for a refused connection
            self._client.close()
            raise LgfaError(f"no server answers at {url} ({_first_line(exc)}); start one with 'lgfa serve --bundle DIR'") from None
        if not ready:
            self._client.close()
            raise LgfaError(f"the server at {url} has no ready model {ANIMATE!r}; is it an 'lgfa serve'?")

    def facts(self) -> ServerFacts:
        """Frame size and latent shape, from the server's model metadata."""
        metadata = self._client.get_model_metadata(ANIMATE, as_json=True, client_timeout=self.timeout)
        shapes = {t["name"]: [int(d) for d in t["shape"]] for t in (*metadata["inputs"], *metadata["outputs"])}
        return ServerFacts(shapes["frame"][0], *shapes["latent"])

    def frames(self, text: str, seed: int = 0, latent: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """The uint8 BGR frames [H, W, 3] of one sentence, in order, each as it arrives. Closing the
        iterator early cancels the request (the server then stops making its frames)."""
        responses: queue.Queue = queue.Queue()
        self._client.start_stream(callback=lambda result, error: responses.put((result, error)))
        try:
            self._client.async_stream_infer(ANIMATE, face_inputs(text, seed, latent), enable_empty_final_response=True)
            expected = 0
            while True:
                try:
                    result, error = responses.get(timeout=self.timeout)
                except queue.Empty:
                    raise LgfaError(f"no frame from {self.url} for {self.timeout:g} s; the server may be overloaded") from None
                if error is not None:
                    raise LgfaError(f"the server refused the request: {_first_line(error)}")
                final = result.get_response().parameters.get(_FINAL)
                if final is not None and final.bool_param:
                    return
                index = int(result.as_numpy("index")[0])
                if index != expected:
                    raise LgfaError(f"frame {index} arrived where frame {expected} was due")
                expected += 1
                yield result.as_numpy("frame")
        finally:
            self._client.stop_stream(cancel_requests=True)

    def stats(self, reset: bool = False) -> dict:
        """The server's synthesis batch sizes so far (see :meth:`FrameBatcher.stats`)."""
        import json

        grpc = _grpc()
        reset_input = grpc.InferInput("reset", [1], "BOOL")
        reset_input.set_data_from_numpy(np.array([reset]))
        result = self._client.infer(STATS, [reset_input], client_timeout=self.timeout)
        return json.loads(result.as_numpy("stats")[0])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AnimationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(error: object) -> str:
    """An error response in one line: Triton's own message, or the last line of the traceback PyTriton
    sends for an exception in a model, without the exception's module and class."""
    message = getattr(error, "message", None)
    text = str(message() if callable(message) else error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Traceback"):
        return re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1].strip())
    return lines[0]
