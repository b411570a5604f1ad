#!/usr/bin/env bash
# Every GPU check of issues #5 and #6, for a session that has a device machine. Device time is
# scarce and one command may run 10 minutes, so there are two parts, each under 10 minutes,
# each step under its own time limit (a slow step leaves the others' results):
#
#   bash benchmarks/gpu_checks.sh check   # build, self-check, compute-sanitizer, GPU tests
#   bash benchmarks/gpu_checks.sh bench   # benchmarks/kernels.py, latency.py --device cuda
#
# Run from the repository root; results go to $OUT (default benchmarks/results/gpu). The device
# image has torch, cmake, nvcc and compute-sanitizer; `ilo` is used from this checkout.
set -uo pipefail
part=${1:-check}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
step() { local limit=$1 name=$2; shift 2; echo "== $name" | tee -a "$OUT/summary.txt"
         timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; echo "   exit $? (log: $OUT/$name.txt)" | tee -a "$OUT/summary.txt"; }

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" > "$OUT/versions.txt" 2>&1
[ -f kernels/lib/libilo_kernels.so ] || step 120 build bash -c "cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES='80;90' && cmake --build build -j"
case "$part" in
  check)
    step 60 selfcheck "$PY" -m ilo.kernels.selfcheck
    # only this project's kernels are instrumented: torch's own would take the whole budget
    step 120 sanitizer-memcheck compute-sanitizer --tool memcheck --kernel-name kns=ilo --error-exitcode 9 "$PY" -m ilo.kernels.selfcheck
    step 120 sanitizer-racecheck compute-sanitizer --tool racecheck --kernel-name kns=ilo --error-exitcode 9 "$PY" -m ilo.kernels.selfcheck
    step 150 pytest-gpu "$PY" -m pytest -q -m gpu tests/test_kernels_gpu.py tests/test_engine_gpu.py -p no:cacheprovider ;;
  bench)
    step 330 bench-kernels "$PY" benchmarks/kernels.py --repeats 10 --out "$OUT"
    step 200 bench-latency "$PY" benchmarks/latency.py --device cuda --threads 16 --backends torch,cuda,onnxruntime,tensorrt \
        --models stylegan2-256 --batches 1,8 --repeats 2 --steps 3 --stage-repeats 2 --out "$OUT" ;;
  *) echo "usage: $0 check|bench" >&2; exit 2 ;;
esac
cat "$OUT/summary.txt"
