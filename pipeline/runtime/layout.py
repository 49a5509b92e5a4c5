"""What lives where inside a run folder: the one place that knows stage names and shared files.

    RUN/fewshot-<target>.txt           the few-shot target list every stage of the run shares
    RUN/adapt[-variant|-TAG]/          `phfa adapt` (source-only, ablations, the full method)
    RUN/translate-<source>[-fda]/      `phfa translate`; its translated domain is in domain/
    RUN/pseudolabel[-<from stage>]/    `phfa pseudolabel` (Eq. 8); its label domain is in domain/
    RUN/retrain[-<labels stage>]/      `phfa retrain` (Eq. 11)
    RUN/report/                        `phfa report`

Inside a stage folder: manifest.json, final.pt, last.pt, metrics.json, metrics.jsonl, best.pt
and TensorBoard's event files (the constants below). Which stage plays which role is the run
index's answer (runindex.py).

Stage names become folder names, so a name given by the user (`--tag`, `--from`, `--stage`)
must be a plain name: no separators, no `..`, nothing that would land outside the run.
"""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.config import ALIGN_LEVELS, TrainConfig
from pipeline.errors import PhfaError

# the files of a stage folder
MANIFEST = "manifest.json"     # what the stage is, how it was made, its status (every stage)
FINAL = "final.pt"             # the trained model, rebuildable on its own (adapt, retrain)
LAST = "last.pt"               # the full training state a --resume continues from (adapt, retrain, translate)
METRICS = "metrics.json"       # target-val evaluation written by `phfa eval` (adapt, retrain)
METRIC_ROWS = "metrics.jsonl"  # one line of losses per logged iteration (and one per periodic validation)
BEST = "best.pt"               # the weights of the best periodic validation (val_every): kept, never used unless asked
EVENTS = "events.out.tfevents.*"  # TensorBoard event files (SummaryWriter's names), in the stage folder itself,
                                  # so `tensorboard --logdir RUN` names each curve after its stage

TRANSLATE_SUFFIX = {"cyclegan": "", "fda": "-fda"}
SOURCE_STYLES = {"raw": None, "translated": "cyclegan", "fda": "fda"}   # --source-style -> translate method
_STYLE_TAG = {"raw": None, "translated": "it", "fda": "fda"}
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


def plain_name(name: str, option: str) -> str:
    """`name` if it is a plain folder name (letters, digits, `_ . + = -`), else a PhfaError."""
    if not name or not _PLAIN.match(name) or name in (".", "..") or ".." in name:
        raise PhfaError(f"{option} '{name}': use a plain name (letters, digits, '-', '_', '.'); "
                        "it becomes a folder inside the run")
    return name


def few_shot_file(run: Path, target: str) -> Path:
    return Path(run) / f"fewshot-{target}.txt"


def adapt_stage(cfg: TrainConfig, tag: str | None, source_style: str = "raw") -> str:
    """'adapt' for the full method; ablations get a suffix so variants never overwrite each other."""
    if tag:
        return f"adapt-{plain_name(tag, '--tag')}"
    if source_style not in SOURCE_STYLES:
        raise PhfaError(f"--source-style must be one of {', '.join(SOURCE_STYLES)}, not '{source_style}'")
    parts = [_STYLE_TAG[source_style]] if _STYLE_TAG.get(source_style) else []
    if not cfg.adversarial:
        parts.append("noadv")
    if not cfg.align:
        parts.append("nohier")
    elif tuple(cfg.align) != ALIGN_LEVELS:
        parts.append("align-" + "-".join(cfg.align))
    return "-".join(["adapt", *parts])


def translate_stage(source: str, method: str) -> str:
    return f"translate-{source}{TRANSLATE_SUFFIX[method]}"


def pseudolabel_stage(from_stage: str) -> str:
    """'pseudolabel' for labels from the full method's `adapt`; 'pseudolabel-<stage>' otherwise."""
    return "pseudolabel" if from_stage == "adapt" else f"pseudolabel-{from_stage}"


def retrain_stage(labels_stage: str) -> str:
    """'retrain' for the first round; a later round is named after its labels, never overwriting."""
    return "retrain" if labels_stage == "pseudolabel" else "retrain-" + labels_stage.removeprefix("pseudolabel-")


def domain_root(stage_dir: Path) -> Path:
    """Where a stage that writes a dataset (translate, pseudolabel) puts it."""
    return Path(stage_dir) / "domain"


def stage_kind(name: str) -> str:
    """'adapt', 'translate', 'pseudolabel', 'retrain', 'report' or 'other' from a stage folder name."""
    for k in ("pseudolabel", "retrain", "translate", "adapt", "report"):
        if name == k or name.startswith(k + "-"):
            return k
    return "other"
