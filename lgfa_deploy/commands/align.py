"""``lgfa align PHOTO --out aligned.png``: find a face and align it by the FFHQ recipe (torch-free)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lgfa_deploy.errors import LgfaError
from lgfa_deploy.validate import check_output_file

log = logging.getLogger(__name__)

SIZES = (256, 1024)


def face_index(text: str) -> int:
    """A face number of 0 or more, for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a face number (0, 1, ...), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"face numbers start at 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Detect the faces of a photo (dlib, 68 landmarks) and write one as a square aligned by the FFHQ "
        "recipe: 256 px is e4e's input, 1024 px FFHQ's own size. With several faces the largest is taken; "
        "--list-faces shows them and --face N picks one. Needs the 'face' extra: pip install 'lgfa-deploy[face]'."
    )
    parser.add_argument("photo", help="the photo (PNG, JPEG, WebP, TIFF, BMP; grey and transparent images too)")
    parser.add_argument(
        "--out", default=None, metavar="FILE", help="the aligned face to write (.png; .jpg and .webp work too)"
    )
    parser.add_argument("--size", type=int, choices=SIZES, default=256, help="side of the aligned square in pixels")
    parser.add_argument(
        "--face", type=face_index, default=None, metavar="N",
        help="which face to align, by its number in --list-faces; none: the largest",
    )
    parser.add_argument(
        "--list-faces", action="store_true", help="list the faces found, largest first, and write nothing"
    )


def run(args: argparse.Namespace) -> int:
    from lgfa_deploy.align import (
        WRITABLE_SUFFIXES,
        align_face,
        detect_faces,
        read_image,
        write_image,
    )

    photo = Path(args.photo)
    out = Path(args.out) if args.out else None
    if out is None and not args.list_faces:
        raise LgfaError("give --out FILE for the aligned face, or --list-faces to see the faces")
    if out is not None and photo.exists() and out.exists() and out.resolve() == photo.resolve():
        raise LgfaError(f"--out {out} is the photo itself; choose another file")
    if out is not None and not args.list_faces:
        check_output_file(out, "--out", WRITABLE_SUFFIXES)

    image = read_image(photo)
    try:
        if args.list_faces:
            faces = detect_faces(image)
            if not faces:
                raise LgfaError(
                    "no face found (dlib's frontal-face detector); use a photo of a face seen from the front"
                )
            print(f"{photo}: {image.shape[1]}x{image.shape[0]} px, {len(faces)} face{'s' if len(faces) > 1 else ''}")
            for face in faces:
                print(f"  {face.describe()}")
            return 0
        aligned = align_face(image, size=args.size, face=args.face)
    except LgfaError as exc:
        raise LgfaError(f"{photo}: {exc}") from None
    write_image(out, aligned.image)
    others = f" (of {len(aligned.faces)})" if len(aligned.faces) > 1 else ""
    print(
        f"wrote {out}: face {aligned.face.index}{others} of {photo} aligned to {aligned.size}x{aligned.size} px; "
        f"its square was {aligned.qsize:.0f} px in the photo"
    )
    return 0
