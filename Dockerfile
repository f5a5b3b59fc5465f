# syntax=docker/dockerfile:1
# tickcast: the API service. CPU torch by default; a CUDA build with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
# Expected size: about 1.1 GB with the CPU torch build (torch is most of it); not measured here.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# optional extras, e.g. "[ray]" for the image the cluster profile's API and Ray nodes run
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the index the build argument names, so the open range in
# pyproject.toml never pulls a second (CUDA) build
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY app ./app
# hadolint ignore=DL3013
RUN pip install ".${EXTRAS}"  # this source tree (DL3013 takes ".[ray]" for a package from PyPI)

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TICKCAST_HOST=0.0.0.0 \
    TICKCAST_PORT=8000 \
    TICKCAST_STORE_PATH=/data/tickcast.db \
    TICKCAST_MODELS_DIR=/models \
    TICKCAST_WORKERS=1
RUN groupadd --system --gid 10001 tickcast \
    && useradd --system --uid 10001 --gid tickcast --home-dir /srv --shell /usr/sbin/nologin tickcast \
    && mkdir -p /data /models \
    && chown tickcast:tickcast /data /models
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
USER 10001:10001
VOLUME ["/data", "/models"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('TICKCAST_PORT', '8000')}/health\", timeout=4)"]
CMD ["tickcast", "serve"]
