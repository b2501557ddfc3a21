"""End-to-end ``edgefer predict`` speed on a 640x480 frame with one face, one thread.

    python benchmarks/predict_fps.py [--model FILE.tflite] [--frames 200] [--every 5]

The frame is scikit-image's public-domain astronaut photo (``pip install scikit-image``)
scaled to 480x480 and centred on a 640x480 canvas. Two loops run on it:

- ``every_frame``: full face detection (Haar, with eye search), crop, model, each frame;
- ``video_every_N``: what ``edgefer predict VIDEO --every N`` does, full detection every
  Nth frame and local re-detection between (amortised over the frames, so means).

Each step is timed by the wall clock and by the thread's CPU time: on a machine busy
with other work, the CPU time is what the frame would take on an idle core. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edgefer.predict.recognizer import Recognizer
from edgefer.predict.video import FaceTracker
from edgefer.shipped import SHIPPED_INT8, SHIPPED_NAME


def astronaut_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """A BGR ``width`` x ``height`` frame with the astronaut photo's one face."""
    from skimage import data

    photo = cv2.resize(data.astronaut()[:, :, ::-1], (height, height),
                       interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 96, np.uint8)
    x0 = (width - height) // 2
    frame[:, x0:x0 + height] = photo
    return frame


class Clock:
    """Wall and thread-CPU time since the last ``lap``."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        spent = ((wall - self.wall) * 1e3, (cpu - self.cpu) * 1e3)
        self.wall, self.cpu = wall, cpu
        return spent


def summarise(samples: dict[str, list[tuple[float, float]]], average) -> dict:
    """Per step and clock: the average (median or mean) ms; fps and shares from them."""
    out: dict = {}
    for clock, k in (("wall", 0), ("cpu", 1)):
        ms = {step: round(average([s[k] for s in values]), 3)
              for step, values in samples.items()}
        total = average([sum(s[k] for s in parts)
                         for parts in zip(*samples.values(), strict=True)])
        classify = ms["crop"] + ms["model"]
        out[clock] = {
            "ms": {**ms, "total": round(total, 3)},
            "fps": round(1e3 / total, 1),
            "share": {"detection": round(ms["detect"] / (ms["detect"] + classify), 3),
                      "classification": round(classify / (ms["detect"] + classify), 3)},
        }
    return out


def every_frame(recognizer: Recognizer, frame: np.ndarray, frames: int) -> dict:
    samples: dict[str, list] = {"detect": [], "crop": [], "model": []}
    for _ in range(frames):
        clock = Clock()
        detections = recognizer.detect(frame)
        samples["detect"].append(clock.lap())
        crops = recognizer.crops(frame, detections)
        samples["crop"].append(clock.lap())
        recognizer.runtime.predict_faces(crops)
        samples["model"].append(clock.lap())
        if not detections:
            raise SystemExit("no face found in the benchmark frame")
    return summarise(samples, statistics.median)


def tracked(recognizer: Recognizer, frame: np.ndarray, frames: int, every: int) -> dict:
    tracker = FaceTracker(recognizer, every)
    samples: dict[str, list] = {"detect": [], "crop": [], "model": []}
    found = 0
    for index in range(frames):
        clock = Clock()
        pairs, _ = tracker.step(frame, index)
        samples["detect"].append(clock.lap())
        crops = recognizer.crops(frame, tuple(d for _, d in pairs)) if pairs else None
        samples["crop"].append(clock.lap())
        if crops is not None:
            recognizer.runtime.predict_faces(crops)
            found += 1
        samples["model"].append(clock.lap())
    return {**summarise(samples, statistics.fmean), "frames_with_face": found}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path,
                        default=Path("models") / SHIPPED_NAME / SHIPPED_INT8)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.model.exists():
        parser.error(f"model not found: {args.model} (pass --model FILE)")
    cv2.setNumThreads(args.threads)
    recognizer = Recognizer.from_file(args.model, threads=args.threads)
    frame = astronaut_frame()
    for _ in range(args.warmup):
        recognizer.recognize(frame)
    result = {
        "benchmark": "predict_fps",
        "model": str(args.model),
        "ran_on": recognizer.runtime.ran_on,
        "frame": [frame.shape[1], frame.shape[0]],
        "faces": len(recognizer.recognize(frame)),
        "threads": args.threads,
        "frames": args.frames,
        "every_frame": every_frame(recognizer, frame, args.frames),
        f"video_every_{args.every}": tracked(recognizer, frame, args.frames, args.every),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2),
                    "opencv": cv2.__version__},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
