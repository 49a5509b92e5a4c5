#!/usr/bin/env bash
# `make reproduce`: the whole chain on the embedded toytown benchmark, toy preset, CPU:
# data synth -> source-only -> translate (CycleGAN + Eq. 7) -> adapt (unity,gta5 translated, AA + hierarchy)
# -> pseudolabel (Eq. 8) -> retrain (Eq. 11) -> eval (every stage) -> report.
# Environment: PHFA_DATA (toytown folder), PHFA_RUN (run folder), PHFA_SEED, PHFA_ITERS (smoke runs).
set -euo pipefail
DATA=${PHFA_DATA:-data/toytown}
RUN=${PHFA_RUN:-runs/toy}
SEED=${PHFA_SEED:-0}
ITERS=${PHFA_ITERS:+--iters $PHFA_ITERS}   # optional: fewer iterations (a smoke run)
CFG="$DATA/phfa-data.toml"
T0=$(date +%s)
step() { printf '\n\033[1m== [%4ss] %s\033[0m\n' "$(( $(date +%s) - T0 ))" "$*"; }
# a stage that already finished, as the run index reads it
done_() { [ -d "$RUN" ] && python -m pipeline.runtime.runindex "$RUN" --finished "$1"; }

if [ ! -f "$CFG" ]; then
  step "phfa data synth --out $DATA --seed 0"
  phfa data synth --out "$DATA" --seed 0
fi
step "phfa data check"
phfa data check --config "$CFG" unity gta5 cityscapes >/dev/null && echo "unity, gta5, cityscapes: usable"

# A stage that already finished is kept (delete $RUN, or `make clean`, to start over).
step "source-only baseline (the paper's FCN row): gta5 only, no adaptation"
done_ adapt-noadv-nohier || phfa adapt --config "$CFG" --run "$RUN" --preset toy --seed "$SEED" $ITERS \
  --sources gta5 --no-adversarial --no-hierarchy
step "image-level alignment (IT): CycleGAN gta5 -> cityscapes, perceptual loss (Eq. 7) from the source-only model"
done_ translate-gta5 || phfa translate --config "$CFG" --run "$RUN" --source gta5 --preset toy --seed "$SEED" $ITERS \
  --seg-from adapt-noadv-nohier
step "PHFA: progressive unity -> gta5 (translated), adversarial + hierarchy (Eq. 10)"
done_ adapt-it || phfa adapt --config "$CFG" --run "$RUN" --preset toy --seed "$SEED" $ITERS \
  --sources unity,gta5 --source-style translated
step "self-guidance: class-wise thresholds, pseudo-labels (Eq. 8)"
done_ pseudolabel-adapt-it || phfa pseudolabel --config "$CFG" --run "$RUN" --from adapt-it
step "self-guided retraining from the initial weights (Eq. 9, 11)"
done_ retrain-adapt-it || phfa retrain --config "$CFG" --run "$RUN" --labels pseudolabel-adapt-it $ITERS
step "evaluation of every stage on the toytown cityscapes val split (seed $SEED)"
phfa eval --config "$CFG" --run "$RUN"
step "report"
phfa report --config "$CFG" --run "$RUN"
step "done in $(( $(date +%s) - T0 )) s"
