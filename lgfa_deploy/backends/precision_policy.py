"""Which synthesis layers stay FP32 when the rest runs in bf16 or fp16.

A StyleGAN2 layer scales its input by a style, convolves, and divides by a demodulation
coefficient; the style and the coefficient are per-channel vectors that multiply a whole feature
map, so their rounding error is the same on every pixel and adds up over the layers instead of
averaging out. They cost next to nothing (vectors of a few hundred numbers per frame), so they stay
FP32; so does every ToRGB and the image skip path, which add straight into the frame. The heavy
feature-map convolutions run at the reduced precision, except, when asked, those at least
``fp32_from`` pixels wide (the finest detail).

The rule is stated on a layer's output shape alone, so that it reads the same on any graph
representation (OpenVINO's model, an ONNX graph with inferred shapes): benchmarks/bf16_emulation.py
measures its effect on the frames.
"""
from __future__ import annotations

IMAGE_CHANNELS = 3


def keeps_fp32(shape: tuple[int | None, ...], fp32_from: int) -> bool:
    """Whether a layer with output ``shape`` stays FP32 (None: a dim not known)."""
    if len(shape) != 4 or shape[3] == 1:
        return True  # styles, modulation and demodulation vectors: not a feature map
    return shape[1] == IMAGE_CHANNELS or (fp32_from > 0 and (shape[3] or 0) >= fp32_from)
