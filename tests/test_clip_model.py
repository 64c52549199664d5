"""CLIP registry, text/image encoder wrappers, their ONNX export and OpenAI state-dict loading."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import open_clip
import pytest
import torch
import torch.nn.functional as F

from tests.clip_by_hand import image_tower, text_tower
from tests.published_layouts import TINY_CLIP, openai_clip_layout, openai_clip_tensors
from training.clip_model import (
    CLIP_CONFIGS,
    CLIP_MEAN,
    CLIP_STD,
    ImageEncoder,
    TextEncoder,
    clip_image_size,
    create_clip,
    embed_dim,
    openai_to_open_clip,
    tokenize,
    vocabulary_path,
)
from training.presets import PRESETS

# TensorRT 10's ONNX operator table: the package's copy, else the project's shared one.
TRT_OPERATOR_TABLES = [
    Path(__file__).resolve().parents[1] / "export" / "data" / "tensorrt10-onnx-operators.tsv",
    Path("/work/shared/tensorrt10-onnx-operators.tsv"),
]
PROMPTS = ["The person is smiling.", "The person is duck lips.", "The cartoon girl is winking."]
EXPECTED = {"RN50": (1024, 224), "ViT-B-32": (512, 224), "tiny-rn": (64, 64), "tiny-vit": (64, 32), "faces-rn": (64, 64)}


@pytest.fixture(scope="module")
def rn50() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_clip("RN50").eval()


def _tiny(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_clip(name).eval()


def _trt_supported() -> set[str]:
    table = next((path for path in TRT_OPERATOR_TABLES if path.is_file()), None)
    if table is None:
        pytest.skip("no TensorRT operator table found")
    rows = [line.split("\t") for line in table.read_text().splitlines() if line and not line.startswith("#")]
    return {row[0] for row in rows if row[1] == "Y"}


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path) -> onnx.ModelProto:
    torch.onnx.export(
        module, (example,), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["embedding"],
        dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_registry_names_and_configs() -> None:
    assert set(CLIP_CONFIGS) == set(EXPECTED)
    for name in ("RN50", "ViT-B-32"):
        assert CLIP_CONFIGS[name] == {**open_clip.get_model_config(name), "quick_gelu": True}
    for preset in PRESETS.values():
        assert preset.clip_model in CLIP_CONFIGS and preset.loss_clip_model in CLIP_CONFIGS
        assert CLIP_CONFIGS[preset.clip_model]["embed_dim"] == preset.embed_dim


@pytest.mark.parametrize("name", list(EXPECTED))
def test_create_every_model(name: str, rn50: torch.nn.Module) -> None:
    clip = rn50 if name == "RN50" else create_clip(name)
    assert isinstance(clip, open_clip.model.CLIP)
    assert (embed_dim(clip), clip_image_size(clip)) == EXPECTED[name]
    assert clip.context_length == 77 and clip.vocab_size == 49408


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="RN50.*ViT-B-32.*tiny-rn.*tiny-vit"):
        create_clip("RN101")


def test_creation_is_deterministic() -> None:
    a, b, c = _tiny("tiny-rn", 1), _tiny("tiny-rn", 1), _tiny("tiny-rn", 2)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)
    assert not torch.equal(a.token_embedding.weight, c.token_embedding.weight)


def test_constants_are_the_papers() -> None:
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)  # PAPER-NOTES, "CLIP image tower"
    assert CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def _word_id(word: str) -> int:
    """A word's id read off the BPE file: 256 byte tokens, 256 end-of-word byte tokens, then one per merge."""
    lines = gzip.open(vocabulary_path()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    if len(word) == 1 and 33 <= ord(word) <= 126:  # printable ASCII leads the byte order
        return 256 + ord(word) - 33
    merged = [i for i, line in enumerate(lines) if line.replace(" ", "") == f"{word}</w>"]
    assert len(merged) == 1, word
    return 512 + merged[0]


def test_tokenize_gives_the_vocabulary_ids() -> None:
    """sot, one id per word as the merges file numbers it, eot, zero padding; long texts keep eot last."""
    tokens = tokenize(PROMPTS[:1] + ["smiling " * 100])
    assert tokens.dtype == torch.long and tokens.shape == (2, 77)
    words = ["the", "person", "is", "smiling", "."]
    want = [49406, *[_word_id(w) for w in words], 49407] + [0] * (77 - len(words) - 2)
    assert tokens[0].tolist() == want
    assert _word_id(".") == 269
    assert tokens[1, 0] == 49406 and tokens[1, -1] == 49407 and set(tokens[1, 1:-1].tolist()) == {_word_id("smiling")}
    assert vocabulary_path().name == "bpe_simple_vocab_16e6.txt.gz" and vocabulary_path().is_file()


@pytest.fixture(scope="module")
def tiny_openai() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """tiny-rn holding weights written in OpenAI's layout (not its own initialisation), and those weights."""
    published = openai_clip_tensors(openai_clip_layout(**TINY_CLIP), seed=11)
    clip = create_clip("tiny-rn").eval()
    clip.load_state_dict(openai_to_open_clip(published), strict=True)
    return clip, {k: v.double() if v.is_floating_point() else v for k, v in published.items()}


def test_text_encoder_is_clips_text_tower_by_hand(tiny_openai) -> None:
    clip, state = tiny_openai
    tokens = tokenize(PROMPTS)
    with torch.no_grad():
        got = TextEncoder(clip)(tokens)
    want = F.normalize(text_tower(state, tokens, layers=2, heads=2), dim=-1)
    assert got.shape == (3, 64)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_image_encoder_is_clips_image_tower_by_hand(tiny_openai) -> None:
    clip, state = tiny_openai
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        got = ImageEncoder(clip)(images)
    want = F.normalize(image_tower(state, images.double(), layers=(1, 1, 1, 1), heads=8), dim=-1)
    assert got.shape == (2, 64)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_encoders_share_parameters() -> None:
    clip = _tiny("tiny-rn")
    ids = {id(p) for p in clip.parameters()}
    assert all(id(p) in ids for p in TextEncoder(clip).parameters())
    assert all(id(p) in ids for p in ImageEncoder(clip).parameters())


def test_rn50_text_forward(rn50: torch.nn.Module) -> None:
    """The paper's text tower (12 layers, 8 heads, QuickGELU) against the hand-written one, float64."""
    tokens = tokenize(PROMPTS[:1])
    with torch.no_grad():
        out = TextEncoder(rn50)(tokens)
        state = {k: v.double() if v.is_floating_point() else v for k, v in rn50.state_dict().items()}
        want = F.normalize(text_tower(state, tokens, layers=12, heads=8), dim=-1)
    assert out.shape == (1, 1024)
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-rn", "tiny-vit"])
@pytest.mark.parametrize("tower", ["text", "image"])
@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning"
)
def test_onnx_export_matches_torch(name: str, tower: str, tmp_path: Path) -> None:
    clip = _tiny(name)
    size = clip_image_size(clip)
    if tower == "text":
        module, batch3 = TextEncoder(clip).eval(), tokenize(PROMPTS)
    else:
        module, batch3 = ImageEncoder(clip).eval(), torch.randn(3, 3, size, size)
    model = _export(module, batch3[:1], tmp_path / "encoder.onnx")
    unsupported = {node.op_type for node in model.graph.node} - _trt_supported()
    assert not unsupported, f"operators outside TensorRT 10's set: {unsupported}"
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    for batch in (batch3[:1], batch3):
        (got,) = session.run(None, {"input": batch.numpy()})
        with torch.no_grad():
            want = module(batch).numpy()
        assert got.shape == want.shape == (len(batch), 64)
        assert _cosine(got, want).min() > 0.9999
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_openai_state_dict_round_trip(rn50: torch.nn.Module) -> None:
    own = rn50.state_dict()
    # OpenAI's layout: the same tensor names, linear/conv weights in float16, plus three scalar entries.
    openai = {k: v.half() if k.endswith("weight") and v.dim() > 1 else v.clone() for k, v in own.items()}
    openai.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    mapped = openai_to_open_clip(openai)
    assert set(mapped) == set(own)
    torch.manual_seed(1)
    fresh = create_clip("RN50")
    fresh.load_state_dict(mapped, strict=True)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, openai[key].to(value.dtype), rtol=0, atol=0)


def test_openai_state_dict_without_batch_counters() -> None:
    clip = _tiny("tiny-rn")
    own = clip.state_dict()
    openai = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    openai.update(input_resolution=torch.tensor(64), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    mapped = openai_to_open_clip(openai)
    assert set(mapped) == set(own)
    _tiny("tiny-rn", 3).load_state_dict(mapped, strict=True)


def test_vit_layout_has_no_extra_keys() -> None:
    clip = _tiny("tiny-vit")
    own = clip.state_dict()
    mapped = openai_to_open_clip({**own, "input_resolution": torch.tensor(32)})
    assert set(mapped) == set(own)
    _tiny("tiny-vit", 3).load_state_dict(mapped, strict=True)
