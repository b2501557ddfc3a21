"""The QAT-ready MobileNetV3: readiness check, full-INT8 conversion, pruning, storage."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf

from edgefer.errors import ConfigError, ModelError  # noqa: E402


@pytest.fixture(scope="module")
def keras_():
    from edgefer._tf import keras

    return keras()


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 48, 48, 1)).astype("float32"), np.arange(n) % 7


@pytest.mark.parametrize("variant", ["small", "large"])
def test_variants_end_at_3x3_on_48px_faces(variant):
    from edgefer.model.mobilenetv3 import ModelConfig, build_model

    model = build_model(ModelConfig(variant=variant, width=0.5))
    assert model.get_layer("last_act").output.shape[1:3] == (3, 3)
    assert model.output.shape[-1] == 7


def test_stem_stride_follows_input_size():
    from edgefer.model.mobilenetv3 import ModelConfig

    assert ModelConfig(input_size=48).effective_stem_stride == 1
    assert ModelConfig(input_size=96).effective_stem_stride == 2
    with pytest.raises(ConfigError):
        ModelConfig(input_size=32)


@pytest.mark.parametrize(("head", "units"), [(-1, 1024), (256, 256), (0, None)])
def test_head_width_is_an_option(head, units):
    from edgefer.model.mobilenetv3 import ModelConfig, build_model

    model = build_model(ModelConfig(width=0.25, head=head))
    names = {layer.name for layer in model.layers}
    if units is None:
        assert "head" not in names and model.get_layer("logits").input.shape[-1] == 144
    else:
        assert model.get_layer("head").units == units
    with pytest.raises(ConfigError, match="head"):
        ModelConfig(head=-2)


def test_large_with_a_stride_2_stem_ends_at_2x2():
    from edgefer.model.mobilenetv3 import ModelConfig, build_model

    model = build_model(ModelConfig(variant="large", width=0.75, stem_stride=2, head=256))
    assert model.get_layer("last_act").output.shape[1:] == (2, 2, 720)


def test_readiness_check_names_the_bad_layer(keras_):
    from edgefer.model.qat import check_qat_ready

    x = keras_.layers.Input((48, 48, 1))
    y = keras_.layers.Conv2D(4, 3)(x)
    y = keras_.layers.Lambda(lambda t: t * 2.0, name="doubling")(y)
    with pytest.raises(ModelError, match="doubling"):
        check_qat_ready(keras_.Model(x, y))


def _int8_tflite(model) -> bytes:
    from edgefer.export.convert import keras_to_tflite
    from edgefer.export.options import IoType, Precision

    return keras_to_tflite(model, Precision.INT8, IoType.INT8)


def test_qat_model_converts_to_int8_with_no_float_op():
    from ai_edge_litert.interpreter import Interpreter

    from edgefer.model import qat
    from edgefer.model.mobilenetv3 import ModelConfig, build_model

    model = qat.quantize(build_model(ModelConfig(width=0.25)))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(*_data(), epochs=1, verbose=0)
    interp = Interpreter(model_content=_int8_tflite(model))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    assert {o["op_name"] for o in ops} >= {"HARD_SWISH", "CONV_2D", "DEPTHWISE_CONV_2D", "MUL"}
    float_ops = [o["op_name"] for o in ops
                 if any(tensors[i]["dtype"] == np.float32 for i in o["outputs"])]
    assert float_ops == []
    assert interp.get_input_details()[0]["dtype"] == np.int8


def test_pruning_reaches_target_sparsity_and_pqat_keeps_it():
    from edgefer.model import qat
    from edgefer.model.mobilenetv3 import ModelConfig, build_model

    x, y = _data(32)
    pruned = qat.prune(build_model(ModelConfig(width=0.25)), 0.6, 0, 4, frequency=1,
                       min_weights=1000)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=qat.pruning_callbacks())
    stripped = qat.strip_pruning(pruned)
    kernel = stripped.get_layer("head").get_weights()[0]
    assert abs(float(np.mean(kernel == 0)) - 0.6) < 0.02
    stem = stripped.get_layer("stem_conv").get_weights()[0]
    assert stem.size < 1000 and np.mean(stem == 0) == 0  # too small to prune
    pruned_share = _kernel_zero_shares(stripped)
    assert any("se_reduce" in name and share > 0.55 for name, share in pruned_share.items())
    pqat = qat.quantize(stripped, preserve_sparsity=True)
    pqat.compile("adam", "sparse_categorical_crossentropy")
    pqat.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[qat.KeepZeros()])
    kept = {w.name.split("/")[-2]: float(np.mean(w.numpy() == 0)) for w in pqat.weights
            if w.name.endswith("/kernel:0")}
    assert {"head"} | {n for n in pruned_share if "se_" in n} <= kept.keys()
    for name in kept.keys() & pruned_share.keys():  # the squeeze-excite ones too
        assert kept[name] >= pruned_share[name] - 1e-3, (name, kept[name], pruned_share[name])


def _kernel_zero_shares(model) -> dict[str, float]:
    """Layer name -> share of zeros in the kernel of convolutions and dense layers of 1000
    or more weights."""
    return {layer.name: float(np.mean(layer.kernel.numpy() == 0)) for layer in model.layers
            if type(layer).__name__ in ("Conv2D", "Dense")
            and layer.kernel.shape.num_elements() >= 1000}


def test_store_round_trip_and_float_twin(tmp_path):
    from edgefer.model import qat
    from edgefer.model.mobilenetv3 import ModelConfig, build_model
    from edgefer.model.store import Stage, float_twin, load_model, save_model
    from edgefer.preprocess import ModelInfo

    config = ModelConfig(width=0.25)
    model = qat.quantize(build_model(config))
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    model.fit(x, y, epochs=1, verbose=0)
    folder = save_model(model, tmp_path / "m", config, Stage.QAT, ModelInfo())
    loaded, stage, _ = load_model(folder)
    assert stage is Stage.QAT
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    twin = float_twin(loaded, config)
    assert not any("quant" in layer.name for layer in twin.layers)
    for name in ("head", "block3_dw", "last_bn"):
        inner = [w.numpy() for w in loaded.weights if f"/{name}/" in f"/{w.name}"]
        np.testing.assert_array_equal(twin.get_layer(name).get_weights()[0], inner[0])


def test_float_twin_keeps_the_qat_ranges(tiny_model_dirs, synthetic_fer):
    from edgefer.data import load_split
    from edgefer.model.layers import Clip
    from edgefer.model.mobilenetv3 import ModelConfig
    from edgefer.model.store import float_twin, load_model, qat_output_ranges, with_output_clips
    from edgefer.preprocess import Preprocess

    qat_model, _, _ = load_model(tiny_model_dirs["qat"])
    config = ModelConfig(width=0.25)
    x = Preprocess()(load_split(synthetic_fer, "test").images)
    bare = float_twin(qat_model, config)
    # replaying the layers without clips is the same function
    np.testing.assert_allclose(with_output_clips(bare, {}).predict(x, verbose=0),
                               bare.predict(x, verbose=0), atol=1e-6)
    ranges = qat_output_ranges(qat_model)
    assert "stem_act" in ranges and all(low < high for low, high in ranges.values())
    clipped = float_twin(qat_model, config, keep_qat_ranges=True)
    assert sum(isinstance(layer, Clip) for layer in clipped.layers) == len(ranges)
    reference = qat_model.predict(x, verbose=0)
    gap = np.abs(clipped.predict(x, verbose=0) - reference).max()
    assert gap <= np.abs(bare.predict(x, verbose=0) - reference).max() + 1e-6


def test_truncated_weights_are_a_clear_error(tmp_path, tiny_model_dirs):
    import shutil

    from edgefer.model.store import WEIGHTS_NAME, load_model

    copy = shutil.copytree(tiny_model_dirs["float"], tmp_path / "m")
    weights = copy / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="weights do not load"):
        load_model(copy)
