# syntax=docker/dockerfile:1
# The i2i inference server (`i2i-serve`) as a container image.
#
#   docker build -t i2i-serve:0.1.0 .            # GPU: CUDA 13, TensorRT, ONNX Runtime GPU (no PyTorch)
#   docker build -t i2i-serve:0.1.0-cpu --build-arg VARIANT=cpu .        # CPU only, smaller
#   docker run --gpus all -p 8001:8001 -p 8002:8002 -v "$PWD/models:/models:ro" i2i-serve:0.1.0
#
# The model repository is mounted at /models (read-only is enough). Every `i2i-serve` flag can
# be set as I2I_SERVE_<FLAG> (`-e I2I_SERVE_MAX_BATCH=16`) or appended to `docker run`.
# gRPC (i2i.v1.Translator, grpc.health.v1, reflection) on 8001, Prometheus /metrics on 8002.
# SIGTERM drains: health NOT_SERVING, accepted calls finish within I2I_SERVE_GRACE_SECONDS
# (30 s), exit 0; give `docker stop -t` / terminationGracePeriodSeconds more than that.
# The GPU variant needs an NVIDIA driver for CUDA 13 (R580 or newer) on the host.
#
# Bases are pinned by tag; for production pin them by digest as well
# (e.g. --build-arg CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04@sha256:...).
# tests/deploy checks this file with hadolint and runs its ENTRYPOINT, ENV and HEALTHCHECK.

ARG VARIANT=gpu
ARG PYTHON_IMAGE=python:3.12.12-slim-trixie
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---- build: the i2i wheel, after checking the protocol modules match protos/ -------------
FROM ${PYTHON_IMAGE} AS build
# What `pip wheel` builds with and the `make protos` generator (pinned in pyproject [dev]).
RUN python -m pip install --no-cache-dir \
        setuptools==84.2.1 grpcio-tools==1.85.1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY src/ src/
# Regenerate src/i2i/v1 from protos/ like `make protos`; a stale committed copy fails the build.
RUN mkdir -p build/protos \
    && python -m grpc_tools.protoc -I protos --python_out=build/protos \
        --grpc_python_out=build/protos --pyi_out=build/protos protos/i2i/v1/translator.proto \
    && for name in translator_pb2.py translator_pb2.pyi translator_pb2_grpc.py; do \
        cmp "build/protos/i2i/v1/$name" "src/i2i/v1/$name" \
        || { echo "src/i2i/v1/$name is stale: run 'make protos' and commit" >&2; exit 1; }; \
    done
RUN python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir dist .

# ---- bases of the two variants: VARIANT picks one --------------------------------------------
FROM ${CUDA_IMAGE} AS base-gpu
# Ubuntu 24.04's Python 3.12; the CUDA 13 runtime and cuDNN 9 come with the base image.
# DL3008 (pin apt versions): the base tag (digest in production) fixes the Ubuntu release and
# its security updates are wanted; exact apt pins break rebuilds once an update supersedes them.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM ${PYTHON_IMAGE} AS base-cpu

# ---- runtime ------------------------------------------------------------------------------
# DL3006 (tag the image): base-gpu and base-cpu are stages of this file, not images.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
# No PyTorch: serving runs ONNX graphs and TensorRT engines (DESIGN.md, "Serving never needs
# PyTorch"); `pip install i2i` is the serving stage, the [gpu] extra adds the GPU runtimes.
# onnxruntime-gpu on PyPI is built for CUDA 13 and cuDNN 9; the tensorrt metapackage pulls
# tensorrt-cu13. TensorRT engines (*.plan) must be built with the same TensorRT version, or
# the server falls back to ONNX Runtime.
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ARG TENSORRT_VERSION=10.16.1.11
ARG NVIDIA_ML_PY_VERSION=13.580.82
# cuda-python: the CUDA bindings the TensorRT backend takes device memory and streams from.
ARG CUDA_PYTHON_VERSION=13.4.4

LABEL org.opencontainers.image.title="i2i-serve" \
      org.opencontainers.image.description="i2i image-to-image translation server (gRPC)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      io.i2i.variant="${VARIANT}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN groupadd --gid 10001 i2i \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/i2i \
        --shell /usr/sbin/nologin i2i \
    && mkdir -p /models

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /src/dist/ /tmp/wheels/
# Exact pins of what the tests run with; pip refuses anything that contradicts them. In the
# gpu variant, onnxruntime (a core dependency) and onnxruntime-gpu share one package folder
# and extras cannot say "one or the other": only the GPU build is kept, and the build fails
# unless it has the CUDA provider. The image must not hold PyTorch: the build fails if it does.
RUN printf '%s\n' \
        "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" \
        "tensorrt==${TENSORRT_VERSION}" "tensorrt-cu13==${TENSORRT_VERSION}" \
        "nvidia-ml-py==${NVIDIA_ML_PY_VERSION}" "cuda-python==${CUDA_PYTHON_VERSION}" \
        onnxruntime==1.32.0 numpy==2.4.6 pillow==13.0.0 grpcio==1.85.1 \
        grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 protobuf==7.36.2 \
        prometheus-client==0.26.0 jsonschema==4.26.0 tqdm==4.70.1 \
        > /tmp/wheels/constraints.txt \
    && python3 -m venv /opt/venv \
    && case "${VARIANT}" in \
        gpu) wheel_extra="[gpu]" ;; \
        cpu) wheel_extra="" ;; \
        *) echo "VARIANT must be gpu or cpu, got '${VARIANT}'" >&2; exit 1 ;; \
    esac \
    && wheel="$(find /tmp/wheels -name 'i2i-*.whl')" \
    && pip install --no-cache-dir --constraint /tmp/wheels/constraints.txt \
        "${wheel}${wheel_extra}" \
    && if [ "${VARIANT}" = gpu ]; then \
        pip uninstall --yes onnxruntime \
        && pip install --no-cache-dir --no-deps --force-reinstall \
            "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" \
        && python -c "import onnxruntime as o; \
            assert 'CUDAExecutionProvider' in o.get_available_providers(), 'no CUDA provider'"; \
    else \
        pip check; \
    fi \
    && python -c "import importlib.util as u; \
        assert u.find_spec('torch') is None, 'PyTorch in the serving image'" \
    && i2i-serve --help > /dev/null \
    && rm -rf /tmp/wheels

USER 10001:10001
WORKDIR /home/i2i
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    I2I_SERVE_REPOSITORY=/models \
    I2I_SERVE_HOST=0.0.0.0 \
    I2I_SERVE_PORT=8001 \
    I2I_SERVE_METRICS_PORT=8002 \
    I2I_SERVE_LOG_FORMAT=json
EXPOSE 8001 8002
STOPSIGNAL SIGTERM
# grpc.health.v1 on I2I_SERVE_PORT: healthy once every model is loaded and warm (TensorRT
# engines and CUDA warm-up can take a while, hence the start period).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "i2i.client.probe"]
ENTRYPOINT ["i2i-serve"]
