# README's two commands: `make run` and `make test`. Both build everything they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MODEL  ?= models/yolo11n.onnx
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: run test install model lint bench bench-venv clean gpu-venv

# The runtime dependencies come from requirements.lock (exact versions, sha256-checked): the
# same set the image installs, so what the tests ran is what ships. The test tools on top.
$(VENV)/.installed: setup.cfg pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
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

# pytest-xdist workers, two more than the cores: a third of the suite's time is waiting (a
# negative control's timeout, a server or browser starting), which the extra workers fill
# (docs/benchmarks.md, "Issue 19": 271 s at cores + 1, 229 s at cores + 2 here); tests of one group (tests/conftest.py XDIST_GROUPS: the
# container, browser, GStreamer, quantize tests, modules with module-scoped fixtures) on one
# worker. PYTEST_XDIST= (empty) runs it in one process as before. Bytecode is written even
# where PYTHONDONTWRITEBYTECODE is set: the suite starts ~100 Python processes of the
# package (servers, benches, CLIs), and each would compile it again.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))
PYTEST_XDIST ?= -n $(TEST_WORKERS) --dist loadgroup
test: model gpu-venv
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

# The gpu extra's onnxruntime (CUDA and TensorRT providers) for tests/test_gpu_extra.py,
# which checks on a CPU machine that it imports cleanly and that a provider which cannot
# load stops the server. Its packages (.venv-gpu/gpu-packages) come first on its path, the
# project's .venv after (a .pth), so `import onnxruntime` there is the GPU wheel and
# everything else the project's. A failed download leaves it absent: those tests then say
# so (and fail under CI's strict mode).
#
# GPU_CACHE (CI sets it, .ci/run): a folder outside the clone where those 255 MB of packages
# are kept under a key of what decides them (requirements.lock, setup.cfg, the Python), built
# once (under a temporary name, then renamed) and linked as .venv-gpu/gpu-packages by every
# later clone; a changed key builds anew. Empty (the default): installed into the clone.
GPU_VENV ?= .venv-gpu
GPU_CACHE ?=
GPU_WHEEL = 'onnxruntime-gpu>=1.20'
$(GPU_VENV)/.installed: $(VENV)/.installed
	rm -rf $(GPU_VENV)
	$(PYTHON) -m venv --without-pip $(GPU_VENV)
	set -e; packages="$(GPU_VENV)/gpu-packages"; \
	if [ -n "$(GPU_CACHE)" ]; then \
	  key="$$(cat requirements.lock setup.cfg | sha256sum | cut -c1-16)-$$($(PY) -c 'import sys; print("py%d%d" % sys.version_info[:2])')"; \
	  packages="$(GPU_CACHE)/gpu-packages-$$key"; \
	fi; \
	if [ ! -e "$$packages/.complete" ]; then \
	  rm -rf "$$packages.tmp.$$$$"; mkdir -p "$$(dirname "$$packages")"; \
	  $(PY) -m pip install --quiet --target "$$packages.tmp.$$$$" $(GPU_WHEEL); \
	  touch "$$packages.tmp.$$$$/.complete"; rm -rf "$$packages"; mv "$$packages.tmp.$$$$" "$$packages"; \
	fi; \
	[ -e $(GPU_VENV)/gpu-packages ] || ln -s "$$(realpath "$$packages")" $(GPU_VENV)/gpu-packages; \
	site="$$($(GPU_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"; \
	echo "$$(realpath -s $(GPU_VENV))/gpu-packages" > "$$site/rtc-yolo-project.pth"; \
	echo "import site; site.addsitedir('$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")')" \
	  >> "$$site/rtc-yolo-project.pth"
	touch $@

gpu-venv: $(VENV)/.installed
	-$(MAKE) $(GPU_VENV)/.installed

# ruff on everything; mypy on the runtime packages (config: setup.cfg [mypy]).
lint: install
	$(PY) -m ruff check rtc_server drivers tests bench
	$(PY) -m mypy rtc_server

clean:
	rm -rf $(VENV) $(GPU_VENV) *.egg-info .pytest_cache

# requirements.lock: every runtime dependency of setup.cfg's install_requires and of the
# extras the image ships (gcs: gs:// models), pinned with its sha256 hashes. `make lock` after changing install_requires (keeps the other pins);
# `make lock-upgrade` to move every pin to the newest allowed release. Commit the result.
LOCK_EXTRAS = gcs
LOCK_ARGS = --quiet --generate-hashes --strip-extras $(foreach e,$(LOCK_EXTRAS),--extra $(e)) --no-emit-index-url --no-emit-find-links \
	--output-file requirements.lock setup.cfg
.PHONY: lock lock-upgrade
lock: install
	$(PY) -m piptools compile $(LOCK_ARGS)
lock-upgrade: install
	$(PY) -m piptools compile --upgrade $(LOCK_ARGS)

# The server image (see docs/deploy.md). PIP_CA=/path/ca.crt hands pip a custom CA
# as a BuildKit secret; MODEL_ARGS="--build-arg MODEL_NAME=..." picks another model.
.PHONY: image
image:
	DOCKER_BUILDKIT=1 docker build $(if $(PIP_CA),--secret id=pipca,src=$(PIP_CA)) $(MODEL_ARGS) -t rtc-yolo .

# Soak (issue 7): 300 sessions x 2 rounds against a server process; a table and a JSON line.
.PHONY: soak
soak: model
	$(PY) -m bench.soak

# ----- benchmarks (bench/, docs/benchmarks.md) -----------------------------------------
BENCH_VENV ?= .venv-bench
BENCH_OUT  ?= artifacts/bench
E2E_ARGS   ?=
ALT_ARGS   ?=
SCHED_ARGS ?=
# Run one bench (`python -m bench.<name>`, the one way every bench runs), its output also
# kept in $(BENCH_OUT)/<name>.log. Historical comparisons (bench/experiments/) are not run here.
bench_run = bash -o pipefail -c 'BENCH_VENV=$(BENCH_VENV) $(PY) -m bench.$(1) $(2) | tee $(BENCH_OUT)/$(1).log'

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

# Ultralytics, for the comparison only, in its own venv (it brings torch; the service does
# not). The local CPU torch 2.13.0 wheel cannot be used: the only torchvision reachable
# (PyPI's) is built against CUDA torch and fails to load its ops on a +cpu torch, and
# download.pytorch.org is not reachable here. So this takes PyPI's torch (runs on CPU).
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet ultralytics onnxruntime
	touch $@

bench-venv: $(BENCH_VENV)/.installed

bench: model $(VENV)/.bench-installed bench-venv
	@mkdir -p $(BENCH_OUT)
	$(call bench_run,cold_start,--out $(BENCH_OUT)/cold_start.json)
	$(call bench_run,model_start,)
	$(call bench_run,model_floor,--out $(BENCH_OUT)/model_floor.json)
	$(call bench_run,backends,--out $(BENCH_OUT)/backends.json)
	$(call bench_run,alternatives,--out $(BENCH_OUT)/alternatives.json $(ALT_ARGS))
	$(call bench_run,webrtc_e2e,--out $(BENCH_OUT)/webrtc_e2e.json $(E2E_ARGS))
	$(call bench_run,scheduler,--out $(BENCH_OUT)/scheduler.json $(SCHED_ARGS))
	$(PY) -m bench.plots --src $(BENCH_OUT) --dest docs
