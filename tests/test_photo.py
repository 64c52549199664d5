"""The photo path on a tiny bundle: e4e and CLIP image graphs in the bundle, photo -> frames, bad photos."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lgfa_deploy import align, api
from lgfa_deploy.bundle import MANIFEST, Bundle
from lgfa_deploy.cli import main
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import PHOTO_GRAPHS
from lgfa_deploy.pipeline import Animator, InvertedFace
from tests.helpers import psnr, read_video
from tests.test_e4e import tiny_e4e, write_e4e_checkpoint

skimage_data = pytest.importorskip("skimage.data")

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The person is smiling."
TEXTS = ["The person is smiling.", "The person is angry."]
T, RES, L, S, E, FACE = 16, 32, 8, 64, 64, 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("photo")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """scikit-image's public-domain NASA portrait (512x512, one face and a small second one), as BGR."""
    return np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="module")
def photo(workdir: Path, astronaut: np.ndarray) -> Path:
    path = workdir / "astronaut.png"
    cv2.imwrite(str(path), astronaut)
    return path


@pytest.fixture(scope="module")
def e4e_file(workdir: Path) -> Path:
    """A tiny e4e in the published file layout, with non-trivial BatchNorm statistics and latent_avg."""
    path = workdir / "e4e_tiny.pt"
    write_e4e_checkpoint(path, tiny_e4e(seed=3))
    return path


@pytest.fixture(scope="module")
def bundle_dir(workdir: Path, e4e_file: Path) -> Path:
    out = workdir / "tiny"
    code = main(["export", "--preset", "tiny", "--random-init", "--e4e", str(e4e_file), "--max-batch", "4", "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def ort(bundle_dir: Path) -> Animator:
    with api.open(bundle_dir, "onnxruntime", device="cpu") as animator:
        yield animator


@pytest.fixture(scope="module")
def inverted(ort: Animator, photo: Path) -> InvertedFace:
    return ort.invert(photo)


def fails(capsys: pytest.CaptureFixture, args: list[str], match: str) -> str:
    """``lgfa ARGS`` ends with exit code 2, one error line matching ``match`` and no traceback."""
    code = main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("lgfa ")]
    assert code == 2 and "Traceback" not in err, err
    assert len(errors) == 1 and ": error: " in errors[0], err
    assert re.search(match, errors[0]), errors[0]
    return errors[0]


# -- export ------------------------------------------------------------------------------------------
def test_export_takes_a_real_e4e_and_records_it(bundle_dir: Path, e4e_file: Path) -> None:
    from lgfa_deploy.bundle import sha256_file

    bundle = Bundle.open(bundle_dir)
    assert bundle.graph_names[-3:] == list(PHOTO_GRAPHS) and bundle.has_photo
    sources = bundle.manifest["provenance"]["sources"]
    assert sources == [{"role": "e4e", "path": str(e4e_file), "sha256": sha256_file(e4e_file)}]
    assert bundle.random_init  # the animation networks and the generator are still random
    assert bundle.model["face_size"] == FACE and bundle.manifest["e4e"]["file"] == "e4e.safetensors"


def test_photo_graphs_match_pytorch_through_lgfa_verify(bundle_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(bundle_dir)]) == 0
    table = capsys.readouterr().out
    assert "all checks passed" in table
    for name in (*PHOTO_GRAPHS, "motion"):
        for check in ("tensorrt operators", "names", "shapes", "values b=1", "values b=3"):
            assert any(line.split()[:2] == [name, "fp32"] and check in line and " ok " in line
                       for line in table.splitlines()), (name, check)
    assert any(line.startswith("bundle") and "e4e.safetensors matches the manifest" in line for line in table.splitlines())


def test_image_encoder_graph_is_the_e4e_it_was_given(ort: Animator, e4e_file: Path) -> None:
    from training.e4e import load_e4e

    source = load_e4e(e4e_file)
    faces = torch.rand(3, 3, FACE, FACE) * 2 - 1
    with torch.no_grad():
        expected = source(faces).numpy()
    got = ort.backend.run("image_encoder", {"face": faces.numpy()})["latents"]
    assert got.shape == (3, L, S)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    deltas = expected - source.latent_avg.numpy()
    assert np.abs(deltas).max() > 0.1, "the test e4e should do more than add latent_avg"


def test_e4e_options_are_checked(workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import dataclasses

    from training.checkpoints import load_models, save_checkpoint
    from training.e4e import E4E, E4E_CONFIGS

    six = tmp_path / "e4e_six.pt"
    torch.manual_seed(0)
    write_e4e_checkpoint(six, E4E(dataclasses.replace(E4E_CONFIGS["tiny"], n_styles=6)).eval())
    out = tmp_path / "out"
    base = ["export", "--preset", "tiny", "--random-init", "--out", str(out)]
    fails(capsys, [*base, "--e4e", str(six)], "inverts to 6 latents but the generator has 8")
    fails(capsys, [*base, "--e4e", str(six), "--no-photo"], "--e4e and --no-photo exclude each other")
    real = tmp_path / "real.safetensors"
    models = load_models(preset="tiny", random_init=True)
    models.random_init = False  # as a trained checkpoint on real weights records it
    save_checkpoint(real, models)
    fails(capsys, ["export", "--checkpoint", str(real), "--out", str(out)], r"add --e4e FILE .* or --no-photo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e4e_six.pt", "real.safetensors"]


def test_bundle_without_photo_graphs(tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "seeds"
    assert main(["export", "--preset", "tiny", "--random-init", "--no-photo", "--out", str(out)]) == 0
    bundle = Bundle.open(out)
    assert bundle.graph_names == ["text_encoder", "motion", "synthesis", "mapping"] and not bundle.has_photo
    assert "e4e" not in bundle.manifest and not (out / "e4e.safetensors").exists()
    capsys.readouterr()
    clip = tmp_path / "clip.mp4"
    fails(capsys, ["animate", "--bundle", str(out), "--text", TEXT, "--image", str(photo), "--out", str(clip)],
          r"exported without the photo graphs \(--no-photo\); re-export it without --no-photo")
    with api.open(out, "onnxruntime", device="cpu") as animator:
        assert animator.animate(TEXT, seed=1).shape == (T, RES, RES, 3)
        with pytest.raises(LgfaError, match="without the photo graphs"):
            animator.invert(photo)
    assert not clip.exists()


def test_bundles_from_before_the_photo_path_are_refused(bundle_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil

    old = Path(shutil.copytree(bundle_dir, tmp_path / "old"))
    manifest = json.loads((old / MANIFEST).read_text())
    manifest["schema_version"] = 1
    (old / MANIFEST).write_text(json.dumps(manifest))
    fails(capsys, ["animate", "--bundle", str(old), "--text", TEXT, "--out", str(tmp_path / "clip.mp4")],
          r"schema version 1 \(from before the photo path: its motion graph takes no image embedding\).*re-export")
    assert not (tmp_path / "clip.mp4").exists()


# -- runtime -------------------------------------------------------------------------------------------
def test_invert_gives_content_and_image_embedding(ort: Animator, inverted: InvertedFace, astronaut) -> None:
    assert inverted.aligned.shape == (FACE, FACE, 3) and inverted.aligned.dtype == np.uint8
    assert inverted.inverted.shape == inverted.content.shape == (1, L, S)
    assert inverted.image_embedding.shape == (1, E)
    np.testing.assert_allclose(np.linalg.norm(inverted.image_embedding), 1.0, atol=1e-5)
    offset = ort.backend.run("visual_mapper", {"image_embedding": inverted.image_embedding})["visual_offset"]
    np.testing.assert_allclose(inverted.content, inverted.inverted + offset, atol=1e-6)
    assert np.abs(offset).max() > 0, "H_v(E_v) joins the content"
    again = ort.invert(astronaut)  # the same photo as an array
    assert np.array_equal(again.aligned, inverted.aligned) and np.array_equal(again.content, inverted.content)
    other = ort.invert(astronaut, face=1)
    assert not np.array_equal(other.aligned, inverted.aligned)


def test_photo_matches_the_pytorch_reference(ort: Animator, inverted: InvertedFace, bundle_dir: Path) -> None:
    """onnxruntime, from the photo, against the PyTorch networks fed by training's own preprocessing."""
    from training.checkpoints import load_models
    from training.clip_model import ImageEncoder
    from training.e4e import e4e_input, load_e4e
    from training.losses import clip_normalize
    from training.reference import animate_reference

    models = load_models(checkpoint=str(bundle_dir / "weights.safetensors"))
    e4e = load_e4e(bundle_dir / "e4e.safetensors")
    face = torch.from_numpy(np.ascontiguousarray(inverted.aligned[:, :, ::-1])).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        w_inv = e4e(e4e_input(inverted.aligned, FACE))
        image_embedding = ImageEncoder(models.model.encoder)(clip_normalize(face / 127.5 - 1))
    np.testing.assert_allclose(inverted.inverted, w_inv.numpy(), atol=1e-4)
    np.testing.assert_allclose(inverted.image_embedding, image_embedding.numpy(), atol=1e-4)
    reference = animate_reference(models, TEXT, content=w_inv, image_embedding=image_embedding)
    frames = ort.animate(TEXT, image=inverted)
    assert frames.shape == (T, RES, RES, 3)
    assert np.abs(reference.astype(int) - frames.astype(int)).max() <= 1
    text_only = animate_reference(models, TEXT, content=torch.from_numpy(inverted.content))
    assert not np.array_equal(text_only, reference), "the image embedding should change the motion"


def test_torch_backend_runs_the_photo_graphs(ort: Animator, inverted: InvertedFace, bundle_dir: Path, photo: Path) -> None:
    with api.open(bundle_dir, "torch", device="cpu") as animator:
        face = animator.invert(photo)
        np.testing.assert_allclose(face.content, inverted.content, atol=1e-4)
        np.testing.assert_allclose(face.image_embedding, inverted.image_embedding, atol=1e-5)
        a, b = animator.animate(TEXT, image=face), ort.animate(TEXT, image=inverted)
    assert min(psnr(x, y) for x, y in zip(a, b)) >= 40


def test_photo_motion_and_chaining_keep_the_image_embedding(ort: Animator, inverted: InvertedFace, photo: Path) -> None:
    embedding = inverted.image_embedding
    with_image, text_only = ort.offsets(TEXT, embedding), ort.offsets(TEXT)
    np.testing.assert_array_equal(with_image[0], text_only[0])  # H_t(m_0) = H_t(0) either way
    assert not np.allclose(with_image[1:], text_only[1:])
    np.testing.assert_array_equal(ort.latents(TEXT, image=inverted), inverted.content[0] + with_image)
    segments = list(ort.segment_latents(TEXTS, image=inverted))
    np.testing.assert_array_equal(segments[0], inverted.content[0] + with_image)
    second = ort.offsets(TEXTS[1], embedding)
    np.testing.assert_array_equal(segments[1], segments[0][-1] + (second - second[0]))
    streamed = np.stack(list(ort.stream(TEXTS, image=photo)))  # a photo path is inverted on the way
    assert len(streamed) == 2 * T - 1
    assert np.array_equal(streamed[:T], ort.animate(TEXTS[0], image=inverted))
    with pytest.raises(LgfaError, match="not both seed and image"):
        ort.animate(TEXT, seed=1, image=inverted)


def test_animate_a_photo_end_to_end(ort: Animator, inverted: InvertedFace, photo: Path, tmp_path: Path, capsys) -> None:
    out, latent, aligned = tmp_path / "clip.mp4", tmp_path / "face.npy", tmp_path / "aligned.png"
    # onnxruntime as the fixture: auto picks openvino on a CPU with native bf16, whose kernels differ in the last bits
    args = ["animate", "--bundle", str(ort.bundle.root), "--backend", "onnxruntime", "--text", TEXT, "--image", str(photo),
            "--save-latent", str(latent), "--save-aligned", str(aligned), "--out", str(out)]
    assert main(args) == 0
    assert f"of face 0 of {photo}" in capsys.readouterr().out
    assert len(read_video(out)) == T and read_video(out)[0].shape == (RES, RES, 3)
    saved = np.load(latent)
    assert saved.shape == (1, L, S) and saved.dtype == np.float32
    np.testing.assert_array_equal(saved, inverted.content)
    assert np.array_equal(cv2.imread(str(aligned)), inverted.aligned)
    # Inverted once, animated again from the saved latent: the same face, text-only motion.
    pngs = tmp_path / "again"
    assert main(["animate", "--bundle", str(ort.bundle.root), "--backend", "onnxruntime", "--text", TEXT, "--latent", str(latent),
                 "--out", str(pngs)]) == 0
    again = np.stack([cv2.imread(str(p)) for p in sorted(pngs.iterdir())])
    assert np.array_equal(again, ort.animate(TEXT, latent=inverted.content))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "aligned.png", "clip.mp4", "face.npy"]


def test_stream_a_photo(bundle_dir: Path, photo: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "talk.mp4"
    args = ["stream", "--bundle", str(bundle_dir), "--texts", str(texts), "--image", str(photo), "--face", "0",
            "--save-latent", str(tmp_path / "face.npy"), "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert len(read_video(out)) == 2 * T - 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.npy", "talk.mp4", "texts.txt"]


@pytest.mark.parametrize(
    "crop",
    [
        lambda image: cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
        lambda image: np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]),
        lambda image: image[:, 190:],  # the face's box reaches past the left edge: padded by reflection
    ],
    ids=["grey", "rgba", "face-at-border"],
)
def test_awkward_photos_animate(bundle_dir: Path, astronaut: np.ndarray, tmp_path: Path, crop) -> None:
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.ascontiguousarray(crop(astronaut)))
    out = tmp_path / "clip.mp4"
    assert main(["animate", "--bundle", str(bundle_dir), "--text", TEXT, "--image", str(path), "--out", str(out)]) == 0
    assert len(read_video(out)) == T


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("flat.png", lambda p: cv2.imwrite(str(p), np.full((300, 300, 3), 128, np.uint8)), "flat.png: no face found"),
        ("coffee.png", lambda p: cv2.imwrite(str(p), skimage_data.coffee()[:, :, ::-1]), "no face found"),
        ("text.png", lambda p: p.write_text("this is not a picture\n"), "is not a readable image"),
        ("empty.jpg", lambda p: p.write_bytes(b""), "is empty, not an image"),
        ("tiny.png", lambda p: cv2.imwrite(str(p), np.full((40, 300, 3), 128, np.uint8)), "too small to find a face in"),
        ("huge.png", lambda p: cv2.imwrite(str(p), np.full((400, 400, 3), 90, np.uint8)),
         r"\(0.16 megapixels\), more than the 0.1 megapixels accepted; downscale it first"),
        ("missing.png", None, "missing.png does not exist"),
    ],
)
def test_bad_photos_fail_in_one_line_and_leave_nothing(
    bundle_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
    name: str, make, message: str,
) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    if name == "huge.png":
        monkeypatch.setattr(align, "MAX_PIXELS", 100_000)  # "huge" without writing 100 megapixels
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXT + "\n")
    before = sorted(tmp_path.iterdir())
    saves = ["--save-latent", str(tmp_path / "face.npy"), "--save-aligned", str(tmp_path / "aligned.png")]
    commands = [
        ["animate", "--bundle", str(bundle_dir), "--text", TEXT, "--out", str(tmp_path / "clip.mp4")],
        ["stream", "--bundle", str(bundle_dir), "--texts", str(texts), "--out", str(tmp_path / "talk.mp4")],
    ]
    capfd.readouterr()
    for command in commands:
        fails(capfd, [*command, "--image", str(path), *saves], re.escape(str(tmp_path)) + ".*" + message)
        assert sorted(tmp_path.iterdir()) == before


def test_bad_photo_options(bundle_dir: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["animate", "--bundle", str(bundle_dir), "--text", TEXT, "--out", str(tmp_path / "clip.mp4")]
    fails(capsys, [*base, "--seed", "1", "--save-aligned", str(tmp_path / "a.png")], "--save-aligned needs --image PHOTO")
    fails(capsys, [*base, "--face", "1"], "--face needs --image PHOTO")
    fails(capsys, [*base, "--image", str(photo), "--face", "2"], r"face 2 does not exist: the photo has 2 faces")
    fails(capsys, [*base, "--image", str(photo), "--save-latent", str(tmp_path / "w.txt")], r"choose a file ending in \.npy")
    fails(capsys, [*base, "--image", str(photo), "--save-latent", str(tmp_path / "no" / "w.npy")], "does not exist")
    fails(capsys, [*base, "--image", str(photo), "--save-aligned", str(tmp_path / "a.gif")], "choose a file ending in")
    fails(capsys, ["animate", "--preset", "tiny", "--random-init", "--text", TEXT, "--image", str(photo),
                   "--out", str(tmp_path / "clip.mp4")], "without --bundle, --image cannot be used")
    with pytest.raises(SystemExit):
        main([*base, "--image", str(photo), "--seed", "1"])  # argparse: --image excludes --seed
    assert list(tmp_path.iterdir()) == []


def test_photo_path_runs_without_torch(bundle_dir: Path, photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None\n"
        "from lgfa_deploy.cli import main\n"
        "b, photo, out = sys.argv[1:4]\n"
        "a = main(['animate', '--bundle', b, '--text', 'The person is smiling.', '--image', photo, '--out', out])\n"
        "sys.stderr.write(json.dumps([a, sorted(m for m, v in sys.modules.items() if v and m.startswith(('torch', 'training')))]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(bundle_dir), str(photo), str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    status, imported = json.loads(result.stderr.strip().splitlines()[-1])
    assert status == 0 and imported == []
    assert len(read_video(out)) == T
