# phfa: `make reproduce` runs the whole chain on the embedded toytown benchmark (CPU);
# `make test` runs the fast test tier, `make test-all` everything (CI); `make ablation` the
# Table IV rows on toytown for 3 seeds. All create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# CPU/CUDA wheels that install on this project's reference machine; a CUDA user with
# another driver can preinstall torch in .venv (see README) and this step keeps it.
TORCH   ?= torch==2.14.1 torchvision==0.29.1
DATA    ?= data/toytown
RUN     ?= runs/toy
SEED    ?= 0

.PHONY: all venv test test-all reproduce ablation clean bench

all: test

$(BIN)/phfa: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

.venv: $(BIN)/phfa

venv: $(BIN)/phfa

test: $(BIN)/phfa
	$(BIN)/python -m pytest -m "not slow"

test-all: $(BIN)/phfa
	$(BIN)/python -m pytest

reproduce: $(BIN)/phfa
	PHFA_DATA=$(DATA) PHFA_RUN=$(RUN) PHFA_SEED=$(SEED) PATH="$(CURDIR)/$(BIN):$$PATH" bash bench/reproduce.sh

ablation: $(BIN)/phfa
	@test -f $(DATA)/phfa-data.toml || $(BIN)/phfa data synth --out $(DATA) --seed 0
	$(BIN)/python bench/ablation.py --data $(DATA) --out runs/ablation --seeds 0 1 2 --jobs 2 --table-iv

clean:
	rm -rf $(RUN) $(DATA)
