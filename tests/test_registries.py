"""The format, engine and architecture registries: one table each, read everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefer.engines import ENGINES, Device, engine_named, require
from edgefer.errors import ConfigError, EngineMissingError, ModelError
from edgefer.formats import FORMATS, format_named, format_of, load, model_files

REPO = Path(__file__).resolve().parents[1]


def test_every_reference_in_the_tables_resolves():
    for fmt in FORMATS:
        for ref in (fmt.read_record, fmt.write, fmt.exporter, fmt.inspector):
            if ref:
                assert callable(load(ref)), (fmt.name, ref)
        for engine in fmt.engines:
            assert engine_named(engine).name == engine
    for engine in ENGINES:
        assert engine.runtime_class().engine == engine.name


def test_export_enums_come_from_the_formats():
    from edgefer.export.options import CALIB_METHODS, SUPPORTED, ExportOptions, Target

    exportable = [f.name for f in FORMATS if f.precisions]
    assert [t.value for t in Target] == exportable
    for target, precisions in SUPPORTED.items():
        assert [p.value for p in precisions] == list(format_named(target.value).precisions)
        assert [m.value for m in CALIB_METHODS[target]] == list(
            format_named(target.value).calib_methods)
        assert ExportOptions(target, "fp32").suffix == format_named(target.value).suffix


def test_format_of_files_and_folders(tmp_path):
    assert format_of("m.TFLITE").name == "tflite"
    assert format_of("m.xml").default_engine == "openvino"
    with pytest.raises(ModelError, match=r"unknown model format \(expected .tflite, .onnx, "
                                         r".xml, .ncnn.param, .mnn or an edgefer model folder\)"):
        format_of(tmp_path / "m.pt")


def test_model_files_one_function_for_every_caller(tmp_path):
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    assert model_files(xml) == [xml]
    with pytest.raises(ModelError, match=r"its weights m\.bin are missing"):
        model_files(xml, strict=True)
    (tmp_path / "m.bin").write_bytes(b"w")
    assert model_files(xml, strict=True) == [xml, tmp_path / "m.bin"]
    onnx = tmp_path / "n.onnx"
    onnx.write_bytes(b"x")
    (tmp_path / "n.onnx.data").write_bytes(b"d")
    assert model_files(onnx) == [onnx, tmp_path / "n.onnx.data"]
    from edgefer.bench.measure import model_size
    from edgefer.edge import ssh

    assert model_size(onnx)[0] == 2  # the external data counts in the size
    assert ssh.model_files is model_files


def test_require_names_the_extra():
    assert require("json", "x") is json
    with pytest.raises(EngineMissingError, match=r"Foo is not installed.*edgefer\[foo\]"):
        require("edgefer_no_such_module", "foo", "Foo")


def test_one_device_enum():
    from edgefer.bench.runner import BenchPlan, ModelSpec
    from edgefer.runtimes import RuntimeOptions

    assert Device("all").devices() == ("cpu", "gpu", "npu")
    assert Device("gpu").devices() == ("gpu",)
    assert BenchPlan(models=(ModelSpec("m.tflite"),), device="all").device is Device.ALL
    with pytest.raises(ConfigError, match="one device"):
        RuntimeOptions(device="all")


def test_an_engine_the_format_does_not_list_is_refused(tmp_path):
    from edgefer.runtimes import engine_for

    assert engine_for("m.onnx") == "onnxruntime"
    with pytest.raises(ConfigError, match="does not run TFLite"):
        engine_for("m.tflite", "onnxruntime")
    with pytest.raises(ConfigError, match="unknown engine"):
        engine_named("tvm")


def test_recorded_precision_one_reader(tmp_path):
    from edgefer.artifacts import recorded_precision

    shipped = REPO / "models" / "edgefer-mnv3s" / "edgefer-mnv3s-int8.tflite"
    assert recorded_precision(shipped).startswith("int8")
    assert recorded_precision(tmp_path / "missing.tflite") == ""


@pytest.mark.tf
def test_architecture_registry_reads_old_and_new_records(tmp_path):
    from edgefer.model.registry import (
        DEFAULT_ARCHITECTURE,
        config_from_record,
        recorded_architecture,
    )

    record = json.loads((REPO / "models" / "edgefer-mnv3s" / "model.json").read_text())
    assert record["architecture"] == "mobilenetv3"
    # a record written before the registry: no architecture, no head option
    old = {k: v for k, v in record.items() if k != "architecture"}
    old["model"] = {k: v for k, v in record["model"].items() if k != "head"}
    for rec in (record, old):
        assert recorded_architecture(rec) == DEFAULT_ARCHITECTURE == "mobilenetv3"
        config = config_from_record(rec, "shipped")
        assert type(config).__name__ == "ModelConfig" and config.input_size == 48
        assert config.head == -1
    with pytest.raises(ModelError, match="unknown model architecture 'vit'"):
        config_from_record({**record, "architecture": "vit"}, "m")


@pytest.mark.tf
def test_a_saved_model_records_its_architecture(tmp_path):
    from edgefer.model.mobilenetv3 import ModelConfig
    from edgefer.model.registry import build_model
    from edgefer.model.store import Stage, load_model, read_record, save_model
    from edgefer.preprocess import ModelInfo

    config = ModelConfig(width=0.25)
    folder = save_model(build_model(config), tmp_path / "m", config, Stage.FLOAT,
                        ModelInfo(name="m"))
    assert read_record(folder)["architecture"] == "mobilenetv3"
    model, stage, _ = load_model(folder)
    assert stage is Stage.FLOAT and model.count_params() > 0


@pytest.mark.tf
def test_training_picks_the_architecture_by_name(tmp_path):
    from edgefer.model.minixception import MiniXceptionConfig
    from edgefer.model.registry import build_model
    from edgefer.model.store import Stage, load_model, read_record, save_model
    from edgefer.preprocess import ModelInfo
    from edgefer.train.config import load_config

    config = load_config(None, architecture="minixception", **{"model.width": 0.5})
    assert config.model == MiniXceptionConfig(width=0.5) and config.name == "edgefer-minixception"
    assert config.to_dict()["model"]["width"] == 0.5
    assert load_config(None).name == "edgefer-mnv3s"
    with pytest.raises(ConfigError, match=r"unknown option.*minixception: variant"):
        load_config(None, architecture="minixception", **{"model.variant": "large"})
    with pytest.raises(ConfigError, match="unknown model architecture 'vit'"):
        load_config(None, architecture="vit")
    folder = save_model(build_model(config.model), tmp_path / "m", config.model, Stage.FLOAT,
                        ModelInfo(name="m"))
    assert read_record(folder)["architecture"] == "minixception"
    model, _, _ = load_model(folder)
    assert model.count_params() == build_model(config.model).count_params() < 60_000


def test_a_second_engine_runs_the_same_onnx_file(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    import numpy as np
    from _bench_models import make_band_onnx

    from edgefer.runtimes import RuntimeOptions, load_runtime

    path = make_band_onnx(tmp_path / "band.onnx")
    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    default = load_runtime(path, RuntimeOptions(threads=1))
    openvino = load_runtime(path, RuntimeOptions(threads=1), engine="openvino")
    assert (default.engine, openvino.engine) == ("onnxruntime", "openvino")
    assert np.abs(default.predict_faces(faces) - openvino.predict_faces(faces)).max() < 1e-4
