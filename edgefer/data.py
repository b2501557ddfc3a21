"""FER2013 in both forms users have: ``fer2013.csv`` and the image-folder layout.

A split comes back as uint8 gray faces (N, 48, 48), int labels in FER2013's class order
and stable per-image ids (relative file paths, or ``row:<n>`` for CSV rows). Decoded
splits are cached under the user's cache dir, keyed by the source's file listing
(names, sizes, times) or, for a CSV, its bytes, so a second load takes well under a second.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefer.errors import DataError
from edgefer.labels import CLASS_NAMES, IMAGE_SIZE, class_index

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "test": "test", "publictest": "test", "public": "test", "val": "test",
    "private": "private", "privatetest": "private",
}
_CSV_USAGE = {"train": "Training", "test": "PublicTest", "private": "PrivateTest"}
_USAGE_SPLIT = {usage.lower(): split for split, usage in _CSV_USAGE.items()}
_FOLDER_NAMES = {"train": ("train", "Training"), "test": ("test", "PublicTest"),
                 "private": ("private", "PrivateTest")}
_CACHE_VERSION = "2"
# The data cache keeps the most recently used splits up to this many bytes (FER2013's
# training split is 70 MB); EDGEFER_CACHE_MAX_MB overrides it.
_CACHE_MAX_BYTES = 512 * 2**20
_STALE_TMP_SECONDS = 3600


def canonical_split(name: str) -> str:
    """``train``, ``test`` or ``private`` for any of the names users give a split."""
    key = name.strip().lower().replace("_", "").replace("-", "")
    if key not in _SPLIT_ALIASES:
        raise DataError(f"unknown split {name!r}; use train, test (PublicTest) or PrivateTest")
    return _SPLIT_ALIASES[key]


@dataclass(frozen=True)
class Problem:
    """One bad image found while reading, with where it is."""

    where: str
    kind: str  # unreadable | wrong_size | blank | bad_row
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.detail}"


@dataclass(frozen=True, eq=False)
class FerSplit:
    """One split of FER2013, decoded."""

    name: str
    images: np.ndarray  # uint8 (N, 48, 48)
    labels: np.ndarray  # int64 (N,)
    ids: tuple[str, ...]
    problems: tuple[Problem, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(CLASS_NAMES))
        return {name: int(n) for name, n in zip(CLASS_NAMES, counts, strict=True)}

    def content_sha256(self) -> str:
        """Hash of ids, labels and pixels: the same on any machine for the same data."""
        h = hashlib.sha256()
        for i in np.argsort(np.asarray(self.ids, dtype=object), kind="stable"):
            h.update(_bytes(self.ids[i]))
            h.update(int(self.labels[i]).to_bytes(1, "little"))
            h.update(self.images[i].tobytes())
        return h.hexdigest()

    def subset(self, index: np.ndarray) -> FerSplit:
        return FerSplit(self.name, self.images[index], self.labels[index],
                        tuple(self.ids[i] for i in index))

    def limit(self, n: int | None) -> FerSplit:
        """A fixed random ``n`` of the images (the same every time), for quick runs."""
        if n is None or n >= len(self):
            return self
        return self.subset(np.sort(np.random.default_rng(0).permutation(len(self))[:n]))


def is_csv(path: Path) -> bool:
    return path.name.endswith((".csv", ".csv.gz"))


def _resolve(source: str | os.PathLike) -> Path:
    """The source itself, or the fer2013.csv inside a folder that has no split folders
    (the way the Kaggle download unpacks)."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"FER2013 not found at {path}")
    if path.is_dir() and not any(_split_dir(path, s) for s in _FOLDER_NAMES):
        for name in ("fer2013.csv", "fer2013.csv.gz"):
            if (path / name).is_file():
                return path / name
    return path


def load_split(source: str | os.PathLike, split: str, *, skip_bad: bool = False,
               use_cache: bool = True) -> FerSplit:
    """Read one split from a FER2013 CSV file or image-folder root.

    Bad images raise :class:`DataError` naming the file (or CSV line) unless
    ``skip_bad``, which drops them and records each in ``FerSplit.problems``.
    """
    path = _resolve(source)
    name = canonical_split(split)
    key = _cache_key(path, name, skip_bad) if use_cache else None
    cached = _cache_read(key) if key else None
    if cached is not None:
        return cached
    reader = _read_csv if is_csv(path) else _read_folder
    result = reader(path, name, skip_bad)
    if key:
        _cache_write(key, result)
    return result


def check_source(source: str | os.PathLike, split: str) -> None:
    """DataError unless ``source`` is a FER2013 CSV or image folder that can hold ``split``;
    quick (a CSV's header and first row, a folder's split folder), for checks before long
    work."""
    path = _resolve(source)
    name = canonical_split(split)
    if is_csv(path):
        next(_csv_rows(path), None)
    elif not path.is_dir():
        raise DataError(f"{path} is neither a FER2013 CSV nor a folder")
    elif _split_dir(path, name) is None:
        raise DataError(f"{path} has no '{_FOLDER_NAMES[name][0]}' folder for split {name!r}")


def available_splits(source: str | os.PathLike) -> list[str]:
    """The canonical names of the splits present in a source."""
    path = _resolve(source)
    if is_csv(path):
        found = {_csv_split(row[2]) for _, row in _csv_rows(path)}
        return [s for s in _CSV_USAGE if s in found] or ["train"]
    return [s for s in _FOLDER_NAMES if _split_dir(path, s) is not None]


# --- image folders ---------------------------------------------------------------

def _split_dir(root: Path, split: str) -> Path | None:
    for candidate in _FOLDER_NAMES[split]:
        if (root / candidate).is_dir():
            return root / candidate
    return None


def _list_folder(root: Path, split: str) -> list[tuple[Path, int]]:
    split_dir = _split_dir(root, split)
    if split_dir is None:
        if not root.is_dir():
            raise DataError(f"{root} is neither a FER2013 CSV nor a folder")
        raise DataError(f"{root} has no '{_FOLDER_NAMES[split][0]}' folder for split {split!r}")
    files: list[tuple[Path, int]] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        try:
            label = class_index(class_dir.name)
        except KeyError:
            raise DataError(f"unknown class folder {class_dir} (expected one of "
                            f"{', '.join(CLASS_NAMES)})") from None
        files += [(f, label) for f in sorted(class_dir.iterdir())
                  if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"no images found under {split_dir}")
    return files


def _bytes(text: str) -> bytes:
    """A name as bytes, also one that is not valid UTF-8 (os.walk hands such bytes back
    as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def shown(text: str | os.PathLike) -> str:
    """A path fit to print: bytes that are not UTF-8 become \\xNN escapes."""
    return _bytes(str(text)).decode("utf-8", "backslashreplace")


def _read_folder(root: Path, split: str, skip_bad: bool) -> FerSplit:
    images, labels, ids, problems = [], [], [], []
    for file, label in _list_folder(root, split):
        rel = file.relative_to(root).as_posix()
        image, why = read_gray(file)
        problem = _check_image(shown(rel), image, why)
        if problem and problem.kind != "blank":
            if not skip_bad:
                raise DataError(f"{shown(file)}: {problem.detail} (fix or remove it; `edgefer "
                                f"data info {shown(root)} --skip-bad` lists every such file)")
            problems.append(problem)
            continue
        if problem:
            problems.append(problem)
        images.append(image)
        labels.append(label)
        ids.append(rel)
    return _make_split(split, images, labels, ids, problems)


def read_gray(file: Path) -> tuple[np.ndarray | None, str]:
    """(gray image, "") or (None, why it cannot be used). Decoded from the file's bytes:
    cv2.imread takes a truncated JPEG (half of it grey) and cannot open every file name."""
    import cv2

    try:
        data = np.fromfile(file, dtype=np.uint8)
    except OSError as exc:
        if file.is_symlink() and not file.exists():
            return None, f"a broken symlink (to {shown(os.readlink(file))})"
        return None, f"cannot read it ({exc.strerror or exc})"
    if _truncated_jpeg(data):
        return None, "truncated JPEG (its end-of-image marker is missing)"
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        return None, "not a readable image (corrupt or unknown format)"
    return image, ""


def _truncated_jpeg(data: np.ndarray) -> bool:
    """A JPEG (FF D8 first) that does not end with its EOI marker (FF D9), padding aside."""
    if bytes(data[:2]) != b"\xff\xd8":
        return False
    return not bytes(data[-64:]).rstrip(b"\0\r\n ").endswith(b"\xff\xd9")


def _check_image(where: str, image: np.ndarray | None, why: str = "") -> Problem | None:
    if image is None:
        return Problem(where, "unreadable",
                       why or "not a readable image (corrupt or unknown format)")
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        return Problem(where, "wrong_size",
                       f"image is {image.shape[1]}x{image.shape[0]}, expected 48x48")
    if int(image.max()) - int(image.min()) == 0:
        return Problem(where, "blank", f"all pixels are {int(image.min())}")
    return None


def _make_split(name: str, images: list, labels: list, ids: list,
                problems: list[Problem]) -> FerSplit:
    if not images:
        raise DataError(f"split {name!r} has no usable images")
    return FerSplit(name, np.stack(images).astype(np.uint8), np.asarray(labels, np.int64),
                    tuple(ids), tuple(problems))


# --- CSV ---------------------------------------------------------------------------

def _open_text(path: Path) -> io.TextIOBase:
    """The CSV as text; utf-8-sig drops the byte-order mark spreadsheet programs write."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def _csv_split(usage: str) -> str | None:
    """The split a CSV row's Usage names (any case, spaces around ignored), or None."""
    return _USAGE_SPLIT.get(usage.strip().lower())


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, [emotion, pixels, usage]) rows, with the header checked. One rule for
    every reader: column names in any case, values with spaces around them stripped."""
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            missing = [c for c in ("emotion", "pixels") if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)} "
                                f"(header is {','.join(header) or 'empty'})")
            cols = [header.index("emotion"), header.index("pixels")]
            usage = header.index("usage") if "usage" in header else None
            for row in reader:
                if not row:
                    continue
                line = reader.line_num
                if len(row) < len(header):
                    raise DataError(f"{path} line {line}: expected {len(header)} fields, "
                                    f"got {len(row)}")
                yield line, [row[cols[0]].strip(), row[cols[1]].strip(),
                             row[usage].strip() if usage is not None else "Training"]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from exc


def _parse_row(path: Path, line: int, row: list[str]) -> tuple[int, np.ndarray]:
    try:
        label = int(row[0])
    except ValueError:
        label = -1
    if not 0 <= label < len(CLASS_NAMES):
        raise DataError(f"{path} line {line}: unknown emotion {row[0]!r} "
                        f"(expected 0..{len(CLASS_NAMES) - 1})")
    try:
        pixels = np.array(row[1].split(), dtype=np.int32)
    except ValueError:
        raise DataError(f"{path} line {line}: pixels must be integers 0..255") from None
    if pixels.size != IMAGE_SIZE * IMAGE_SIZE:
        raise DataError(f"{path} line {line}: expected {IMAGE_SIZE * IMAGE_SIZE} pixels, "
                        f"got {pixels.size}")
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path} line {line}: pixel values must be 0..255")
    return label, pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def _read_csv(path: Path, split: str, skip_bad: bool) -> FerSplit:
    usage = _CSV_USAGE[split]
    images, labels, ids, problems = [], [], [], []
    for line, row in _csv_rows(path):
        if _csv_split(row[2]) != split:
            continue
        where = f"{path.name} line {line}"
        try:
            label, image = _parse_row(path, line, row)
        except DataError as exc:
            if not skip_bad:
                raise DataError(f"{exc} (fix or remove it; `edgefer data info {path} "
                                "--skip-bad` lists every such row)") from None
            problems.append(Problem(where, "bad_row", str(exc).split(": ", 1)[-1]))
            continue
        problem = _check_image(where, image)
        if problem:
            problems.append(problem)
        images.append(image)
        labels.append(label)
        ids.append(f"row:{line - 1}")
    if not images:
        raise DataError(f"{path} has no rows with Usage {usage!r}")
    return _make_split(split, images, labels, ids, problems)


# --- cache -------------------------------------------------------------------------

def cache_dir() -> Path:
    base = os.environ.get("EDGEFER_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "edgefer" if base else Path.home() / ".cache" / "edgefer"


def _cache_key(path: Path, split: str, skip_bad: bool) -> str:
    h = hashlib.sha256(f"{_CACHE_VERSION}|{split}|{skip_bad}".encode())
    if is_csv(path):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    split_dir = _split_dir(path, split)
    if split_dir is None:
        return ""
    for dirpath, _, files in sorted(os.walk(split_dir)):
        for name in sorted(files):
            file = os.path.join(dirpath, name)
            try:
                st = os.stat(file)
            except OSError:  # a broken symlink: its own times, so fixing it is seen
                st = os.lstat(file)
            h.update(_bytes(f"{dirpath[len(str(path)):]}/{name}|{st.st_size}|"
                            f"{st.st_mtime_ns}"))
    return h.hexdigest()


def _cache_read(key: str) -> FerSplit | None:
    """The cached split, or None: when there is none, and when it cannot be read
    (truncated, empty, from another program), which is said, and the file is rebuilt."""
    file = cache_dir() / f"{key}.npz"
    if not file.exists():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            problems = tuple(Problem(*p) for p in z["problems"].tolist())
            split = FerSplit(str(z["name"]), z["images"], z["labels"],
                             tuple(z["ids"].tolist()), problems)
    except Exception as exc:  # whatever is wrong with it, a cache is rebuilt, not fatal
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"note: the data cache {file} cannot be read ({reason}); rebuilding it",
              file=sys.stderr)
        with contextlib.suppress(OSError):
            file.unlink()
        return None
    with contextlib.suppress(OSError):
        os.utime(file)  # its mtime says when it was last used: pruning keeps recent ones
    return split


def _cache_write(key: str, split: FerSplit) -> None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.{os.getpid()}.tmp.npz"
        problems = np.array([[p.where, p.kind, p.detail] for p in split.problems],
                            dtype=str).reshape(-1, 3)
        np.savez(tmp, name=split.name, images=split.images, labels=split.labels,
                 ids=np.array(split.ids, dtype=str), problems=problems)
        os.replace(tmp, folder / f"{key}.npz")
    except OSError:
        return  # a cache that cannot be written only costs time
    prune_cache(folder, keep=folder / f"{key}.npz")


def cache_limit_bytes() -> int:
    value = os.environ.get("EDGEFER_CACHE_MAX_MB", "")
    try:
        return int(float(value) * 2**20) if value else _CACHE_MAX_BYTES
    except ValueError:
        return _CACHE_MAX_BYTES


def prune_cache(folder: Path, keep: Path | None = None) -> list[Path]:
    """Removes the least recently used splits beyond the cache's size limit (never
    ``keep``), and temporary files that a killed process left; returns what it removed."""
    now = time.time()
    removed: list[Path] = []
    entries = []
    for file in folder.glob("*.npz"):
        try:
            st = file.stat()
        except OSError:
            continue
        if file.name.endswith(".tmp.npz"):
            if now - st.st_mtime > _STALE_TMP_SECONDS:
                removed.append(file)
            continue
        entries.append((st.st_mtime, st.st_size, file))
    total, limit = sum(size for _, size, _ in entries), cache_limit_bytes()
    for _, size, file in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if file != keep:
            removed.append(file)
            total -= size
    for file in removed:
        with contextlib.suppress(OSError):
            file.unlink()
    return removed
