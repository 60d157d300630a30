# tvl_async with NVDEC (PyNvVideoCodec) on an NVIDIA GPU; see docs/gpu.md.
#
#   docker build -t tvl-async-gpu .
#   docker run --rm --gpus all tvl-async-gpu                       # the test suite, GPU required
#   docker run --rm --gpus all tvl-async-gpu tools/gpu_check.sh    # GPU tests + benchmark, logs
#
# Needs the NVIDIA driver and the NVIDIA Container Toolkit on the host. NVDEC's library
# (libnvcuvid.so.1) comes from the host driver and is mounted only when the container asks for
# the "video" driver capability, hence NVIDIA_DRIVER_CAPABILITIES below.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

# PyTorch wheels built for the image's CUDA version.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=video,compute,utility \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH}

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "${VIRTUAL_ENV}" \
    && pip install --upgrade pip

# CUDA build of PyTorch first, so that installing the package keeps it (torch>=2.3 is satisfied).
RUN pip install torch --index-url "${TORCH_INDEX_URL}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY tvl_async ./tvl_async
# PyAV (bundles FFmpeg), PyNvVideoCodec (the nvdec extra), pytest & co (the test extra).
# PyNvVideoCodec is not imported here: its import checks the NVIDIA driver (libnvidia-encode),
# which `docker build` does not mount; the tests (CMD) import it at run time, with --gpus.
RUN pip install ".[nvdec,test]" \
    && python -c "import av, torch; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'av', av.__version__)" \
    && pip show pynvvideocodec | head -n 2

COPY tests ./tests
COPY tools ./tools

# GPU tests must run here: without a usable GPU they fail instead of being skipped.
ENV TVL_ASYNC_REQUIRE_CUDA=1

CMD ["python", "-m", "pytest", "-ra"]
