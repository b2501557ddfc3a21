"""What ``edgefer predict`` was given: images, folders of them, videos, camera indexes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import cv2
import numpy as np

from edgefer.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff",
                            ".pgm", ".ppm", ".pbm", ".jp2"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg",
                            ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts", ".gif"})


class InputError(DataError):
    """An input that cannot be read; the message names it."""


class Kind(str, Enum):
    IMAGE = "image"
    VIDEO = "video"
    CAMERA = "camera"
    UNKNOWN = "unknown"  # a file named explicitly with an unusual suffix: try image, then video


@dataclass(frozen=True)
class Input:
    """One thing to run: ``path`` for files, ``camera`` for a camera index; ``relative``
    is where its outputs go under --out (keeps folder structure, avoids name clashes)."""

    kind: Kind
    path: Path | None = None
    camera: int | None = None
    relative: Path = Path()

    @property
    def name(self) -> str:
        return f"camera {self.camera}" if self.kind is Kind.CAMERA else str(self.path)


@dataclass(frozen=True)
class Problem:
    """An argument that gave no input, and why."""

    name: str
    message: str


def kind_of(path: Path) -> Kind:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Kind.IMAGE
    if suffix in VIDEO_SUFFIXES:
        return Kind.VIDEO
    return Kind.UNKNOWN


def expand_inputs(args: Iterable[str], skip: Path | None = None
                  ) -> tuple[tuple[Input, ...], tuple[Problem, ...]]:
    """Inputs in argument order (folders: their images and videos, recursively, sorted;
    other files in folders are skipped), and a Problem for each argument that is neither
    a path nor a camera index. Files under ``skip`` (the output folder) are left out."""
    inputs: list[Input] = []
    problems: list[Problem] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = list(_folder(path, skip))
            if not found:
                problems.append(Problem(arg, f"{arg}: no images or videos in this folder"))
            inputs.extend(found)
        elif path.exists():
            inputs.append(Input(kind_of(path), path, relative=Path(path.name)))
        elif arg.isdigit():
            inputs.append(Input(Kind.CAMERA, camera=int(arg), relative=Path(f"camera{arg}")))
        else:
            problems.append(Problem(arg, f"{arg}: no such file or folder"))
    return tuple(_unclash(inputs)), tuple(problems)


def _folder(folder: Path, skip: Path | None) -> Iterable[Input]:
    """A folder's images and videos. Under the output folder ``skip``: nothing when it lies
    inside ``folder``, and no earlier outputs (``*.annotated.*``, ``*.timeline.png``) when
    it is ``folder`` itself or holds it (``predict photos --out photos``, ``--out .``)."""
    skip = skip.resolve() if skip is not None else None
    root = folder.resolve()
    skip_all = skip is not None and skip != root and skip.is_relative_to(root)
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if skip is not None and path.resolve().is_relative_to(skip) and (
                skip_all or is_output(path)):
            continue
        kind = kind_of(path)
        if kind in (Kind.IMAGE, Kind.VIDEO):
            yield Input(kind, path, relative=Path(folder.name) / path.relative_to(folder))


def is_output(path: Path) -> bool:
    """A file edgefer predict wrote: ``NAME.annotated.EXT`` or ``NAME.timeline.png``."""
    return path.stem.endswith((".annotated", ".timeline"))


def _unclash(inputs: list[Input]) -> Iterable[Input]:
    """Give repeated output names a -2, -3 suffix."""
    seen: dict[Path, int] = {}
    for item in inputs:
        count = seen.get(item.relative, 0) + 1
        seen[item.relative] = count
        if count > 1:
            rel = item.relative
            item = Input(item.kind, item.path, item.camera,
                         rel.with_name(f"{rel.stem}-{count}{rel.suffix}"))
        yield item


def read_image(path: Path) -> np.ndarray:
    """A BGR uint8 image (EXIF orientation applied), or an InputError naming the file."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"{path}: not an image OpenCV can decode (corrupt or unsupported)")
    return image


def open_video(source: Path | int) -> cv2.VideoCapture:
    """An opened capture for a video file or camera index, or an InputError naming it."""
    capture = cv2.VideoCapture(str(source) if isinstance(source, Path) else source)
    if not capture.isOpened():
        capture.release()
        what = f"camera {source}" if isinstance(source, int) else str(source)
        raise InputError(f"{what}: OpenCV cannot open it as a video"
                         + (" (no such camera?)" if isinstance(source, int) else ""))
    return capture


def resolve_unknown(item: Input) -> Input:
    """An explicitly named file with an unusual suffix: an image if OpenCV decodes it,
    else a video if OpenCV opens it, else an InputError naming it."""
    if item.kind is not Kind.UNKNOWN:
        return item
    assert item.path is not None
    try:
        read_image(item.path)
        return Input(Kind.IMAGE, item.path, relative=item.relative)
    except InputError:
        pass
    try:
        open_video(item.path).release()
    except InputError:
        raise InputError(f"{item.path}: neither an image nor a video OpenCV can read") from None
    return Input(Kind.VIDEO, item.path, relative=item.relative)
