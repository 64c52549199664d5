"""The PyTorch side of every bundle graph: the module each graph exports, its sample inputs, the export.

The graph declarations themselves (names, shapes, batch range, metric) live in
:func:`lgfa_deploy.graphs.graph_specs`; :data:`RECIPES` adds, under the same names, how to build the
module from loaded :class:`training.checkpoints.Models` and how to make inputs for it. Export,
verification and the tests all take modules and inputs from here.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lgfa_deploy.graphs import GraphSpec, graph_specs
from training.clip_model import ImageEncoder, TextEncoder, clip_image_size, tokenize

if TYPE_CHECKING:
    from training.checkpoints import Models
    from training.motion import AnimationModel
    from training.stylegan2 import Generator

log = logging.getLogger(__name__)

OPSET = 17
TRACE_BATCH = 2
"""Batch the graphs are traced at: not 1, so that no batch-1 shortcut is baked into a graph."""
MAX_PROTOBUF_BYTES = 2**31 - 2**20
"""Above this size (protobuf's 2 GiB limit, less a margin) a graph's weights go to external data."""
SAMPLE_EXPRESSIONS = ("smiling", "angry", "closing eyes", "winking", "shocked", "pouting", "crying", "surprised")


class MotionGraph(nn.Module):
    """Text and image embeddings [B, E] -> W+ offsets [B, T, L, S]: the recurrence from z_0 = text + image
    (image zeros without a photo) unrolled for T frames from h_0 = 0, with the inference ("linear")
    step decay, then the text-aware mapper H_t."""

    def __init__(self, model: AnimationModel, frames: int) -> None:
        super().__init__()
        self.model = model
        self.frames = frames

    def forward(self, text_embedding: Tensor, image_embedding: Tensor) -> Tensor:
        return self.model.motion_offsets(text_embedding, self.frames, image_embedding, decay="linear")


class SynthesisGraph(nn.Module):
    """W+ [B, L, S] -> images [B, 3, R, R] in about [-1, 1], with the generator's constant noise."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, latents: Tensor) -> Tensor:
        return self.generator.synthesis(latents)


class MappingGraph(nn.Module):
    """z [B, S] -> w [B, S]: the content latent of seed mode."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: Tensor) -> Tensor:
        return self.generator.mapping(z)


def _image_encoder(models: Models) -> nn.Module:
    if models.e4e is None:
        raise RuntimeError("the image_encoder graph needs an e4e encoder: attach one with training.checkpoints.attach_e4e")
    return models.e4e


def _sample_tokens(models: Models, batch: int, rng: torch.Generator) -> tuple[Tensor, ...]:
    start = int(torch.randint(len(SAMPLE_EXPRESSIONS), (1,), generator=rng))
    expressions = [SAMPLE_EXPRESSIONS[(start + i) % len(SAMPLE_EXPRESSIONS)] for i in range(batch)]
    return (tokenize([models.preset.prompt_template.format(x) for x in expressions]),)


def _sample_embedding(models: Models, batch: int, rng: torch.Generator) -> tuple[Tensor, ...]:
    return (F.normalize(torch.randn(batch, models.preset.embed_dim, generator=rng), dim=-1),)


def _sample_embeddings(models: Models, batch: int, rng: torch.Generator) -> tuple[Tensor, ...]:
    """A text and an image embedding, as the motion graph takes them with a photo."""
    return _sample_embedding(models, batch, rng) + _sample_embedding(models, batch, rng)


def _sample_faces(models: Models, batch: int, rng: torch.Generator) -> tuple[Tensor, ...]:
    """RGB in [-1, 1] at e4e's input size: smooth random images (a blurred 8x8 pattern), not pixel noise."""
    size = _image_encoder(models).config.input_size
    coarse = torch.rand(batch, 3, 8, 8, generator=rng) * 2 - 1
    return (F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False),)


def _sample_pixels(models: Models, batch: int, rng: torch.Generator) -> tuple[Tensor, ...]:
    """CLIP-normalised images (about zero mean, unit variance per channel) at the image tower's size."""
    size = clip_image_size(models.model.encoder)
    return (torch.randn(batch, 3, size, size, generator=rng),)


def _sample_latents(models: Models, batch: int, rng: torch.Generator) -> tuple[Tensor, ...]:
    """Mapped latents repeated over the W+ layers, each layer moved a little (as motion moves them)."""
    generator = models.generator
    w = generator.mapping(torch.randn(batch, generator.style_dim, generator=rng))
    offsets = 0.1 * torch.randn(batch, generator.n_latent, generator.style_dim, generator=rng)
    return (w[:, None] + offsets,)


def _sample_z(models: Models, batch: int, rng: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(batch, models.generator.style_dim, generator=rng),)


@dataclass(frozen=True)
class GraphRecipe:
    """How to build one graph's PyTorch module and make inputs for it (in the declaration's input order)."""

    build: Callable[[Models, int], nn.Module]  # (models, frames) -> module
    sample: Callable[[Models, int, torch.Generator], tuple[Tensor, ...]]  # (models, batch, rng) -> inputs


RECIPES: dict[str, GraphRecipe] = {
    "text_encoder": GraphRecipe(lambda models, frames: TextEncoder(models.model.encoder), _sample_tokens),
    "motion": GraphRecipe(lambda models, frames: MotionGraph(models.model, frames), _sample_embeddings),
    "synthesis": GraphRecipe(lambda models, frames: SynthesisGraph(models.generator), _sample_latents),
    "mapping": GraphRecipe(lambda models, frames: MappingGraph(models.generator), _sample_z),
    "image_encoder": GraphRecipe(lambda models, frames: _image_encoder(models), _sample_faces),
    "clip_image": GraphRecipe(lambda models, frames: ImageEncoder(models.model.encoder), _sample_pixels),
    "visual_mapper": GraphRecipe(lambda models, frames: models.model.mapper.v_mapper, _sample_embedding),
}


def bundle_specs(models: Models, frames: int, max_batch: int = 16) -> dict[str, GraphSpec]:
    """The declarations of every graph for these models (the photo graphs when they have an e4e),
    checked to have a recipe each."""
    preset = models.preset
    photo = models.e4e is not None
    specs = graph_specs(
        embed_dim=preset.embed_dim,
        n_latent=models.generator.n_latent,
        style_dim=models.generator.style_dim,
        resolution=models.generator.size,
        frames=frames,
        max_batch=max_batch,
        face_size=models.e4e.config.input_size if photo else None,
        clip_image_size=clip_image_size(models.model.encoder) if photo else None,
    )
    if not set(specs) <= set(RECIPES):
        raise RuntimeError(f"graph declarations {sorted(specs)} lack export recipes {sorted(set(specs) - set(RECIPES))}")
    return specs


def build_module(name: str, models: Models, frames: int) -> nn.Module:
    """The evaluation-mode PyTorch module of graph ``name``."""
    return RECIPES[name].build(models, frames).eval()


@torch.no_grad()
def sample_inputs(name: str, models: Models, batch: int, seed: int = 0) -> tuple[Tensor, ...]:
    """Deterministic inputs for graph ``name`` at ``batch``; the same seed gives the same inputs."""
    return RECIPES[name].sample(models, batch, torch.Generator().manual_seed(seed))


def export_onnx(module: nn.Module, spec: GraphSpec, inputs: tuple[Tensor, ...], path: Path) -> onnx.ModelProto:
    """Trace ``module`` into an ONNX model at opset :data:`OPSET` with the declaration's names and
    dynamic axes; ``path`` is scratch space for the exporter. Returns the loaded model, I/O typed
    and shaped exactly as declared."""
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer notes about Python-side shape checks: the verification at two batch sizes is the real test.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes(),
        )
    model = onnx.load(str(path))
    folded = fold_constants(model)
    log.debug("%s: folded %d constant nodes", spec.name, folded)
    _declare_io(model.graph.input, spec.inputs)
    _declare_io(model.graph.output, spec.outputs)
    model.doc_string = spec.description
    return model


def fold_constants(model: onnx.ModelProto) -> int:
    """Precompute nodes whose inputs are all initializers (the exporter leaves e.g. the demodulation's
    ``sum(W^2)`` of every static weight); returns how many were folded.

    The FP16 conversion then keeps only these small FP32 statistics beside the FP16 weights, instead
    of a second, FP32 copy of every convolution weight.
    """
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    outputs = {value.name for value in graph.output}
    kept, folded = [], 0
    for node in graph.node:
        inputs = [i for i in node.input if i]
        foldable = (
            (inputs or node.op_type == "Constant")
            and all(i in constants for i in inputs)
            and not node.op_type.startswith("Random")
            and not set(node.output) & outputs
        )
        if not foldable:
            kept.append(node)
            continue
        single = onnx.helper.make_model(
            onnx.helper.make_graph(
                [node], "fold", [], [onnx.helper.make_empty_tensor_value_info(o) for o in node.output],
                [constants[i] for i in inputs],
            ),
            opset_imports=model.opset_import,
        )
        for name, value in zip(node.output, ReferenceEvaluator(single).run(None, {})):
            constants[name] = onnx.numpy_helper.from_array(np.asarray(value), name)
        folded += 1
    used = {i for node in kept for i in node.input} | outputs
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(t for name, t in constants.items() if name in used)
    return folded


def _declare_io(values, tensors) -> None:
    """Set graph inputs or outputs to the declared dtypes and shapes (named dims for dynamic axes)."""
    by_name = {v.name: v for v in values}
    for tensor in tensors:
        value = by_name[tensor.name]
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype))
        value.CopyFrom(onnx.helper.make_tensor_value_info(tensor.name, elem, list(tensor.shape)))


def save_onnx(model: onnx.ModelProto, path: Path, limit: int = MAX_PROTOBUF_BYTES) -> list[str]:
    """Save ``model``; above ``limit`` bytes its weights go to one external file ``<name>.data``.

    Returns the names of the files written, the graph first.
    """
    if model.ByteSize() <= limit:
        onnx.save_model(model, str(path))
        return [path.name]
    data_name = f"{path.name}.data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
    return [path.name, data_name]
