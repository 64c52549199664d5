"""Which synthesis layers stay FP32 when the rest runs in bf16 or fp16.

StyleGAN2's error at reduced precision grows with resolution: the widest layers carry the finest
detail, and every ToRGB adds its image into the skip path that becomes the frame, so a rounding
there lands on the output unfiltered. The rule is stated on a layer's output shape alone
([batch, channels, height, width]), so that it reads the same on any graph representation:
a layer stays FP32 when it writes 3 channels (the ToRGBs and the image skip path) or an output at
least ``fp32_from`` pixels wide (0: none by width).
"""
from __future__ import annotations

IMAGE_CHANNELS = 3


def keeps_fp32(shape: tuple[int, ...], fp32_from: int) -> bool:
    """Whether a layer with output ``shape`` stays FP32 under the rule above."""
    if len(shape) != 4:
        return False
    return shape[1] == IMAGE_CHANNELS or (fp32_from > 0 and shape[3] >= fp32_from)
