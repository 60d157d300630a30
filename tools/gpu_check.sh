#!/usr/bin/env bash
# tvl_async's GPU verification in one call (docs/gpu.md, "Verifying on a GPU machine").
#
#   bash tools/gpu_wheels.sh                 here, once: packs .gpu/site.tar.xz (PyAV,
#                                            PyNvVideoCodec, pydantic, janus for Python 3.12)
#   bash tools/gpu_check.sh [OUT_DIR]        on the GPU machine (carry .gpu); default OUT_DIR:
#                                            $OUT when set, else gpu-logs/<date-time>
#   DRY_RUN=1 bash tools/gpu_check.sh DIR    anywhere: every step on the CPU (checks the script)
#
# Installs nothing from the network: the carried tar (packed for the Python version in
# .gpu/python-version) is unpacked into /tmp/tvl-gpu-site and put on PYTHONPATH with the
# repository. Then tools/gpu_check.py runs each step (env, pytest -m cuda
# with TVL_ASYNC_REQUIRE_CUDA=1, exact, reconfig, fallback, demo, bench) in its own process
# with its own timeout, under 10 minutes in all, and writes <step>.json, <step>.log,
# summary.json and summary.md into OUT_DIR. Exit status: 0 when every step passed.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
out=${1:-${OUT:-gpu-logs/$(date +%Y%m%d-%H%M%S)}}
mkdir -p "$out" || exit 1
PYTHON=${PYTHON:-python3}
here=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ -f .gpu/site.tar.xz ] && [ "$(cat .gpu/python-version 2>/dev/null)" = "$here" ]; then
    site=/tmp/tvl-gpu-site
    rm -rf "$site" && mkdir -p "$site" && tar -xJf .gpu/site.tar.xz -C "$site" || exit 1
    export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
dry=()
if [ "${DRY_RUN:-0}" = "1" ]; then
    dry=(--dry-run)
fi
exec "$PYTHON" tools/gpu_check.py --out "$out" "${dry[@]}" ${ONLY:+--only "$ONLY"}
