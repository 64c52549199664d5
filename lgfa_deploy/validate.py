"""Checks of user input that several commands share; each failure is one :class:`LgfaError` line
that names the option, the problem and the fix. They run before any model loads."""
from __future__ import annotations

import math
import os
from pathlib import Path

from lgfa_deploy.errors import LgfaError

MAX_TEXT_FILE_BYTES = 16 << 20
"""A sentences file larger than 16 MiB is refused unread."""


def check_number(
    value: float, option: str, *, above: float | None = None, minimum: float | None = None, maximum: float | None = None
) -> float:
    """A finite number within the bounds given (``above`` exclusive, ``minimum``/``maximum`` inclusive)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LgfaError(f"{option} must be a finite number, got {value}")
    if above is not None and not value > above:
        raise LgfaError(f"{option} must be above {above:g}, got {value:g}")
    if minimum is not None and value < minimum:
        raise LgfaError(f"{option} must be at least {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise LgfaError(f"{option} must be at most {maximum:g}, got {value:g}")
    return value


def check_writable_parent(path: Path) -> None:
    """The folder ``path`` goes into exists and may be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise LgfaError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise LgfaError(f"cannot write {path}: directory {parent} is not writable")


def check_output_file(path: str | os.PathLike, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """An output file ``path`` that can be written atomically: a name ending in one of ``suffixes``
    (any when empty), not a folder, not a symbolic link (renaming over it would replace the link,
    not the file it points to), in a writable folder that exists."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise LgfaError(f"{option} {path}: choose a file ending in {', '.join(suffixes)}")
    if path.is_symlink():
        raise LgfaError(f"{option} {path} is a symbolic link; give the path of a real file")
    if path.is_dir():
        raise LgfaError(f"{option} {path} is a folder; give a file name")
    check_writable_parent(path)
    return path


def read_text_file(path: str | os.PathLike, option: str) -> str:
    """A UTF-8 text file's contents; a missing, binary (NUL bytes), undecodable or huge file raises :class:`LgfaError`."""
    file = Path(path)
    if not file.is_file():
        raise LgfaError(f"{option} {path} does not exist or is not a file")
    try:
        if file.stat().st_size > MAX_TEXT_FILE_BYTES:
            raise LgfaError(f"{option} {path} is over {MAX_TEXT_FILE_BYTES >> 20} MiB; give a file of sentences")
        data = file.read_bytes()
    except OSError as exc:
        raise LgfaError(f"cannot read {option} {path}: {exc.strerror or exc}") from None
    if b"\0" in data:
        raise LgfaError(f"{option} {path} holds NUL bytes, so it is not a text file; give UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LgfaError(f"{option} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
