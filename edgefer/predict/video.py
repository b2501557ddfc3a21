"""Videos and cameras: faces tracked over frames, a per-frame CSV, a timeline picture.

With ``every`` N > 1, the full detector runs on every Nth frame only; on the frames
between, each tracked face is searched for again near its last box and at about its size
(a few milliseconds instead of a full scan), and keeps its box for up to two frames if
that search misses.
Tracks are matched to new detections by overlap (IoU), so a face keeps its track number.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgefer.errors import ConfigError
from edgefer.outputs import PartialFile, write_bytes
from edgefer.predict.annotate import class_color, draw_faces
from edgefer.predict.detect import Detection
from edgefer.predict.inputs import open_video
from edgefer.predict.recognizer import Face, Recognizer
from edgefer.report import plots_available

MATCH_IOU = 0.3


@dataclass(frozen=True)
class TrackedFace:
    track: int
    face: Face


@dataclass(frozen=True)
class FrameResult:
    index: int
    time_s: float
    faces: tuple[TrackedFace, ...]
    detected: bool  # whether the full detector ran on this frame

    @property
    def main(self) -> TrackedFace | None:
        """The largest face, the one the timeline follows."""
        return max(self.faces, key=lambda t: t.face.box.area, default=None)

    def to_dict(self) -> dict:
        return {"frame": self.index, "time_s": round(self.time_s, 3),
                "faces": [{"track": t.track, **t.face.to_dict()} for t in self.faces]}


@dataclass
class _Track:
    id: int
    detection: Detection
    missed: int = 0


class FaceTracker:
    """Full detections every ``every`` frames, local re-detection and IoU matching between;
    a track keeps its last box for up to ``max_missed`` frames the local search misses."""

    def __init__(self, recognizer: Recognizer, every: int = 1, max_missed: int = 2) -> None:
        if every < 1:
            raise ConfigError(f"every must be at least 1, got {every}")
        self.recognizer = recognizer
        self.every = every
        self.max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 1

    def step(self, frame: np.ndarray, index: int) -> tuple[tuple[tuple[int, Detection], ...],
                                                            bool]:
        """((track id, detection) per face in ``frame``, whether a full detection ran)."""
        full = index % self.every == 0
        if full:
            self._match(self.recognizer.detect(frame))
        else:
            self._follow(frame)
        return tuple((t.id, t.detection) for t in self._tracks), full

    def _match(self, detections: tuple[Detection, ...]) -> None:
        """Greedy IoU matching: old tracks keep their ids, the rest start new tracks."""
        pairs = sorted(((t.detection.box.iou(d.box), ti, di)
                        for ti, t in enumerate(self._tracks)
                        for di, d in enumerate(detections)), reverse=True)
        track_of: dict[int, int] = {}
        used: set[int] = set()
        for iou, ti, di in pairs:
            if iou < MATCH_IOU:
                break
            if ti in used or di in track_of:
                continue
            used.add(ti)
            track_of[di] = self._tracks[ti].id
        tracks = []
        for di, detection in enumerate(detections):
            if di not in track_of:
                track_of[di] = self._next_id
                self._next_id += 1
            tracks.append(_Track(track_of[di], detection))
        self._tracks = tracks

    def _follow(self, frame: np.ndarray) -> None:
        kept = []
        for track in self._tracks:
            near = self.recognizer.detect(frame, near=track.detection.box)
            best = max(near, key=lambda d: d.box.iou(track.detection.box), default=None)
            if best is not None:
                track.detection, track.missed = best, 0
            else:
                track.missed += 1
            if track.missed <= self.max_missed:
                kept.append(track)
        self._tracks = kept


def frames(capture: cv2.VideoCapture, live: bool, max_frames: int | None = None
           ) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, seconds, BGR frame); seconds from the file's frame rate, or the wall clock
    for a camera."""
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 30.0
    start = time.monotonic()
    index = 0
    while max_frames is None or index < max_frames:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        yield index, (time.monotonic() - start) if live else index / fps, frame
        index += 1


@dataclass(frozen=True)
class VideoSummary:
    name: str
    frames: int
    frames_with_face: int
    labels: dict[str, int]  # frames per label of the main (largest) face
    seconds: float  # processing time
    outputs: tuple[Path, ...]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"frames": self.frames, "frames_with_face": self.frames_with_face,
                "labels": self.labels, "processing_fps": round(self.fps, 1),
                "outputs": [str(p) for p in self.outputs]}


class VideoWriter:
    """Annotated frames to ``path`` (mp4v; MJPG .avi if this OpenCV cannot write mp4),
    written to a PartialFile and renamed into place only by ``close()``. As a context
    manager it closes (keeps the video) when the block ends normally and discards the
    partial file on any exception, KeyboardInterrupt included."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = PartialFile(path)
        self._writer = cv2.VideoWriter(str(self._partial.tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                       fps, size)
        if not self._writer.isOpened():
            self._writer.release()
            self._partial.discard()
            self._partial = PartialFile(path.with_suffix(".avi"))
            self._writer = cv2.VideoWriter(str(self._partial.tmp),
                                           cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
        self.size = size
        self._closed = False

    @property
    def path(self) -> Path:
        return self._partial.path

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size)
        self._writer.write(frame)

    def close(self, keep: bool = True) -> Path | None:
        """Finish the file and rename it into place (``keep``) or delete it; the video's
        path, or None when nothing was kept. Closing again does nothing."""
        if self._closed:
            return None
        self._closed = True
        try:
            self._writer.release()
        except BaseException:
            self._partial.discard()
            raise
        if keep and self._partial.tmp.exists():
            return self._partial.commit()
        self._partial.discard()
        return None


def csv_header(classes: tuple[str, ...]) -> list[str]:
    return ["frame", "time_s", "detected", "track", "x", "y", "w", "h", "label",
            "confidence", *(f"p_{c}" for c in classes)]


def csv_rows(result: FrameResult, classes: tuple[str, ...]) -> list[list]:
    """One row per face; a frame without faces still gets one row (empty face fields)."""
    head = [result.index, f"{result.time_s:.3f}", int(result.detected)]
    if not result.faces:
        return [head + [""] * (7 + len(classes))]
    return [[*head, t.track, *t.face.box.to_list(), t.face.label, f"{t.face.confidence:.4f}",
             *(f"{p:.4f}" for p in t.face.probabilities)] for t in result.faces]


def run_video(recognizer: Recognizer, source: Path | int, every: int = 1,
              out_stem: Path | None = None, max_frames: int | None = None,
              on_frame: Callable[[FrameResult], None] | None = None) -> VideoSummary:
    """Run every frame of a video file or camera. With ``out_stem``, write
    ``STEM.annotated.mp4``, ``STEM.frames.csv`` and ``STEM.timeline.png``. A camera runs
    until ``max_frames`` or Ctrl-C; the outputs are written either way."""
    live = isinstance(source, int)
    name = f"camera {source}" if live else str(source)
    capture = open_video(source)
    tracker = FaceTracker(recognizer, every)
    classes = recognizer.classes
    rows = [csv_header(classes)]
    timeline: list[tuple[float, tuple[float, ...] | None]] = []
    labels: Counter[str] = Counter()
    writer: VideoWriter | None = None
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    count = with_face = 0
    start = time.perf_counter()
    outputs: list[Path] = []
    with ExitStack() as stack:  # on any exception, the partial video is deleted
        try:
            for index, t, frame in frames(capture, live, max_frames):
                if count == 0:
                    recognizer.check_size(frame, name)
                tracked, full = tracker.step(frame, index)
                faces = recognizer.classify(frame, tuple(d for _, d in tracked))
                result = FrameResult(index, t, tuple(TrackedFace(i, f) for (i, _), f
                                                     in zip(tracked, faces, strict=True)), full)
                count += 1
                main = result.main
                with_face += main is not None
                if main is not None:
                    labels[main.face.label] += 1
                timeline.append((t, main.face.probabilities if main else None))
                rows.extend(csv_rows(result, classes))
                if out_stem is not None:
                    if writer is None:
                        writer = stack.enter_context(VideoWriter(
                            out_stem.with_name(out_stem.name + ".annotated.mp4"),
                            fps if 0 < fps < 1000 else 30.0, (frame.shape[1], frame.shape[0])))
                    writer.write(draw_faces(frame, faces, [t.track for t in result.faces]))
                if on_frame is not None:
                    on_frame(result)
        except KeyboardInterrupt:
            if not live:
                raise
        finally:
            capture.release()
        if writer is not None:
            written = writer.close()
            outputs += [written] if written else []
    if out_stem is not None:
        outputs.append(write_csv(out_stem.with_name(out_stem.name + ".frames.csv"), rows))
        if plots_available():  # matplotlib is an extra (edgefer[plots])
            outputs.append(write_timeline(out_stem.with_name(out_stem.name + ".timeline.png"),
                                          timeline, classes, title=name))
    return VideoSummary(name, count, with_face, dict(labels.most_common()),
                        time.perf_counter() - start, tuple(outputs))


def write_csv(path: Path, rows: list[list]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    write_bytes(path, buffer.getvalue().encode())
    return path


def write_timeline(path: Path, timeline: list[tuple[float, tuple[float, ...] | None]],
                   classes: tuple[str, ...], title: str = "") -> Path:
    """Stacked class probabilities of the main face over time; blank where no face."""
    from matplotlib.figure import Figure

    times = np.array([t for t, _ in timeline], dtype=np.float64)
    probs = np.array([p if p is not None else [np.nan] * len(classes) for _, p in timeline],
                     dtype=np.float64).reshape(len(timeline), len(classes))
    fig = Figure(figsize=(10, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    colors = [tuple(c / 255 for c in reversed(class_color(n, classes))) for n in classes]
    if len(times):
        ax.stackplot(times, np.nan_to_num(probs).T, labels=classes, colors=colors,
                     linewidth=0)
        ax.set_xlim(times[0], max(times[-1], times[0] + 1e-3))
        missing = np.isnan(probs[:, 0])
        if missing.any():
            ax.fill_between(times, 0, 1, where=missing, facecolor="0.95", edgecolor="0.6",
                            hatch="//", linewidth=0, label="no face")
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_title(f"expressions over time: {title}" if title else "expressions over time")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes(path, buffer.getvalue())
    return path
