"""`phfa retrain`: self-guided retraining on the pseudo-labels (paper III-E, Eq. 9 and 11).

The network starts again from the *initial* weights (the same `--pretrained` init and seed
as the adapt stage the pseudo-labels came from, never the adapted weights) and runs the
same phases as that stage, each adding the target cross-entropy on the pseudo-labels
(Eq. 9, `Phase.target_labels`); the hierarchy losses take the target's classes from the
pseudo-labels instead of the predictions (Eq. 11). It is the same training loop and the same
stage runner as `phfa adapt`: same resume, progress, manifest and evaluation.

Stage names never collide: labels of `pseudolabel` train `retrain`; a second round
(`phfa pseudolabel --from retrain`, labels in `pseudolabel-retrain`) trains `retrain-retrain`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from pipeline.config import TrainConfig, from_dict
from pipeline.data import datasets
from pipeline.data.dataconfig import DataConfig
from pipeline.errors import PhfaError
from pipeline.runtime import layout
from pipeline.runtime.progress import Reporter
from pipeline.runtime.run import StageDir
from pipeline.runtime.runindex import RunIndex
from pipeline.stages import adapt as A
from pipeline.stages import runner
from pipeline.stages.pseudolabel import pseudo_domain
from pipeline import train


def default_labels_stage(run: Path) -> str:
    """The pseudo-labels retrain reads without --labels: the most recently finished pseudolabel stage."""
    picked = RunIndex(run).latest("pseudolabel") if Path(run).is_dir() else None
    if picked is None:
        raise PhfaError(f"--labels: {run} has no finished pseudolabel stage; run `phfa pseudolabel --run {run}` first")
    return picked


def origin(run: Path, labels_stage: str) -> tuple[StageDir, dict, dict]:
    """(pseudolabel stage, its manifest, the manifest of the stage its labels came from)."""
    layout.plain_name(labels_stage, "--labels")
    sd = StageDir(run, labels_stage)
    if layout.stage_kind(labels_stage) != "pseudolabel" or not sd.path.is_dir():
        raise PhfaError(f"--labels: {sd.path} is not a pseudolabel stage; run `phfa pseudolabel --run {run}` first")
    if not sd.finished():
        raise PhfaError(f"--labels: {sd.path} is unfinished; run `phfa pseudolabel --run {run} --force` again")
    man = sd.manifest()
    src = StageDir(run, man["from_stage"]).manifest()
    if not src or "config" not in src:
        raise PhfaError(f"--labels: the stage {man['from_stage']} that {labels_stage} came from is gone from {run}")
    return sd, man, src


def base_config(run: Path, labels_stage: str | None) -> TrainConfig:
    """The config of the stage the pseudo-labels came from: retrain repeats its init and phases."""
    _, _, src = origin(Path(run), labels_stage or default_labels_stage(Path(run)))
    return from_dict(src["config"])


# The fields that say which terms each phase trains with. Retrain repeats its origin's phases, so
# these always come from the origin stage, also when `--preset` supplies the hyper-parameters:
# the pseudo-labels of an `adapt --no-hierarchy` stage retrain without the hierarchy losses.
PHASE_SHAPE = ("adversarial", "align", "hierarchy_all_phases")


def preset_config(preset_cfg: TrainConfig, run: Path, labels_stage: str | None) -> TrainConfig:
    """A preset's hyper-parameters with the phase shape (adversarial, hierarchy levels) of the stage
    the pseudo-labels came from; `--set` pairs applied afterwards still override either."""
    src = base_config(run, labels_stage)
    return dataclasses.replace(preset_cfg, **{k: getattr(src, k) for k in PHASE_SHAPE})


def retrain(data: DataConfig, run: Path, cfg: TrainConfig | None = None, labels_stage: str | None = None,
            force: bool = False, resume: bool = False, reporter: Reporter | None = None,
            command: str = "phfa retrain", device: torch.device | None = None) -> dict | None:
    run = Path(run)
    labels_stage = labels_stage or default_labels_stage(run)
    lab_sd, lab_man, src_man = origin(run, labels_stage)
    cfg = cfg or from_dict(src_man["config"])
    target = lab_man["target"]
    stage = layout.retrain_stage(labels_stage)

    def make_plan(cfg: TrainConfig, old: dict | None) -> runner.Plan:
        sources = src_man["sources"]
        style = src_man.get("source_style", "raw")
        specs = A.resolve_sources(data, run, sources, style)
        phases = A.build_phases(cfg, sources, target_labels=True)
        pspec = pseudo_domain(lab_sd.path, target)
        tgt = datasets.SegDataset(pspec, datasets.train_split(pspec), cfg.target_size, labels=True, hflip=cfg.hflip,
                                  cache=cfg.cache, photometric=cfg.photometric,
                                  photometric_range=cfg.photometric_range, raw=True)
        src_ds = A.source_datasets({s: specs[s] for s in dict.fromkeys(sources)}, cfg, target)
        A.check_inputs([*src_ds.values(), tgt], cfg)
        record = {"sources": sources, "source_style": style, "labels_stage": labels_stage,
                  "from_stage": lab_man["from_stage"],
                  "inputs": {"data_config": str(data.path), "source_roots": {s: str(specs[s].root) for s in src_ds},
                             "pseudo_labels": str(pspec.root), "source_images": {s: len(d) for s, d in src_ds.items()},
                             "target_images": len(tgt),
                             "prepared_cache": {d.spec.name: d.prepared for d in (*src_ds.values(), tgt)}}}
        return runner.Plan(phases, train.Data(src_ds, tgt), target, record,
                           {"sources": sources, "labels_stage": labels_stage})

    return runner.run_stage(data, run, stage, cfg, make_plan, force=force, resume=resume, reporter=reporter,
                            command=command, device=device)
