# phfa: `make reproduce` runs the whole chain on the embedded toytown benchmark (CPU);
# `make test` runs the fast test tier, `make test-all` everything (CI); `make ablation` the
# Table IV rows on toytown for 3 seeds. All create .venv on first use, with the exact versions of
# constraints.txt (`make lock` refreshes that file).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# CPU/CUDA wheels that install on this project's reference machine; a CUDA user with
# another driver can preinstall torch in .venv (see README) and this step keeps it.
TORCH   ?= torch==2.14.1 torchvision==0.29.1
# Without an NVIDIA driver, torch's CPU build (about 1 GB installed instead of about 6 GB): its
# index is added to pip's, and where it cannot be reached pip installs the default build. Set
# TORCH_INDEX= (empty) to install the default build anyway.
TORCH_INDEX ?= $(if $(wildcard /proc/driver/nvidia/version),,https://download.pytorch.org/whl/cpu)
DATA    ?= data/toytown
RUN     ?= runs/toy
SEED    ?= 0

.PHONY: all venv test test-all reproduce ablation clean bench lock

all: test

$(BIN)/phfa: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "import torch, torchvision" | $(BIN)/python 2>/dev/null || $(BIN)/pip install -q -c constraints.txt \
	  $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX) --timeout 10 --retries 1) $(TORCH)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
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

# The newest releases within pyproject.toml's ranges, installed into a scratch environment and
# written to constraints.txt (torch's own stack left to the TORCH pins). Run `make test-all` on the
# result before committing it.
lock:
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install -q $(TORCH)
	.venv-lock/bin/pip install -q -e '.[test]'
	{ sed -n '/^#/p' constraints.txt; .venv-lock/bin/pip freeze --all --exclude-editable \
	  | grep -viE '^(pip|torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==|^#' | LC_ALL=C sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-lock
	@echo "constraints.txt refreshed; run make test-all before committing it"

clean:
	rm -rf $(RUN) $(DATA)
