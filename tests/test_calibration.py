"""Calibration subsets: deterministic, stratified, hash-checked, and fed to every quantizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_image_folder

from edgefer.calibration import CalibrationSet, Manifest, build_manifest, stratified_counts
from edgefer.cli import main
from edgefer.data import load_split
from edgefer.errors import DataError
from edgefer.labels import CLASS_NAMES
from edgefer.preprocess import Preprocess


def test_build_twice_is_byte_identical(synthetic_fer, tmp_path):
    runner = CliRunner()
    outs = []
    for name in ("a.json", "b.json"):
        result = runner.invoke(main, ["calibrate", "build", "--data", str(synthetic_fer),
                                      "--size", "30", "--seed", "3", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    body = json.loads(outs[0])
    assert body["size"] == 30 and "pixels" not in outs[0].decode()


def test_class_proportions_within_one_image(synthetic_fer):
    split = load_split(synthetic_fer, "train")
    manifest = build_manifest(synthetic_fer, size=40, seed=1)
    counts = np.bincount(split.labels, minlength=7)
    expected = counts * 40 / counts.sum()
    got = np.array([manifest.class_counts[c] for c in CLASS_NAMES])
    assert got.sum() == 40
    assert np.all(np.abs(got - expected) <= 1)


def test_stratified_counts_sum_exactly():
    counts = stratified_counts(np.array([3995, 436, 4097, 7215, 4830, 3171, 4965]), 500)
    assert counts.sum() == 500 and counts[1] >= 7


def test_different_seed_different_subset(synthetic_fer):
    assert build_manifest(synthetic_fer, 30, 0).ids != build_manifest(synthetic_fer, 30, 1).ids


def test_manifest_against_different_data_says_so(synthetic_fer, tmp_path):
    path = build_manifest(synthetic_fer, 30, 0).write(tmp_path / "m.json")
    other = write_image_folder(tmp_path / "other", {n: (12 + 3 * i, 4) for i, n in
                                                    enumerate(CLASS_NAMES)}, seed=99)
    with pytest.raises(DataError, match="differ from the data the manifest"):
        CalibrationSet.from_manifest(path, other, Preprocess())
    result = CliRunner().invoke(main, ["calibrate", "check", str(path), "--data", str(other)])
    assert result.exit_code == 1 and "differ" in result.output


def test_malformed_manifest(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="malformed calibration manifest"):
        Manifest.read(bad)


def test_one_set_feeds_tflite_onnx_and_nncf(synthetic_fer, tmp_path):
    path = build_manifest(synthetic_fer, 14, 0).write(tmp_path / "m.json")
    calib = CalibrationSet.from_manifest(path, synthetic_fer, Preprocess())
    tflite_batches = list(calib.tflite_representative_dataset()())
    assert len(tflite_batches) == 14 and tflite_batches[0][0].shape == (1, 48, 48, 1)
    pytest.importorskip("onnxruntime")
    reader = calib.onnx_reader("face")
    first = reader.get_next()
    assert first["face"].shape == (1, 48, 48, 1)
    assert sum(1 for _ in iter(reader.get_next, None)) == 13
    reader.rewind()
    assert np.array_equal(reader.get_next()["face"], first["face"])
    pytest.importorskip("nncf")
    assert len(list(calib.nncf_dataset().get_inference_data())) == 14


@pytest.mark.slow
def test_committed_default_manifest_matches_real_data(real_fer2013):
    from edgefer.calibration import DEFAULT_MANIFEST

    calib = CalibrationSet.from_manifest(DEFAULT_MANIFEST, real_fer2013, Preprocess())
    assert len(calib) == 500
