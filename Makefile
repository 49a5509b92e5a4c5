# phfa: `make reproduce` runs the whole chain on the embedded toytown benchmark (CPU);
# `make test` runs the test suite. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# CPU/CUDA wheels that install on this project's reference machine; a CUDA user with
# another driver can preinstall torch in .venv (see README) and this step keeps it.
TORCH   ?= torch==2.14.1 torchvision==0.29.1
DATA    ?= data/toytown
RUN     ?= runs/toy
SEED    ?= 0

.PHONY: all venv test reproduce clean bench

all: test

$(BIN)/phfa: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

.venv: $(BIN)/phfa

venv: $(BIN)/phfa

test: $(BIN)/phfa
	$(BIN)/python -m pytest

reproduce: $(BIN)/phfa
	PHFA_DATA=$(DATA) PHFA_RUN=$(RUN) PHFA_SEED=$(SEED) PATH="$(CURDIR)/$(BIN):$$PATH" bash bench/reproduce.sh

clean:
	rm -rf $(RUN) $(DATA)
