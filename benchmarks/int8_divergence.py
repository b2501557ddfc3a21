"""Where two INT8 engines start to differ, layer by layer: the INT8 TFLite model (LiteRT
with XNNPACK, and with the built-in kernels) against the INT8 ONNX model (ONNX Runtime).

Every quantized activation of an edgefer QAT export is named after its Keras layer in
both files (``mobilenetv3_small/quant_<layer>/...``). The ONNX model gets each
QuantizeLinear output as an extra graph output; the TFLite model gets each int8 tensor
as an extra subgraph output (so XNNPACK computes them too). Both run on the same
PublicTest faces, and for each layer the script counts the int8 values that differ.

    python benchmarks/int8_divergence.py exports/edgefer-mnv3s-int8.tflite \\
        exports/edgefer-mnv3s-int8.onnx --data ../shared/fer2013 --images 64 \\
        --json reports/int8_divergence.json
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import numpy as np

from edgefer.data import load_split
from edgefer.preprocess import Preprocess

LAYER = re.compile(r"^[^/;]+/(quant_[^/;]+)/")


def onnx_activations(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """{layer: int8 values as offsets from the zero point}, NHWC like TFLite's."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    outputs = {}
    for node in model.graph.node:
        match = LAYER.match(node.output[0])
        if node.op_type == "QuantizeLinear" and match and match.group(1) not in outputs:
            outputs[match.group(1)] = (node.output[0], int(inits[node.input[2]]))
            model.graph.output.append(onnx.helper.make_tensor_value_info(
                node.output[0], onnx.TensorProto.UINT8, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x}), strict=True))
    found = {}
    for layer, (name, zero) in outputs.items():
        v = values[name].astype(np.int32) - zero
        found[layer] = v.transpose(0, 2, 3, 1) if v.ndim == 4 else v
    return found


def tflite_with_activation_outputs(path: Path, out: Path) -> dict[str, int]:
    """Write a copy of the model that outputs every named int8 activation: {layer: tensor}."""
    from edgefer.artifacts import tflite_pack, tflite_schema

    schema = tflite_schema()
    data = path.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    graph = model.subgraphs[0]
    produced = {o for op in graph.operators for o in op.outputs}
    tensors = {}
    for index, tensor in enumerate(graph.tensors):
        match = LAYER.match((tensor.name or b"").decode())
        if (match and tensor.type == schema.TensorType.INT8 and index in produced
                and match.group(1) not in tensors):
            tensors[match.group(1)] = index
    graph.outputs = [*graph.outputs, *tensors.values()]
    model.signatureDefs = []
    out.write_bytes(tflite_pack(model, len(data)))
    return tensors


def tflite_activations(path: Path, tensors: dict[str, int], x: np.ndarray,
                       xnnpack: bool) -> dict[str, np.ndarray]:
    from edgefer.runtimes.litert import interpreter_module, quantize

    module, _ = interpreter_module()
    kwargs = {} if xnnpack else {
        "experimental_op_resolver_type": module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    interp = module.Interpreter(model_path=str(path), num_threads=1, **kwargs)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    zero = {d["index"]: d["quantization"][1] for d in interp.get_output_details()}
    found: dict[str, list] = {layer: [] for layer in tensors}
    for face in x:
        interp.set_tensor(detail["index"], quantize(face[None], detail))
        interp.invoke()
        for layer, index in tensors.items():
            found[layer].append(interp.get_tensor(index).astype(np.int32) - zero[index])
    return {layer: np.concatenate(v) for layer, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tflite", type=Path)
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    x = Preprocess()(load_split(args.data, "test").images[:args.images])
    reference = onnx_activations(args.onnx, x)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.tflite"
        tensors = tflite_with_activation_outputs(args.tflite, probe)
        engines = {"xnnpack": tflite_activations(probe, tensors, x, xnnpack=True),
                   "builtin": tflite_activations(probe, tensors, x, xnnpack=False)}
    rows = []
    for layer, ort_values in reference.items():
        if layer not in tensors or ort_values.size != engines["xnnpack"][layer].size:
            continue
        row = {"layer": layer, "values": int(ort_values.size)}
        for engine, values in engines.items():
            differ = values[layer] != ort_values.reshape(values[layer].shape)
            row[f"{engine}_vs_onnxruntime"] = float(differ.mean())
        rows.append(row)
        print(f"{layer:28s} values differing from ONNX Runtime: "
              f"XNNPACK {row['xnnpack_vs_onnxruntime']:8.4%}  "
              f"built-in {row['builtin_vs_onnxruntime']:8.4%}")
    if args.json:
        args.json.write_text(json.dumps({"images": len(x), "layers": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
