"""CLIP's byte-level BPE tokenizer without torch: the same ids as open_clip's default tokenizer."""
from __future__ import annotations

import gzip
import html
from pathlib import Path

import ftfy
import numpy as np
import regex

_SOT = "<start_of_text>"
_EOT = "<end_of_text>"
# The merges file's first line is a header; CLIP's vocabulary of 49408 uses the next 48894 merges.
_N_MERGES = 49152 - 256 - 2


def _byte_symbols() -> dict[int, str]:
    """CLIP's byte-to-unicode table: one printable character per byte value, in vocabulary order.

    Printable Latin-1 bytes come first and map to themselves; the remaining bytes follow in byte
    order, mapped to chr(256), chr(257), ...
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + len(symbols) - len(printable))
    return symbols


def _clean(text: str) -> str:
    """open_clip's default ('lower') cleaning: ftfy, HTML unescape twice, collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """CLIP tokenizer reading the gzipped BPE merges file that open_clip ships (``bpe_simple_vocab_16e6.txt.gz``)."""

    def __init__(self, vocab_path: str | Path, context_length: int = 77):
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
        self._byte_symbols = _byte_symbols()
        singles = list(self._byte_symbols.values())
        vocab = singles + [s + "</w>" for s in singles]
        vocab += ["".join(pair) for pair in merges] + [_SOT, _EOT]
        self._ids: dict[str, int] = {symbol: i for i, symbol in enumerate(vocab)}
        self._ranks: dict[tuple[str, ...], int] = {pair: i for i, pair in enumerate(merges)}
        self._cache: dict[str, list[int]] = {_SOT: [self._ids[_SOT]], _EOT: [self._ids[_EOT]]}
        self._pattern = regex.compile(
            rf"{_SOT}|{_EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE
        )
        self.context_length = context_length
        self.sot_token_id = self._ids[_SOT]
        self.eot_token_id = self._ids[_EOT]
        self.vocab_size = len(vocab)

    def _bpe(self, word: str) -> list[int]:
        """Ids of one pre-tokenised word (already mapped to byte symbols), merged by rank; cached."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            ranked = [(self._ranks.get(pair, -1), pair) for pair in zip(parts, parts[1:])]
            ranked = [(rank, pair) for rank, pair in ranked if rank >= 0]
            if not ranked:
                break
            first, second = min(ranked)[1]
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self._ids[p] for p in parts]
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` after cleaning, without start/end-of-text tokens."""
        ids: list[int] = []
        for word in self._pattern.findall(_clean(text)):
            ids += self._bpe("".join(self._byte_symbols[b] for b in word.encode("utf-8")))
        return ids

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` including start/end-of-text, before truncation to the context."""
        return len(self.encode(text)) + 2

    def __call__(self, texts: list[str] | str) -> np.ndarray:
        """int64 [B, context_length]: sot, ids, eot, zero padding; too long texts are cut with eot kept last."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id][: self.context_length]
            ids[-1] = self.eot_token_id
            out[row, : len(ids)] = ids
        return out
