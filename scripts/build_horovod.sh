#!/usr/bin/env bash
# Build Horovod 0.28.1 (the last release) for the venv's torch and cache the wheel.
#
# 0.28.1 predates PyTorch's C++17 requirement: its CMakeLists.txt and horovod/torch/CMakeLists.txt
# set CMAKE_CXX_STANDARD 14, which fails against torch >= 2.1. We build from the PyPI sdist with
# both set to 17, CPU/gloo only unless HOROVOD_GPU_OPERATIONS=NCCL is set by the caller (docker/).
# The wheel is cached in $HOROVOD_WHEEL_CACHE, so a second `make horovod` only reinstalls it.
set -euo pipefail
PY=$(realpath -s "${PY:-.venv/bin/python}")
VERSION=0.28.1
torch_ver=$($PY -c "import torch; print(torch.__version__.replace('+', '_'))")
# One cache folder per torch build: the extension is compiled against that torch's ABI.
CACHE=${HOROVOD_WHEEL_CACHE:-$HOME/.cache/pykaldi2/wheels}/torch$torch_ver
mkdir -p "$CACHE"
wheel=$(ls "$CACHE"/horovod-$VERSION-*.whl 2>/dev/null | head -n1 || true)

if [ -z "$wheel" ]; then
  command -v cmake >/dev/null || { echo "build_horovod: cmake is needed (apt-get install cmake)" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  $PY -m pip download -q --no-deps --no-binary :all: "horovod==$VERSION" -d "$work"
  tar -xzf "$work"/horovod-$VERSION.tar.gz -C "$work"
  src="$work/horovod-$VERSION"
  for f in "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"; do
    grep -q 'CMAKE_CXX_STANDARD 14' "$f" || { echo "build_horovod: $f has no C++14 line to patch" >&2; exit 1; }
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$f"
  done
  $PY -m pip install -q packaging wheel setuptools cloudpickle psutil pyyaml cffi
  (cd "$src" && \
    HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
    HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 MAKEFLAGS="-j$(nproc)" \
    $PY -m pip wheel -q --no-build-isolation --no-deps . -w "$work/dist")
  built=$(ls "$work"/dist/horovod-*.whl)
  wheel="$CACHE/$(basename "$built")"
  cp "$built" "$wheel.tmp" && mv "$wheel.tmp" "$wheel"
fi
$PY -m pip install -q --no-deps --force-reinstall "$wheel"
$PY -m pip install -q cloudpickle psutil pyyaml cffi packaging
$PY -c "import horovod.torch as hvd; print('horovod', hvd.__version__ if hasattr(hvd, '__version__') else '', 'ok')"
