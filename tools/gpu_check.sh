#!/usr/bin/env bash
# Run tvl_async's GPU checks on a machine with an NVIDIA GPU (see docs/gpu.md).
#
#   tools/gpu_check.sh [LOG_DIR]        default LOG_DIR: gpu-logs/<date-time>
#   FULL=1 tools/gpu_check.sh           also run the whole test suite
#
# Steps: environment report, `pytest -m cuda` with TVL_ASYNC_REQUIRE_CUDA=1 (GPU tests fail
# instead of skipping), `tvl-async bench --device cuda`, optionally the whole suite. Each step
# writes LOG_DIR/<step>.log; pytest also writes JUnit XML; LOG_DIR/summary.txt lists the results.
# Exit status: 0 when every step passed, 1 otherwise.

set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
LOG_DIR=${1:-gpu-logs/$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-python}
mkdir -p "$LOG_DIR" || exit 1
export TVL_ASYNC_REQUIRE_CUDA=1

failed=()

run() {
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$LOG_DIR/summary.txt"
    local start=$SECONDS status=0
    "$@" >"$LOG_DIR/$name.log" 2>&1 || status=$?
    if [ "$status" -eq 0 ]; then
        echo "   ok ($((SECONDS - start)) s)" | tee -a "$LOG_DIR/summary.txt"
    else
        echo "   FAILED with exit status $status ($((SECONDS - start)) s); see $LOG_DIR/$name.log" \
            | tee -a "$LOG_DIR/summary.txt"
        tail -n 20 "$LOG_DIR/$name.log"
        failed+=("$name")
    fi
}

environment() {
    nvidia-smi || return 1
    "$PYTHON" - <<'EOF'
import torch, av
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
print("av", av.__version__)
import PyNvVideoCodec as nvc
print("PyNvVideoCodec", getattr(nvc, "__version__", "?"))
for codec in ("H264", "HEVC", "VP9", "AV1"):
    for depth in (8, 10):
        try:
            caps = nvc.GetDecoderCaps(gpuid=0, codec=getattr(nvc.cudaVideoCodec, codec),
                                      bitdepth=depth)
            print(f"NVDEC {codec} {depth}-bit:", dict(caps))
        except Exception as e:
            print(f"NVDEC {codec} {depth}-bit: caps query failed: {e}")
EOF
}

bench() {
    if command -v tvl-async >/dev/null 2>&1; then
        tvl-async bench --device cuda
    else
        "$PYTHON" -m tvl_async.cli.main bench --device cuda
    fi
}

run environment environment
run pytest-cuda "$PYTHON" -m pytest -m cuda -ra -v --junitxml="$LOG_DIR/pytest-cuda.xml"
run bench-cuda bench
if [ "${FULL:-0}" = "1" ]; then
    run pytest-all "$PYTHON" -m pytest -ra --junitxml="$LOG_DIR/pytest-all.xml"
fi

if [ "${#failed[@]}" -ne 0 ]; then
    echo "GPU check FAILED: ${failed[*]} (logs in $LOG_DIR)" | tee -a "$LOG_DIR/summary.txt"
    exit 1
fi
echo "GPU check passed (logs in $LOG_DIR)" | tee -a "$LOG_DIR/summary.txt"
