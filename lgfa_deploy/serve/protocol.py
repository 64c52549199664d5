"""The served models, declared once: read by the PyTriton server, the generated model repository
and the client; and the checks of one request's inputs.

``animate`` (decoupled: one request, one response per frame, each sent as soon as it is made):
inputs ``text`` BYTES [1] (UTF-8), ``seed`` INT64 [1], optional ``latent`` FP32 [L, S] (when given
it is the face and the seed is not used); each response ``frame`` UINT8 [H, W, 3] (BGR, like the
rest of the toolkit) and ``index`` INT32 [1]. ``clip`` takes the same inputs and answers once with
``frames`` UINT8 [T, H, W, 3], for plain HTTP clients. ``stats`` answers ``stats`` BYTES [1], a JSON
document of the server's synthesis batch sizes; ``reset`` BOOL [1] true starts a new count.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lgfa_deploy.bundle import Bundle
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.pipeline import check_seed, check_text, load_latent
from lgfa_deploy.tokenizer import ClipTokenizer

ANIMATE = "animate"
CLIP = "clip"
STATS = "stats"

TRITON_DTYPES = {
    "bytes": "BYTES", "bool": "BOOL", "uint8": "UINT8", "int32": "INT32", "int64": "INT64", "float32": "FP32",
}
"""numpy dtype name -> Triton's data type name (a model config's ``TYPE_<name>``, ``STRING`` for BYTES)."""


@dataclass(frozen=True)
class ServedTensor:
    """One input or output of a served model."""

    name: str
    dtype: str  # a key of TRITON_DTYPES
    shape: tuple[int, ...]
    optional: bool = False

    @property
    def triton_dtype(self) -> str:
        return TRITON_DTYPES[self.dtype]

    @property
    def numpy_dtype(self) -> type:
        return np.bytes_ if self.dtype == "bytes" else np.dtype(self.dtype).type


@dataclass(frozen=True)
class ServedModel:
    """A model the server exposes: its tensors and whether it answers with a stream of responses."""

    name: str
    inputs: tuple[ServedTensor, ...]
    outputs: tuple[ServedTensor, ...]
    decoupled: bool
    description: str


def served_models(bundle: Bundle) -> dict[str, ServedModel]:
    """The ``animate``, ``clip`` and ``stats`` declarations for a bundle's sizes."""
    side, frames = bundle.resolution, bundle.frames
    face_inputs = (
        ServedTensor("text", "bytes", (1,)),
        ServedTensor("seed", "int64", (1,)),
        ServedTensor("latent", "float32", (bundle.n_latent, bundle.style_dim), optional=True),
    )
    models = (
        ServedModel(
            ANIMATE, face_inputs,
            (ServedTensor("frame", "uint8", (side, side, 3)), ServedTensor("index", "int32", (1,))),
            decoupled=True,
            description="one sentence -> one response per frame, sent as each frame is made",
        ),
        ServedModel(
            CLIP, face_inputs, (ServedTensor("frames", "uint8", (frames, side, side, 3)),),
            decoupled=False,
            description="one sentence -> the whole clip in one response",
        ),
        ServedModel(
            STATS, (ServedTensor("reset", "bool", (1,)),), (ServedTensor("stats", "bytes", (1,)),),
            decoupled=False,
            description="synthesis batch sizes so far, as JSON; reset=true starts a new count",
        ),
    )
    return {model.name: model for model in models}


@dataclass(frozen=True)
class FaceRequest:
    """One checked ``animate`` or ``clip`` request."""

    text: str
    seed: int
    latent: np.ndarray | None  # content W+ [1, L, S]; when given, the face (the seed is not used)


def _one_value(inputs: dict[str, np.ndarray], name: str) -> object:
    if name not in inputs:
        raise LgfaError(f"the request has no input {name!r}")
    array = np.asarray(inputs[name])
    if array.size != 1:
        raise LgfaError(f"input {name!r} takes one value, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def parse_face_request(
    inputs: dict[str, np.ndarray], tokenizer: ClipTokenizer, n_latent: int, style_dim: int
) -> FaceRequest:
    """The text, seed and optional latent of a request; anything wrong raises :class:`LgfaError` in one line."""
    raw = _one_value(inputs, "text")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LgfaError("input 'text' is not UTF-8; send the sentence as UTF-8 bytes") from None
    text = check_text(tokenizer, raw)
    seed = _one_value(inputs, "seed")
    if not isinstance(seed, np.integer):
        raise LgfaError(f"input 'seed' must be INT64, got {np.asarray(seed).dtype}")
    seed = check_seed(int(seed))
    content = load_latent(inputs["latent"], n_latent, style_dim) if "latent" in inputs else None
    return FaceRequest(text, seed, content)
