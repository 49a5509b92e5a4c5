"""`phfa adapt`: progressive adversarial adaptation + hierarchical alignment (Eq. 1-6, 10).

Phase k trains on source k of `--sources` (ordered: preliminary ... primary) against the
few-shot target, starting from phase k-1's weights (paper III-B). The hierarchy losses
join in the primary (last) phase unless `hierarchy_all_phases`. Without adversarial and
hierarchy it is the source-only baseline (the paper's FCN row); with the target itself
as the only source it is the oracle.

Artefacts in RUN/<stage>/: final.pt (segmentor), last.pt (resumable state), metrics.jsonl,
metrics.json (target val, when labelled) and manifest.json.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from pipeline import classes as C
from pipeline import metrics as M
from pipeline.config import ALIGN_LEVELS, TrainConfig, from_dict
from pipeline.data import datasets
from pipeline.data.dataconfig import DataConfig, DomainSpec
from pipeline.errors import PhfaError
from pipeline.models.deeplab import build_deeplab
from pipeline.runtime import checkpoint, distributed
from pipeline.runtime.atomic import write_json
from pipeline.runtime.progress import Reporter
from pipeline.runtime.run import StageDir, now, sha256
from pipeline import train


SOURCE_STYLES = {"raw": None, "translated": "cyclegan", "fda": "fda"}
_STYLE_TAG = {"raw": None, "translated": "it", "fda": "fda"}


def stage_name(cfg: TrainConfig, tag: str | None, source_style: str = "raw") -> str:
    """'adapt' for the full method; ablations get a suffix so variants never overwrite each other."""
    if tag:
        return f"adapt-{tag}"
    parts = [_STYLE_TAG[source_style]] if _STYLE_TAG.get(source_style) else []
    if not cfg.adversarial:
        parts.append("noadv")
    if not cfg.align:
        parts.append("nohier")
    elif tuple(cfg.align) != ALIGN_LEVELS:
        parts.append("align-" + "-".join(cfg.align))
    return "-".join(["adapt", *parts])


def few_shot_file(run: Path, target: str) -> Path:
    return Path(run) / f"fewshot-{target}.txt"


def check_sources(data: DataConfig, sources: list[str]) -> None:
    if not sources:
        raise PhfaError("--sources: name at least one source domain, e.g. --sources unity,gta5")
    for s in sources:
        data.domain(s, option="--sources")


def build_phases(cfg: TrainConfig, sources: list[str]) -> list[train.Phase]:
    phases = []
    for k, src in enumerate(sources):
        primary = k == len(sources) - 1
        align = tuple(cfg.align) if (primary or cfg.hierarchy_all_phases) else ()
        phases.append(train.Phase(f"{k + 1}-{src}", src, cfg.iters, cfg.adversarial, align))
    return phases


def target_dataset(data: DataConfig, run: Path, target: str, cfg: TrainConfig, labels_dir: Path | None = None):
    spec = data.domain(target, option="--target")
    names = datasets.few_shot_names(spec, cfg.seed, few_shot_file(run, target))
    return datasets.SegDataset(spec, datasets.train_split(spec), cfg.target_size, labels=False, names=names,
                               hflip=cfg.hflip, cache=cfg.cache)


def resolve_sources(data: DataConfig, run: Path, sources: list[str], style: str) -> dict[str, DomainSpec]:
    """Each source's domain spec; with a translated style, the run's translated copy where one exists
    (the primary, last source must have one)."""
    if style not in SOURCE_STYLES:
        raise PhfaError(f"--source-style must be one of {', '.join(SOURCE_STYLES)}, not '{style}'")
    from pipeline.stages.translate import stage_name as tr_stage, translated_domain
    out = {}
    for i, s in enumerate(sources):
        spec = data.domain(s, option="--sources")
        if SOURCE_STYLES[style] is not None:
            tr = translated_domain(run, spec, SOURCE_STYLES[style])
            if tr is None and i == len(sources) - 1:
                method = SOURCE_STYLES[style]
                raise PhfaError(f"--source-style {style}: {run} has no finished {tr_stage(s, method)} stage; run "
                                f"`phfa translate --run {run} --source {s} --method {method}` first")
            spec = tr or spec
        out[s] = spec
    return out


def source_dataset(spec: DomainSpec, name: str, cfg: TrainConfig, target: str):
    size = cfg.target_size if name == target else cfg.source_size
    return datasets.SegDataset(spec, datasets.train_split(spec), size, labels=True, hflip=cfg.hflip, cache=cfg.cache)


def segmentor_payload(model, cfg: TrainConfig, extra: dict) -> dict:
    return {"kind": "segmentor", "arch": arch_of(cfg), "config": cfg.to_dict(), "model": model.state_dict(), **extra}


def arch_of(cfg: TrainConfig) -> dict:
    return {"backbone": cfg.backbone, "num_classes": C.NUM_CLASSES, "freeze_bn": cfg.freeze_bn}


def evaluate_target(model, data: DataConfig, target: str, cfg: TrainConfig, device, split: str = "val") -> dict | None:
    """Target-val metrics when that split exists with labels, else None."""
    spec = data.domain(target)
    try:
        items = datasets.samples(spec, split)
    except PhfaError:
        return None
    if not items or any(s.label is None for s in items):
        return None
    conf = train.evaluate(model, spec, split, cfg.target_size, device, train.use_bf16(cfg, device))
    m = M.summarize(conf, 19)
    m.update(domain=target, split=split, images=len(items), confusion=conf.tolist())
    return m


def adapt(data: DataConfig, run: Path, sources: list[str], target: str | None, cfg: TrainConfig,
          tag: str | None = None, force: bool = False, resume: bool = False, source_style: str = "raw",
          reporter: Reporter | None = None, command: str = "phfa adapt",
          device: torch.device | None = None) -> dict:
    reporter = reporter or Reporter()
    check_sources(data, sources)
    target = target or data.default_target()
    data.domain(target, option="--target")
    specs = resolve_sources(data, run, sources, source_style)  # fail on bad names before writing
    sd = StageDir(run, stage_name(cfg, tag, source_style))
    if device is None:
        _, world, device = distributed.init()
    main = distributed.is_main()
    if main:  # rank 0 alone touches the stage folder; the others wait for it
        resuming = sd.begin(force=force, resume=resume, command=command)
        if resuming:
            sd.write(status="running", resumed=now())
        if any(p.needs_target for p in build_phases(cfg, sources)):
            datasets.few_shot_names(data.domain(target), cfg.seed, few_shot_file(run, target))
    else:
        resuming = resume
    distributed.barrier()
    state, ck = None, None
    if resuming:
        if not (sd.path / "last.pt").is_file():
            raise PhfaError(f"--resume: nothing to resume in {sd.path} (no last.pt yet); start over with --force")
        ck = checkpoint.load(sd.path / "last.pt", "--resume")
        if ck.get("kind") != "train-state":
            raise PhfaError(f"--resume: {sd.path / 'last.pt'} is not a training state")
        cfg = from_dict(ck["config"])  # the interrupted run's settings win over the command line
        sources = sd.manifest().get("sources", sources)
        source_style = sd.manifest().get("source_style", source_style)
        specs = resolve_sources(data, run, sources, source_style)
        state = train.State(phase=ck["phase"], it=ck["iter"], history=ck.get("history", []))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)
    phases = build_phases(cfg, sources)
    srcs = {s: source_dataset(specs[s], s, cfg, target) for s in dict.fromkeys(sources)}
    needs_target = any(p.needs_target for p in phases)
    tgt = target_dataset(data, run, target, cfg) if needs_target else None
    # on resume the weights come from last.pt: never fetch pretrained weights again
    model = build_deeplab(cfg.backbone, C.NUM_CLASSES, "none" if ck is not None else cfg.pretrained, cfg.freeze_bn)
    load_report = getattr(model, "load_report", None)
    if ck is not None:
        model.load_state_dict(ck["model"])
    if main:
        sd.write(sources=sources, target=target, config=cfg.to_dict(), world_size=distributed.world_size(),
                 phases=[{"name": p.name, "source": p.source, "iters": p.iters, "adversarial": p.adversarial,
                          "align": list(p.align)} for p in phases],
                 source_style=source_style,
                 inputs={"data_config": str(data.path), "source_roots": {s: str(specs[s].root) for s in srcs},
                         "few_shot_list": str(few_shot_file(run, target)) if tgt else None,
                         "source_images": {s: len(d) for s, d in srcs.items()},
                         "target_images": len(tgt) if tgt is not None else 0,
                         "pretrained": cfg.pretrained, "pretrained_report": _report(load_report)},
                 device=str(device), precision="bf16+channels_last" if train.use_bf16(cfg, device) else "fp32")
    t0 = time.time()
    try:
        state = train.run(cfg, model, phases, train.Data(srcs, tgt), sd.path, reporter, state=state,
                          resume=ck, device=device, arch=arch_of(cfg))
    except train.Interrupted as e:
        if main:
            sd.write(status="interrupted", interrupted_at={"phase": e.phase, "iter": e.it}, last=str(e.path))
        raise
    train_seconds = time.time() - t0
    if not main:
        return None
    final = sd.path / "final.pt"
    checkpoint.save(final, segmentor_payload(model, cfg, {"phases": state.history, "sources": sources,
                                                         "target": target}))
    reporter.message("evaluating on the target's val split…")
    m = evaluate_target(model, data, target, cfg, device)
    if m is not None:
        write_json(sd.path / "metrics.json", m)
    return sd.write(status="finished", finished=now(), phases_done=state.history,
                    timings={"train_seconds": round(train_seconds, 1)},
                    outputs={"final": str(final), "final_sha256": sha256(final), "last": str(sd.path / "last.pt")},
                    metrics={"target_val_miou": m["miou"]} if m else {})


def _report(r):
    if not r:
        return None
    return {k: (v if not isinstance(v, list) else v[:20]) for k, v in r.items()}
