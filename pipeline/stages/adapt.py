"""`phfa adapt`: progressive adversarial adaptation + hierarchical alignment (Eq. 1-6, 10).

Phase k trains on source k of `--sources` (ordered: preliminary ... primary) against the
few-shot target, starting from phase k-1's weights (paper III-B). The hierarchy losses
join in the primary (last) phase unless `hierarchy_all_phases`. Without adversarial and
hierarchy it is the source-only baseline (the paper's FCN row); with the target itself
as the only source it is the oracle. An aligning stage starts from `--pretrained`, or, when
the config names an `init_stage` (the toy preset: the source-only stage), from that stage's
final weights for `init_iters` iterations (see `pipeline.stages.runner.initial_weights`).

Artefacts in RUN/<stage>/: final.pt (segmentor), last.pt (resumable state), metrics.jsonl,
metrics.json (target val, when labelled) and manifest.json. The stage runner
(`pipeline.stages.runner`) does the folder, resume, training, saving and evaluation; this
module only says what to train.
"""
from __future__ import annotations

import warnings

from pathlib import Path

import torch

from pipeline.config import TrainConfig, primary_iters
from pipeline.data import datasets
from pipeline.data.check import check_files
from pipeline.data.dataconfig import DataConfig, DomainSpec
from pipeline.errors import PhfaError
from pipeline.runtime import layout
from pipeline.runtime.progress import Reporter
from pipeline.runtime.run import StageDir
from pipeline.stages import runner
from pipeline import train


def check_sources(data: DataConfig, sources: list[str]) -> None:
    if not sources:
        raise PhfaError("--sources: name at least one source domain, e.g. --sources unity,gta5")
    for s in sources:
        data.domain(s, option="--sources")


def build_phases(cfg: TrainConfig, sources: list[str], target_labels: bool = False) -> list[train.Phase]:
    phases = []
    for k, src in enumerate(sources):
        primary = k == len(sources) - 1
        align = tuple(cfg.align) if (primary or cfg.hierarchy_all_phases) else ()
        n = primary_iters(cfg)
        iters = n if primary else max(1, round(n * cfg.aux_share))
        phases.append(train.Phase(f"{k + 1}-{src}", src, iters, cfg.adversarial, align, target_labels))
    return phases


def translated_spec(run: Path, source: DomainSpec, method: str) -> DomainSpec | None:
    """The translated copy of `source` written by a finished translate stage of `run`, if any."""
    sd = StageDir(run, layout.translate_stage(source.name, method))
    if not sd.finished():
        return None
    return DomainSpec(name=f"{source.name}@{method}", format=source.format, root=layout.domain_root(sd.path))


def resolve_sources(data: DataConfig, run: Path, sources: list[str], style: str) -> dict[str, DomainSpec]:
    """Each source's domain spec; with a translated style, the run's translated copy where one exists
    (the primary, last source must have one)."""
    if style not in layout.SOURCE_STYLES:
        raise PhfaError(f"--source-style must be one of {', '.join(layout.SOURCE_STYLES)}, not '{style}'")
    method = layout.SOURCE_STYLES[style]
    out = {}
    for i, s in enumerate(sources):
        spec = data.domain(s, option="--sources")
        if method is not None:
            tr = translated_spec(run, spec, method)
            if tr is None and i == len(sources) - 1:
                raise PhfaError(f"--source-style {style}: {run} has no finished {layout.translate_stage(s, method)} "
                                f"stage; run `phfa translate --run {run} --source {s} --method {method}` first")
            if tr is None:
                warnings.warn(f"--source-style {style}: {run} has no {layout.translate_stage(s, method)} stage, so "
                              f"{s} trains on its raw images (translate it first to align it too)", stacklevel=2)
            spec = tr or spec
        out[s] = spec
    return out


def few_shot_target(data: DataConfig, run: Path, target: str, cfg: TrainConfig) -> datasets.SegDataset:
    """The run's few-shot target images, unlabelled (labels all 255)."""
    spec = data.domain(target, option="--target")
    names = datasets.few_shot_names(spec, cfg.seed, layout.few_shot_file(run, target))
    return datasets.SegDataset(spec, datasets.train_split(spec), cfg.target_size, labels=False, names=names,
                               hflip=cfg.hflip, cache=cfg.cache, photometric=cfg.photometric,
                               photometric_range=cfg.photometric_range, raw=True)


def source_dataset(spec: DomainSpec, name: str, cfg: TrainConfig, target: str) -> datasets.SegDataset:
    size = cfg.target_size if name == target else cfg.source_size
    return datasets.SegDataset(spec, datasets.train_split(spec), size, labels=True, hflip=cfg.hflip, cache=cfg.cache,
                               photometric=cfg.photometric, photometric_range=cfg.photometric_range, raw=True)


def source_datasets(specs: dict[str, DomainSpec], cfg: TrainConfig, target: str) -> dict[str, datasets.SegDataset]:
    return {s: source_dataset(spec, s, cfg, target) for s, spec in specs.items()}


def check_inputs(dss, cfg: TrainConfig) -> None:
    """Every file a stage will read, checked before the stage folder exists (damaged files, batch size)."""
    for ds in dss:
        if ds is None:
            continue
        check_files(ds.items, f"domain '{ds.spec.name}'")
        if len(ds) < cfg.batch_size:
            raise PhfaError(f"batch_size {cfg.batch_size} is larger than the {len(ds)} images of domain "
                            f"'{ds.spec.name}'; lower it with --set batch_size=N")


def adapt(data: DataConfig, run: Path, sources: list[str], target: str | None, cfg: TrainConfig,
          tag: str | None = None, force: bool = False, resume: bool = False, source_style: str = "raw",
          reporter: Reporter | None = None, command: str = "phfa adapt",
          device: torch.device | None = None) -> dict | None:
    check_sources(data, sources)
    target = target or data.default_target()
    data.domain(target, option="--target")
    stage = layout.adapt_stage(cfg, tag, source_style)

    def make_plan(cfg: TrainConfig, old: dict | None) -> runner.Plan:
        srcs, style = (old.get("sources", sources), old.get("source_style", source_style)) if old else \
            (sources, source_style)
        specs = resolve_sources(data, run, srcs, style)
        phases = build_phases(cfg, srcs)
        tgt = few_shot_target(data, run, target, cfg) if any(p.needs_target for p in phases) else None
        src_ds = source_datasets({s: specs[s] for s in dict.fromkeys(srcs)}, cfg, target)
        check_inputs([*src_ds.values(), tgt], cfg)
        record = {"sources": srcs, "source_style": style,
                  "inputs": {"data_config": str(data.path), "source_roots": {s: str(specs[s].root) for s in src_ds},
                             "few_shot_list": str(layout.few_shot_file(run, target)) if tgt else None,
                             "source_images": {s: len(d) for s, d in src_ds.items()},
                             "target_images": len(tgt) if tgt is not None else 0,
                             "prepared_cache": {d.spec.name: d.prepared for d in (*src_ds.values(), tgt) if d is not None}}}
        return runner.Plan(phases, train.Data(src_ds, tgt), target, record, {"sources": srcs})

    return runner.run_stage(data, run, stage, cfg, make_plan, force=force, resume=resume, reporter=reporter,
                            command=command, device=device)
