"""OpenAI CLIP's towers written out from its published structure (``clip/model.py``: ModifiedResNet with
an attention pool, the causal text transformer with QuickGELU), in float64 torch primitives, reading
the weights by their OpenAI names. The independent formulation that our CLIP wrappers are tested against."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

State = dict[str, Tensor]


def _bn(state: State, name: str, x: Tensor) -> Tensor:
    return F.batch_norm(x, state[f"{name}.running_mean"], state[f"{name}.running_var"],
                        state[f"{name}.weight"], state[f"{name}.bias"], training=False, eps=1e-5)  # fmt: skip


def _attention(q: Tensor, k: Tensor, v: Tensor, heads: int, causal: bool) -> Tensor:
    """Scaled dot-product attention [B, Nq, W] x [B, Nk, W] over ``heads`` heads."""
    b, nq, width = q.shape
    split = lambda t: t.reshape(b, t.shape[1], heads, width // heads).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(width // heads)
    if causal:
        scores = scores.masked_fill(torch.ones(nq, nq, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, nq, width)


def image_tower(state: State, images: Tensor, layers: tuple[int, ...], heads: int) -> Tensor:
    """ModifiedResNet: 3-conv stem, avg-pool, bottlenecks (anti-aliased by avg-pool), attention pool."""
    x = images
    for i, stride in ((1, 2), (2, 1), (3, 1)):
        x = F.relu(_bn(state, f"visual.bn{i}", F.conv2d(x, state[f"visual.conv{i}.weight"], stride=stride, padding=1)))
    x = F.avg_pool2d(x, 2)
    for layer, blocks in enumerate(layers):
        for block in range(blocks):
            name = f"visual.layer{layer + 1}.{block}"
            stride = 2 if layer > 0 and block == 0 else 1
            out = F.relu(_bn(state, f"{name}.bn1", F.conv2d(x, state[f"{name}.conv1.weight"])))
            out = F.relu(_bn(state, f"{name}.bn2", F.conv2d(out, state[f"{name}.conv2.weight"], padding=1)))
            out = F.avg_pool2d(out, stride) if stride > 1 else out
            out = _bn(state, f"{name}.bn3", F.conv2d(out, state[f"{name}.conv3.weight"]))
            if f"{name}.downsample.0.weight" in state:
                shortcut = F.avg_pool2d(x, stride) if stride > 1 else x
                x = _bn(state, f"{name}.downsample.1", F.conv2d(shortcut, state[f"{name}.downsample.0.weight"]))
            x = F.relu(out + x)
    tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
    tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + state["visual.attnpool.positional_embedding"]
    proj = {p: tokens @ state[f"visual.attnpool.{p}_proj.weight"].T + state[f"visual.attnpool.{p}_proj.bias"]
            for p in ("q", "k", "v")}  # fmt: skip
    pooled = _attention(proj["q"][:, :1], proj["k"], proj["v"], heads, causal=False)[:, 0]
    return pooled @ state["visual.attnpool.c_proj.weight"].T + state["visual.attnpool.c_proj.bias"]


def text_tower(state: State, tokens: Tensor, layers: int, heads: int) -> Tensor:
    """Token + position embeddings, causal pre-LN blocks with QuickGELU, ln_final, end-of-text token, projection."""
    x = state["token_embedding.weight"][tokens] + state["positional_embedding"]
    width = x.shape[-1]
    norm = lambda t, n: F.layer_norm(t, (width,), state[f"{n}.weight"], state[f"{n}.bias"], eps=1e-5)  # noqa: E731
    for i in range(layers):
        name = f"transformer.resblocks.{i}"
        h = norm(x, f"{name}.ln_1") @ state[f"{name}.attn.in_proj_weight"].T + state[f"{name}.attn.in_proj_bias"]
        q, k, v = h.split(width, dim=-1)
        x = x + _attention(q, k, v, heads, causal=True) @ state[f"{name}.attn.out_proj.weight"].T \
            + state[f"{name}.attn.out_proj.bias"]
        h = norm(x, f"{name}.ln_2") @ state[f"{name}.mlp.c_fc.weight"].T + state[f"{name}.mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ state[f"{name}.mlp.c_proj.weight"].T + state[f"{name}.mlp.c_proj.bias"]
    x = norm(x, "ln_final")
    return x[torch.arange(len(tokens)), tokens.argmax(dim=-1)] @ state["text_projection"]
