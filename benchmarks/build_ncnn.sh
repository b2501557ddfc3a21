#!/usr/bin/env bash
# Build ncnn's CPU runtime (no Vulkan), its Python module and its INT8 tools from a source
# checkout, and pip-install the Python module (`import ncnn`) into the current Python.
#
#   benchmarks/build_ncnn.sh SRC_DIR PREFIX
#
# SRC_DIR: an ncnn source tree (git clone https://github.com/Tencent/ncnn; the pybind11
#          submodule is not needed: pip's pybind11 is used). PREFIX: where the build folder
#          and the installed library and tools (PREFIX/bin: ncnn2int8, ncnn2table,
#          ncnnoptimize) go, e.g. ~/.cache/edgefer/ncnn.
# Environment: JOBS (default 2), PYTHON (default python3), NCNN_ISA, for x86 only:
#   avx2     (default) one set of kernels built with AVX2+FMA+F16C: runs on x86-64-v3 CPUs
#            (Intel Haswell 2013+, AMD Zen), a third of the compile time of "dispatch"
#   dispatch SSE2, AVX and FMA/AVX2 kernels chosen at run time (any x86-64), no AVX-512
#   full     ncnn's default: every x86 extension, AVX-512 and VNNI included
# ARM and other targets ignore NCNN_ISA. The build is compile-bound (convolution and gemm
# kernels); ccache is used when present.
set -euo pipefail

SRC=$(realpath "${1:?usage: build_ncnn.sh SRC_DIR PREFIX}")
PREFIX=$(realpath -m "${2:?usage: build_ncnn.sh SRC_DIR PREFIX}")
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-python3}
BUILD="$PREFIX/build"

# pybind11 from pip (the submodule is usually absent from a snapshot or tarball)
PYBIND11_DIR=$("$PYTHON" -c "import pybind11; print(pybind11.get_cmake_dir())" 2>/dev/null) || {
    "$PYTHON" -m pip install --target "$PREFIX/pybind11" pybind11
    PYBIND11_DIR=$(PYTHONPATH="$PREFIX/pybind11" "$PYTHON" -c \
        "import pybind11; print(pybind11.get_cmake_dir())")
}

ISA_FLAGS=()
NO_WIDE=(XOP AVXVNNI AVXVNNIINT8 AVXVNNIINT16 AVXNECONVERT AVX512 AVX512VNNI AVX512BF16
         AVX512FP16)
case "${NCNN_ISA:-avx2}" in
    avx2) ISA_FLAGS=(-DNCNN_RUNTIME_CPU=OFF -DNCNN_AVX=ON -DNCNN_FMA=ON -DNCNN_F16C=ON
                     -DNCNN_AVX2=ON) ;;
    dispatch) ;;
    full) NO_WIDE=() ;;
    *) echo "NCNN_ISA: avx2, dispatch or full, not ${NCNN_ISA}" >&2; exit 2 ;;
esac
for isa in "${NO_WIDE[@]}"; do ISA_FLAGS+=("-DNCNN_$isa=OFF"); done

LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)

cmake -S "$SRC" -B "$BUILD" "${GENERATOR[@]}" "${LAUNCHER[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DNCNN_VULKAN=OFF -DNCNN_PYTHON=ON -DNCNN_SYSTEM_PYBIND11=ON -Dpybind11_DIR="$PYBIND11_DIR" \
    -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
    -DNCNN_BUILD_TOOLS=ON -DNCNN_BUILD_EXAMPLES=OFF -DNCNN_BUILD_BENCHMARK=OFF \
    -DNCNN_BUILD_TESTS=OFF "${ISA_FLAGS[@]}"

# the library, the Python module (copied into $SRC/python/ncnn by its post-build step)
# and the INT8 and optimization tools; not the caffe/mxnet/darknet converters
cmake --build "$BUILD" -j "$JOBS" --target pyncnn ncnn2int8 ncnn2table ncnnoptimize
mkdir -p "$PREFIX/bin"
for tool in ncnn2int8 ncnn2table ncnnoptimize; do
    cp "$(find "$BUILD/tools" -name "$tool" -type f -perm -u+x | head -1)" "$PREFIX/bin/"
done

# ncnn's setup.py lists opencv-python, requests, ... for its model zoo; the runtime needs
# numpy only, hence --no-deps
"$PYTHON" -m pip install --no-deps --no-build-isolation "$SRC/python"
"$PYTHON" -c "import ncnn; print('ncnn', ncnn.__version__, 'installed')"
