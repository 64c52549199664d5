"""Each exported graph declared once, as data: names, dtypes, shapes, batch range, metric.

Export builds graphs from these declarations, ``lgfa verify`` checks against them, the TensorRT
builder takes its optimisation profiles from them and the runtime binds I/O by them (reading the
copy written into a bundle's manifest). A shape entry is an int or the name of a dynamic axis;
the only dynamic axis is ``batch``.

Every bundle has the animation graphs (``text_encoder``, ``motion``, ``synthesis``, ``mapping``);
a bundle exported with the photo path also has ``image_encoder`` (e4e: aligned face -> W+),
``clip_image`` (CLIP's image tower: face -> image embedding E_v) and ``visual_mapper`` (H_v).
The motion graph always takes an image embedding beside the text embedding; zeros mean "no
photo" (seed and latent content), so that its start ``z_0 = E_t + E_v`` is then the text alone.
"""
from __future__ import annotations

from dataclasses import dataclass

CONTEXT_LENGTH = 77
BATCH = "batch"
METRICS = ("cosine", "psnr")


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a graph."""

    name: str
    dtype: str  # numpy dtype name: "float32", "float16", "int64"
    shape: tuple[int | str, ...]

    def concrete(self, batch: int) -> tuple[int, ...]:
        """The shape with the batch axis filled in."""
        return tuple(batch if d == BATCH else int(d) for d in self.shape)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass(frozen=True)
class BatchRange:
    """Smallest, usual and largest batch a graph (and a TensorRT profile) is built for."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch range must satisfy 1 <= min <= opt <= max, got {self}")

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class GraphSpec:
    """The declaration of one exported graph."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: BatchRange
    metric: str  # how an export is compared with PyTorch: "cosine" (embeddings) or "psnr" (frames)
    description: str = ""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s dynamic_axes for this graph."""
        return {
            t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            for t in (*self.inputs, *self.outputs)
        }

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "file": self.file,
            "description": self.description,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "batch": self.batch.to_dict(),
            "metric": self.metric,
        }

    @classmethod
    def from_dict(cls, d: dict) -> GraphSpec:
        return cls(
            name=d["name"],
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            batch=BatchRange(**d["batch"]),
            metric=d["metric"],
            description=d.get("description", ""),
        )


PHOTO_GRAPHS = ("image_encoder", "clip_image", "visual_mapper")
"""The graphs of the photo path, declared when an export includes it."""


def graph_specs(
    *,
    embed_dim: int,
    n_latent: int,
    style_dim: int,
    resolution: int,
    frames: int,
    max_batch: int = 16,
    face_size: int | None = None,
    clip_image_size: int | None = None,
) -> dict[str, GraphSpec]:
    """Declarations of every graph of a bundle, for one model's sizes.

    ``face_size`` (e4e's input side) and ``clip_image_size`` (the CLIP image tower's) add the photo
    graphs; give both or neither.
    """
    if (face_size is None) != (clip_image_size is None):
        raise ValueError("the photo graphs need both face_size and clip_image_size")
    small = BatchRange(1, 1, max_batch)
    frames_batch = BatchRange(1, min(4, max_batch), max_batch)
    specs = [
        GraphSpec(
            "text_encoder",
            (TensorSpec("tokens", "int64", (BATCH, CONTEXT_LENGTH)),),
            (TensorSpec("text_embedding", "float32", (BATCH, embed_dim)),),
            small,
            "cosine",
            "CLIP text tower: tokens -> L2-normalised embedding",
        ),
        GraphSpec(
            "motion",
            (
                TensorSpec("text_embedding", "float32", (BATCH, embed_dim)),
                TensorSpec("image_embedding", "float32", (BATCH, embed_dim)),
            ),
            (TensorSpec("motion_offsets", "float32", (BATCH, frames, n_latent, style_dim)),),
            small,
            "cosine",
            f"recurrent motion generator from z0 = text + image embedding (zeros without a photo), "
            f"unrolled for {frames} frames, + text-aware mapper H_t",
        ),
        GraphSpec(
            "synthesis",
            (TensorSpec("latents", "float32", (BATCH, n_latent, style_dim)),),
            (TensorSpec("image", "float32", (BATCH, 3, resolution, resolution)),),
            frames_batch,
            "psnr",
            "StyleGAN2 synthesis: W+ -> RGB image in [-1, 1]",
        ),
        GraphSpec(
            "mapping",
            (TensorSpec("z", "float32", (BATCH, style_dim)),),
            (TensorSpec("w", "float32", (BATCH, style_dim)),),
            small,
            "cosine",
            "StyleGAN2 mapping network: z -> w (seed mode content)",
        ),
    ]
    if face_size is not None and clip_image_size is not None:
        specs += [
            GraphSpec(
                "image_encoder",
                (TensorSpec("face", "float32", (BATCH, 3, face_size, face_size)),),
                (TensorSpec("latents", "float32", (BATCH, n_latent, style_dim)),),
                small,
                "cosine",
                "e4e inversion: aligned face, RGB in [-1, 1] -> W+ (latent_avg included)",
            ),
            GraphSpec(
                "clip_image",
                (TensorSpec("pixels", "float32", (BATCH, 3, clip_image_size, clip_image_size)),),
                (TensorSpec("image_embedding", "float32", (BATCH, embed_dim)),),
                small,
                "cosine",
                "CLIP image tower: CLIP-normalised RGB -> L2-normalised image embedding E_v",
            ),
            GraphSpec(
                "visual_mapper",
                (TensorSpec("image_embedding", "float32", (BATCH, embed_dim)),),
                (TensorSpec("visual_offset", "float32", (BATCH, n_latent, style_dim)),),
                small,
                "cosine",
                "visual mapper H_v: image embedding -> W+ offset added to the photo's content",
            ),
        ]
    return {s.name: s for s in specs}


PARAMETER_READER = "parameter_reader"
"""The synthetic face domain's reader graph, added to a bundle after export (``training.faces.bundle``)."""


def parameter_reader_spec(resolution: int, n_parameters: int, max_batch: int = 64) -> GraphSpec:
    """Declaration of the parameter reader: frames (RGB in [-1, 1]) -> the renderer's parameters (0-1)."""
    return GraphSpec(
        PARAMETER_READER,
        (TensorSpec("image", "float32", (BATCH, 3, resolution, resolution)),),
        (TensorSpec("parameters", "float32", (BATCH, n_parameters)),),
        BatchRange(1, min(16, max_batch), max_batch),
        "cosine",
        "synthetic-face parameter reader: RGB frame in [-1, 1] -> renderer parameters on a 0-1 scale",
    )
