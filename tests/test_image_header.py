"""The size an image header declares, read without decoding, against images OpenCV encoded."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from lgfa_deploy.image_header import image_size


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp", ".tiff"])
@pytest.mark.parametrize("width, height", [(37, 21), (640, 480), (1, 300)])
def test_image_size_matches_the_encoded_image(suffix: str, width: int, height: int) -> None:
    image = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if suffix == ".webp" else []  # 101: lossless (VP8L)
    ok, encoded = cv2.imencode(suffix, image, params)
    assert ok
    assert image_size(encoded.tobytes()) == (width, height)


def test_lossy_webp_and_gif_headers() -> None:
    ok, encoded = cv2.imencode(".webp", np.zeros((50, 70, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 80])
    assert ok and image_size(encoded.tobytes()) == (70, 50)
    gif = b"GIF89a" + (300).to_bytes(2, "little") + (200).to_bytes(2, "little") + b"\x00" * 8
    assert image_size(gif) == (300, 200)


def test_unknown_or_truncated_data_has_no_size() -> None:
    assert image_size(b"") is None
    assert image_size(b"not an image at all") is None
    assert image_size(b"\x89PNG\r\n\x1a\n") is None
    assert image_size(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None
