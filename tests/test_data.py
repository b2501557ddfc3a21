"""FER2013 readers: both forms, class order, splits, caching, and bad input."""

from __future__ import annotations

import gzip
import json
import os
import time

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


# --- issue 16: caches, file names, symlinks, truncated files, CSV headers ----------------

@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_an_unreadable_cache_is_rebuilt_and_said(tmp_path, damage):
    from edgefer.data import cache_dir

    write_image_folder(tmp_path / "fer", {n: (1, 1) for n in CLASS_NAMES})
    first = load_split(tmp_path / "fer", "train")
    cached = max(cache_dir().glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)  # this one
    data = cached.read_bytes()
    cached.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    result = CliRunner().invoke(main, ["data", "info", str(tmp_path / "fer")])
    assert result.exit_code == 0, result.output
    assert "cannot be read" in result.output and "rebuilding it" in result.output
    assert np.array_equal(load_split(tmp_path / "fer", "train").images, first.images)
    assert cached.stat().st_size == len(data)  # written again, whole


def test_a_file_name_that_is_not_utf8_loads(tmp_path):
    import os

    import cv2

    root = write_image_folder(tmp_path / "fer", {n: (1, 1) for n in CLASS_NAMES})
    image = cv2.imread(str(next((root / "train" / "happy").iterdir())), cv2.IMREAD_GRAYSCALE)
    png = cv2.imencode(".png", image)[1]
    folder = os.fsencode(root / "train" / "happy")
    with open(folder + b"/Training_caf\xe9.png", "wb") as handle:  # Latin-1 'é'
        handle.write(png.tobytes())
    with open(folder + b"/Training_bad\xff.png", "wb") as handle:
        handle.write(b"not an image")
    split = load_split(root, "train", skip_bad=True)
    assert len(split) == 8 and split.content_sha256()
    assert load_split(root, "train", skip_bad=True).ids == split.ids  # from the cache
    result = CliRunner().invoke(main, ["data", "info", str(root), "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "Training_bad\\xff.png: unreadable" in result.output


def test_a_broken_symlink_is_a_bad_file_with_skip_bad(tmp_path):
    root = write_image_folder(tmp_path / "fer", {n: (1, 1) for n in CLASS_NAMES})
    (root / "train" / "sad" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (root / "train" / "sad" / "notes.png").symlink_to(tmp_path / "notes.txt")
    with pytest.raises(DataError, match=r"gone\.png: a broken symlink"):
        load_split(root, "train")
    split = load_split(root, "train", skip_bad=True)
    assert len(split) == 7
    assert sorted(p.where.rsplit("/", 1)[1] for p in split.problems) == ["gone.png",
                                                                        "notes.png"]


def test_a_truncated_jpeg_is_reported_like_a_corrupt_image(tmp_path):
    import cv2

    root = write_image_folder(tmp_path / "fer", {n: (1, 1) for n in CLASS_NAMES})
    face = cv2.imread(str(next((root / "train" / "angry").iterdir())), cv2.IMREAD_GRAYSCALE)
    whole = cv2.imencode(".jpg", face)[1].tobytes()
    (root / "train" / "angry" / "whole.jpg").write_bytes(whole)
    (root / "train" / "angry" / "cut.jpg").write_bytes(whole[: int(len(whole) * 0.6)])
    with pytest.raises(DataError, match=r"cut\.jpg: truncated JPEG"):
        load_split(root, "train")
    split = load_split(root, "train", skip_bad=True)
    assert len(split) == 8
    assert [(p.where.rsplit("/", 1)[1], p.kind) for p in split.problems] == [
        ("cut.jpg", "unreadable")]


def _usage_csv(tmp_path, header, usages, bom=False):
    path = tmp_path / "fer.csv"
    text = header + "\n" + "".join(_row(label=str(i % 7), usage=u)
                                   for i, u in enumerate(usages))
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_csv_header_with_a_byte_order_mark(tmp_path):
    path = _usage_csv(tmp_path, "emotion,pixels,Usage", ["Training"] * 3, bom=True)
    assert len(load_split(path, "train")) == 3
    path = _usage_csv(tmp_path, "Emotion, Pixels ,USAGE", ["Training"] * 2, bom=True)
    assert len(load_split(path, "train")) == 2


def test_csv_column_names_in_any_case_keep_the_test_split_apart(tmp_path):
    path = _usage_csv(tmp_path, "emotion,pixels,usage",
                      ["Training", "Training", "PublicTest", " publictest "])
    assert len(load_split(path, "train")) == 2
    assert len(load_split(path, "test")) == 2


def test_csv_usage_values_with_spaces_count_the_same_everywhere(tmp_path):
    path = _usage_csv(tmp_path, "emotion,pixels,Usage",
                      ["Training", "PublicTest ", "PublicTest "])
    result = CliRunner().invoke(main, ["data", "info", str(path), "--json"])
    info = json.loads(result.output)
    assert info["splits"]["test"]["images"] == len(load_split(path, "test")) == 2


def test_cache_keeps_recent_splits_within_its_limit(tmp_path, monkeypatch):
    from edgefer.data import prune_cache

    monkeypatch.setenv("EDGEFER_CACHE_MAX_MB", "0.003")  # about 3 kB
    files = []
    for age, name in enumerate(("new", "middle", "old", "oldest")):
        file = tmp_path / f"{name}.npz"
        file.write_bytes(b"x" * 1000)
        os.utime(file, (time.time() - 100 * age,) * 2)
        files.append(file)
    stale = tmp_path / "k.123.tmp.npz"  # left by a killed process
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200,) * 2)
    fresh = tmp_path / "k.456.tmp.npz"  # another process is writing it now
    fresh.write_bytes(b"x")
    removed = prune_cache(tmp_path, keep=files[3])
    assert sorted(p.name for p in removed) == ["k.123.tmp.npz", "old.npz"]
    assert [f.exists() for f in files] == [True, True, False, True] and fresh.exists()


def test_a_cache_read_marks_the_split_used(synthetic_fer):
    from edgefer.data import cache_dir

    load_split(synthetic_fer, "test")
    cached = max(cache_dir().glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)
    os.utime(cached, (1, 1))
    load_split(synthetic_fer, "test")
    assert cached.stat().st_mtime > 1e9
