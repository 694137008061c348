# Two entry points, both from a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
# torch is installed first as the CPU pin so that no multi-GB CUDA build is pulled.
TORCH_PIN ?= torch==2.13.0

.PHONY: venv test demo clean

$(BIN)/histoeq: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	touch $(BIN)/histoeq

venv: $(BIN)/histoeq

test: venv
	$(BIN)/python -m pytest -q

demo: venv
	$(BIN)/histoeq models
	$(BIN)/histoeq bench layers --repeats 5

clean:
	rm -rf $(VENV) build *.egg-info
