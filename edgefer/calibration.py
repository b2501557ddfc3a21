"""Calibration subsets: a deterministic, class-stratified slice of the training split.

A manifest names the chosen images (file names or CSV row ids) and hashes the data it
was drawn from; it never holds pixels. :class:`CalibrationSet` feeds the same images to
TFLite's representative dataset, ONNX Runtime's ``CalibrationDataReader`` and NNCF.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.data import FerSplit, load_split
from edgefer.errors import DataError
from edgefer.labels import CLASS_NAMES
from edgefer.outputs import write_text_atomic
from edgefer.preprocess import Preprocess

MANIFEST_VERSION = 1


def stratified_counts(class_counts: np.ndarray, size: int) -> np.ndarray:
    """Per-class sample sizes proportional to ``class_counts`` that sum to ``size``."""
    total = int(class_counts.sum())
    if not 0 < size <= total:
        raise DataError(f"subset size must be 1..{total}, got {size}")
    exact = class_counts * size / total
    counts = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - counts), kind="stable")
    counts[remainder_order[: size - counts.sum()]] += 1
    return counts


def choose_subset(split: FerSplit, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a deterministic class-stratified subset of ``split``."""
    per_class = stratified_counts(np.bincount(split.labels, minlength=len(CLASS_NAMES)), size)
    rng = np.random.Generator(np.random.PCG64(seed))
    ids = np.asarray(split.ids, dtype=object)
    chosen: list[np.ndarray] = []
    for label, n in enumerate(per_class):
        members = np.flatnonzero(split.labels == label)
        members = members[np.argsort(ids[members], kind="stable")]  # order-independent
        chosen.append(rng.permutation(members)[:n])
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class Manifest:
    """What a calibration manifest holds: names and hashes, never pixels."""

    split: str
    seed: int
    ids: tuple[str, ...]
    class_counts: dict[str, int]
    source_sha256: str
    subset_sha256: str

    def to_json(self) -> str:
        body = {
            "format": "edgefer-calibration",
            "version": MANIFEST_VERSION,
            "split": self.split,
            "seed": self.seed,
            "size": len(self.ids),
            "class_counts": self.class_counts,
            "source_sha256": self.source_sha256,
            "subset_sha256": self.subset_sha256,
            "ids": list(self.ids),
        }
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: str | os.PathLike) -> Manifest:
        try:
            body = json.loads(Path(path).read_text())
            if body.get("format") != "edgefer-calibration":
                raise DataError(f"{path} is not an edgefer calibration manifest")
            return cls(str(body["split"]), int(body["seed"]), tuple(body["ids"]),
                       dict(body["class_counts"]), str(body["source_sha256"]),
                       str(body["subset_sha256"]))
        except FileNotFoundError:
            raise DataError(f"calibration manifest not found: {path}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}: malformed calibration manifest ({exc})") from exc
        except RecursionError:
            raise DataError(f"{path}: malformed calibration manifest (nested too deeply)") \
                from None

    def write(self, path: str | os.PathLike) -> Path:
        return write_text_atomic(path, self.to_json())


def build_manifest(source: str | os.PathLike, size: int = 500, seed: int = 0,
                   split: str = "train") -> Manifest:
    data = load_split(source, split, skip_bad=True)
    subset = data.subset(choose_subset(data, size, seed))
    return Manifest(data.name, seed, subset.ids, subset.class_counts(),
                    data.content_sha256(), subset.content_sha256())


def default_manifest_name(size: int, seed: int) -> str:
    return f"fer2013-train-{size}-seed{seed}.json"


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """Preprocessed calibration faces, in the forms each quantizer asks for."""

    faces: np.ndarray  # uint8 (N, 48, 48)
    preprocess: Preprocess

    @classmethod
    def from_manifest(cls, manifest_path: str | os.PathLike, source: str | os.PathLike,
                      preprocess: Preprocess) -> CalibrationSet:
        manifest = Manifest.read(manifest_path)
        data = load_split(source, manifest.split, skip_bad=True)
        position = {image_id: i for i, image_id in enumerate(data.ids)}
        missing = [i for i in manifest.ids if i not in position]
        if missing:
            raise DataError(f"the data at {source} differ from the data the manifest "
                            f"{manifest_path} was built from: {len(missing)} of its images "
                            f"are missing (first: {missing[0]})")
        subset = data.subset(np.array([position[i] for i in manifest.ids]))
        if subset.content_sha256() != manifest.subset_sha256:
            raise DataError(f"the data at {source} differ from the data the manifest "
                            f"{manifest_path} was built from, or the manifest was edited: "
                            "the images it names do not hash as they did (other pixels, "
                            "labels or images)")
        return cls(subset.images, preprocess)

    def __len__(self) -> int:
        return len(self.faces)

    def images(self) -> np.ndarray:
        """All the faces, preprocessed: the model's inputs."""
        return self.preprocess(self.faces)

    def batches(self, batch_size: int = 1) -> Iterator[np.ndarray]:
        for start in range(0, len(self.faces), batch_size):
            yield self.preprocess(self.faces[start:start + batch_size])

    def tflite_representative_dataset(self):
        """A callable for ``TFLiteConverter.representative_dataset``."""
        def generate():
            for batch in self.batches(1):
                yield [batch]
        return generate

    def onnx_reader(self, input_name: str):
        """An ``onnxruntime.quantization.CalibrationDataReader`` over these faces."""
        from onnxruntime.quantization import CalibrationDataReader

        calibration = self

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = calibration.batches(1)

            def get_next(self):
                batch = next(self._it, None)
                return None if batch is None else {input_name: batch}

            def rewind(self) -> None:
                self._it = calibration.batches(1)

        return _Reader()

    def nncf_dataset(self):
        """An ``nncf.Dataset`` over these faces (one preprocessed image per item)."""
        import nncf

        return nncf.Dataset(list(self.batches(1)))


DEFAULT_MANIFEST = (Path(__file__).resolve().parent.parent / "calibration"
                    / default_manifest_name(500, 0))
