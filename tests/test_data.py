"""FER2013 readers: both forms, class order, splits, caching, and bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_csv_from_folder, write_image_folder

from edgefer.cli import main
from edgefer.data import canonical_split, load_split
from edgefer.errors import DataError
from edgefer.labels import CLASS_NAMES


def test_folder_and_csv_give_the_same_split(synthetic_fer, tmp_path):
    csv_path = write_csv_from_folder(synthetic_fer, tmp_path / "fer2013.csv")
    from_folder = load_split(synthetic_fer, "train")
    from_csv = load_split(csv_path, "Training")
    assert from_csv.class_counts() == from_folder.class_counts()
    order = np.lexsort((from_folder.images.reshape(len(from_folder), -1).sum(1),
                        from_folder.labels))
    order_csv = np.lexsort((from_csv.images.reshape(len(from_csv), -1).sum(1), from_csv.labels))
    assert np.array_equal(from_folder.images[order], from_csv.images[order_csv])


def test_a_folder_holding_fer2013_csv_is_read_as_the_csv(synthetic_fer, tmp_path):
    write_csv_from_folder(synthetic_fer, tmp_path / "fer2013.csv")  # the Kaggle layout
    assert load_split(tmp_path, "train").class_counts() == \
        load_split(synthetic_fer, "train").class_counts()
    result = CliRunner().invoke(main, ["data", "info", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_gzipped_csv(synthetic_fer, tmp_path):
    csv_path = write_csv_from_folder(synthetic_fer, tmp_path / "fer2013.csv")
    gz = tmp_path / "fer2013.csv.gz"
    gz.write_bytes(gzip.compress(csv_path.read_bytes()))
    expected = load_split(csv_path, "test").class_counts()
    assert load_split(gz, "PublicTest").class_counts() == expected


def test_class_order_is_fer2013s_whatever_the_folder_order(synthetic_fer):
    split = load_split(synthetic_fer, "test")
    for image_id, label in zip(split.ids, split.labels, strict=True):
        assert image_id.split("/")[1] == CLASS_NAMES[label]


def test_split_aliases():
    assert canonical_split("PublicTest") == "test"
    assert canonical_split("Training") == "train"
    assert canonical_split("PrivateTest") == "private"
    with pytest.raises(DataError, match="unknown split"):
        canonical_split("holdout")


def test_second_load_comes_from_cache(synthetic_fer, monkeypatch):
    first = load_split(synthetic_fer, "train")
    monkeypatch.setattr("edgefer.data._read_folder", lambda *a: pytest.fail("cache missed"))
    second = load_split(synthetic_fer, "train")
    assert np.array_equal(first.images, second.images) and first.ids == second.ids


def test_info_counts_both_forms(synthetic_fer, tmp_path):
    csv_path = write_csv_from_folder(synthetic_fer, tmp_path / "fer2013.csv")
    runner = CliRunner()
    a = json.loads(runner.invoke(main, ["data", "info", str(synthetic_fer), "--json"]).output)
    b = json.loads(runner.invoke(main, ["data", "info", str(csv_path), "--json"]).output)
    for split in ("train", "test"):
        assert a["splits"][split]["per_class"] == b["splits"][split]["per_class"]
    assert a["splits"]["train"]["images"] == sum(12 + 3 * i for i in range(7))


@pytest.mark.slow
def test_real_fer2013_counts(real_fer2013):
    result = CliRunner().invoke(main, ["data", "info", str(real_fer2013), "--json"])
    info = json.loads(result.output)
    assert info["splits"]["train"]["images"] == 28709
    assert info["splits"]["test"]["images"] == 3589
    assert info["splits"]["train"]["per_class"]["disgust"] == 436
    assert info["splits"]["test"]["per_class"]["happy"] == 895
    assert info["splits"]["train"]["problems"].get("blank", 0) > 0


# --- bad input: message and exit code -------------------------------------------------

def _info(path):
    return CliRunner().invoke(main, ["data", "info", str(path)])


def _csv(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


def _row(label="3", n=2304, usage="Training"):
    return f'{label},"{" ".join(["7"] * n)}",{usage}\n'


@pytest.mark.parametrize(("body", "message"), [
    ("emotion,pixels,Usage\n" + _row() + _row(n=2300), "line 3: expected 2304 pixels, got 2300"),
    ("emotion,pixels,Usage\n" + _row(label="9"), "line 2: unknown emotion '9'"),
    ("emotion,Usage\n3,Training\n", "missing column(s) pixels"),
    ("", "missing column(s) emotion, pixels"),
])
def test_malformed_csv(tmp_path, body, message):
    result = _info(_csv(tmp_path, body))
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_csv_row_is_skipped_with_skip_bad(tmp_path):
    path = _csv(tmp_path, "emotion,pixels,Usage\n" + _row() + _row(n=10) + _row(label="0"))
    split = load_split(path, "train", skip_bad=True)
    assert len(split) == 2 and "bad_row" in [p.kind for p in split.problems]


def test_empty_folder(tmp_path):
    (tmp_path / "train" / "happy").mkdir(parents=True)
    result = _info(tmp_path)
    assert result.exit_code == 1 and "no images found" in result.output


def test_folder_without_splits(tmp_path):
    result = _info(tmp_path)
    assert result.exit_code == 1 and "holds no FER2013 split" in result.output


def test_unknown_class_folder(tmp_path):
    write_image_folder(tmp_path, {n: (1, 1) for n in CLASS_NAMES})
    (tmp_path / "train" / "contempt").mkdir()
    (tmp_path / "train" / "contempt" / "x.png").write_bytes(b"")
    result = _info(tmp_path)
    assert result.exit_code == 1 and "unknown class folder" in result.output
    assert "contempt" in result.output


def test_corrupt_image_is_named_and_skippable(tmp_path):
    write_image_folder(tmp_path, {n: (2, 1) for n in CLASS_NAMES})
    bad = tmp_path / "train" / "fear" / "Training_broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"Training_broken\.png.*data info .* --skip-bad"):
        load_split(tmp_path, "train")
    split = load_split(tmp_path, "train", skip_bad=True)
    assert len(split) == 14
    assert [p.kind for p in split.problems] == ["unreadable"]
    result = _info(tmp_path)
    assert result.exit_code == 1 and "Training_broken.png" in result.output
    result = CliRunner().invoke(main, ["data", "info", str(tmp_path), "--skip-bad"])
    assert result.exit_code == 0 and "1 unreadable" in result.output


def test_wrong_size_image(tmp_path):
    import cv2

    write_image_folder(tmp_path, {n: (1, 1) for n in CLASS_NAMES})
    cv2.imwrite(str(tmp_path / "train" / "sad" / "big.png"), np.zeros((64, 64), np.uint8) + 9)
    with pytest.raises(DataError, match=r"big\.png: image is 64x64, expected 48x48"):
        load_split(tmp_path, "train")


def test_missing_path():
    result = _info("/nonexistent/fer2013")
    assert result.exit_code == 1 and "not found" in result.output
