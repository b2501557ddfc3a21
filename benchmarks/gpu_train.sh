#!/usr/bin/env bash
# The long training schedule on one CUDA GPU, for a lent device machine; writes the run
# folder (every stage's model, logs and summary.json) to $OUT.
#
# Usage: OUT=DIR benchmarks/gpu_train.sh [DATA [extra `edgefer train` options...]]
#   DATA    FER2013: image folders, fer2013.csv or fer2013.csv.gz (default $EDGEFER_FER2013,
#           else ../shared/fer2013). The device machine gets only the checkout (64 MiB):
#           carry a fer2013.csv.gz in a folder that .git/info/exclude ignores.
#   WHEELS  a folder of wheels (tensorflow, tf-keras, tfmot...) to install from when
#           TensorFlow is missing there: that machine reaches no package registry.
#   CONFIG  the recipe (default models/edgefer-mnv3s-gpu.toml).
#   EDGEFER_GPU_OPTIONAL=1 trains on the CPU when no GPU is seen (the test does this with
#           tiny settings); otherwise no GPU is an error, not a silent hours-long CPU run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?set OUT to the folder that receives the run}
data=${1:-${EDGEFER_FER2013:-../shared/fer2013}}
config=${CONFIG:-models/edgefer-mnv3s-gpu.toml}
shift $(( $# > 0 ? 1 : 0 ))

if ! python3 -c "import tensorflow, tf_keras, tensorflow_model_optimization" 2>/dev/null; then
  [ -n "${WHEELS:-}" ] || { echo "TensorFlow is not installed and WHEELS is not set" >&2; exit 2; }
  python3 -m pip install --quiet --no-index --find-links "$WHEELS" -e ".[train]"
fi
python3 -c "import edgefer" 2>/dev/null || python3 -m pip install --quiet --no-deps -e .

gpus=$(python3 - <<'PY'
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
print(len(tf.config.list_physical_devices("GPU")))
PY
)
if [ "$gpus" = 0 ] && [ "${EDGEFER_GPU_OPTIONAL:-0}" != 1 ]; then
  echo "no CUDA GPU visible to TensorFlow (set EDGEFER_GPU_OPTIONAL=1 to train on the CPU)" >&2
  exit 3
fi
echo "GPUs visible to TensorFlow: $gpus"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

mkdir -p "$out"
start=$(date +%s)
python3 -m edgefer train --config "$config" --data "$data" --out "$out" --name run "$@" \
  2>&1 | tee "$out/train.log"
echo "wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/train.log"
