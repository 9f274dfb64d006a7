# README's two commands: `make run` and `make test`. Both build everything they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MODEL  ?= models/yolo11n.onnx
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: run test install model lint bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The default model, verified by sha256; skipped when RTC_MODEL points elsewhere.
model: install
ifeq ($(strip $(RTC_MODEL)),)
	$(PY) -m rtc_server.models fetch --dest $(MODEL)
else
	@echo "RTC_MODEL=$(RTC_MODEL): not fetching the default model"
endif

run: model
	$(PY) -m rtc_server --host $(HOST) --port $(PORT) $(if $(strip $(RTC_MODEL)),,--model $(MODEL))

test: model
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check rtc_server signaling tests bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# The server image (see docs/deploy.md). PIP_CA=/path/ca.crt hands pip a custom CA
# as a BuildKit secret; MODEL_ARGS="--build-arg MODEL_NAME=..." picks another model.
.PHONY: image
image:
	DOCKER_BUILDKIT=1 docker build $(if $(PIP_CA),--secret id=pipca,src=$(PIP_CA)) $(MODEL_ARGS) -t rtc-yolo .

# Soak (issue 7): 300 sessions x 2 rounds against a server process; a table and a JSON line.
.PHONY: soak
soak: model
	$(PY) bench/soak.py
