# syntax=docker/dockerfile:1
#
# Two images from one file (run from the repository root):
#   docker build --target controller -t ghcr.io/godrun/godrun-controller:0.1.0 .
#   docker build --target trainer    -t ghcr.io/godrun/godrun-trainer:0.1.0 .
#
# controller: slim Python, the controller's four dependencies, godrun installed with --no-deps
#             (no torch, no numpy: godrun.controller never imports them).
# trainer:    CUDA devel stage compiles causal-conv1d and mamba-ssm for sm_80/sm_90 against the
#             pinned torch (--no-build-isolation), then a CUDA runtime stage gets the virtualenv.
#
# Base images are build arguments whose defaults are the public images users pull (PYTHON_IMAGE for the
# wheel and controller stages); a machine without a registry passes locally made ones
# (tests/k8s/images.py: `buildah bud --pull=never --build-arg PYTHON_IMAGE=...`).
# Bases are pinned by exact tag. For byte-reproducible builds append the digest you have verified,
# e.g. `FROM python:3.12.8-slim-bookworm@sha256:<digest>` (none is written here: this repository's
# machines cannot reach a registry to check one).

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# ---------------------------------------------------------------------------------------------
# godrun wheel (pure Python), shared by both targets
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY godrun ./godrun
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------
# controller: `godrun controller ...` (see manifests/controller/deployment.yaml)
FROM ${PYTHON_IMAGE} AS controller
LABEL org.opencontainers.image.title="godrun-controller" \
      org.opencontainers.image.description="GodRun Kubernetes controller (no torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# The controller's own dependency list (tests/test_deploy_dockerfile.py checks it covers every
# third-party import of godrun.controller and the godrun modules it uses).
RUN pip install --no-cache-dir \
        "pydantic==2.14.4" \
        "PyYAML==6.0.4" \
        "kubernetes==37.0.2" \
        "prometheus-client==0.26.0"
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/godrun-*.whl && rm -rf /wheels
USER 1000:1000
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["godrun"]
CMD ["controller"]

# ---------------------------------------------------------------------------------------------
# trainer build stage: nvcc + torch headers; compiles the CUDA extensions into wheels
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 AS trainer-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_VERSION=2.15.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG MAMBA_SSM_VERSION=2.3.2.post1
ARG CAUSAL_CONV1D_VERSION=1.7.0
ARG MAX_JOBS=8
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TORCH_CUDA_ARCH_LIST="8.0;9.0" \
    MAMBA_FORCE_BUILD=TRUE \
    CAUSAL_CONV1D_FORCE_BUILD=TRUE \
    MAX_JOBS=${MAX_JOBS}
# Distribution packages follow the pinned base image's release; pinning their versions would break
# every rebuild after an Ubuntu security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev python3-venv git \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir "packaging==26.3" "ninja==1.13.2" "setuptools==84.2.1" "wheel==0.48.0"
# --no-build-isolation: compile against the torch installed above (same ABI as at run time).
RUN pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /wheels \
        "causal-conv1d==${CAUSAL_CONV1D_VERSION}" \
    && pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /wheels \
        "mamba-ssm==${MAMBA_SSM_VERSION}"
COPY --from=wheel /wheels/ /wheels/
# godrun's runtime dependencies (pyproject.toml [project.dependencies], torch above), then the wheels.
RUN pip install --no-cache-dir \
        "numpy==2.4.6" \
        "pandas==3.1.1" \
        "scipy==1.17.1" \
        "pydantic==2.14.4" \
        "PyYAML==6.0.4" \
        "kubernetes==37.0.2" \
        "prometheus-client==0.26.0" \
        "rich==15.0.0" \
        "matplotlib==3.11.2" \
        "safetensors==0.8.0" \
        "PyWavelets==1.9.0" \
        "einops==0.8.2" \
        "transformers==5.23.0" \
    && pip install --no-cache-dir --no-deps /wheels/*.whl \
    && python -c "import godrun, torch; print('godrun', godrun.__version__, 'torch', torch.__version__)"

# ---------------------------------------------------------------------------------------------
# trainer: `python -m godrun.trainer ...` / `python -m godrun.evaluator ...` in the GodRun Jobs
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS trainer
LABEL org.opencontainers.image.title="godrun-trainer" \
      org.opencontainers.image.description="GodRun trainer and evaluator (torch, mamba-ssm for sm_80/sm_90)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    TRITON_CACHE_DIR=/tmp/.triton
# Same Python as the build stage (same Ubuntu release), so the copied virtualenv runs as is.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=trainer-build /opt/venv /opt/venv
# The seed-compatible entry points (scripts/evaluate_validation_panel.py, scripts/downstream_proxy_eval.py).
COPY scripts /opt/godrun/scripts
# Ubuntu's base image already has UID 1000 (`ubuntu`); the Jobs run as 1000 with a read-only root
# filesystem and writable mounts (/workspace, /tmp, /dev/shm).
USER 1000:1000
WORKDIR /workspace
CMD ["godrun", "--help"]
