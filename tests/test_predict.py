"""edgefer predict: detection, alignment, crops, the Recognizer API, videos and the CLI,
on a real exported model (a width-0.25 MobileNetV3, INT8 TFLite with edgefer metadata)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgefer.cli import main
from edgefer.errors import DataError, ModelError
from edgefer.labels import CLASS_NAMES
from edgefer.outputs import PartialFile
from edgefer.predict import (
    Box,
    Detection,
    DetectMode,
    ImageTooSmall,
    Recognizer,
    RecognizerOptions,
)
from edgefer.predict.detect import face_crop, parse_yunet, pick_eye_pair
from edgefer.predict.inputs import Kind, expand_inputs
from edgefer.predict.run import predict_all
from edgefer.predict.video import VideoWriter, run_video
from edgefer.shipped import SHIPPED_INT8, SHIPPED_NAME

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / SHIPPED_NAME / SHIPPED_INT8
# Where the astronaut's face is in skimage.data.astronaut() (512x512), checked by eye.
ASTRONAUT_FACE = Box(170, 60, 105, 105)


def make_mnv3_exports(folder: Path) -> dict[str, Path]:
    """The shipped architecture at width 0.25: an edgefer Keras folder and its INT8
    TFLite export (int8 input and output, edgefer metadata), untrained."""
    from _bench_models import keras_to_tflite

    from edgefer.artifacts import METADATA_KEY, tflite_with_metadata
    from edgefer.model.mobilenetv3 import ModelConfig, build_model
    from edgefer.model.store import Stage, save_model
    from edgefer.preprocess import ModelInfo

    config = ModelConfig(width=0.25)
    model = build_model(config)
    info = ModelInfo(name="predict-test", precision="int8")
    keras_dir = save_model(model, folder / "keras", config, Stage.FLOAT, info)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected"
        converted = keras_to_tflite(model, lambda: (
            [rng.uniform(-1, 1, (1, 48, 48, 1)).astype(np.float32)] for _ in range(8)))
    data = tflite_with_metadata(converted,
                                {METADATA_KEY: json.dumps(info.to_dict()).encode()})
    tflite = folder / "predict-test-int8.tflite"
    tflite.write_bytes(data)
    return {"keras": keras_dir, "tflite": tflite}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("tensorflow")
    return make_mnv3_exports(tmp_path_factory.mktemp("predict-model"))


@pytest.fixture(scope="module")
def model(exports) -> Path:
    return exports["tflite"]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])  # RGB -> BGR


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut) -> dict[str, Path]:
    """A folder with a photo, a no-face image and a face crop; a corrupt file beside it."""
    root = tmp_path_factory.mktemp("photos")
    folder = root / "album"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "astronaut.jpg"), astronaut)
    cv2.imwrite(str(folder / "sub" / "wall.png"), np.full((300, 400), 128, np.uint8))
    face = ASTRONAUT_FACE
    crop = cv2.cvtColor(astronaut[face.y:face.y + face.h, face.x:face.x + face.w],
                        cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "crop48.png"), cv2.resize(crop, (48, 48),
                                                      interpolation=cv2.INTER_AREA))
    (folder / "notes.txt").write_text("not an image, skipped in folders\n")
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    return {"root": root, "folder": folder, "photo": folder / "astronaut.jpg",
            "wall": folder / "sub" / "wall.png", "crop": folder / "crop48.png",
            "corrupt": corrupt}


@pytest.fixture(scope="module")
def recognizer(model) -> Recognizer:
    return Recognizer.from_file(model, threads=1)


class NoDetector:
    """Fails the test if detection runs."""

    def detect(self, image, near=None):
        raise AssertionError("the detector ran on a face crop")


def run_cli(*args: str):
    return CliRunner().invoke(main, ["predict", *args])


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10) -> Path:
    """A test video from BGR frames (mp4v for .mp4, MJPG otherwise)."""
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV cannot write {path.suffix} videos")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder`` (dot-named temp files included), relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# --- pure pieces -------------------------------------------------------------------

def test_box_iou_and_grow():
    a, b = Box(0, 0, 10, 10), Box(5, 0, 10, 10)
    assert a.iou(a) == 1.0
    assert a.iou(b) == pytest.approx(50 / 150)
    assert a.iou(Box(20, 20, 5, 5)) == 0.0
    assert Box(2, 2, 10, 10).grown(0.5, 14, 14) == Box(0, 0, 14, 14)


def test_face_crop_levels_tilted_eyes():
    """Two dots tilted by 20 degrees come out level (same row) in the aligned crop."""
    image = np.zeros((200, 200), np.uint8)
    angle = np.radians(20)
    centre = np.array([100.0, 100.0])
    offset = 30 * np.array([np.cos(angle), np.sin(angle)])
    left, right = centre - offset, centre + offset
    for x, y in (left, right):
        cv2.circle(image, (round(x), round(y)), 4, 255, -1)
    detection = Detection(Box(50, 50, 100, 100), eyes=(tuple(left), tuple(right)))
    assert detection.eye_angle == pytest.approx(20)
    crop = face_crop(image, detection, 48, margin=0.0)
    assert crop.shape == (48, 48)
    ys, xs = np.nonzero(crop > 128)
    left_rows, right_rows = ys[xs < 24], ys[xs >= 24]
    assert abs(left_rows.mean() - right_rows.mean()) < 1.0
    unaligned = face_crop(image, detection, 48, margin=0.0, align=False)
    ys, xs = np.nonzero(unaligned > 128)
    assert ys[xs >= 24].mean() - ys[xs < 24].mean() > 5


def test_eye_pair_rejects_implausible_pairs():
    box = Box(0, 0, 100, 100)
    assert pick_eye_pair([(30, 40, 20), (70, 42, 22)], box) == ((30, 40), (70, 42))
    assert pick_eye_pair([(30, 40, 20), (40, 40, 20)], box) is None  # one half only
    assert pick_eye_pair([(45, 40, 20), (55, 40, 20)], box) is None  # too close
    assert pick_eye_pair([(30, 20, 20), (60, 60, 20)], box) is None  # tilted > 30 degrees


def test_parse_yunet_rows():
    row = np.array([[10, 20, 50, 60, 40, 35, 22, 36, 30, 50, 25, 60, 38, 61, 0.9]], np.float32)
    (det,) = parse_yunet(row, dx=5, dy=7)
    assert det.box == Box(15, 27, 50, 60)
    assert det.score == pytest.approx(0.9)
    assert det.eyes == ((27.0, 43.0), (45.0, 42.0))  # sorted left to right in the image
    assert parse_yunet(None) == []


def test_expand_inputs(photos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    items, problems = expand_inputs([str(photos["folder"]), str(photos["corrupt"]), "0",
                                     "missing.jpg"])
    kinds = [(i.kind, i.path.name if i.path else i.camera) for i in items]
    assert kinds == [(Kind.IMAGE, "astronaut.jpg"), (Kind.IMAGE, "crop48.png"),
                     (Kind.IMAGE, "wall.png"), (Kind.IMAGE, "corrupt.jpg"), (Kind.CAMERA, 0)]
    assert items[2].relative == Path("album/sub/wall.png")
    assert [p.name for p in problems] == ["missing.jpg"]
    assert "missing.jpg" in problems[0].message


def test_partial_file_commits_or_discards(tmp_path):
    target = tmp_path / "sub" / "result.csv"
    with PartialFile(target) as partial:
        partial.tmp.write_text("whole")
        assert partial.tmp.name == ".result.partial.csv"
    assert target.read_text() == "whole"
    assert files_in(tmp_path) == ["sub/result.csv"]
    for error in (KeyboardInterrupt, DataError):
        with pytest.raises(error), PartialFile(tmp_path / "other.png") as partial:
            partial.tmp.write_text("half")
            raise error()
        assert files_in(tmp_path) == ["sub/result.csv"]


def test_video_writer_discards_on_interrupt(tmp_path):
    frame = np.zeros((64, 64, 3), np.uint8)
    with VideoWriter(tmp_path / "kept.mp4", 10, (64, 64)) as writer:
        writer.write(frame)
    kept = writer.path
    with pytest.raises(KeyboardInterrupt), VideoWriter(tmp_path / "cut.mp4", 10,
                                                       (64, 64)) as writer:
        writer.write(frame)
        assert writer._partial.tmp.exists()
        raise KeyboardInterrupt
    assert files_in(tmp_path) == [kept.name]
    assert writer.close() is None  # closing again does nothing


def test_options_are_validated():
    with pytest.raises(ValueError):
        RecognizerOptions(detect="sometimes")
    with pytest.raises(Exception, match="margin"):
        RecognizerOptions(margin=2.0)


# --- the Python API on a real export -----------------------------------------------

def test_recognize_photo(recognizer, astronaut):
    faces = recognizer.recognize(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.box.iou(ASTRONAUT_FACE) > 0.6
    assert face.label in CLASS_NAMES
    assert face.classes == CLASS_NAMES
    assert len(face.probabilities) == 7
    assert sum(face.probabilities) == pytest.approx(1.0, abs=0.02)
    assert face.confidence == max(face.probabilities)
    assert face.label == CLASS_NAMES[int(np.argmax(face.probabilities))]
    record = face.to_dict()
    assert record["box"] == face.box.to_list()
    assert set(record["probabilities"]) == set(CLASS_NAMES)
    # the same face from a gray copy
    (gray_face,) = recognizer.recognize(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))
    assert gray_face.box == face.box


def test_no_face_is_empty(recognizer):
    assert recognizer.recognize(np.full((480, 640, 3), 128, np.uint8)) == ()


def test_crop_fast_path_skips_detection(model, photos):
    crop = cv2.imread(str(photos["crop"]), cv2.IMREAD_GRAYSCALE)
    fast = Recognizer.from_file(model, detector=NoDetector())
    (face,) = fast.recognize(crop)
    assert face.box == Box(0, 0, 48, 48)
    assert fast.crops(crop, fast.detect(crop))[0].tolist() == crop.tolist()
    forced = Recognizer.from_file(model, options=RecognizerOptions(detect=DetectMode.ALWAYS),
                                  detector=NoDetector())
    with pytest.raises(AssertionError, match="detector ran"):
        forced.recognize(crop)


def test_no_detect_takes_whole_image(model, astronaut):
    whole = Recognizer.from_file(model, options=RecognizerOptions(detect="never"),
                                 detector=NoDetector())
    (face,) = whole.recognize(astronaut)
    assert face.box == Box(0, 0, 512, 512)


def test_tiny_images_are_too_small_not_a_face(model):
    """Nothing below half the model's input side (24 px) is taken as a face, in any mode;
    24 px and the model's own 48 px still are."""
    for detect in DetectMode:
        recognizer = Recognizer.from_file(model, options=RecognizerOptions(detect=detect),
                                          detector=NoDetector())
        assert recognizer.min_side == 24
        for shape in ((1, 1), (10, 10), (23, 23), (10, 300)):
            with pytest.raises(ImageTooSmall, match=r"too small for a face \(\d+x\d+ px; "
                                                    r"need at least 24 px\)"):
                recognizer.recognize(np.full(shape, 128, np.uint8))
        if detect is not DetectMode.ALWAYS:
            for side in (24, 48):
                (face,) = recognizer.recognize(np.full((side, side), 128, np.uint8))
                assert face.box == Box(0, 0, side, side)
    assert issubclass(ImageTooSmall, DataError)


def test_keras_folder_and_tflite_agree_on_boxes(exports, astronaut):
    keras_faces = Recognizer.from_file(exports["keras"]).recognize(astronaut)
    tflite_faces = Recognizer.from_file(exports["tflite"]).recognize(astronaut)
    assert [f.box for f in keras_faces] == [f.box for f in tflite_faces]


def test_runs_without_tensorflow(model, photos):
    """The runtime-only install: LiteRT and OpenCV, TensorFlow not importable."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "tf_keras", "keras"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import cv2
        from edgefer.predict import Recognizer
        recognizer = Recognizer.from_file({str(model)!r})
        faces = recognizer.recognize(cv2.imread({str(photos["photo"])!r}))
        assert len(faces) == 1, faces
        assert "tensorflow" not in sys.modules
        print("ok", faces[0].label)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


# --- the command line --------------------------------------------------------------

def test_cli_folder_image_and_corrupt_file(model, photos, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(photos["folder"]), str(photos["corrupt"]), str(photos["photo"]),
                     "--model", str(model), "--out", str(out), "--json")
    assert result.exit_code == 1
    assert "corrupt.jpg" in result.stderr
    assert "1 of 5 inputs failed" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["type"], Path(r["input"]).name) for r in records] == [
        ("image", "astronaut.jpg"), ("image", "crop48.png"), ("image", "wall.png"),
        ("error", "corrupt.jpg"), ("image", "astronaut.jpg")]
    photo, crop, wall, corrupt, again = records
    assert photo["status"] == "ok" and len(photo["faces"]) == 1
    assert again["faces"] == photo["faces"]
    assert crop["faces"][0]["box"] == [0, 0, 48, 48]
    assert wall["status"] == "no_face" and wall["faces"] == []
    assert "corrupt.jpg" in corrupt["error"]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["album/astronaut.annotated.jpg", "album/crop48.annotated.png",
                       "album/sub/wall.annotated.png", "astronaut.annotated.jpg"]
    annotated = cv2.imread(str(out / "astronaut.annotated.jpg"))
    assert annotated.shape == (512, 512, 3)
    assert np.abs(annotated.astype(int) - cv2.imread(str(photos["photo"])).astype(int)).max() > 100
    assert cv2.imread(str(out / "album/crop48.annotated.png")).shape[0] >= 240  # enlarged


def test_cli_text_output_and_clean_exit(model, photos):
    result = run_cli(str(photos["photo"]), str(photos["wall"]), "--model", str(model))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{photos['photo']}: 1 face: ")
    assert lines[1] == f"{photos['wall']}: no face found"


def test_cli_video(model, astronaut, tmp_path):
    """A 12-frame MJPG video: the face moves, then leaves for frames 6..7."""
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    face = cv2.resize(astronaut, (480, 480), interpolation=cv2.INTER_AREA)
    for i in range(12):
        frame = np.full((480, 640, 3), 96, np.uint8)
        if i not in (6, 7):
            frame[:, 8 * i:8 * i + 480] = face
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    result = run_cli(str(video), "--model", str(model), "--out", str(out), "--every", "3",
                     "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    frames = [r for r in records if r["type"] == "frame"]
    assert [r["frame"] for r in frames] == list(range(12))
    faces = [len(r["faces"]) for r in frames]
    # frame 6: full detection finds no face; 7, 8: nothing to track; 9: detected again
    assert faces == [1] * 6 + [0] * 3 + [1] * 3
    tracks = [f["track"] for r in frames for f in r["faces"]]
    assert tracks == [1] * 6 + [2] * 3  # one track, then a new one after the gap
    summary = records[-1]
    assert summary["type"] == "video" and summary["frames"] == 12
    with (out / "clip.frames.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == list(range(12))
    assert [r["detected"] for r in rows[:4]] == ["1", "0", "0", "1"]
    assert rows[0]["label"] in CLASS_NAMES and rows[6]["label"] == ""
    timeline = cv2.imread(str(out / "clip.timeline.png"))
    assert timeline is not None and timeline.shape[1] > timeline.shape[0]
    annotated = [p for p in out.iterdir() if p.name.startswith("clip.annotated.")]
    assert len(annotated) == 1
    capture = cv2.VideoCapture(str(annotated[0]))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    capture.release()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_interrupted_video_leaves_no_partial_files(model, astronaut, tmp_path,
                                                       monkeypatch):
    """Ctrl-C in the middle of a video: the KeyboardInterrupt goes on up (the CLI says
    "interrupted", exit 1) and no half-written output stays in --out."""
    import edgefer.predict.video as video

    face = cv2.resize(astronaut, (240, 240), interpolation=cv2.INTER_AREA)
    clip = write_video(tmp_path / "clip.mp4", [face] * 12)
    out = tmp_path / "out"
    seen: list[list[str]] = []
    draw = video.draw_faces

    def draw_then_interrupt(*args, **kwargs):
        seen.append(files_in(out))
        if len(seen) == 4:
            raise KeyboardInterrupt
        return draw(*args, **kwargs)

    monkeypatch.setattr(video, "draw_faces", draw_then_interrupt)
    recognizer = Recognizer.from_file(model)
    with pytest.raises(KeyboardInterrupt):
        run_video(recognizer, clip, out_stem=out / "clip")
    assert seen[-1] == [".clip.annotated.partial.mp4"]  # the writer had started
    assert files_in(out) == []
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        predict_all(recognizer, [str(clip)], out=out, echo=lambda _: None)
    assert files_in(out) == []
    seen.clear()
    result = run_cli(str(clip), "--model", str(model), "--out", str(out))
    assert result.exit_code == 1
    assert "interrupted" in result.stderr
    assert files_in(out) == []


def test_cli_tiny_images_are_errors(model, photos, tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    for name, shape in (("dot.png", (1, 1)), ("ten.png", (10, 10)), ("strip.png", (10, 300)),
                        ("ok24.png", (24, 24))):
        cv2.imwrite(str(folder / name), np.full(shape, 128, np.uint8))
    small_video = write_video(folder / "small.avi", [np.full((16, 16, 3), 90, np.uint8)] * 3)
    out = tmp_path / "out"
    result = run_cli(str(folder / "dot.png"), str(folder / "ten.png"), str(folder / "strip.png"),
                     str(small_video), str(folder / "ok24.png"), str(photos["crop"]),
                     "--model", str(model), "--out", str(out), "--json")
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["type"], Path(r["input"]).name) for r in records] == [
        ("error", "dot.png"), ("error", "ten.png"), ("error", "strip.png"),
        ("error", "small.avi"), ("image", "ok24.png"), ("image", "crop48.png")]
    assert records[1]["error"] == (f"{folder / 'ten.png'}: too small for a face "
                                   "(10x10 px; need at least 24 px)")
    assert "(1x1 px; need at least 24 px)" in records[0]["error"]
    assert "(300x10 px; need at least 24 px)" in records[2]["error"]
    assert "(16x16 px; need at least 24 px)" in records[3]["error"]
    assert records[4]["faces"][0]["box"] == [0, 0, 24, 24]
    assert records[5]["faces"][0]["box"] == [0, 0, 48, 48]
    assert "4 of 6 inputs failed" in result.stderr
    assert files_in(out) == ["crop48.annotated.png", "ok24.annotated.png"]
    result = run_cli(str(folder / "ten.png"), "--model", str(model), "--no-detect")
    assert result.exit_code == 1
    assert "too small for a face (10x10 px" in result.stderr
    assert "1 face" not in result.stdout


def test_cli_broken_detector_model_is_one_model_error(model, photos, tmp_path):
    broken = tmp_path / "yunet.onnx"
    broken.write_bytes(b"this is no ONNX model")
    inputs = [str(photos["photo"]), str(photos["crop"]), str(photos["wall"])]
    result = run_cli(*inputs, "--model", str(model), "--detector-model", str(broken))
    assert result.exit_code == 1
    assert result.stdout == ""  # no input ran
    assert result.stderr.startswith(f"Error: {broken}: ")
    assert result.stderr.count("cannot load it as a YuNet model") == 1
    assert "inputs failed" not in result.stderr
    recognizer = Recognizer.from_file(model, options=RecognizerOptions(detector_model=broken))
    ran: list[str] = []
    with pytest.raises(ModelError, match="YuNet"):
        predict_all(recognizer, inputs, echo=ran.append, warn=ran.append)
    assert ran == []


def test_cli_no_detect_and_missing_default_model(model, photos, tmp_path, monkeypatch):
    result = run_cli(str(photos["photo"]), "--model", str(model), "--no-detect", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["faces"][0]["box"] == [0, 0, 512, 512]
    monkeypatch.setenv("EDGEFER_MODEL", str(tmp_path / "no-model-here"))
    result = run_cli(str(photos["photo"]))
    assert result.exit_code == 1
    assert "no-model-here" in result.stderr and "--model" in result.stderr


def test_missing_model_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Recognizer.from_file(tmp_path / "nope.tflite")


@pytest.mark.skipif(not SHIPPED.exists(),
                    reason=f"needs the shipped model {SHIPPED} (exported after training)")
def test_shipped_model_says_astronaut_is_happy(astronaut):
    (face,) = Recognizer.from_file(SHIPPED).recognize(astronaut)
    assert face.label == "happy", face.to_dict()


# --- a model that does not match its metadata (issue 16, item 3) ------------------------

def _onnx_classifier(path: Path, side: int, channels: int, outputs: int) -> Path:
    """A linear ONNX classifier (N, side, side, channels) -> softmax(outputs) that
    carries edgefer's default metadata (48x48x1 input, FER2013's 7 classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgefer.artifacts import METADATA_KEY
    from edgefer.preprocess import ModelInfo

    weights = np.random.default_rng(0).normal(0, 0.01, (side * side * channels, outputs))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"])],
        "mismatch",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", side, side, channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", outputs])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(ModelInfo().to_dict())
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("side", "channels", "outputs", "told"), [
    (64, 3, 7, "does not match its metadata (its metadata says 48x48x1 input, 7 classes)"),
    (48, 1, 10, "7 classes): it gives 10 outputs"),
])
def test_predict_refuses_a_model_unlike_its_metadata_before_any_input(
        tmp_path, side, channels, outputs, told):
    model = _onnx_classifier(tmp_path / "odd.onnx", side, channels, outputs)
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((48, 48), 128, np.uint8))
    result = CliRunner().invoke(main, ["predict", str(face), "--model", str(model),
                                       "--no-detect"])
    assert result.exit_code == 1
    assert told in result.output and "Traceback" not in result.output
    assert "face.png" not in result.output  # stopped before the first input
    with pytest.raises(ModelError, match="does not match its metadata"):
        Recognizer.from_file(model)


def test_cli_engine_runs_the_onnx_model_with_openvino(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from _bench_models import band_faces, make_band_onnx

    model = make_band_onnx(tmp_path / "band.onnx")
    crop = tmp_path / "face.png"
    images, labels = band_faces(per_class=1)
    cv2.imwrite(str(crop), images[3])
    args = (str(crop), "--model", str(model), "--no-detect", "--json")
    default, openvino = run_cli(*args), run_cli(*args, "--engine", "openvino")
    assert default.exit_code == openvino.exit_code == 0, openvino.output
    faces = [json.loads(r.stdout)["faces"] for r in (default, openvino)]
    assert faces[0][0]["label"] == faces[1][0]["label"] == CLASS_NAMES[labels[3]]
    assert Recognizer.from_file(model, engine="openvino").runtime.engine == "openvino"
    refused = run_cli(*args, "--engine", "litert")
    assert refused.exit_code == 1 and "the engines that do: onnxruntime, openvino" in \
        refused.output
