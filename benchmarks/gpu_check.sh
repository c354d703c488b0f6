#!/bin/sh
# The GPU check (issue 25), as one command for a lent GPU machine (the device tool's `run`), from the repo root:
#
#   sh benchmarks/gpu_check.sh            # then copy $OUT/gpu_*.md and .json into benchmarks/results/
#
# It runs the GPU tests (tests/test_gpu.py) and benchmarks/bench_gpu.py (never run on a GPU yet: time it). The core
# runs from src/ (the C kernels are a CPU path and are not built there); the machine's own PyTorch is used.
# faiss is not on that machine, and faiss-gpu-cu12 needs CUDA 12's cuBLAS (hundreds of MB, more than a call carries;
# the machine has CUDA 13), so the faiss row says that the installed faiss has no GPU support. Wheels put in .whl/
# (ignored by git: `echo /.whl/ >> .git/info/exclude`, then `pip download --no-deps --only-binary=:all:
# --python-version 3.12 ... -d .whl NAME`) are installed first, for a faiss that does run there.
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
