#!/usr/bin/env bash
# GPU report of the shipped model's ONNX exports: ONNX Runtime's CUDA (and, where its
# libraries are there, TensorRT) provider beside its CPU provider on the same machine.
#
# Usage: benchmarks/gpu_bench.sh EXPORTS_DIR FER2013_DIR REPORT_DIR
#   EXPORTS_DIR  holds edgefer-mnv3s-{fp32,fp16,int8}.onnx (edgefer export --target onnx
#                --precision all)
#   needs onnxruntime-gpu importable (pip install onnxruntime-gpu, or PYTHONPATH to it);
#   TensorFlow is not needed: the fp32 ONNX model is the agreement reference.
#
# How reports/gpu/ was made: the lent H100 machine had no onnxruntime-gpu and no network,
# so its wheel travelled in pieces and was unpacked into /tmp/site (see the closing note
# of issue 5); then this script ran there.
set -euo pipefail
exports=$1 data=$2 report=$3

# onnxruntime-gpu loads CUDA 13 / cuDNN 9 from the nvidia-* wheels beside PyTorch
nvidia_libs=$(python3 - <<'EOF'
import pathlib, site
dirs = set()
for root in site.getsitepackages():
    for lib in pathlib.Path(root, "nvidia").glob("**/lib*.so*"):
        dirs.add(str(lib.parent))
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

models=("$exports"/edgefer-mnv3s-fp32.onnx "$exports"/edgefer-mnv3s-fp16.onnx
        "$exports"/edgefer-mnv3s-int8.onnx)
python3 -m edgefer bench "${models[@]}" --device all --threads "1,$(nproc)" \
    --batch 1,32,256 --data "$data" --reference "${models[0]}" --out "$report"
