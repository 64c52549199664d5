"""CLIP models chosen by name: the paper's RN50 towers, the ViT-B/32 loss model and tiny test models."""
from __future__ import annotations

import copy
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.tokenizer import default_bpe
from open_clip.tokenizer import tokenize as _open_clip_tokenize
from torch import nn

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

_TINY_TEXT_CFG: dict = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}


def _openai_config(name: str) -> dict:
    """open_clip's bundled config for ``name`` with QuickGELU, as the OpenAI weights were trained."""
    config = open_clip.get_model_config(name)
    if config is None:
        raise RuntimeError(f"open_clip has no bundled model config {name!r}")
    return {**config, "quick_gelu": True}


CLIP_CONFIGS: dict[str, dict] = {
    "RN50": _openai_config("RN50"),
    "ViT-B-32": _openai_config("ViT-B-32"),
    "tiny-rn": {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": _TINY_TEXT_CFG,
    },
    "faces-rn": {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
    },
    "tiny-vit": {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": _TINY_TEXT_CFG,
    },
}

# Entries of OpenAI-CLIP state dicts that are model hyper-parameters, not tensors of open_clip's CLIP.
_OPENAI_EXTRA_KEYS: tuple[str, ...] = ("input_resolution", "context_length", "vocab_size")


def create_clip(name: str) -> CLIP:
    """Build the randomly initialised open_clip CLIP registered as ``name`` (never downloads weights)."""
    try:
        config = CLIP_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown CLIP model {name!r}; choose one of: {', '.join(CLIP_CONFIGS)}") from None
    return CLIP(**copy.deepcopy(config))


def clip_image_size(clip: CLIP) -> int:
    """Side length in pixels of the square images the CLIP image tower takes."""
    size = clip.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def embed_dim(clip: CLIP) -> int:
    """Width of CLIP's joint image-text embedding."""
    return int(clip.text_projection.shape[1])


def tokenize(texts: list[str]) -> torch.LongTensor:
    """open_clip's tokens [B, 77]: sot, BPE ids, eot, zero padding; longer texts truncated keeping eot last."""
    return _open_clip_tokenize(texts)


def vocabulary_path() -> Path:
    """open_clip's bundled BPE merges file ``bpe_simple_vocab_16e6.txt.gz``."""
    return Path(default_bpe())


class TextEncoder(nn.Module):
    """CLIP's text tower as a module: tokens [B, 77] int64 -> L2-normalised embeddings [B, embed_dim].

    Shares the wrapped CLIP's parameters. ``clip.encode_text`` exports as is to ONNX opset 17 (legacy
    exporter) with a free batch dimension: the attention of ``nn.MultiheadAttention`` becomes
    MatMul/Softmax, the causal mask a constant, and the argmax end-of-text pooling ArgMax plus Gather,
    all operators the TensorRT 10 parser accepts.
    """

    def __init__(self, clip: CLIP):
        super().__init__()
        self.clip = clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens), dim=-1)


class ImageEncoder(nn.Module):
    """CLIP's image tower as a module: CLIP-normalised images [B, 3, S, S] -> L2-normalised [B, embed_dim]."""

    def __init__(self, clip: CLIP):
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(images), dim=-1)


def openai_to_open_clip(state_dict: dict) -> dict:
    """Rename an OpenAI-CLIP state dict (keys without any ``module.``/``encoder.`` prefix) for open_clip's CLIP.

    Comparing open_clip's CLIP key sets with OpenAI's ``clip/model.py`` layout for RN50 and ViT-B/32
    found the names identical: ``visual.{conv1,bn1,conv2,bn2,conv3,bn3}``, ``visual.layerN.i.{conv,bn}1-3``,
    ``visual.layerN.0.downsample.{0,1}``, ``visual.attnpool.{positional_embedding,q,k,v,c_proj}`` (RN50);
    ``visual.{class_embedding,positional_embedding,conv1,ln_pre,ln_post,proj}`` and
    ``visual.transformer.resblocks.i.*`` (ViT); ``token_embedding``, ``positional_embedding``,
    ``transformer.resblocks.i.{ln_1,attn.in_proj_*,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}``,
    ``ln_final``, ``text_projection``, ``logit_scale`` (text). The causal ``attn_mask`` is state in
    neither. The only differences: OpenAI's checkpoints carry the scalar entries ``input_resolution``,
    ``context_length`` and ``vocab_size``, dropped here; and a dict made without BatchNorm's
    ``num_batches_tracked`` counters gets them as zeros so that strict loading works.
    OpenAI stores some weights as float16; ``load_state_dict`` casts them to the model's dtype.
    """
    mapped = {k: v for k, v in state_dict.items() if k not in _OPENAI_EXTRA_KEYS}
    for key in list(mapped):
        if key.endswith(".running_mean"):
            mapped.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0))
    return mapped
