"""Face alignment for the photo path: dlib's 68 landmarks and the FFHQ recipe, in NumPy and OpenCV.

A photo becomes the square, aligned face that e4e (256 px) and FFHQ (1024 px) expect:

1. dlib's HOG frontal-face detector finds the faces (on a copy at most ``DETECT_MAX_SIDE`` px
   long, upsampled once), and the 68-point shape predictor shipped by ``face_recognition_models``
   places the landmarks on the full-resolution photo.
2. The FFHQ recipe turns the eyes and mouth corners into an oriented square ``quad`` (side
   ``qsize``), then: shrinks the photo when the quad is much larger than the output, crops around
   the quad with a border of ``max(round(0.1 qsize), 3)``, pads by reflection with a blurred blend
   where the quad leaves the photo, maps the quad onto a square and resizes it to the output size.
   The square is rendered at ``SUPERSAMPLE`` times the output size and area-averaged down, as FFHQ
   itself was made (e4e's own script renders straight at 256 px, which aliases a little).

Torch-free: NumPy, OpenCV and dlib, which is imported only when a face is looked for, so that the
rest of ``lgfa`` runs without the ``face`` extra. Every problem with the input raises
:class:`LgfaError` with one line that says what is wrong and what to do.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lgfa_deploy.atomic import write_bytes_atomic
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.image_header import image_size

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'lgfa-deploy[face]'"
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
"""The 68-point predictor inside the ``face_recognition_models`` package (``models/``)."""

MIN_SIDE = 64
"""Shortest image side accepted: dlib's detector finds no face in anything smaller."""
MAX_PIXELS = 100_000_000
"""Largest image accepted (100 megapixels, e.g. 10000x10000)."""
DETECT_MAX_SIDE = 1024
"""Faces are detected on a copy whose longer side is at most this (landmarks use the full photo)."""
DETECT_UPSAMPLE = 1
"""Times dlib upsamples the detection copy: 1 finds faces down to about 40 px of that copy."""
SUPERSAMPLE = 4
"""The quad is rendered at this multiple of the output size, then area-averaged down (FFHQ: 4096 -> 1024)."""
MIN_SIZE, MAX_SIZE = 16, 4096
"""Output sizes :func:`align_face` accepts."""
WRITABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
READABLE_SUFFIXES = (*WRITABLE_SUFFIXES, ".tif", ".tiff")
"""Image files a folder of photos may hold (OpenCV decodes them all)."""


# ----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Face:
    """One detected face, in the input photo's pixel coordinates (x right, y down, pixel centres at integers)."""

    index: int
    """Position in :func:`detect_faces`' order (largest first); what ``--face`` selects."""
    box: tuple[int, int, int, int]
    """dlib's detection box: left, top, right, bottom (inclusive; may reach past the photo's edge)."""
    score: float
    """dlib's detection score (higher is surer; 0 is the detector's threshold)."""
    landmarks: np.ndarray = field(repr=False)
    """[68, 2] float64 (x, y): the iBUG 300-W points (jaw 0-16, eyes 36-41 and 42-47, mouth 48-67)."""

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0] + 1

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1] + 1

    @property
    def eye_distance(self) -> float:
        """Pixels between the centres of the two eyes."""
        return float(np.linalg.norm(self.landmarks[42:48].mean(0) - self.landmarks[36:42].mean(0)))

    def describe(self) -> str:
        left, top, right, bottom = self.box
        return (
            f"face {self.index}: box ({left}, {top})-({right}, {bottom}), {self.width}x{self.height} px, "
            f"score {self.score:.2f}, eyes {self.eye_distance:.0f} px apart"
        )


@dataclass(frozen=True)
class AlignedFace:
    """An aligned face and how it was made."""

    image: np.ndarray = field(repr=False)
    """[size, size, 3] uint8, BGR (OpenCV's order)."""
    face: Face
    """The face that was aligned."""
    faces: tuple[Face, ...]
    """Every face found in the photo, largest first."""
    quad: np.ndarray = field(repr=False)
    """[4, 2] the recipe's square in the photo: top-left, bottom-left, bottom-right, top-right."""
    qsize: float
    """Side of ``quad`` in photo pixels."""
    matrix: np.ndarray = field(repr=False)
    """[3, 3] maps photo pixel coordinates to output pixel coordinates (homogeneous)."""

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def to_output(self, points: np.ndarray) -> np.ndarray:
        """Photo coordinates [N, 2] -> output coordinates [N, 2]."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        mapped = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ self.matrix.T
        return mapped[:, :2] / mapped[:, 2:]


# ----------------------------------------------------------------------------------------------
# dlib and its model, loaded once


def _dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise LgfaError(f"face alignment needs dlib, which is not installed; install it with: {INSTALL_HINT}") from None
    return dlib


def model_file(name: str) -> Path:
    """A model file shipped by ``face_recognition_models`` (``models/<name>``).

    The package is located without importing it: its ``__init__`` needs ``pkg_resources``, which
    recent setuptools no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LgfaError(
            f"this needs the dlib models of face_recognition_models, which is not installed; "
            f"install it with: {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / name
        if path.is_file():
            return path
    raise LgfaError(
        f"face_recognition_models is installed but has no models/{name}; reinstall it with: "
        "pip install --force-reinstall face_recognition_models"
    )


def landmark_model_path() -> Path:
    """The 68-point predictor file shipped by ``face_recognition_models``."""
    return model_file(LANDMARK_MODEL)


@functools.lru_cache(maxsize=1)
def _detector() -> Any:
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _predictor() -> Any:
    path = landmark_model_path()
    try:
        return _dlib().shape_predictor(str(path))
    except RuntimeError as exc:
        raise LgfaError(f"{path} could not be read by dlib ({exc}); reinstall face_recognition_models") from None


# ----------------------------------------------------------------------------------------------
# Reading, checking and writing images


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any photo array as contiguous uint8 BGR [H, W, 3]: grey is repeated, alpha composited over white.

    Takes [H, W], [H, W, 1], [H, W, 2] (grey + alpha), [H, W, 3] (BGR) or [H, W, 4] (BGRA), as uint8
    or uint16 (scaled to 8 bits).
    """
    if not isinstance(image, np.ndarray):
        raise LgfaError(f"expected an image array, got {type(image).__name__}")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise LgfaError(f"expected an 8- or 16-bit image, got pixels of type {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise LgfaError(f"expected an image of shape [height, width, 1-4 channels], got {list(image.shape)}")
    channels = image.shape[2]
    if channels in (2, 4):
        colour = image[:, :, :-1].astype(np.float32)
        alpha = image[:, :, -1:].astype(np.float32) / 255.0
        image = np.rint(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        channels -= 1
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def check_image_size(width: int, height: int) -> None:
    """Refuse photos too small to hold a detectable face or too large to handle."""
    if min(height, width) < MIN_SIDE:
        raise LgfaError(
            f"the image is {width}x{height} px, too small to find a face in; "
            f"use a photo at least {MIN_SIDE} px on each side"
        )
    if height * width > MAX_PIXELS:
        raise LgfaError(
            f"the image is {width}x{height} px ({height * width / 1e6:.3g} megapixels), more than the "
            f"{MAX_PIXELS / 1e6:g} megapixels accepted; downscale it first"
        )


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr warnings (e.g. about a truncated file): our error says it in one line."""
    # OpenCV 5 has cv2.utils.logging; OpenCV 4 (the one numpy<2 gets) has cv2.setLogLevel, 0 = silent.
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None) or cv2
    if not hasattr(logging_api, "setLogLevel"):
        yield
        return
    level = logging_api.getLogLevel()
    logging_api.setLogLevel(getattr(logging_api, "LOG_LEVEL_SILENT", 0))
    try:
        yield
    finally:
        logging_api.setLogLevel(level)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A photo file as uint8 BGR [H, W, 3], EXIF orientation applied; grey and alpha handled by :func:`to_bgr`."""
    path = Path(path)
    if not path.is_file():
        raise LgfaError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise LgfaError(f"{path} could not be read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise LgfaError(f"{path} is empty, not an image")
    declared = image_size(data.tobytes())  # before decoding: a tiny file may declare gigapixels
    if declared is not None:
        try:
            check_image_size(*declared)
        except LgfaError as exc:
            raise LgfaError(f"{path}, by its header: {exc}") from None
    with _quiet_opencv():
        try:
            raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            message = (str(exc).strip().splitlines() or ["decoding failed"])[-1]
            raise LgfaError(f"{path} could not be decoded as an image ({message[:120]})") from None
        if raw is None:
            raise LgfaError(f"{path} is not a readable image (truncated, or not PNG, JPEG, WebP, TIFF, BMP...)")
        if raw.ndim == 3 and raw.shape[2] in (2, 4):
            return to_bgr(raw)  # alpha: composite it (files with alpha carry no EXIF rotation in practice)
        colour = cv2.imdecode(data, cv2.IMREAD_COLOR)  # applies the EXIF orientation; grey and 16 bit -> BGR8
    return to_bgr(raw if colour is None else colour)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode ``image`` by the suffix of ``path`` and write it atomically (temporary file, then rename)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE_SUFFIXES:
        raise LgfaError(f"cannot write {path}: choose a file ending in {', '.join(WRITABLE_SUFFIXES)}")
    parent = path.parent
    if not parent.is_dir():
        raise LgfaError(f"cannot write {path}: directory {parent} does not exist")
    if path.is_dir():
        raise LgfaError(f"cannot write {path}: it is a directory")
    ok, encoded = cv2.imencode(suffix, image)
    if not ok:
        raise LgfaError(f"OpenCV cannot encode {suffix} images here; write a .png instead")
    try:
        write_bytes_atomic(path, encoded.tobytes())
    except OSError as exc:
        raise LgfaError(f"cannot write {path}: {exc.strerror or exc}") from None


# ----------------------------------------------------------------------------------------------
# Detection


def find_faces(image_bgr: np.ndarray) -> tuple[np.ndarray, list[tuple[tuple[int, int, int, int], float]]]:
    """The photo as contiguous RGB and every frontal face's box (full-resolution pixels) and score."""
    image = to_bgr(image_bgr)
    check_image_size(image.shape[1], image.shape[0])
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    height, width = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    small = rgb
    if scale < 1.0:
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(rgb, small_size, interpolation=cv2.INTER_AREA)
    boxes, scores, _ = _detector().run(small, DETECT_UPSAMPLE, 0.0)
    # back to full-resolution pixel coordinates (pixel centres scale about -0.5)
    return rgb, [
        (tuple(int(round((v + 0.5) / scale - 0.5)) for v in (b.left(), b.top(), b.right(), b.bottom())), float(s))
        for b, s in zip(boxes, scores, strict=True)
    ]


def face_landmarks(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The 68 dlib landmarks [68, 2] of the face in ``box`` of an RGB photo."""
    shape = _predictor()(rgb, _dlib().rectangle(*box))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _recognizer() -> Any:
    path = model_file(RECOGNITION_MODEL)
    try:
        return _dlib().face_recognition_model_v1(str(path))
    except RuntimeError as exc:
        raise LgfaError(f"{path} could not be read by dlib ({exc}); reinstall face_recognition_models") from None


def face_descriptor(image_bgr: np.ndarray, face: Face) -> np.ndarray:
    """dlib's 128-d face recognition descriptor of a detected face (same person: distance below about 0.6)."""
    rgb = np.ascontiguousarray(to_bgr(image_bgr)[:, :, ::-1])
    shape = _predictor()(rgb, _dlib().rectangle(*face.box))
    return np.array(_recognizer().compute_face_descriptor(rgb, shape), dtype=np.float64)


def detect_faces(image_bgr: np.ndarray) -> list[Face]:
    """Every frontal face in the photo with its 68 landmarks, largest box first (ties: higher score first)."""
    rgb, boxes = find_faces(image_bgr)
    found = [(box, score, face_landmarks(rgb, box)) for box, score in boxes]
    found.sort(key=lambda f: (-(f[0][2] - f[0][0] + 1) * (f[0][3] - f[0][1] + 1), -f[1]))
    return [Face(i, box, score, landmarks) for i, (box, score, landmarks) in enumerate(found)]


# ----------------------------------------------------------------------------------------------
# The FFHQ recipe


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The recipe's oriented square from 68 landmarks: ``quad`` [4, 2] (TL, BL, BR, TR) and its side ``qsize``."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.all(np.isfinite(lm)):
        raise LgfaError(f"expected 68 finite (x, y) landmarks, got an array of shape {list(lm.shape)}")
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if norm < 1e-6:
        raise LgfaError("the face's landmarks are degenerate (eyes and mouth coincide); use another photo")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    centre = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
    return quad, float(np.hypot(*x) * 2)


def _square_corners(side: int) -> np.ndarray:
    """Where TL, BL, BR, TR of the quad land in a ``side`` px square: the outer edges of its corner pixels."""
    lo, hi = -0.5, side - 0.5
    return np.array([[lo, lo], [lo, hi], [hi, hi], [hi, lo]], dtype=np.float64)


def _reflect_pad_blended(image: np.ndarray, pads: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """Reflect-pad (left, top, right, bottom) and blend the padding towards a blur and the median colour."""
    left, top, right, bottom = pads
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT_101).astype(np.float32)
    height, width = padded.shape[:2]
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)
    # 1 on the outer edge, 0 where the photo starts, negative inside it
    mask_x = 1.0 - np.minimum(xs / left, (width - 1 - xs) / right)
    mask_y = 1.0 - np.minimum(ys / top, (height - 1 - ys) / bottom)
    mask = np.maximum(mask_x[None, :], mask_y[:, None])[:, :, None]
    sigma = max(qsize * 0.02, 1e-3)
    blurred = cv2.GaussianBlur(padded, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    padded += (blurred - padded) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    padded += (np.median(padded, axis=(0, 1)) - padded) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(padded), 0, 255).astype(np.uint8)


def ffhq_crop(image_bgr: np.ndarray, quad: np.ndarray, qsize: float, size: int) -> np.ndarray:
    """Render ``quad`` of the photo as a ``size`` px square: shrink, crop, pad, transform, resize."""
    image = image_bgr
    quad = np.asarray(quad, dtype=np.float64).copy()

    # Shrink: a quad much larger than the output is first brought near 2-4x the output size.
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        height, width = image.shape[:2]
        new_w, new_h = max(1, int(np.rint(width / shrink))), max(1, int(np.rint(height / shrink)))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        quad = (quad + 0.5) * [new_w / width, new_h / height] - 0.5
        qsize /= shrink

    # Crop: the quad's bounding box plus a border, within the photo.
    border = max(int(np.rint(qsize * 0.1)), 3)
    height, width = image.shape[:2]
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(x0 - border, 0), max(y0 - border, 0), min(x1 + border, width), min(y1 + border, height))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise LgfaError("the face lies outside the image; use another photo")
    if crop[2] - crop[0] < width or crop[3] - crop[1] < height:
        image = image[crop[1] : crop[3], crop[0] : crop[2]]
        quad -= crop[:2]

    # Pad: where the quad (plus border) leaves the photo, reflect it and blend the reflection away.
    height, width = image.shape[:2]
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    pads = (max(border - x0, 0), max(border - y0, 0), max(x1 - width + border, 0), max(y1 - height + border, 0))
    if max(pads) > border - 4:
        least = max(int(np.rint(qsize * 0.3)), 1)
        pads = tuple(max(p, least) for p in pads)
        image = _reflect_pad_blended(image, pads, qsize)
        quad += pads[:2]

    # Transform: the quad onto a supersampled square, then area-average to the output size.
    side = size * SUPERSAMPLE
    warp = cv2.getPerspectiveTransform(quad.astype(np.float32), _square_corners(side).astype(np.float32))
    square = cv2.warpPerspective(image, warp, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def align_face(image_bgr: np.ndarray, size: int = 256, face: int | None = None) -> AlignedFace:
    """Detect the faces of a photo and align one by the FFHQ recipe into a ``size`` px square.

    ``face`` picks one of :func:`detect_faces`' faces by index; the default is the largest.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise LgfaError(f"output size must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    size = int(size)
    image = to_bgr(image_bgr)
    faces = detect_faces(image)
    if not faces:
        raise LgfaError(
            "no face found (dlib's frontal-face detector); use a photo of a face seen from the front, "
            f"at least about {40 * max(1.0, max(image.shape[:2]) / DETECT_MAX_SIDE):.0f} px across"
        )
    if face is None:
        face = 0
    if isinstance(face, bool) or not isinstance(face, (int, np.integer)) or not 0 <= face < len(faces):
        count = f"{len(faces)} faces (0-{len(faces) - 1})" if len(faces) > 1 else "1 face (0)"
        raise LgfaError(
            f"face {face} does not exist: the photo has {count}; see them with 'lgfa align PHOTO --list-faces'"
        )
    chosen = faces[int(face)]
    quad, qsize = ffhq_quad(chosen.landmarks)
    if qsize < 4:
        raise LgfaError(f"the face is only {qsize:.1f} px across; use a larger photo")
    if qsize < size / 2:
        log.warning("the face is %.0f px across and is enlarged to %d px: the aligned image will be blurry",
                    qsize, size)
    aligned = ffhq_crop(image, quad, qsize, size)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), _square_corners(size).astype(np.float32))
    return AlignedFace(aligned, chosen, tuple(faces), quad, qsize, matrix.astype(np.float64))
