"""The torch backend: the bundle's weights in the PyTorch networks of ``training/``.

On a GPU the synthesis network, which is nearly all of the work, runs in FP16 (the generator keeps
the demodulation statistics in FP32) with channels_last activations, optionally through
``torch.compile``, and is replayed from one CUDA graph per batch size; the conversion to uint8 BGR
is part of that graph, so each frame crosses to the host as 3 bytes a pixel. The small text,
motion and mapping networks and the photo path's networks (e4e from the bundle's
``e4e.safetensors``, CLIP's image tower, the visual mapper) run eagerly in FP32. On the CPU
everything runs plain eager FP32. The ``reference`` formulation renders synthesis the way the
reference implementation runs (``training.stylegan2.synthesis_reference``): the benchmarks' baseline.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from lgfa_deploy.backends.base import Backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.errors import LgfaError
from training.checkpoints import load_models
from training.clip_model import ImageEncoder, TextEncoder
from training.e4e import load_e4e
from training.errors import CheckpointError
from training.stylegan2 import synthesis_reference

log = logging.getLogger(__name__)

WARMUP_RUNS = 3
FORMULATIONS = ("export", "reference")


def uint8_bgr(images: Tensor) -> Tensor:
    """Images [N, 3, H, W] in [-1, 1] (any float dtype) -> uint8 [N, H, W, 3] BGR, rounded in FP32."""
    pixels = ((images.float() + 1) * 127.5).clamp_(0, 255).round_().to(torch.uint8)
    return pixels.flip(1).permute(0, 2, 3, 1).contiguous()


class TorchBackend(Backend):
    """Runs a bundle with PyTorch.

    Options: ``formulation`` (default ``"export"``, the generator's own export-friendly forward;
    ``"reference"``: rosinality's per-sample weights and grouped convolutions, FP32 only). GPU only
    (the CPU always runs eager FP32): ``cuda_graphs`` (default True) replays synthesis from a CUDA
    graph captured per batch size after warm-up runs; ``channels_last`` (default True); ``compile``
    (default False; True or a ``torch.compile`` mode string) compiles the synthesis network first,
    which costs minutes once per batch size and process.
    """

    name = "torch"

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        precision: str = "fp32",
        cuda_graphs: bool = True,
        channels_last: bool = True,
        compile: bool | str = False,
        formulation: str = "export",
    ) -> None:
        if formulation not in FORMULATIONS:
            raise LgfaError(f"torch formulation {formulation!r} is unknown; choose export or reference")
        if formulation == "reference" and precision == "fp16":
            raise LgfaError(
                "the torch reference formulation runs fp32 only; use --precision fp32, or formulation export for fp16"
            )
        has_cuda = torch.cuda.is_available()
        if device == "auto":
            device = "cuda" if has_cuda else "cpu"
        if device == "cuda" and not has_cuda:
            raise LgfaError("device cuda was asked for, but torch finds no CUDA GPU; use --device cpu")
        if device == "cpu" and precision == "fp16":
            raise LgfaError("the torch backend runs fp16 on a GPU only; use --precision fp32 on the CPU")
        super().__init__(bundle, device, precision)
        try:
            models = load_models(checkpoint=str(bundle.weights_path))
        except CheckpointError as exc:
            raise LgfaError(f"cannot load the weights of bundle {bundle.root}: {exc}") from None
        preset = models.preset
        found = (preset.resolution, preset.n_latent, preset.style_dim, preset.embed_dim)
        declared = (bundle.resolution, bundle.n_latent, bundle.style_dim, bundle.embed_dim)
        if found != declared:
            raise LgfaError(
                f"the weights of bundle {bundle.root} are for (resolution, latents, style, embedding) {found}, "
                f"its manifest declares {declared}; re-export the bundle"
            )
        on_gpu = device == "cuda"
        self._device = torch.device(device)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self._frames = bundle.frames
        self._model = models.model.to(self._device).eval()
        self._text_encoder = TextEncoder(self._model.encoder).eval()
        self._image_encoder = ImageEncoder(self._model.encoder).eval()
        self._e4e = None  # loaded on first use: a seed-only run never needs its 267 M parameters
        generator = models.generator
        # Mapping stays FP32: it is tiny, and seeds should give the same face at either precision.
        mapping = copy.deepcopy(generator.style) if precision == "fp16" else generator.style
        self._mapping = mapping.to(self._device).eval()
        generator = generator.to(self._device, self._dtype).eval()
        if on_gpu and channels_last:
            generator = generator.to(memory_format=torch.channels_last)
        self._generator = generator
        self._reference = formulation == "reference"
        self._use_graphs = on_gpu and cuda_graphs
        self._render: Callable[[Tensor], Tensor] = self._render_eager
        if on_gpu:
            torch.backends.cudnn.benchmark = True
            if compile:
                mode = compile if isinstance(compile, str) else "max-autotune-no-cudagraphs"
                self._render = torch.compile(self._render_eager, mode=mode, dynamic=False)
        elif compile:
            log.info("torch.compile is used on the GPU only; the CPU runs eager")
        self._graphs: dict[int, tuple[Tensor, Tensor, torch.cuda.CUDAGraph]] = {}
        self._pool = None

    # -- graphs ----------------------------------------------------------------------------------
    def _render_eager(self, latents: Tensor) -> Tensor:
        """Device latents [B, L, S] (FP32) -> device uint8 BGR frames [B, H, W, 3]."""
        return uint8_bgr(self._synthesis(latents.to(self._dtype)))

    def _synthesis(self, latents: Tensor) -> Tensor:
        """Latents -> float images, in the chosen formulation."""
        if self._reference:
            return synthesis_reference(self._generator, latents)
        return self._generator.synthesis(latents)

    def _run(self, graph: str, batch: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = {name: torch.from_numpy(array).to(self._device) for name, array in inputs.items()}
        with torch.inference_mode():
            if graph == "text_encoder":
                out = self._text_encoder(x["tokens"])
            elif graph == "motion":
                out = self._model.motion_offsets(x["text_embedding"], self._frames, x["image_embedding"], decay="linear")
            elif graph == "mapping":
                out = self._mapping(x["z"])
            elif graph == "synthesis":
                out = self._synthesis(x["latents"].to(self._dtype))
            elif graph == "image_encoder" and self.bundle.has_photo:
                out = self._inversion()(x["face"])
            elif graph == "clip_image":
                out = self._image_encoder(x["pixels"])
            elif graph == "visual_mapper":
                out = self._model.mapper.v_mapper(x["image_embedding"])
            else:
                raise LgfaError(f"the torch backend has no network for graph {graph!r}")
            out = out.float().cpu().numpy()
        return {self.spec(graph).outputs[0].name: out}

    def _inversion(self) -> torch.nn.Module:
        """The bundle's e4e, loaded the first time a photo is inverted."""
        if self._e4e is None:
            try:
                e4e = load_e4e(self.bundle.e4e_path, n_latent=self.bundle.n_latent)
            except CheckpointError as exc:
                raise LgfaError(f"cannot load the e4e weights of bundle {self.bundle.root}: {exc}") from None
            self._e4e = e4e.to(self._device).eval()
        return self._e4e

    def frames(self, latents: np.ndarray) -> np.ndarray:
        batch, checked = self.check_inputs("synthesis", {"latents": latents})
        host = torch.from_numpy(checked["latents"])
        if not self._use_graphs:
            with torch.inference_mode():
                return self._render(host.to(self._device)).cpu().numpy()
        static_in, static_out, graph = self._graphs.get(batch) or self._capture(batch)
        with torch.no_grad():
            static_in.copy_(host)
            graph.replay()
            return static_out.cpu().numpy()

    def _capture(self, batch: int) -> tuple[Tensor, Tensor, torch.cuda.CUDAGraph]:
        """Warm up (cuDNN autotuning, compilation) on a side stream, then capture synthesis for ``batch``."""
        log.debug("capturing a CUDA graph of synthesis for batch %d", batch)
        static_in = torch.zeros((batch, self.bundle.n_latent, self.bundle.style_dim), device=self._device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._render(static_in)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # Graphs share one memory pool: they are replayed one at a time, from one thread.
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool):
            static_out = self._render(static_in)
        self._graphs[batch] = (static_in, static_out, graph)
        return self._graphs[batch]

    def close(self) -> None:
        self._graphs.clear()
        self._pool = None
        self._model = self._text_encoder = self._image_encoder = self._e4e = self._mapping = self._generator = None
        if self.device == "cuda":
            torch.cuda.empty_cache()
