"""Do exported models give the same answers on arm64 as on x86? Checked on the emulated
Raspberry Pi (``edgefer.edge.armpi``): labels and probabilities per face, and a bench run
there whose rows carry accuracy and agreement but no latency (emulated time is no Pi's).

The same code computes the outputs on both sides: in this process on the host, and as
``python -m edgefer.edge.arm_parity`` in the rootfs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path

import numpy as np

from edgefer.errors import ConfigError, EmulationError, ModelError

# fp32/fp16 outputs: float kernels of two instruction sets (NEON, AVX) may round a sum
# differently, never by more than this on a softmax output
FLOAT_TOLERANCE = 1e-4
# int8 outputs: each engine requantizes hidden layers with its own rounding per instruction
# set (ONNX Runtime's integer kernels differ between x86 and arm64), and one step of
# difference in a hidden layer can reach the output as more than one output step
# (measured: 1.51 steps on 1 of 64 faces for run 19's ONNX INT8, every label the same)
INT8_OUTPUT_STEPS = 2
# the formats the emulated Pi runs (its rootfs has LiteRT, ONNX Runtime, ncnn and MNN)
ARM_FORMATS = ("tflite", "onnx", "ncnn", "mnn")


@dataclass(frozen=True)
class Outputs:
    """One model's outputs for a set of faces on one machine."""

    probabilities: np.ndarray  # (faces, classes)
    ran_on: str


@dataclass(frozen=True)
class Parity:
    """One model on arm64 against the same model on x86, face by face."""

    model: str
    output: str  # the output tensor compared
    images: int
    same_labels: int
    max_diff: float  # largest |p_arm64 - p_x86| over every face and class
    worst_face: int
    tolerance: float  # INT8_OUTPUT_STEPS output steps (int8), FLOAT_TOLERANCE (float)
    ran_on_arm: str
    ran_on_x86: str

    @property
    def ok(self) -> bool:
        # a step of slack for float32 rounding of the dequantized value
        return self.same_labels == self.images and self.max_diff <= self.tolerance * 1.001

    def describe(self) -> str:
        verdict = "same" if self.ok else "DIVERGES"
        return (f"{self.model} output {self.output!r}: {verdict} on emulated arm64 - "
                f"{self.same_labels}/{self.images} labels agree, max |p diff| "
                f"{self.max_diff:.4g} at face {self.worst_face} (allowed {self.tolerance:.4g})")


def predict_outputs(models: Sequence[Path], faces: np.ndarray) -> list[Outputs]:
    """Each model's probabilities for ``faces`` (uint8 gray), one thread, XNNPACK on, ncnn
    in float32: its default float16 arithmetic on ARMv8.2 (and storage on x86) moved the
    fp32 export's probabilities by up to 0.0073 between a Cortex-A76 and x86, the
    precision ncnn picks per CPU rather than a kernel that differs; float32 on both: 8e-7."""
    from edgefer.runtimes import RuntimeOptions, load_runtime
    from edgefer.runtimes.ncnn import NcnnOptions

    options = RuntimeOptions(threads=1, xnnpack=True, engine_options=(NcnnOptions(fp16=False),))
    found = []
    for model in models:
        runtime = load_runtime(model, options)
        found.append(Outputs(np.asarray(runtime.predict_faces(faces), np.float32),
                             runtime.ran_on))
    return found


def output_tolerance(model: Path) -> tuple[str, float]:
    """(output name, the tolerance for it): INT8_OUTPUT_STEPS quantization steps of an
    integer output (a TFLite int8 output, or an ONNX output made by DequantizeLinear); for a
    float softmax of dequantized logits, what that many steps in every logit can move it;
    else FLOAT_TOLERANCE."""
    from edgefer.formats import format_of

    kind = format_of(model).name
    if kind in ("ncnn", "mnn"):  # float models only: edgefer makes no INT8 of either
        from edgefer.export.inspect import inspect_model

        return inspect_model(model).outputs[0].name, FLOAT_TOLERANCE
    if kind == "tflite":
        from edgefer.runtimes.litert import interpreter_module

        interp = interpreter_module()[0].Interpreter(model_path=str(model))
        detail = interp.get_output_details()[0]
        scale = float(detail["quantization"][0])
        return detail["name"], INT8_OUTPUT_STEPS * scale if scale > 0 else FLOAT_TOLERANCE
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model), load_external_data=False).graph
    name = graph.output[0].name
    producers = {out: node for node in graph.node for out in node.output}
    scales = {i.name: i for i in graph.initializer}

    def dequantize_step(tensor: str) -> float | None:
        node = producers.get(tensor)
        if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in scales:
            return None
        return float(numpy_helper.to_array(scales[node.input[1]]).max())

    step = dequantize_step(name)
    if step is not None:
        return name, INT8_OUTPUT_STEPS * step
    producer = producers.get(name)
    if producer is not None and producer.op_type == "Softmax":
        step = dequantize_step(producer.input[0])
        if step is not None:
            # |dp_i| <= 2 s p_i (1 - p_i) <= s / 2 when every logit moves by at most s
            return name, INT8_OUTPUT_STEPS * step / 2
    return name, FLOAT_TOLERANCE


def compare(model: Path, arm: Outputs, x86: Outputs) -> Parity:
    output, tolerance = output_tolerance(model)
    diff = np.abs(arm.probabilities - x86.probabilities)
    worst = int(np.unravel_index(int(diff.argmax()), diff.shape)[0]) if diff.size else 0
    same = int((arm.probabilities.argmax(1) == x86.probabilities.argmax(1)).sum())
    return Parity(model=model.name, output=output, images=len(diff), same_labels=same,
                  max_diff=float(diff.max()) if diff.size else 0.0, worst_face=worst,
                  tolerance=tolerance, ran_on_arm=arm.ran_on, ran_on_x86=x86.ran_on)


def check_models(models: Sequence[str | os.PathLike]) -> list[Path]:
    """The models as paths: files of ARM_FORMATS with different names, else an error."""
    from edgefer.formats import file_format_of, format_named

    suffixes = ", ".join(format_named(name).suffix for name in ARM_FORMATS)
    paths = [Path(m) for m in models]
    if not paths:
        raise ConfigError(f"--on armpi needs the MODEL files to run ({suffixes})")
    for path in paths:
        if getattr(file_format_of(path), "name", None) not in ARM_FORMATS:
            raise ConfigError(f"{path}: the emulated Pi runs {suffixes} models")
        if not path.is_file():
            raise ModelError(f"model not found: {path}")
    if len({p.name for p in paths}) != len(paths):
        raise ConfigError("models for the emulated Pi need different file names")
    return paths


def model_binds(models: Sequence[Path]) -> tuple[list, list[str]]:
    """Each model's folder mounted at /models/N (with the companions beside a model: an ONNX
    file's external data, an ncnn model's weights and record)."""
    from edgefer.edge.armpi import Bind

    binds, inside = [], []
    for i, model in enumerate(check_models(models)):
        model = model.resolve()
        binds.append(Bind(model.parent, f"/models/{i}"))
        inside.append(f"/models/{i}/{model.name}")
    return binds, inside


def arm_outputs(pi, models: Sequence[Path], faces: np.ndarray,
                timeout_s: float = 1800) -> list[Outputs]:
    """The models' outputs for ``faces`` computed in the emulated arm64 rootfs."""
    from edgefer.edge.armpi import PYTHON, Bind

    binds, inside = model_binds(models)
    with tempfile.TemporaryDirectory(prefix="edgefer-armpi-") as tmp:
        np.save(Path(tmp) / "faces.npy", np.ascontiguousarray(faces, dtype=np.uint8))
        done = pi.run([PYTHON, "-m", "edgefer.edge.arm_parity", "/work/faces.npy",
                       "/work/out", *inside],
                      binds=[*binds, Bind(Path(tmp), "/work", read_only=False)],
                      timeout=timeout_s)
        out = Path(tmp) / "out"
        if done.returncode != 0 or not (out / "outputs.json").is_file():
            raise EmulationError("the models did not run on the emulated arm64 device (exit "
                                 f"{done.returncode}): "
                                 + " | ".join((done.stderr or done.stdout).strip()
                                              .splitlines()[-8:]))
        ran_on = json.loads((out / "outputs.json").read_text())
        return [Outputs(np.load(out / f"{i}.npy"), ran_on[i]) for i in range(len(models))]


def check_parity(pi, models: Sequence[Path], faces: np.ndarray) -> list[Parity]:
    """Every model on emulated arm64 against this machine, face by face."""
    models = [Path(m) for m in models]
    arm = arm_outputs(pi, models, faces)
    x86 = predict_outputs(models, faces)
    return [compare(m, a, x) for m, a, x in zip(models, arm, x86, strict=True)]


def fixed_faces(data: Path, limit: int, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(faces, labels): the fixed random subset ``edgefer bench --limit`` measures."""
    from edgefer.data import load_split

    found = load_split(data, split)
    keep = np.arange(len(found.labels))
    if limit < len(keep):
        keep = np.sort(np.random.default_rng(0).permutation(len(keep))[:limit])
    return np.asarray(found.images)[keep], np.asarray(found.labels)[keep]


def write_face_folder(faces: np.ndarray, labels: np.ndarray, root: Path,
                      split: str = "test") -> Path:
    """``faces`` as a FER2013 image folder (``root/split/class/*.png``) for a bench run."""
    import cv2

    from edgefer.labels import CLASS_NAMES

    for i, (face, label) in enumerate(zip(faces, labels, strict=True)):
        folder = root / split / CLASS_NAMES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"face{i:05d}.png"), face)
    return root


# --- bench rows for the report ------------------------------------------------------------

# what an emulated row keeps; latency, throughput and memory (QEMU's, not a Pi's) go
KEPT_FIELDS = ("model", "target", "precision", "engine", "device", "threads", "batch",
               "status", "reason", "size_bytes", "size_gzip_bytes", "accuracy", "agreement",
               "ran_on", "context", "role")


def emulated_row(result, device: str, parity: Parity | None):
    """A result measured under QEMU as a report row: accuracy and agreement stay, every
    timing and memory figure is left out, the device and reason say emulated."""
    from edgefer.bench.results import BenchResult, Status

    blank = {f.name: f.default if f.default is not MISSING else f.default_factory()
             for f in fields(BenchResult) if f.name not in KEPT_FIELDS}
    reason = "emulated arm64 (QEMU user-mode): latency and memory left out"
    extra = {}
    if parity is not None:
        extra = {"arm64_vs_x86_labels": f"{parity.same_labels}/{parity.images}",
                 "arm64_vs_x86_max_diff": f"{parity.max_diff:.4g}",
                 "arm64_vs_x86_tolerance": f"{parity.tolerance:.4g}"}
        if not parity.ok:
            reason += f"; {parity.describe()}"
    context = result.context
    if context is not None:
        context = replace(context, extra={**context.extra, **extra})
    status = result.status
    if parity is not None and not parity.ok and status is Status.OK:
        status = Status.FAILED
    return replace(result, **blank, device=device, reason=reason if status is Status.OK
                   or not result.reason else f"{result.reason}; {reason}",
                   status=status, context=context)


def emulated_rows(results, models: Sequence[Path], parity: dict[str, Parity], device: str):
    """Each result as an emulated row with its model's parity. bench names a result by the
    file's stem and its target (m-int8.tflite and m-int8.onnx share the stem)."""
    from edgefer.formats import format_of, model_stem

    by_key = {(model_stem(m), format_of(m).name): parity.get(m.name) for m in models}
    return [emulated_row(r, device, by_key.get((r.model, r.target))) for r in results]


def emulated_bench(pi, models: Sequence[Path], data: Path, limit: int,
                   log: Callable[[str], None] | None = None, timeout_s: float = 3600):
    """``edgefer bench`` of ``models`` on the emulated Pi with accuracy on ``limit`` fixed
    faces of ``data``, and their arm64-vs-x86 parity: a BenchRun of emulated rows."""
    from edgefer.bench.results import BenchRun
    from edgefer.edge.armpi import PYTHON, Bind, cpu_label

    say = log or (lambda _msg: None)
    models = check_models(models)
    faces, labels = fixed_faces(data, limit)
    say(f"emulated arm64 ({pi.options.cpu.value}): parity on {len(faces)} faces")
    parity = {p.model: p for p in check_parity(pi, models, faces)}
    binds, inside = model_binds(models)
    say(f"emulated arm64 ({pi.options.cpu.value}): edgefer bench for accuracy")
    with tempfile.TemporaryDirectory(prefix="edgefer-armpi-") as tmp:
        write_face_folder(faces, labels, Path(tmp) / "fer")
        done = pi.run([PYTHON, "-m", "edgefer", "bench", *inside, "--data", "/work/fer",
                       "--threads", "1", "--batch", "1", "--warmup", "1", "--min-runs", "1",
                       "--min-time", "0", "--json", "/work/run.json"],
                      binds=[*binds, Bind(Path(tmp), "/work", read_only=False)],
                      timeout=timeout_s, env={"COLUMNS": "200"})
        result = Path(tmp) / "run.json"
        if not result.is_file():
            raise EmulationError(f"edgefer bench on the emulated arm64 device failed (exit "
                                 f"{done.returncode}): "
                                 + " | ".join(done.stderr.strip().splitlines()[-8:]))
        run = BenchRun.from_dict(json.loads(result.read_text()))
    device = f"emulated-arm64:{pi.options.cpu.value}"
    rows = emulated_rows(run.results, models, parity, device)
    note = (f"{device}: {cpu_label(pi.options.cpu)}; accuracy on {len(faces)} fixed faces; "
            "agreement on arm64 against the fp32 model there; latency left out (emulated)")
    notes = tuple(_local_paths(n, inside, models) for n in (*run.notes, note))
    run = replace(run, results=tuple(rows), notes=notes)
    if getattr(run, "reference", ""):  # "NAME (PATH)" of the model agreement is against
        run = replace(run, reference=_local_paths(run.reference, inside, models))
    return run, list(parity.values())


def _local_paths(text: str, inside: Sequence[str], models: Sequence[Path]) -> str:
    for path, model in zip(inside, models, strict=True):
        text = text.replace(path, str(model))
    return text


# --- the side that runs in the rootfs -------------------------------------------------------

def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="outputs of models for faces (arm64 side)")
    parser.add_argument("faces")
    parser.add_argument("out")
    parser.add_argument("models", nargs="+")
    args = parser.parse_args(argv)
    faces = np.load(args.faces)
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    found = predict_outputs([Path(m) for m in args.models], faces)
    for i, outputs in enumerate(found):
        np.save(partial / f"{i}.npy", outputs.probabilities)
    (partial / "outputs.json").write_text(json.dumps([o.ran_on for o in found]))
    os.replace(partial, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
