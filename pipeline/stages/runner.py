"""The training-stage runner every training stage shares (adapt, retrain; any later one).

A stage describes *what* to train as a `Plan` (phases, datasets, what to record); this module
does *how*, the same way for all of them:

    1. check every input and build the plan (nothing is written yet; on --resume the
       interrupted run's config, read from last.pt, wins over the command line)
    2. build the model from the initial weights (`--pretrained`, or the run's `init_stage` for an
       aligning stage: `initial_weights`) or last.pt
    3. open the stage folder (refuse / resume / replace with --force, keeping the old one
       until the new one is written)
    4. train (`pipeline.train.run`; TensorBoard events and, with `val_every`, periodic validation
       and best.pt: `pipeline.validation`), write final.pt, evaluate it on the target's val
       split, mark the manifest finished. final.pt is what every later stage, eval, predict and
       report use; best.pt is kept for looking only

Ctrl-C during training or evaluation leaves the manifest "interrupted" and a `--resume`
continues where it stopped; evaluation is simply run again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from pipeline import classes as C
from pipeline import inference
from pipeline import metrics as M
from pipeline import train
from pipeline.config import SOURCE_ONLY, TrainConfig, from_dict, warm_started
from pipeline.data.dataconfig import DataConfig
from pipeline.errors import PhfaError
from pipeline.models import segmentor
from pipeline.models.deeplab import build_deeplab
from pipeline.runtime import checkpoint, distributed
from pipeline.runtime.atomic import write_json
from pipeline.runtime.progress import Reporter
from pipeline.runtime.run import StageDir, now, sha256
from pipeline.runtime import layout
from pipeline.runtime.loop import Interrupted
from pipeline.runtime.runindex import RunIndex
from pipeline.runtime.tensorboard import Board
from pipeline import validation


@dataclass
class Plan:
    """What one training stage trains: built by the stage, run by `run_stage`."""
    phases: list[train.Phase]
    data: train.Data
    target: str                                   # domain evaluated at the end (its val split)
    record: dict = field(default_factory=dict)    # manifest fields (sources, inputs, ...)
    final_extra: dict = field(default_factory=dict)  # metadata stored in final.pt


def resume_state(sd: StageDir, resume: bool) -> dict | None:
    """The interrupted attempt's last.pt (validated), or None when not resuming."""
    if not resume:
        return None
    if sd.manifest() is None:
        raise PhfaError(f"--resume: nothing to resume in {sd.path}; run without --resume")
    if not (sd.path / layout.LAST).is_file():
        raise PhfaError(f"--resume: nothing to resume in {sd.path} (no last.pt yet); start over with --force")
    ck = checkpoint.load(sd.path / layout.LAST, "--resume")
    if ck.get("kind") != "train-state":
        raise PhfaError(f"--resume: {sd.path / layout.LAST} is not a training state")
    return ck


def initial_weights(run: Path, cfg: TrainConfig) -> str:
    """What the model starts from: `pretrained`, or for an aligning stage of a config that names an
    `init_stage`, that stage's final.pt (`source-only`: the run's source-only stage, as the run
    index finds it from the manifests). The toy preset's adaptation rows (and their retraining)
    start from the run's source-only model, trained with the calibrated schedule, as methods with a
    source warm-up do (set when the toy trained from scratch and aligning an untrained model
    collapsed it); the rows without adaptation (source-only, oracle) start from `pretrained`."""
    if not warm_started(cfg):
        return cfg.pretrained
    how = (f"train it first (for the toy preset: `phfa adapt --run {run} --sources gta5 --no-adversarial "
           f"--no-hierarchy --preset toy`), or start from --pretrained with --set init_stage=")
    stage = cfg.init_stage
    if stage == SOURCE_ONLY:
        stage = RunIndex(run).source_only() if run.is_dir() else None
        if stage is None:
            raise PhfaError(f"init_stage {SOURCE_ONLY}: {run} has no finished source-only stage to start from; {how}")
    sd = StageDir(run, stage)
    if not sd.finished() or not (sd.path / layout.FINAL).is_file():
        raise PhfaError(f"init_stage {stage}: {sd.path} holds no finished stage to start from; {how}")
    return str(sd.model(f"init_stage {stage}"))


def kept_settings(cfg: TrainConfig, old: TrainConfig) -> list[str]:
    """The settings a --resume keeps from the interrupted run although the command line differs."""
    a, b = cfg.to_dict(), old.to_dict()
    return [f"{k}={b[k]}" for k in b if a.get(k) != b[k]]


def evaluate_target(model, data: DataConfig, target: str, cfg: TrainConfig, device, split: str = "val",
                    reporter: Reporter | None = None) -> dict | None:
    """Target-val metrics when that split exists with labels, else None."""
    spec = data.domain(target)
    items = validation.labelled_split(spec, split)
    if items is None:
        return None
    conf = inference.evaluate(model, spec, split, cfg.target_size, device, inference.use_bf16(cfg.precision, device),
                              reporter=reporter)
    m = M.summarize(conf, 19)
    m.update(domain=target, split=split, images=len(items), confusion=conf.tolist())
    return m


def run_stage(data: DataConfig, run: Path, stage: str, cfg: TrainConfig,
              make_plan: Callable[[TrainConfig, dict | None], Plan], *, force: bool = False, resume: bool = False,
              reporter: Reporter | None = None, command: str = "phfa", device: torch.device | None = None) -> dict | None:
    """Run one training stage end to end; returns its manifest (None on non-zero DDP ranks)."""
    reporter = reporter or Reporter()
    sd = StageDir(run, stage)
    main = distributed.is_main()
    if main:
        sd.acquire(command)  # one process per stage, before anything of it is read
    try:
        return _run_stage(data, run, sd, cfg, make_plan, force, resume, reporter, command, device)
    finally:
        sd.release()


def _run_stage(data, run, sd, cfg, make_plan, force, resume, reporter, command, device):
    # --- 1. inputs, before anything is written
    ck = resume_state(sd, resume)
    kept: list[str] = []
    if ck is not None:
        old = from_dict(ck["config"])  # the interrupted run's settings win over the command line
        kept = kept_settings(cfg, old)
        cfg = old
    plan = make_plan(cfg, sd.manifest() if ck is not None else None)
    # --- 2. the model: initial weights, or the interrupted state (never fetch weights again)
    torch.manual_seed(cfg.seed)
    start = None if ck is not None else initial_weights(run, cfg)
    model = build_deeplab(cfg.backbone, C.NUM_CLASSES, start or "none", cfg.bn)
    load_report = model.load_report
    init_digest = state_digest(model) if ck is None else None
    if ck is not None:
        model.load_state_dict(ck["model"])
    if device is None:
        _, _, device = distributed.init()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    main = distributed.is_main()
    # --- 3. the stage folder (rank 0 alone touches it; the others wait)
    if main:
        if sd.begin(force=force, resume=ck is not None, command=command):
            sd.write(status="running", resumed=now(), resume_kept=kept)
            if kept:
                reporter.message("--resume keeps the interrupted run's settings: " + ", ".join(kept))
        sd.write(config=cfg.to_dict(), world_size=distributed.world_size(),
                 phases=[p.describe() for p in plan.phases], target=plan.target,
                 device=str(device), precision=inference.describe_precision(cfg.precision, device),
                 **plan.record)
        sd.write(inputs={**sd.manifest().get("inputs", {}), "pretrained": start,
                         "pretrained_report": _brief(load_report),
                         "init_weights_sha256": init_digest} if ck is None else sd.manifest().get("inputs", {}))
    distributed.barrier()
    # --- 4. train, save, evaluate
    state = None
    if ck is not None:
        state = train.State(phase=ck["phase"], it=ck["iter"], history=ck.get("history", []))
    t0 = time.time()
    try:
        try:
            state = watched_run(data, sd, cfg, model, plan, reporter, state, ck, device)
        except Interrupted as e:
            if main:
                e.restored = sd.interrupt(interrupted_at={"phase": e.phase, "iter": e.it}, last=str(e.path))
            raise
        if not main:
            return None
        final = sd.path / layout.FINAL
        checkpoint.save(final, segmentor.payload(model, cfg, {"phases": state.history, "target": plan.target,
                                                             **plan.final_extra}))
        sd.write(status="trained", phases_done=state.history,
                 # the classes that took part in Eq. 1 / Eq. 6 by the last iteration (its last aligning phase)
                 participation=next((p["participation"] for p in reversed(state.history) if p.get("participation")),
                                    None),
                 timings={"train_seconds": round(time.time() - t0, 1)})  # this attempt's
        try:
            m = evaluate_target(model, data, plan.target, cfg, device, reporter=reporter)
        except KeyboardInterrupt:
            e = Interrupted(sd.path / layout.LAST, 0, "evaluation")
            e.restored = sd.interrupt(interrupted_at={"phase": "evaluation", "iter": 0})
            raise e from None
        if m is not None:
            write_json(sd.path / layout.METRICS, m)
        best = sd.path / layout.BEST  # periodic validation's, for looking: final.pt stays the model
        outputs = {"final": str(final), "final_sha256": sha256(final), "last": str(sd.path / layout.LAST)}
        return sd.finish(outputs={**outputs, **({"best": str(best)} if best.is_file() else {})},
                         metrics={"target_val_miou": m["miou"]} if m else {})
    except Interrupted:
        raise
    except BaseException:
        if main and sd.restore():  # --force: the replaced stage comes back
            reporter.message(f"the new attempt failed; {sd.path} is back as it was before --force")
        raise


def watched_run(data: DataConfig, sd: StageDir, cfg: TrainConfig, model, plan: Plan, reporter: Reporter,
                state: train.State | None, ck: dict | None, device) -> train.State:
    """`train.run` with the stage's TensorBoard board and periodic validation (`val_every`), rank 0's.
    A --resume purges the events past the stage step it continues from and keeps the best record of
    last.pt; the board is closed before the stage folder is finished, interrupted or put back."""
    main = distributed.is_main()
    done = sum(p.iters for p in plan.phases[:state.phase]) + state.it if state is not None else None
    board = Board(sd.path, resumed_at=done) if main else None
    try:
        validator = validation.periodic(model, data.domain(plan.target), cfg, device, sd.path, board, reporter,
                                        {"target": plan.target, **plan.final_extra},
                                        best=ck.get("best") if ck is not None else None,
                                        on_best=lambda rec: sd.write(best=rec)) if main else None
        if validator is not None and ck is not None:
            sd.write(best=validator.state())  # the record of last.pt: a later one died with its attempt
        return train.run(cfg, model, plan.phases, plan.data, sd.path, reporter, state=state, resume=ck, device=device,
                         arch=segmentor.arch_of(cfg), board=board, validator=validator)
    finally:
        if board is not None:
            board.close()


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over a model's parameters and buffers (names and bytes): which weights it started from."""
    import hashlib
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _brief(r):
    if not r:
        return None
    return {k: (v if not isinstance(v, list) else v[:20]) for k, v in r.items()}
