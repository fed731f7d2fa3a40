#!/usr/bin/env bash
# GPU validation in one command, for contributors on a CUDA machine (no network needed):
#
#   bash bench/gpu_check.sh [OUT_DIR]        # default: $OUT, else ./gpu-results
#
# 1. builds the extension in place      pip install --no-build-isolation --no-deps -e .
# 2. prints fastfp --version / info     version.txt, info.json
# 3. GPU-marked tests                   pytest -m gpu tests bench
# 4. the whole test suite               pytest (tests + bench, --benchmark-disable)
# 5. the bench suite on cuda            fastfp bench --device cuda: ratio table, % of peak
# 6. the scaling curves on cuda         fastfp bench --curves-only --device cuda
#
# Every step runs even when an earlier one failed; each leaves <step>.log in OUT_DIR, the bench
# leaves bench/{benchmark.json,report.json,report.csv,report.png,curves_*.png}. summary.txt lists
# each step's status and time; the exit code is the number of failed steps (0: all passed).
# Environment: PYTHON (default python3), GPU_CHECK_STEPS (e.g. "version gpu_tests bench" to run a
# subset), GPU_CHECK_QUICK=1 (small bench shapes), GPU_CHECK_BENCH_ARGS (extra fastfp bench args).
set -u -o pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${1:-${OUT:-./gpu-results}}"
mkdir -p "$OUT_DIR/bench" || { echo "gpu_check: cannot create $OUT_DIR" >&2; exit 99; }
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
STEPS="${GPU_CHECK_STEPS:-install version gpu_tests tests bench curves}"
QUICK=()
[ "${GPU_CHECK_QUICK:-0}" != "0" ] && QUICK=(--quick)
read -r -a EXTRA <<< "${GPU_CHECK_BENCH_ARGS:-}"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
FAILED=0

step() {  # step NAME COMMAND...: run, log, time, record; never stop the script
    local name="$1"; shift
    case " $STEPS " in *" $name "*) ;; *) echo "skipped  $name" >> "$SUMMARY"; return 0;; esac
    echo "=== gpu_check: $name: $*"
    local start=$SECONDS rc
    "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    tail -n 40 "$OUT_DIR/$name.log"
    local status="ok"
    # pytest exit code 5: nothing collected (e.g. no GPU-marked test selected) is not a failure
    if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 5 ] && [ "$name" = gpu_tests ]; }; then
        status="FAILED (exit $rc)"
        FAILED=$((FAILED + 1))
    fi
    printf '%-8s %-10s %5ds  %s\n' "$([ "$status" = ok ] && echo ok || echo FAIL)" "$name" \
        "$((SECONDS - start))" "$status" >> "$SUMMARY"
}

version() {
    "$PY" -m fastfp --version | tee "$OUT_DIR/version.txt" &&
        "$PY" -m fastfp info --json "$OUT_DIR/info.json" &&
        "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('device:', torch.cuda.get_device_name(0))" | tee -a "$OUT_DIR/version.txt"
}

echo "gpu_check: results in $OUT_DIR" | tee "$OUT_DIR/where.txt"
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1
step install   "$PY" -m pip install --no-build-isolation --no-deps -e .
step version   version
step gpu_tests "$PY" -m pytest -m gpu -q -rfEs --benchmark-disable -p no:cacheprovider \
               --junitxml="$OUT_DIR/gpu_tests.xml" tests bench
step tests     "$PY" -m pytest -q -rfEs --benchmark-disable -p no:cacheprovider \
               --junitxml="$OUT_DIR/tests.xml"
step bench     "$PY" -m fastfp bench --device cuda --out "$OUT_DIR/bench" "${QUICK[@]}" "${EXTRA[@]}"
step curves    "$PY" -m fastfp bench --curves-only --device cuda --out "$OUT_DIR/bench" "${QUICK[@]}"

echo "=== gpu_check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $FAILED failed)" >> "$SUMMARY"
cat "$SUMMARY"
exit "$FAILED"
