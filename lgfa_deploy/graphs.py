"""Each exported graph declared once, as data: names, dtypes, shapes, batch range, metric.

Export builds graphs from these declarations, ``lgfa verify`` checks against them, the TensorRT
builder takes its optimisation profiles from them and the runtime binds I/O by them (reading the
copy written into a bundle's manifest). A shape entry is an int or the name of a dynamic axis;
the only dynamic axis is ``batch``.
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
    def from_dict(cls, d: dict) -> "TensorSpec":
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
    def from_dict(cls, d: dict) -> "GraphSpec":
        return cls(
            name=d["name"],
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            batch=BatchRange(**d["batch"]),
            metric=d["metric"],
            description=d.get("description", ""),
        )


def graph_specs(
    *,
    embed_dim: int,
    n_latent: int,
    style_dim: int,
    resolution: int,
    frames: int,
    max_batch: int = 16,
) -> dict[str, GraphSpec]:
    """Declarations of every graph of a bundle, for one model's sizes."""
    small = BatchRange(1, 1, max_batch)
    frames_batch = BatchRange(1, min(4, max_batch), max_batch)
    specs = (
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
            (TensorSpec("text_embedding", "float32", (BATCH, embed_dim)),),
            (TensorSpec("motion_offsets", "float32", (BATCH, frames, n_latent, style_dim)),),
            small,
            "cosine",
            f"recurrent motion generator unrolled for {frames} frames + text-aware mapper H_t",
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
    )
    return {s.name: s for s in specs}
