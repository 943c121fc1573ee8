# syntax=docker/dockerfile:1
#
# Three images from one file (run from the repository root):
#   docker build --target controller  -t ghcr.io/godrun/godrun-controller:0.1.0 .
#   docker build --target trainer     -t ghcr.io/godrun/godrun-trainer:0.1.0 .
#   docker build --target trainer-cpu -t ghcr.io/godrun/godrun-trainer:0.1.0-cpu .
#
# controller: slim Python, the controller's four dependencies, godrun installed with --no-deps
#             (no torch, no numpy: godrun.controller never imports them).
# trainer:    CUDA devel stage compiles mamba-ssm (its selective-scan kernel) against the pinned torch
#             (--no-build-isolation), then a CUDA runtime stage gets the virtualenv.
#
# One build arg, CUDA_VERSION, picks both the nvidia/cuda base tag and the torch wheel index
# (https://download.pytorch.org/whl/cu<major><minor>), so they cannot disagree:
#   docker build --target trainer --build-arg CUDA_VERSION=13.2.0 ...
# The default, 13.2.0, matches the torch 2.15.0 wheel on PyPI (a cu132 build); neither that base tag nor a
# cu128 build of torch 2.15.0 could be checked from this repository's machines (no registry reachable), and
# no image has been built here (no Docker engine): the file is linted and its text tested only.
#
# Base images are build arguments whose defaults are the public images users pull (PYTHON_IMAGE for the
# wheel and controller stages); a machine without a registry passes locally made ones
# (tests/k8s/images.py: `buildah bud --pull=never --build-arg PYTHON_IMAGE=...`).
# Bases are pinned by exact tag. For byte-reproducible builds append the digest you have verified,
# e.g. `FROM python:3.12.8-slim-bookworm@sha256:<digest>` (none is written here: this repository's
# machines cannot reach a registry to check one).

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm
ARG CUDA_VERSION=13.2.0
ARG TORCH_VERSION=2.15.0

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
# trainer-cpu: the same trainer and evaluator without a GPU (the README's CPU try-out; the node tests run it).
# The same pinned dependency list and godrun wheel as the CUDA trainer, on the slim Python base, no mamba-ssm
# (its kernel is CUDA only; the pure-torch selective scan runs). torch is PyPI's wheel, a CUDA build that loads
# the CUDA runtime libraries even on CPU: requirements/torch-cpu.txt installs those, without triton.
FROM ${PYTHON_IMAGE} AS trainer-cpu
LABEL org.opencontainers.image.title="godrun-trainer-cpu" \
      org.opencontainers.image.description="GodRun trainer and evaluator for CPU nodes (torch, no CUDA)" \
      org.opencontainers.image.licenses="Apache-2.0"
ARG TORCH_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache
COPY requirements/ /tmp/requirements/
RUN pip install --no-cache-dir --no-deps "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir -r /tmp/requirements/torch-cpu.txt -r /tmp/requirements/trainer.txt \
    && rm -rf /tmp/requirements
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/godrun-*.whl && rm -rf /wheels \
    && python -c "import godrun, torch; print('godrun', godrun.__version__, 'torch', torch.__version__)"
COPY scripts /opt/godrun/scripts
USER 1000:1000
WORKDIR /workspace
CMD ["godrun", "--help"]

# ---------------------------------------------------------------------------------------------
# trainer build stage: nvcc + torch headers; compiles the CUDA extension into a wheel
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu24.04 AS trainer-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG CUDA_VERSION
ARG TORCH_VERSION
ARG MAMBA_SSM_VERSION=2.3.2.post1
# Builder RAM: mamba-ssm's setup.py passes nvcc its own fixed -gencode list (TORCH_CUDA_ARCH_LIST does not
# narrow it; with a recent nvcc it spans every architecture from sm_75 up to sm_120), so each of the MAX_JOBS
# parallel nvcc processes compiles the scan kernels for all of them. Budget about 4 GB of RAM per job
# (16 GB for the default MAX_JOBS=4); lower MAX_JOBS on a smaller builder. (An estimate: no image is built here.)
ARG MAX_JOBS=4
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MAMBA_FORCE_BUILD=TRUE \
    MAX_JOBS=${MAX_JOBS}
# Distribution packages follow the pinned base image's release; pinning their versions would break
# every rebuild after an Ubuntu security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev python3-venv git \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
# The torch index follows CUDA_VERSION: 13.2.0 -> cu132.
RUN CUDA_TAG="cu$(echo "${CUDA_VERSION}" | cut -d. -f1,2 | tr -d .)" \
    && pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${CUDA_TAG}" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir "packaging==26.3" "ninja==1.13.2" "setuptools==84.2.1" "wheel==0.48.0"
# --no-build-isolation: compile against the torch installed above (same ABI as at run time). causal-conv1d is
# not built: mamba-ssm imports it only optionally and godrun's Mamba block does its own causal convolution.
RUN pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /wheels \
        "mamba-ssm==${MAMBA_SSM_VERSION}"
COPY --from=wheel /wheels/ /wheels/
COPY requirements/trainer.txt /tmp/requirements-trainer.txt
# godrun's runtime dependencies (requirements/trainer.txt, shared with trainer-cpu; torch above), mamba-ssm's
# own (einops, transformers), then the wheels.
RUN pip install --no-cache-dir -r /tmp/requirements-trainer.txt "einops==0.8.2" "transformers==5.23.0" \
    && pip install --no-cache-dir --no-deps /wheels/*.whl \
    && python -c "import godrun, torch; print('godrun', godrun.__version__, 'torch', torch.__version__)"

# ---------------------------------------------------------------------------------------------
# trainer: `python -m godrun.trainer ...` / `python -m godrun.evaluator ...` in the GodRun Jobs
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS trainer
LABEL org.opencontainers.image.title="godrun-trainer" \
      org.opencontainers.image.description="GodRun trainer and evaluator (torch, mamba-ssm's fused selective scan)" \
      org.opencontainers.image.licenses="Apache-2.0"
# GODRUN_REQUIRE_FUSED_SCAN=1: on a GPU, a trainer that cannot import mamba-ssm's kernel fails (exit 2) instead
# of falling back to the pure-torch scan, which is about 30x slower.
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    TRITON_CACHE_DIR=/tmp/.triton \
    GODRUN_REQUIRE_FUSED_SCAN=1
# Same Python as the build stage (same Ubuntu release), so the copied virtualenv runs as is.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=trainer-build /opt/venv /opt/venv
# The build fails unless the compiled kernel and the fused scan import in the runtime image itself (no GPU is
# needed to import them); godrun's own loader must pick that scan.
RUN python -c "import selective_scan_cuda; from mamba_ssm.ops.selective_scan_interface import selective_scan_fn; \
from godrun.model.mamba import _mamba_ssm_scan; assert _mamba_ssm_scan() is selective_scan_fn; print('fused scan ok')"
# The seed-compatible entry points (scripts/evaluate_validation_panel.py, scripts/downstream_proxy_eval.py).
COPY scripts /opt/godrun/scripts
# Ubuntu's base image already has UID 1000 (`ubuntu`); the Jobs run as 1000 with a read-only root
# filesystem and writable mounts (/workspace, /tmp, /dev/shm).
USER 1000:1000
WORKDIR /workspace
CMD ["godrun", "--help"]
