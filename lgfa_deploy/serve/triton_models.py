"""The Python-backend models of a generated Triton model repository (:mod:`lgfa_deploy.serve.triton_repo`).

They run inside Triton's Python backend, which provides ``triton_python_backend_utils``:

* :class:`PipelineModel` (``animate``, decoupled, and ``clip``): :class:`lgfa_deploy.pipeline.Animator`
  over :class:`TritonGraphBackend`, which runs each graph as a BLS request to the graph's own model.
  A stream sends its frames one synthesis request at a time, so Triton's dynamic batcher on the
  ``synthesis`` model batches the frames of every stream in flight. A stream whose client has gone
  stops at its next frame.
* :class:`GraphModel` (flavour ``cpu``): one graph on the bundle's onnxruntime backend, every request
  of a dynamic batch concatenated into one call.

A model's version folder holds the bundle's manifest (declaring the graphs it uses) and its files.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lgfa_deploy.backends.base import Backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.pipeline import Animator
from lgfa_deploy.serve.protocol import parse_face_request

log = logging.getLogger(__name__)


def _utils():
    import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

    return pb_utils


def _version_folder(args: dict[str, str]) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def _inputs(request: Any) -> dict[str, np.ndarray]:
    return {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}


class TritonGraphBackend(Backend):
    """Each graph run as a BLS request to the model of the same name in the same Triton."""

    name = "triton"

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle, device="triton", precision="fp32")

    def _run(self, graph: str, batch: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pb_utils = _utils()
        outputs = self.spec(graph).output_names
        request = pb_utils.InferenceRequest(
            model_name=graph,
            requested_output_names=outputs,
            inputs=[pb_utils.Tensor(name, array) for name, array in inputs.items()],
        )
        response = request.exec()
        if response.has_error():
            raise LgfaError(f"graph model {graph} failed: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}


class PipelineModel:
    """``animate`` (decoupled: one response per frame) or ``clip`` (one response), by the model config."""

    def initialize(self, args: dict[str, str]) -> None:
        pb_utils = _utils()
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        bundle = Bundle.open(_version_folder(args), verify_hashes=False)
        self.animator = Animator(bundle, TritonGraphBackend(bundle), micro_batch=1)

    def _latents(self, request: Any) -> np.ndarray:
        bundle = self.animator.bundle
        face = parse_face_request(_inputs(request), self.animator.tokenizer, bundle.n_latent, bundle.style_dim)
        if face.latent is not None:
            return self.animator.latents(face.text, latent=face.latent)
        return self.animator.latents(face.text, seed=face.seed)

    def execute(self, requests: list) -> list | None:
        pb_utils = _utils()
        if self.decoupled:
            for request in requests:
                self._stream(pb_utils, request)
            return None
        responses = []
        for request in requests:
            try:
                frames = self.animator.render(self._latents(request))
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("frames", frames)]))
            except LgfaError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def _stream(self, pb_utils: Any, request: Any) -> None:
        """Send the frames of one request as they are made, then the final flag."""
        sender = request.get_response_sender()
        try:
            latents = self._latents(request)
            for index in range(len(latents)):
                if sender.is_cancelled():
                    log.info("the client left after %d frames; stopping its stream", index)
                    break
                frame = self.animator.render(latents[index : index + 1])[0]
                tensors = [pb_utils.Tensor("frame", frame), pb_utils.Tensor("index", np.array([index], np.int32))]
                sender.send(pb_utils.InferenceResponse(output_tensors=tensors))
        except LgfaError as exc:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self) -> None:
        self.animator.close()


class GraphModel:
    """One graph of the bundle on its onnxruntime backend (CPU), dynamic batches concatenated."""

    def initialize(self, args: dict[str, str]) -> None:
        from lgfa_deploy.backends.base import open_backend

        config = json.loads(args["model_config"])
        self.graph = config["name"]
        precision = config.get("parameters", {}).get("precision", {}).get("string_value", "fp32")
        bundle = Bundle.open(_version_folder(args), verify_hashes=False, required_graphs=(self.graph,))
        self.backend = open_backend("onnxruntime", bundle, device="cpu", precision=precision)
        self.spec = self.backend.spec(self.graph)

    def execute(self, requests: list) -> list:
        pb_utils = _utils()
        inputs = [_inputs(request) for request in requests]
        sizes = [len(next(iter(one.values()))) for one in inputs]
        try:
            batched = {name: np.concatenate([one[name] for one in inputs]) for name in self.spec.input_names}
            outputs = self.backend.run(self.graph, batched)
        except LgfaError as exc:
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(array[start : start + size])) for name, array in outputs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self.backend.close()
