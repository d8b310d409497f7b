# The README's two commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extras to install (dev = tests, ray = the Ray backend and its tests, train = fine-tuning). On CPU machines constraints/cpu.txt pins torch to the CPU wheel
# (torch==2.13.0) so that the diffusion extra never pulls several GB of CUDA packages.
EXTRAS ?= dev,diffusion,ray,train
CONSTRAINTS ?= constraints/cpu.txt
DEMO_OUT ?= out/walk

.PHONY: install demo test test-fast bench bench-scaling clean

$(BIN)/.installed-$(EXTRAS): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/.installed-$(EXTRAS)

demo: install
	$(BIN)/sketchcolor validate examples/walk
	$(BIN)/sketchcolor run examples/walk --out $(DEMO_OUT)
	@echo "open $(DEMO_OUT)/contact_sheet.png (and flipbook.mp4)"

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/flat_accuracy.py

bench-scaling: install
	$(BIN)/python benchmarks/scaling.py

clean:
	rm -rf $(VENV) out .pytest_cache
