"""``edgefer predict``'s loop over inputs: one bad input is reported and skipped, the
rest still run, and the caller learns at the end which ones failed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2

from edgefer.errors import EdgeferError
from edgefer.outputs import protect
from edgefer.predict.annotate import draw_faces, write_image
from edgefer.predict.inputs import Input, Kind, expand_inputs, read_image, resolve_unknown
from edgefer.predict.recognizer import Face, Recognizer
from edgefer.predict.video import FrameResult, VideoSummary, run_video


class PredictFailed(EdgeferError):
    """Some inputs could not be read (each was reported as it failed)."""


@dataclass(frozen=True)
class ImageResult:
    input: str
    faces: tuple[Face, ...]
    output: Path | None

    def to_dict(self) -> dict:
        return {"type": "image", "input": self.input,
                "status": "ok" if self.faces else "no_face",
                "faces": [f.to_dict() for f in self.faces],
                **({"output": str(self.output)} if self.output else {})}

    def line(self) -> str:
        if not self.faces:
            return f"{self.input}: no face found"
        parts = [f"{f.label} {f.confidence:.2f} at {tuple(f.box.to_list())}" for f in self.faces]
        noun = "face" if len(self.faces) == 1 else "faces"
        return f"{self.input}: {len(self.faces)} {noun}: " + "; ".join(parts)


def predict_image(recognizer: Recognizer, item: Input, out: Path | None) -> ImageResult:
    assert item.path is not None
    image = read_image(item.path)
    recognizer.check_size(image, item.name)
    faces = recognizer.recognize(image)
    output = None
    if out is not None:
        rel = item.relative
        suffix = rel.suffix.lower() if rel.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
        output = write_image(out / rel.with_name(f"{rel.stem}.annotated{suffix}"),
                             draw_faces(image, faces))
    return ImageResult(item.name, faces, output)


def video_line(summary: VideoSummary) -> str:
    top = ", ".join(f"{label} {n}" for label, n in summary.labels.items()) or "none"
    text = (f"{summary.name}: {summary.frames} frames, a face in {summary.frames_with_face}"
            f" (main face: {top}), {summary.fps:.1f} fps")
    if summary.outputs:
        text += "; wrote " + ", ".join(str(p) for p in summary.outputs)
        if not any(p.name.endswith(".timeline.png") for p in summary.outputs):
            text += " (no timeline picture: pip install 'edgefer[plots]' for matplotlib)"
    return text


def predict_all(recognizer: Recognizer, args: Iterable[str], out: Path | None = None,
                as_json: bool = False, every: int = 1, max_frames: int | None = None,
                echo: Callable[[str], None] = print,
                warn: Callable[[str], None] = print) -> int:
    """Run every input; results go to ``echo`` (JSON lines with ``as_json``), problems to
    ``warn`` as they happen. Raises PredictFailed at the end if any input failed; returns
    the number of inputs run otherwise. The face detector is loaded first: a broken
    detector model is one ModelError, raised before any input runs."""
    recognizer.load_detector()
    items, problems = expand_inputs(args, skip=out)
    protect(item.path for item in items)  # no annotated output may replace an input
    failed = [p.name for p in problems]
    for problem in problems:
        _report_error(problem.name, problem.message, as_json, echo, warn)
    for item in items:
        try:
            _run_one(recognizer, item, out, as_json, every, max_frames, echo)
        except EdgeferError as exc:
            failed.append(item.name)
            _report_error(item.name, str(exc), as_json, echo, warn)
        except cv2.error as exc:
            failed.append(item.name)
            _report_error(item.name, f"{item.name}: OpenCV failed on it ({exc})", as_json,
                          echo, warn)
    total = len(items) + len(problems)
    if failed:
        raise PredictFailed(f"{len(failed)} of {total} inputs failed: " + ", ".join(failed))
    return total


def _run_one(recognizer: Recognizer, item: Input, out: Path | None, as_json: bool,
             every: int, max_frames: int | None, echo: Callable[[str], None]) -> None:
    item = resolve_unknown(item)
    if item.kind is Kind.IMAGE:
        result = predict_image(recognizer, item, out)
        echo(json.dumps(result.to_dict()) if as_json else result.line())
        return

    def on_frame(frame: FrameResult) -> None:
        echo(json.dumps({"type": "frame", "input": item.name, **frame.to_dict()}))

    source = item.camera if item.kind is Kind.CAMERA else item.path
    assert source is not None
    stem = out / item.relative.with_suffix("") if out is not None else None
    summary = run_video(recognizer, source, every, stem, max_frames,
                        on_frame if as_json else None)
    if as_json:
        echo(json.dumps({"type": "video", "input": item.name, **summary.to_dict()}))
    else:
        echo(video_line(summary))


def _report_error(name: str, message: str, as_json: bool, echo: Callable[[str], None],
                  warn: Callable[[str], None]) -> None:
    if as_json:
        echo(json.dumps({"type": "error", "input": name, "error": message}))
    warn(f"error: {message}")
