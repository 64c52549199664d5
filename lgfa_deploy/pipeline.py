"""Text to frames, written once for every backend.

text -> tokens -> text embedding (cached per text) -> motion offsets [T, L, S] -> per-frame W+
(content + offsets) -> synthesis in micro-batches -> uint8 BGR frames [H, W, 3].

The face, one of:

* ``seed``: z from ``numpy.random.default_rng(seed)`` through the mapping graph, w repeated over
  the L layers; on a bundle of the synthetic face domain (manifest ``face_domain``) the seed draws
  a neutral face of the domain instead (:mod:`lgfa_deploy.face_domain`: its z is a parameter code);
* ``latent``: W+ [L, S] or [1, L, S], an array or a ``.npy`` file;
* ``image``: a photo (a file or a BGR array), aligned by the FFHQ recipe at e4e's input size
  (:mod:`lgfa_deploy.align`), inverted by e4e to ``w_inv`` and embedded by CLIP's image tower to
  E_v; its content is ``w_inv + H_v(E_v)`` (:meth:`Animator.invert`, an :class:`InvertedFace` that
  can be animated again and again).

The motion graph starts from ``z_0 = E_t + E_v``: with a photo its image embedding, otherwise zeros
(text-only motion). A latent saved from a photo (``InvertedFace.content``) keeps the face but not
E_v, so animating it as ``latent`` gives text-only motion.

Texts: at most 77 CLIP tokens, start and end of text included. A longer text is refused with an
:class:`LgfaError`, not truncated as CLIP's tokenizer would: the prompts put the expression last
("The person is smiling."), so truncation would silently cut exactly the word that matters.

Chaining (:meth:`Animator.stream`): segment k+1 starts exactly where segment k ended. The motion
offsets of every text begin with the same learned constant H_t(m_0) = H_t(0), so the next
segment's content is chosen as ``content_{k+1} = w_{T-1}^k - offsets_{k+1}[0]``; its per-frame W+
is ``w_{T-1}^k + (offsets_{k+1}[t] - offsets_{k+1}[0])`` and its frame 0 is segment k's last frame,
bit for bit. A stream emits that shared frame once: T frames for the first sentence, T - 1 for each
one after it. (The paper's code feeds ``w_{T-1}`` itself back as content, which jumps by H_t(0).)
With a photo every segment's motion starts from ``E_t + E_v`` with the photo's E_v: the face moves
on, its embedding stays the photo's.

Streaming: a producer thread runs the backend and hands micro-batches of frames to the consumer
through a bounded queue, so GPU work overlaps encoding and display and memory stays flat however
long a stream runs. When the consumer is waiting, a segment's first micro-batch is a single frame,
so the first frame leaves as early as possible.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lgfa_deploy.backends.base import Backend
from lgfa_deploy.bundle import Bundle
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.face_domain import conditioned_z, domain_seed_z
from lgfa_deploy.graphs import CONTEXT_LENGTH
from lgfa_deploy.tokenizer import ClipTokenizer

if TYPE_CHECKING:
    from lgfa_deploy.align import AlignedFace

log = logging.getLogger(__name__)

QUEUE_BATCHES = 4
"""Micro-batches of frames the producer may run ahead of the consumer."""
CACHE_TEXTS = 256
"""Text embeddings kept (least recently used dropped first)."""
_JOIN_SECONDS = 1.0  # a batch in flight is waited for by close(), which takes the backend lock
_END = object()


@dataclass(frozen=True)
class InvertedFace:
    """A photo's face made animatable: aligned, inverted and embedded once, animated as often as wanted."""

    aligned: np.ndarray  # uint8 BGR [R, R, 3]: the aligned face e4e and CLIP saw
    inverted: np.ndarray  # w_inv [1, L, S] from e4e (latent_avg included)
    image_embedding: np.ndarray  # E_v [1, E], L2-normalised
    content: np.ndarray  # w_inv + H_v(E_v) [1, L, S]: the content every frame adds its motion to


Latent = str | os.PathLike[str] | np.ndarray
Photo = str | os.PathLike[str] | np.ndarray
"""A photo: a file, or a uint8 image array in OpenCV's BGR order (grey and BGRA too)."""


@dataclass(frozen=True)
class StreamFrame:
    """One frame of a stream and where it came from."""

    image: np.ndarray  # uint8 BGR [H, W, 3]
    index: int  # position in the whole stream
    segment: int  # which sentence (0-based)
    text: str
    started: float  # time.perf_counter() when the producer took up this sentence


def seed_z(seed: int, style_dim: int) -> np.ndarray:
    """The z of a seed: ``numpy.random.default_rng(seed).standard_normal((1, style_dim))`` as float32."""
    return np.random.default_rng(seed).standard_normal((1, style_dim)).astype(np.float32)


def load_latent(latent: Latent, n_latent: int, style_dim: int) -> np.ndarray:
    """W+ content [1, L, S] float32 from an array or a ``.npy`` file of shape [L, S] or [1, L, S].

    A missing or unreadable file, another shape, a non-float dtype, NaN or infinity raise :class:`LgfaError`.
    """
    if isinstance(latent, (str, os.PathLike)):
        path = Path(latent)
        name = str(path)
        if not path.is_file():
            raise LgfaError(f"latent file {path} does not exist")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise LgfaError(f"{path} is not a readable .npy array ({exc}); save W+ with numpy.save") from None
        if isinstance(array, np.lib.npyio.NpzFile):
            array.close()
            raise LgfaError(f"{path} is an .npz archive; give one W+ array saved with numpy.save")
    else:
        name = "the latent"
        array = np.asarray(latent)
    shapes = ((n_latent, style_dim), (1, n_latent, style_dim))
    if array.shape not in shapes:
        raise LgfaError(
            f"{name} has shape {list(array.shape)}; this bundle takes W+ of shape "
            f"[{n_latent}, {style_dim}] or [1, {n_latent}, {style_dim}]"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise LgfaError(f"{name} holds {array.dtype} values; W+ must be floating point")
    content = array.reshape(1, n_latent, style_dim).astype(np.float32)
    if not np.isfinite(content).all():
        raise LgfaError(f"{name} contains NaN or infinite values")
    return content


def face_pixels(face: np.ndarray) -> np.ndarray:
    """e4e's input [1, 3, R, R] of an aligned uint8 BGR face [R, R, 3]: RGB scaled to [-1, 1]."""
    rgb = face[:, :, ::-1].astype(np.float32)
    return np.ascontiguousarray((rgb / 127.5 - 1.0).transpose(2, 0, 1)[None])


def clip_pixels(
    face: np.ndarray, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> np.ndarray:
    """CLIP's image input [1, 3, size, size] of an aligned uint8 BGR face: resized (area averaging
    down, bicubic up, as training resizes its images), RGB in [0, 1], then ``(x - mean) / std``."""
    import cv2

    side = face.shape[0]
    if side != size:
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC)
    rgb = face[:, :, ::-1].astype(np.float32) / 255.0
    normalised = (rgb - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])


def align_photo(bundle: Bundle, image: Photo, face: int | None = None) -> AlignedFace:
    """The face of a photo aligned for the bundle's e4e (its ``face_size``); ``face`` picks one of
    several (largest first, default the largest). A bundle without the photo graphs, an unreadable
    file, no face and the other problems of a photo raise :class:`LgfaError` in one line."""
    bundle.require_photo()
    from lgfa_deploy.align import align_face, read_image

    if isinstance(image, (str, os.PathLike)):
        photo = read_image(image)
        try:
            return align_face(photo, size=bundle.face_size, face=face)
        except LgfaError as exc:
            raise LgfaError(f"{image}: {exc}") from None
    return align_face(image, size=bundle.face_size, face=face)


MAX_TEXT_CHARACTERS = 2000
"""Texts longer than this are refused before tokenizing: 77 CLIP tokens are a few hundred characters."""


def normalise_text(text: str) -> str:
    """``text`` without Unicode format characters (zero-width spaces and joiners, byte-order marks,
    soft hyphens, direction marks), every run of whitespace one space, no space at either end."""
    return " ".join("".join(c for c in text if unicodedata.category(c) != "Cf").split())


def check_text(tokenizer: ClipTokenizer, text: str) -> str:
    """The text normalised by :func:`normalise_text`; an empty text, one with control characters
    or one over 77 tokens raises :class:`LgfaError`."""
    if not isinstance(text, str):
        raise LgfaError(f"text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARACTERS:
        raise LgfaError(
            f"the text is {len(text):,} characters long; CLIP reads at most {CONTEXT_LENGTH} tokens, "
            "a few hundred characters: give one sentence"
        )
    text = normalise_text(text)
    control = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise LgfaError(f"the text holds the control character U+{ord(control):04X}; remove it")
    if not text:
        raise LgfaError('the text is empty; give a sentence such as "The person is smiling."')
    count = tokenizer.count_tokens(text)
    if count > CONTEXT_LENGTH:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise LgfaError(
            f"the text {shown!r} is {count} tokens long, CLIP reads at most {CONTEXT_LENGTH} "
            "(start and end of text included); shorten it"
        )
    return text


def check_seed(seed: int) -> int:
    """A seed is a whole number of 0 or more."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LgfaError(f"the seed must be a whole number of 0 or more, got {seed!r}")
    return int(seed)


def check_micro_batch(bundle: Bundle, micro_batch: int | None) -> int:
    """The micro-batch (default: the synthesis graph's optimal batch), inside the graph's batch range."""
    batch = bundle.graph("synthesis").batch
    micro_batch = batch.opt if micro_batch is None else micro_batch
    if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or not batch.min <= micro_batch <= batch.max:
        raise LgfaError(
            f"micro-batch must be a whole number from {batch.min} to {batch.max} for this bundle, got {micro_batch!r}"
        )
    return micro_batch


def _put(items: queue.Queue, stop: threading.Event, item: object) -> bool:
    """Put ``item`` unless the consumer has gone; False when it has."""
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class Animator:
    """A bundle on a backend: sentences in, uint8 BGR frames out.

    ``micro_batch`` frames go through synthesis at once (default: the graph's optimal batch);
    ``queue_batches`` bounds how far the producer thread of :meth:`stream` runs ahead; ``tokenizer``
    defaults to one over the bundle's vocabulary. Methods may be called from several threads;
    backend calls are serialised.
    """

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        micro_batch: int | None = None,
        queue_batches: int = QUEUE_BATCHES,
        cache_texts: int = CACHE_TEXTS,
        tokenizer: ClipTokenizer | None = None,
    ) -> None:
        micro_batch = check_micro_batch(bundle, micro_batch)
        if queue_batches < 1:
            raise LgfaError(f"queue_batches must be at least 1, got {queue_batches}")
        self.bundle = bundle
        self.backend = backend
        self.micro_batch = micro_batch
        self.queue_batches = queue_batches
        self.tokenizer = tokenizer or ClipTokenizer(bundle.tokenizer_path, context_length=CONTEXT_LENGTH)
        self._cache_texts = cache_texts
        self._embeddings: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self._closed = False

    # -- facts ----------------------------------------------------------------------------------
    @property
    def frames_per_text(self) -> int:
        """T: frames of one sentence (the motion graph is unrolled for this many)."""
        return self.bundle.frames

    @property
    def resolution(self) -> int:
        return self.bundle.resolution

    # -- one stage at a time ----------------------------------------------------------------------
    def _run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._closed:
                raise LgfaError("this animator is closed")
            return self.backend.run(graph, inputs)

    def check_text(self, text: str) -> str:
        """The text normalised (:func:`normalise_text`); an empty text or one over 77 tokens raises :class:`LgfaError`."""
        return check_text(self.tokenizer, text)

    def embed(self, text: str) -> np.ndarray:
        """The L2-normalised text embedding [1, E] of ``text``, cached per text."""
        text = self.check_text(text)
        with self._lock:
            cached = self._embeddings.get(text)
            if cached is not None:
                self._embeddings.move_to_end(text)
                return cached
            embedding = self._run("text_encoder", {"tokens": self.tokenizer([text])})["text_embedding"]
            self._embeddings[text] = embedding
            if len(self._embeddings) > self._cache_texts:
                self._embeddings.popitem(last=False)
            return embedding

    def offsets(self, text: str, image_embedding: np.ndarray | None = None) -> np.ndarray:
        """Motion offsets H_t(m_t) [T, L, S] of ``text``, started from the photo's image embedding [1, E]
        when given (zeros otherwise); offsets[0] = H_t(0) is the same for every text."""
        text_embedding = self.embed(text)
        if image_embedding is None:
            image_embedding = np.zeros_like(text_embedding)
        inputs = {"text_embedding": text_embedding, "image_embedding": image_embedding}
        return self._run("motion", inputs)["motion_offsets"][0]

    def invert(self, image: Photo | AlignedFace, face: int | None = None) -> InvertedFace:
        """Align a photo (a file or a BGR array; ``face`` picks one of several, default the largest),
        invert it with e4e and embed it with CLIP: an :class:`InvertedFace` to animate with ``image=``.

        An :class:`lgfa_deploy.align.AlignedFace` of the bundle's ``face_size`` is taken as aligned.
        A bundle without the photo graphs and every problem of the photo raise :class:`LgfaError`.
        """
        from lgfa_deploy.align import AlignedFace

        aligned = image if isinstance(image, AlignedFace) else align_photo(self.bundle, image, face)
        pixels = aligned.image
        size = self.bundle.face_size
        if pixels.shape != (size, size, 3) or pixels.dtype != np.uint8:
            raise LgfaError(f"the aligned face must be uint8 [{size}, {size}, 3] for this bundle, got "
                            f"{pixels.dtype} {list(pixels.shape)}; align the photo at --size {size}")
        bundle = self.bundle
        inverted = self._run("image_encoder", {"face": face_pixels(pixels)})["latents"]
        clip_input = clip_pixels(pixels, bundle.clip_image_size, bundle.clip_mean, bundle.clip_std)
        embedding = self._run("clip_image", {"pixels": clip_input})["image_embedding"]
        offset = self._run("visual_mapper", {"image_embedding": embedding})["visual_offset"]
        return InvertedFace(pixels, inverted, embedding, inverted + offset)

    def content(
        self, seed: int | None = None, latent: Latent | None = None, image: Photo | InvertedFace | None = None
    ) -> np.ndarray:
        """Content W+ [1, L, S] of a seed (the default, seed 0), a latent or a photo; more than one
        raises :class:`LgfaError`."""
        return self._face(seed, latent, image)[0]

    def _face(
        self, seed: int | None, latent: Latent | None, image: Photo | InvertedFace | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Content W+ [1, L, S] and the image embedding [1, E] that starts the motion (None: text only)."""
        given = [name for name, value in (("seed", seed), ("latent", latent), ("image", image)) if value is not None]
        if len(given) > 1:
            raise LgfaError(f"give one face: a seed, a latent or an image, not both {given[0]} and {given[1]}")
        n_latent, style_dim = self.bundle.n_latent, self.bundle.style_dim
        if image is not None:
            inverted = image if isinstance(image, InvertedFace) else self.invert(image)
            return inverted.content, inverted.image_embedding
        if latent is not None:
            return load_latent(latent, n_latent, style_dim), None
        seed = check_seed(0 if seed is None else seed)
        domain = self.bundle.manifest.get("face_domain")
        z = domain_seed_z(seed, domain) if domain else seed_z(seed, style_dim)
        w = self._run("mapping", {"z": z})["w"]
        return np.repeat(w[:, None], n_latent, axis=1), None

    def latents(
        self, text: str, seed: int | None = None, latent: Latent | None = None, image: Photo | InvertedFace | None = None
    ) -> np.ndarray:
        """Per-frame W+ [T, L, S] of one sentence: content + offsets[t]."""
        content, image_embedding = self._face(seed, latent, image)
        return content[0] + self.offsets(text, image_embedding)

    def segment_latents(
        self,
        texts: Iterable[str],
        seed: int | None = None,
        latent: Latent | None = None,
        image: Photo | InvertedFace | None = None,
    ) -> Iterator[np.ndarray]:
        """Per-frame W+ [T, L, S] of each sentence, chained: each segment's frame 0 is the last one's frame T-1."""
        content, image_embedding = self._face(seed, latent, image)
        return (latents for _, latents, _ in self._chain(self._texts(texts), content, image_embedding))

    def _chain(
        self,
        texts: Iterable[str],
        content: np.ndarray,
        image_embedding: np.ndarray | None,
        stop: threading.Event | None = None,
    ) -> Iterator[tuple[str, np.ndarray, float]]:
        """(text, per-frame W+ [T, L, S], time the text was taken up) for each sentence, chained."""
        last = None
        for text in texts:
            if stop is not None and stop.is_set():
                return
            started = time.perf_counter()
            offsets = self.offsets(text, image_embedding)
            latents = content[0] + offsets if last is None else last + (offsets - offsets[0])
            last = latents[-1]
            yield text.strip(), latents, started

    def _texts(self, texts: Iterable[str] | str) -> Iterable[str]:
        """A lone string is one sentence; lists and tuples are checked before anything runs."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, (list, tuple)):
            for text in texts:
                self.check_text(text)
        return texts

    def _batches(self, latents: np.ndarray, first: int | None = None) -> Iterator[np.ndarray]:
        """uint8 BGR frames [b, H, W, 3] of W+ [N, L, S], ``first`` frames then ``micro_batch`` at a time."""
        start, size = 0, first or self.micro_batch
        while start < len(latents):
            with self._lock:
                if self._closed:
                    raise LgfaError("this animator is closed")
                frames = self.backend.frames(latents[start : start + size])
            yield frames
            start, size = start + size, self.micro_batch

    def render(self, latents: np.ndarray) -> np.ndarray:
        """uint8 BGR frames [N, H, W, 3] of per-frame W+ [N, L, S], in micro-batches."""
        latents = np.asarray(latents, dtype=np.float32)
        if latents.ndim != 3 or latents.shape[0] == 0:
            raise LgfaError(f"render takes W+ of shape [frames, L, S], got {list(latents.shape)}")
        return np.concatenate(list(self._batches(latents)))

    def domain_faces(self, parameters: np.ndarray) -> np.ndarray:
        """uint8 BGR faces [N, H, W, 3] of the synthetic face domain's parameters [N, P] (manifest
        ``face_domain``): their conditioned z through the bundle's mapping, one w for every layer."""
        domain = self.bundle.manifest.get("face_domain")
        if domain is None:
            raise LgfaError(f"bundle {self.bundle.root} is not of the synthetic face domain (no face_domain in its manifest)")
        z = conditioned_z(parameters, domain["z"])
        w = np.concatenate([self._run("mapping", {"z": row[None]})["w"] for row in z])
        return self.render(np.repeat(w[:, None], self.bundle.n_latent, axis=1))

    # -- whole clips --------------------------------------------------------------------------------
    def animate(
        self, text: str, seed: int | None = None, latent: Latent | None = None, image: Photo | InvertedFace | None = None
    ) -> np.ndarray:
        """uint8 BGR frames [T, H, W, 3] of the face (seed, default 0, latent or photo) performing ``text``."""
        return self.render(self.latents(text, seed, latent, image))

    def stream(
        self,
        texts: Iterable[str] | str,
        seed: int | None = None,
        latent: Latent | None = None,
        image: Photo | InvertedFace | None = None,
    ) -> Iterator[np.ndarray]:
        """Frames [H, W, 3] of sentence after sentence, chained, each as soon as its micro-batch is done.

        ``texts`` may be any iterable, also an endless or slow one (lines typed into stdin); the face
        (seed, latent or photo, inverted here) and a list of texts are checked before this returns.
        """
        return (frame.image for frame in self.stream_frames(texts, seed, latent, image))

    def stream_frames(
        self,
        texts: Iterable[str] | str,
        seed: int | None = None,
        latent: Latent | None = None,
        image: Photo | InvertedFace | None = None,
    ) -> Iterator[StreamFrame]:
        """Like :meth:`stream`, with each frame's index, sentence and timing."""
        content, image_embedding = self._face(seed, latent, image)
        return self._stream(self._texts(texts), content, image_embedding)

    def _stream(
        self, texts: Iterable[str], content: np.ndarray, image_embedding: np.ndarray | None
    ) -> Iterator[StreamFrame]:
        items: queue.Queue = queue.Queue(maxsize=self.queue_batches)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(texts, content, image_embedding, items, stop), name="lgfa-producer", daemon=True
        )
        producer.start()
        index = 0
        try:
            while True:
                item = items.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                segment, text, started, frames = item
                for image in frames:
                    yield StreamFrame(image, index, segment, text, started)
                    index += 1
        finally:
            stop.set()
            producer.join(timeout=_JOIN_SECONDS)
            if producer.is_alive():
                log.debug("the frame producer is still waiting for its next text; leaving it behind")

    def _produce(
        self,
        texts: Iterable[str],
        content: np.ndarray,
        image_embedding: np.ndarray | None,
        items: queue.Queue,
        stop: threading.Event,
    ) -> None:
        """Producer thread: chained segments -> micro-batches of frames -> ``items``; ends with _END or the error."""
        try:
            for segment, (text, latents, started) in enumerate(self._chain(texts, content, image_embedding, stop)):
                fresh = latents if segment == 0 else latents[1:]
                first = 1 if items.empty() else None
                for frames in self._batches(fresh, first):
                    if not _put(items, stop, (segment, text, started, frames)):
                        return
            _put(items, stop, _END)
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            _put(items, stop, exc)

    def stream_batch_sizes(self) -> list[int]:
        """Every micro-batch size :meth:`stream` and :meth:`animate` hand the backend.

        A stream's first segment starts with a single frame and then runs ``micro_batch`` at a time,
        leaving ``(T - 1) % micro_batch``; later segments (T - 1 new frames each) start with one frame
        when the consumer has caught up, leaving ``(T - 2) % micro_batch``, or not, leaving
        ``(T - 1) % micro_batch``; a whole clip leaves ``T % micro_batch``.
        """
        T, size = self.frames_per_text, self.micro_batch
        sizes = {1, size if T >= size else 1} | {n % size for n in (T, T - 1, T - 2) if n > 0}
        return sorted(sizes - {0})

    def warm_up(self, batch_sizes: Iterable[int] | None = None) -> None:
        """Run every graph once, synthesis at each batch size a stream uses (:meth:`stream_batch_sizes`
        by default), so that one-time work (cuDNN autotuning, compilation, CUDA graph capture) happens
        now and not mid-stream."""
        content = self.content(0)
        latents = content[0] + self.offsets("The person is smiling.")
        sizes = self.stream_batch_sizes() if batch_sizes is None else batch_sizes
        for size in sizes:
            list(self._batches(latents[np.arange(size) % len(latents)], size))

    # -- life cycle ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the backend (waits for a batch in flight)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.backend.close()

    def __enter__(self) -> Animator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Animator {self.bundle.preset} {self.resolution}px on {self.backend!r}, micro-batch {self.micro_batch}>"
