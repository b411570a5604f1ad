#!/usr/bin/env bash
# Every GPU check of issues #5 and #6 in one call, for a session that has a device machine
# (device time is scarce: one prepared run, each step under its own time limit, so a slow step
# leaves the others' results). Run from the repository root; results go to $OUT (default
# benchmarks/results/gpu). The device image has torch, cmake, nvcc and compute-sanitizer.
#
#   bash benchmarks/gpu_checks.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # `ilo` from this checkout, no install needed
PY=${PYTHON:-python3}
step() { local limit=$1 name=$2; shift 2; echo "== $name" | tee -a "$OUT/summary.txt"
         timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; echo "   exit $?" | tee -a "$OUT/summary.txt"; }

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" > "$OUT/versions.txt" 2>&1
step 300 build bash -c "cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES='80;90' && cmake --build build -j"
step 120 selfcheck "$PY" -m ilo.kernels.selfcheck
step 240 sanitizer-memcheck compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" -m ilo.kernels.selfcheck
step 240 sanitizer-racecheck compute-sanitizer --tool racecheck --error-exitcode 9 "$PY" -m ilo.kernels.selfcheck
step 300 pytest-gpu "$PY" -m pytest -q -m gpu tests/test_kernels_gpu.py tests/test_engine_gpu.py -p no:cacheprovider
step 420 bench-kernels "$PY" benchmarks/kernels.py --out "$OUT"
step 300 bench-latency "$PY" benchmarks/latency.py --device cuda --backends torch,cuda,onnxruntime,tensorrt \
    --models stylegan2-256 --batches 1,8 --out "$OUT"
cat "$OUT/summary.txt"
