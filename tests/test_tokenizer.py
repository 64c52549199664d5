"""The torch-free CLIP tokenizer gives exactly open_clip's tokens."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest

from lgfa_deploy.tokenizer import ClipTokenizer
from training.clip_model import vocabulary_path

EXPRESSIONS = [
    "smiling", "angry", "closing eyes", "winking", "shocked", "pouting", "crying", "disgusted", "appalled",
    "opening mouth", "hatred", "surprised", "aha", "annoyed", "awkward", "biting tongues", "blank stare",
    "confused", "duck lips", "incredulous", "mocking", "nervous", "no comment", "oh no", "serious", "stunned",
    "whatever", "wtf",
]
PROMPTS = [f"The person is {x}." for x in EXPRESSIONS]
LONG_TEXT = " ".join(f"The person is {x}, really {x}!" for x in EXPRESSIONS)
OTHER_TEXTS = [
    "Hello, world!!! (quoted) \"yes\" -- it's; what's up? I'm sure they'll've done",
    "café naïve Ångström résumé Zoë",
    "The person is smiling 😀🎉👍🏽 with ❤️",
    "人物在微笑。これは日本語です 한국어",
    "Tom &amp; Jerry &lt;3 &amp;amp; &quot;cartoon&quot; &#39;face&#39;",
    "  lots   of\t\twhite\nspace  \r\n ",
    "",
    "MiXeD CaSe and numbers 12345 3.14 1,000,000",
    "<start_of_text> literal special tokens <end_of_text>",
    "The cartoon girl is smiling.",
    "a",
    "Ã©tÃ© mojibake",
    LONG_TEXT,
]
ALL_TEXTS = PROMPTS + OTHER_TEXTS


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer(vocabulary_path())


def test_long_text_exceeds_context(tokenizer: ClipTokenizer) -> None:
    assert tokenizer.count_tokens(LONG_TEXT) > 77


@pytest.mark.parametrize("text", ALL_TEXTS)
def test_matches_open_clip_tokenize(tokenizer: ClipTokenizer, text: str) -> None:
    ours = tokenizer([text])
    assert ours.dtype == np.int64 and ours.shape == (1, 77)
    np.testing.assert_array_equal(ours, open_clip.tokenize([text]).numpy())


def test_batch_matches_get_tokenizer(tokenizer: ClipTokenizer) -> None:
    reference = open_clip.get_tokenizer("RN50")
    np.testing.assert_array_equal(tokenizer(ALL_TEXTS), reference(ALL_TEXTS).numpy())


def test_encode_and_count(tokenizer: ClipTokenizer) -> None:
    reference = open_clip.get_tokenizer("RN50")
    for text in ALL_TEXTS:
        ids = tokenizer.encode(text)
        assert ids == reference.encode(text)
        assert tokenizer.count_tokens(text) == len(ids) + 2


def test_random_unicode_matches_open_clip(tokenizer: ClipTokenizer) -> None:
    rng = np.random.default_rng(0)
    alphabet = [chr(c) for r in ((0x20, 0x7F), (0xA0, 0x250), (0x370, 0x400), (0x3040, 0x30FF), (0x4E00, 0x4E80),
                                 (0x1F600, 0x1F640), (0x2000, 0x2070)) for c in range(*r)]
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(1, 60)))) for _ in range(200)]
    np.testing.assert_array_equal(tokenizer(texts), open_clip.tokenize(texts).numpy())


def test_single_string_and_truncation(tokenizer: ClipTokenizer) -> None:
    np.testing.assert_array_equal(tokenizer("The person is smiling."), tokenizer(["The person is smiling."]))
    row = tokenizer(LONG_TEXT)[0]
    assert row[0] == tokenizer.sot_token_id and row[-1] == tokenizer.eot_token_id
    assert row.argmax() == 76
    empty = tokenizer("")[0]
    assert empty[:2].tolist() == [49406, 49407] and not empty[2:].any()


def test_works_without_torch() -> None:
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from lgfa_deploy.tokenizer import ClipTokenizer\n"
        "tokens = ClipTokenizer(sys.argv[1])(['The person is smiling.'])\n"
        "print(tokens[0, :8].tolist())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(vocabulary_path())], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    expected = open_clip.tokenize(["The person is smiling."])[0, :8].tolist()
    assert done.stdout.strip() == str(expected)
