#!/usr/bin/env bash
# `make reproduce`: the whole chain on the embedded toytown benchmark, toy preset, CPU.
# Environment: PHFA_DATA (toytown folder), PHFA_RUN (run folder), PHFA_SEED.
set -euo pipefail
DATA=${PHFA_DATA:-data/toytown}
RUN=${PHFA_RUN:-runs/toy}
SEED=${PHFA_SEED:-0}
ITERS=${PHFA_ITERS:+--iters $PHFA_ITERS}   # optional: fewer iterations (a smoke run)
CFG="$DATA/phfa-data.toml"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -f "$CFG" ]; then
  step "phfa data synth --out $DATA --seed 0"
  phfa data synth --out "$DATA" --seed 0
fi
step "phfa data check"
phfa data check --config "$CFG" unity gta5 cityscapes

# A stage that already finished is kept (delete $RUN, or `make clean`, to start over).
adapt() { local stage=$1; shift; [ -f "$RUN/$stage/final.pt" ] || phfa adapt --config "$CFG" --run "$RUN" --preset toy --seed "$SEED" $ITERS "$@"; }

step "source-only baseline (the paper's FCN row): gta5 only, no adaptation"
adapt adapt-noadv-nohier --sources gta5 --no-adversarial --no-hierarchy
step "image-level alignment (IT): CycleGAN gta5 -> cityscapes, perceptual loss from the source-only model"
[ -f "$RUN/translate-gta5/manifest.json" ] && grep -q '"finished"' "$RUN/translate-gta5/manifest.json" || \
  phfa translate --config "$CFG" --run "$RUN" --source gta5 --preset toy --seed "$SEED" $ITERS --seg-from adapt-noadv-nohier
step "PHFA: progressive unity -> gta5 (translated), adversarial + hierarchy (Eq. 10)"
adapt adapt-it --sources unity,gta5 --source-style translated

step "results on the toytown cityscapes val split (seed $SEED)"
python bench/summary.py "$RUN"
