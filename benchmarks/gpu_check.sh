#!/bin/sh
# The GPU check (issue 25), as one command for a lent GPU machine (the device tool's `run`), from the repo root:
#
#   sh benchmarks/gpu_check.sh            # then copy $OUT/gpu_*.md and .json into benchmarks/results/
#
# It runs the GPU tests (tests/test_gpu.py) and benchmarks/bench_gpu.py, about 5 minutes on an H100. The core
# runs from src/ (the C kernels are a CPU path and are not built there); the machine's own PyTorch is used.
# faiss is not on that machine: carry wheels in .whl/ (ignored by git), prepared here with
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl faiss-cpu hypothesis
# faiss-gpu-cu12 needs CUDA 12's cuBLAS (hundreds of MB, over what a call carries, and the machine has CUDA 13),
# so the faiss row then runs faiss-cpu on the machine's CPU cores and says so.
set -eu
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
nvidia-smi -L
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
python3 benchmarks/bench_gpu.py --out "$out/gpu" 2>&1 | tee "$out/gpu_bench.log"
