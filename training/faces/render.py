"""An anti-aliased renderer of cartoon faces with known parameters, and the masks of their regions.

A face is drawn in unit coordinates (x right, y down, the square [0, 1]^2) as filled polygons and
thick polylines, at ``supersample`` times the output size with OpenCV's anti-aliased, sub-pixel
primitives, then reduced by area averaging. Every point of the head is rotated by the head tilt
about a pivot under the chin, so the tilt moves the head and nothing else. Images are uint8 BGR
[N, H, W, 3] (the runtime's frame layout). Masks are the regions the weighted loss of the
generator trainer stresses (``REGIONS``: eyes, brows, mouth) plus the head; each region covers
every position its features take over the whole expression range, so an expression parameter
changes pixels only inside its own region.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from training.faces.parameters import INDEX, NAMES

REGIONS: tuple[str, ...] = ("eyes", "brows", "mouth", "head")
"""Mask channels, in order. The first three are the generator loss's weighted regions."""

REGION_OF: dict[str, str] = {
    "eye_open_left": "eyes",
    "eye_open_right": "eyes",
    "brow_height": "brows",
    "brow_tilt": "brows",
    "mouth_curve": "mouth",
    "mouth_open": "mouth",
    "mouth_width": "mouth",
    "head_tilt": "head",
}
"""The one region each expression parameter draws in."""

_SHIFT = 4  # sub-pixel bits of OpenCV's drawing calls
_PIVOT = np.array([0.5, 0.92])  # the head tilts about this point
_MAX_TILT_DEGREES = 15.0
_HEAD_CENTER = np.array([0.5, 0.53])
_HEAD_RY = 0.33
_EYE_Y, _EYE_RX, _EYE_RY = 0.50, 0.05, 0.045
_IRIS_R, _PUPIL_R = 0.022, 0.010
_BROW_HALF, _BROW_THICK = 0.045, 0.016
_MOUTH_Y = 0.71
# The mouth at 64 px: 8-14 px wide, lips 1.8-2.8 px thick (1.1 px thin ones drew faint and blurred
# out of the regression generator), corners up or down by up to 2.9 px, open up to 6.4 px.
_MOUTH_HALF_WIDTH = (0.06, 0.05)  # at width 0, and added at width 1
_MOUTH_CURVE = 0.09  # corner lift from mouth_curve 0 to 1
_MOUTH_OPENING = 0.10
_LIP_THICK = (0.028, 0.016)  # at width 1, and added at width 0
_FRINGE_Y = 0.30
_MARGIN = 0.012  # mask margin around a feature's extreme extent

# Palettes in RGB, sampled by linear interpolation along the parameter.
_SKIN = np.array([[255, 226, 200], [236, 188, 150], [198, 134, 90], [120, 78, 52]], np.float64)
_HAIR = np.array([[28, 24, 24], [96, 58, 30], [150, 62, 30], [226, 196, 120], [182, 182, 186]], np.float64)
_IRIS = np.array([[96, 58, 22], [140, 108, 48], [68, 128, 70], [66, 118, 196]], np.float64)
_LIP = np.array([[214, 140, 140], [150, 30, 42]], np.float64)
_EYE_WHITE = (245, 245, 245)  # BGR from here on
_DARK = (36, 36, 50)
_MOUTH_INSIDE = (30, 20, 92)


def _palette(colors: np.ndarray, t: float) -> tuple[float, float, float]:
    """BGR colour at position ``t`` in [0, 1] along an RGB palette."""
    x = float(np.clip(t, 0.0, 1.0)) * (len(colors) - 1)
    i = min(int(x), len(colors) - 2)
    rgb = colors[i] + (x - i) * (colors[i + 1] - colors[i])
    return float(rgb[2]), float(rgb[1]), float(rgb[0])


def _background(t: float) -> tuple[float, float, float]:
    hsv = np.array([[[int(round(179 * np.clip(t, 0, 1))), 90, 216]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return float(b), float(g), float(r)


@functools.lru_cache(maxsize=64)
def _unit_arc(start: float, stop: float, n: int) -> np.ndarray:
    """Points [n, 2] (cos, sin) from angle ``start`` to ``stop``."""
    t = np.linspace(start, stop, n)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _ellipse(center: np.ndarray, rx: float, ry: float, start: float = 0.0, stop: float = 2 * math.pi, n: int = 48) -> np.ndarray:
    return center + _unit_arc(start, stop, n) * (rx, ry)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


class _Canvas:
    """A supersampled drawing surface in unit coordinates, rotated about the pivot by the head tilt."""

    def __init__(self, image: np.ndarray, tilt_degrees: float) -> None:
        self.image = image
        self.scale = image.shape[0] * (1 << _SHIFT)
        a = math.radians(tilt_degrees)
        self.rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def _points(self, points: np.ndarray) -> np.ndarray:
        rotated = (points - _PIVOT) @ self.rotation.T + _PIVOT
        return np.round(rotated * self.scale).astype(np.int32).reshape(-1, 1, 2)

    def fill(self, points: np.ndarray, color: tuple[float, ...]) -> None:
        cv2.fillPoly(self.image, [self._points(points)], color, cv2.LINE_AA, _SHIFT)

    def line(self, points: np.ndarray, color: tuple[float, ...], thickness: float) -> None:
        width = max(1, int(round(thickness * self.image.shape[0])))
        cv2.polylines(self.image, [self._points(points)], False, color, width, cv2.LINE_AA, _SHIFT)


def _eye_centers(p: np.ndarray) -> list[np.ndarray]:
    dx = 0.085 + 0.04 * p[INDEX["eye_spacing"]]
    return [np.array([0.5 - dx, _EYE_Y]), np.array([0.5 + dx, _EYE_Y])]


def _head_rx(p: np.ndarray) -> float:
    return 0.22 + 0.08 * float(p[INDEX["head_width"]])


def _draw_face(canvas: _Canvas, p: np.ndarray) -> None:
    skin = _palette(_SKIN, p[INDEX["skin"]])
    hair = _palette(_HAIR, p[INDEX["hair_color"]])
    brow = tuple(0.7 * c for c in hair)
    rx = _head_rx(p)
    # Hair behind the head: a cap and, by length, a fall down to the shoulders.
    canvas.fill(_ellipse(_HEAD_CENTER - [0, 0.02], rx + 0.04, _HEAD_RY + 0.025), hair)
    length = 0.05 + 0.33 * float(p[INDEX["hair_length"]])
    canvas.fill(_rect(0.5 - rx - 0.04, _HEAD_CENTER[1], 0.5 + rx + 0.04, _HEAD_CENTER[1] + length), hair)
    canvas.fill(_ellipse(_HEAD_CENTER, rx, _HEAD_RY), skin)
    top = _ellipse(_HEAD_CENTER, rx + 0.005, _HEAD_RY + 0.005, math.pi, 2 * math.pi, 64)
    canvas.fill(top[top[:, 1] <= _FRINGE_Y], hair)
    # Nose: a fixed small arc.
    canvas.line(_ellipse(np.array([0.5, 0.585]), 0.018, 0.02, 0.2, math.pi - 0.2, 12), tuple(0.8 * c for c in skin), 0.012)
    _draw_eyes(canvas, p)
    for center, side in zip(_eye_centers(p), (1.0, -1.0)):
        y = _EYE_Y - 0.085 - 0.05 * float(p[INDEX["brow_height"]])
        lift = 0.04 * (float(p[INDEX["brow_tilt"]]) - 0.5)  # inner end up by lift, outer end down
        inner = np.array([center[0] + side * _BROW_HALF, y - lift])
        outer = np.array([center[0] - side * _BROW_HALF, y + lift])
        canvas.line(np.stack([outer, (outer + inner) / 2 - [0, 0.006], inner]), brow, _BROW_THICK)
    _draw_mouth(canvas, p)


def _draw_eyes(canvas: _Canvas, p: np.ndarray) -> None:
    iris = _palette(_IRIS, p[INDEX["iris_color"]])
    for center, name in zip(_eye_centers(p), ("eye_open_left", "eye_open_right")):
        ry = _EYE_RY * float(np.clip(p[INDEX[name]], 0.0, 1.0))
        if ry > 0.002:
            canvas.fill(_ellipse(center, _EYE_RX, ry), _EYE_WHITE)
            canvas.fill(_ellipse(center, _IRIS_R, min(_IRIS_R, ry)), iris)
            canvas.fill(_ellipse(center, _PUPIL_R, min(_PUPIL_R, ry)), _DARK)
        canvas.line(_ellipse(center, _EYE_RX, max(ry, 0.0), math.pi, 2 * math.pi, 24), _DARK, 0.008)


def _mouth_curves(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lip lines, left to right."""
    half_width = _MOUTH_HALF_WIDTH[0] + _MOUTH_HALF_WIDTH[1] * float(p[INDEX["mouth_width"]])
    curve = _MOUTH_CURVE * (float(p[INDEX["mouth_curve"]]) - 0.5)  # corners up by this much
    opening = _MOUTH_OPENING * float(p[INDEX["mouth_open"]])
    u = np.linspace(-1.0, 1.0, 25)
    x = 0.5 + half_width * u
    upper = _MOUTH_Y - curve * u**2 - 0.25 * opening * (1 - u**2)
    lower = _MOUTH_Y - curve * u**2 + 0.75 * opening * (1 - u**2)
    return np.stack([x, upper], 1), np.stack([x, lower], 1)


def _draw_mouth(canvas: _Canvas, p: np.ndarray) -> None:
    upper, lower = _mouth_curves(p)
    lip = _palette(_LIP, p[INDEX["lip_color"]])
    thickness = _LIP_THICK[0] + _LIP_THICK[1] * (1.0 - float(p[INDEX["mouth_width"]]))
    if float(p[INDEX["mouth_open"]]) > 0.01:
        canvas.fill(np.concatenate([upper, lower[::-1]]), _MOUTH_INSIDE)
    canvas.line(upper, lip, thickness)
    canvas.line(lower, lip, thickness)


def _draw_masks(canvases: list[_Canvas], p: np.ndarray) -> None:
    """Regions covering each feature's extent over the whole expression range (eyes, brows, mouth, head)."""
    eyes, brows, mouth, head = canvases
    for center in _eye_centers(p):
        eyes.fill(_ellipse(center, _EYE_RX + _MARGIN, _EYE_RY + _MARGIN), (255,))
        y_low = _EYE_Y - 0.085 + 0.02 + _BROW_THICK / 2 + _MARGIN
        y_high = _EYE_Y - 0.135 - 0.02 - 0.006 - _BROW_THICK / 2 - _MARGIN
        brows.fill(_rect(center[0] - _BROW_HALF - _MARGIN, y_high, center[0] + _BROW_HALF + _MARGIN, y_low), (255,))
    half_width, lip = sum(_MOUTH_HALF_WIDTH), sum(_LIP_THICK)
    corner = _MOUTH_CURVE / 2
    top = _MOUTH_Y - corner - 0.25 * _MOUTH_OPENING - lip - _MARGIN
    bottom = _MOUTH_Y + corner + 0.75 * _MOUTH_OPENING + lip + _MARGIN
    mouth.fill(_rect(0.5 - half_width - lip - _MARGIN, top, 0.5 + half_width + lip + _MARGIN, bottom), (255,))
    rx = _head_rx(p)
    length = 0.05 + 0.33 * float(p[INDEX["hair_length"]])
    head.fill(_ellipse(_HEAD_CENTER - [0, 0.02], rx + 0.04 + _MARGIN, _HEAD_RY + 0.025 + _MARGIN), (255,))
    head.fill(_rect(0.5 - rx - 0.04 - _MARGIN, _HEAD_CENTER[1], 0.5 + rx + 0.04 + _MARGIN, _HEAD_CENTER[1] + length + _MARGIN), (255,))


def render_faces(
    parameters: np.ndarray, size: int = 64, supersample: int = 3, with_masks: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Faces [N, size, size, 3] uint8 BGR for parameters [N, 16] (0-1), and with ``with_masks`` the
    region masks [N, 4, size, size] bool in ``REGIONS`` order (else None). Deterministic."""
    parameters = np.asarray(parameters, dtype=np.float64)
    if parameters.ndim != 2 or parameters.shape[1] != len(NAMES):
        raise ValueError(f"parameters must have shape [N, {len(NAMES)}], got {list(parameters.shape)}")
    if size < 16 or supersample < 1:
        raise ValueError(f"size must be at least 16 and supersample at least 1, got {size} and {supersample}")
    big = size * supersample
    n = parameters.shape[0]
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, len(REGIONS), size, size), bool) if with_masks else None
    for i, p in enumerate(parameters):
        tilt = _MAX_TILT_DEGREES * 2 * (p[INDEX["head_tilt"]] - 0.5)
        image = np.empty((big, big, 3), np.uint8)
        image[:] = _background(p[INDEX["background"]])
        _draw_face(_Canvas(image, tilt), p)
        images[i] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        if masks is not None:
            planes = [np.zeros((big, big), np.uint8) for _ in REGIONS]
            _draw_masks([_Canvas(plane, tilt) for plane in planes], p)
            for r, plane in enumerate(planes):
                masks[i, r] = cv2.resize(plane, (size, size), interpolation=cv2.INTER_AREA) > 0
    return images, masks
