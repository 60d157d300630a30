#!/usr/bin/env bash
# Pack what tools/gpu_check.sh needs on the GPU machine, which reaches no package registry.
#
#   bash tools/gpu_wheels.sh            writes .gpu/site.tar.xz (ignored by git)
#
# The GPU machine (docs/gpu.md, "Verifying on a GPU machine") has Python 3.12 with PyTorch,
# numpy, tqdm, psutil and pytest, but not PyAV, pydantic, janus or PyNvVideoCodec. This script
# installs those, for CPython 3.12 on manylinux x86-64, into a folder (pip --target with
# --platform: nothing is imported here) and packs it as one tar.xz: the wheels themselves
# (PyNvVideoCodec 2.2.4 + PyAV 18 + the rest: ~65 MB) would not fit the 64 MiB a call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${PY_VERSION:-3.12}
PACKAGES=(
    "pynvvideocodec==${PYNVVIDEOCODEC_VERSION:-2.2.4}"
    "av==${AV_VERSION:-18.1.0}"
    "pydantic==2.13.4" "pydantic-core==2.46.4" "annotated-types" "typing-inspection"
    "janus==2.0.0"
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    PLATFORMS+=(--platform "$p")
done
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
python3 -m pip install -q --no-deps --only-binary=:all: --no-compile \
    --python-version "$PY_VERSION" --implementation cp "${PLATFORMS[@]}" \
    --target "$site" "${PACKAGES[@]}"
mkdir -p .gpu
tar -C "$site" -cJf .gpu/site.tar.xz .
echo "$PY_VERSION" > .gpu/python-version  # gpu_check.sh unpacks the tar for this Python only
ls -l .gpu/site.tar.xz
python3 - <<'PY'
import os
size = os.path.getsize(".gpu/site.tar.xz")
print(f".gpu/site.tar.xz: {size / 2**20:.1f} MiB (a device call carries at most 64 MiB)")
raise SystemExit(0 if size < 60 * 2**20 else 1)
PY
