"""The torch backend: the bundle's weights in the PyTorch networks of ``training/``.

On a GPU the synthesis network, which is nearly all of the work, runs at the requested precision
(FP16: the generator keeps the demodulation statistics in FP32 and its StyleGAN2-ADA guards keep
activations finite) with channels_last activations, optionally through ``torch.compile``, and is
replayed from one CUDA graph per batch size; the conversion to uint8 BGR is part of that graph, so
each frame crosses to the host as 3 bytes a pixel, through a pinned buffer. Precision is explicit:
"fp32" turns TF32 off for convolutions and matrix products unless ``tf32=True`` asks for it
(:attr:`TorchBackend.math` names what ran: fp32, tf32 or fp16). The small text, motion and
mapping networks and the photo path's networks (e4e from the bundle's ``e4e.safetensors``, CLIP's
image tower, the visual mapper) run eagerly in FP32. On the CPU everything runs plain eager FP32.
The ``reference`` formulation renders synthesis the way the reference implementation runs
(``training.stylegan2.synthesis_reference``): the benchmarks' baseline.

One graph mechanism at a time: our own CUDA graphs (captured in thread-local mode, so another
thread's CUDA calls cannot break a capture) around an optionally compiled network whose mode
brings no CUDA graphs of its own; a compile mode that does (``reduce-overhead``, ``max-autotune``)
is refused while ``cuda_graphs`` is on. Compiled, batches are padded up to the next power of two,
so at most six shapes (1 to 32) are compiled, well inside torch's recompile limit of 8, after
which it would fall back to eager silently.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
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
GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")
"""torch.compile modes that add Inductor's own CUDA graphs: not inside ours."""
DEFAULT_COMPILE_MODE = "max-autotune-no-cudagraphs"


def padded_batch(batch: int) -> int:
    """The batch a compiled network runs ``batch`` at: the next power of two (bounded shapes)."""
    return 1 << max(batch - 1, 0).bit_length()


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` (in place) with every 4-D parameter and buffer in channels_last memory format.

    ``Module.to(memory_format=torch.channels_last)`` refuses the generator: its modulated
    convolutions hold 5-D weights [1, out, in, k, k], which have no channels_last layout.
    """
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return module


def uint8_bgr(images: Tensor) -> Tensor:
    """Images [N, 3, H, W] in [-1, 1] (any float dtype) -> uint8 [N, H, W, 3] BGR, rounded in FP32."""
    pixels = ((images.float() + 1) * 127.5).clamp_(0, 255).round_().to(torch.uint8)
    return pixels.flip(1).permute(0, 2, 3, 1).contiguous()


class TorchBackend(Backend):
    """Runs a bundle with PyTorch.

    Options: ``formulation`` (default ``"export"``, the generator's own export-friendly forward;
    ``"reference"``: rosinality's per-sample weights and grouped convolutions, FP32 only). GPU only
    (the CPU always runs eager FP32): ``device_id`` (default 0); ``cuda_graphs`` (default True)
    replays synthesis from a CUDA graph captured per batch size after warm-up runs;
    ``channels_last`` (default True); ``tf32`` (default False: "fp32" computes in FP32);
    ``cudnn_benchmark`` (default True: cuDNN times its algorithms for every new shape, once);
    ``compile`` (default False; True or a ``torch.compile`` mode string) compiles the synthesis
    network first, which costs minutes once per batch size and process.
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
        tf32: bool = False,
        cudnn_benchmark: bool = True,
        device_id: int = 0,
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
        on_gpu = device == "cuda"
        if on_gpu and not 0 <= device_id < torch.cuda.device_count():
            raise LgfaError(f"CUDA GPU {device_id} does not exist; torch sees {torch.cuda.device_count()}")
        mode = (compile if isinstance(compile, str) else DEFAULT_COMPILE_MODE) if compile else None
        if on_gpu and mode in GRAPHING_COMPILE_MODES and cuda_graphs:
            raise LgfaError(
                f"torch.compile mode {mode} adds its own CUDA graphs; use mode {DEFAULT_COMPILE_MODE} "
                "(the default), or turn this backend's cuda_graphs off"
            )
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
        self._device = torch.device("cuda", device_id) if on_gpu else torch.device("cpu")
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self.math = precision if precision == "fp16" or not on_gpu else ("tf32" if tf32 else "fp32")
        """What synthesis computes in: "fp32", "tf32" (FP32 storage, TF32 convolutions) or "fp16"."""
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
            generator = to_channels_last(generator)
        self._generator = generator
        self._reference = formulation == "reference"
        self._use_graphs = on_gpu and cuda_graphs
        self._render: Callable[[Tensor], Tensor] = self._render_eager
        self._compiled = False
        if on_gpu:
            # Process-wide switches: the last backend opened sets them.
            torch.backends.cudnn.benchmark = cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            if mode is not None:
                self._render = torch.compile(self._render_eager, mode=mode, dynamic=False)
                self._compiled = True
        elif compile:
            log.info("torch.compile is used on the GPU only; the CPU runs eager")
        # batch -> (static input, static output, graph or None where capture failed, pinned host frames)
        self._graphs: dict[int, tuple[Tensor, Tensor, torch.cuda.CUDAGraph | None, Tensor]] = {}
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

    def _on_device(self) -> contextlib.AbstractContextManager:
        """This backend's GPU as the calling thread's current device (a no-op on the CPU)."""
        return torch.cuda.device(self._device) if self.device == "cuda" else contextlib.nullcontext()

    def _run(self, graph: str, batch: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = {name: torch.from_numpy(array).to(self._device) for name, array in inputs.items()}
        with self._on_device(), torch.inference_mode():
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
        if self.device == "cpu":
            with torch.inference_mode():
                return self._render(host).numpy()
        run_batch = padded_batch(batch) if self._compiled else batch
        if run_batch != batch:
            host = torch.cat([host, host[-1:].expand(run_batch - batch, -1, -1)])
        with self._on_device():  # the calling thread may be a stream's producer
            if not self._use_graphs:
                with torch.inference_mode():
                    return self._render(host.to(self._device))[:batch].cpu().numpy()
            static_in, static_out, graph, pinned = self._graphs.get(run_batch) or self._capture(run_batch)
            with torch.no_grad():
                static_in.copy_(host, non_blocking=False)
                if graph is not None:
                    graph.replay()
                else:
                    static_out.copy_(self._render(static_in))
                pinned.copy_(static_out, non_blocking=True)
                torch.cuda.current_stream().synchronize()
            return pinned[:batch].numpy().copy()  # the pinned buffer is reused by the next call

    def _capture(self, batch: int) -> tuple[Tensor, Tensor, torch.cuda.CUDAGraph | None, Tensor]:
        """Warm up (cuDNN autotuning, compilation) on a side stream, then capture synthesis for ``batch``.

        A capture that fails leaves that batch size running the network without a graph.
        """
        log.debug("capturing a CUDA graph of synthesis for batch %d", batch)
        static_in = torch.zeros((batch, self.bundle.n_latent, self.bundle.style_dim), device=self._device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                static_out = self._render(static_in)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize(self._device)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph: torch.cuda.CUDAGraph | None = torch.cuda.CUDAGraph()
        try:
            # Graphs share one memory pool: they are replayed one at a time, under the pipeline's lock.
            with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                static_out = self._render(static_in)
        except RuntimeError as exc:
            log.warning("no CUDA graph for synthesis at batch %d (%s); it runs without one", batch,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            graph = None
            torch.cuda.synchronize(self._device)
            with torch.no_grad():
                static_out = self._render(static_in)
        pinned = torch.empty(static_out.shape, dtype=static_out.dtype, pin_memory=True)
        self._graphs[batch] = (static_in, static_out, graph, pinned)
        return self._graphs[batch]

    def close(self) -> None:
        self._graphs.clear()
        self._pool = None
        self._model = self._text_encoder = self._image_encoder = self._e4e = self._mapping = self._generator = None
        if self.device == "cuda":
            torch.cuda.empty_cache()
