#!/usr/bin/env bash
# The GPU checks in one run: the op suite on the GPU's OpenCL, and the training-step benchmarks
# on it against PyTorch on CUDA (S, the laptop recipe; M, shakespeare-char).  Needs pyopencl, the
# GPU's OpenCL driver (an ICD file in /etc/OpenCL/vendors) and PyTorch with CUDA.  Writes logs
# and JSON to $OUT (default bench/results/gpu).  Each part has its own time limit, so a slow one
# still leaves the others' figures.
set -u
out=${OUT:-bench/results/gpu}
mkdir -p "$out"
export MINIGRAD_CL_DEVICE=${MINIGRAD_CL_DEVICE:-gpu} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.log"
python3 -m minigrad 2>&1 | tee -a "$out/gpu.log"
python3 -c "from minigrad.backends import get_backend; print(get_backend('cl').describe())" || exit 1
for config in M S; do
    timeout "${BENCH_SECONDS:-150}" python3 bench/gpt_step.py --config $config --devices cl --no-eager \
        --torch-device cuda --steps 10 --out "$out/gpt_step_${config}_gpu.json" 2>&1 | tee "$out/bench_$config.log"
done
parallel=""; python3 -c "import xdist" 2>/dev/null && parallel="-n ${TEST_WORKERS:-15}"
# the op suite on the GPU's OpenCL (and every test that takes no device); -rfE names each failure
MINIGRAD_TEST_BACKENDS=cl timeout "${TEST_SECONDS:-240}" python3 -m pytest -q -rfE -p no:cacheprovider -p no:benchmark \
    $parallel -k "${TEST_FILTER:-not test_distributed}" tests > "$out/tests.log" 2>&1
echo "tests exit code $?"; tail -40 "$out/tests.log"
