"""ONE training loop for source-only, adapt (Eq. 10) and retrain (Eq. 11), and the loop
machinery the CycleGAN of `phfa translate` (Eq. 7) shares with it.

A run is a list of phases (progressive sources, paper III-B): phase k trains on source k
against the target, starting from phase k-1's weights. Which losses take part is switched
by the phase, never by a copy of the loop:

    source-only    L = lambda_seg * CE(source)
    adapt (Eq. 10) L = lambda_seg * CE(source) + lambda_adv * L_adv + L_hierarchy,  D: lambda_d * L_D
    retrain (11)   the same plus lambda_seg * CE(target, pseudo-labels) (Eq. 9); hierarchy on pseudo-labels

    L_hierarchy = lambda_obj * L_obj (Eq. 1) + lambda_class * L_class (Eq. 2-3)
                + lambda_back * L_back (Eq. 4-6)

Resume equals never stopping: the data stream is a function of (seed, phase, iteration)
(`StreamSampler`), every phase's random initialisation is seeded by (seed, phase), the
learning-rate schedules are `torch.optim.lr_scheduler` objects saved in `last.pt`, and
Ctrl-C is honoured between iterations, never inside one (`pipeline.runtime.loop`, the loop
machinery the CycleGAN shares), so `last.pt` always holds the state after a complete iteration.
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline import classes as C
from pipeline.config import TrainConfig
from pipeline.data.transforms import normalize
from pipeline.errors import PhfaError
from pipeline.inference import upsample, use_bf16, use_channels_last
from pipeline.losses import adversarial as adv
from pipeline.losses import alignment as al
from pipeline.losses import memory as memories
from pipeline.losses import regions
from pipeline.losses.maxsquare import class_balanced_max_square
from pipeline.models.discriminator import OutputDiscriminator
from pipeline.runtime import checkpoint, distributed, layout
from pipeline.runtime.progress import Reporter, Silent
from pipeline.runtime.loop import loop, truncate_jsonl
from pipeline.runtime.tensorboard import Board
from pipeline.validation import Validator


@dataclass
class Phase:
    name: str
    source: str                      # source domain name
    iters: int
    adversarial: bool
    align: tuple[str, ...] = ()      # hierarchy levels active in this phase
    target_labels: bool = False      # retrain: CE on the target's pseudo-labels (Eq. 9)

    @property
    def needs_target(self) -> bool:
        return self.adversarial or bool(self.align) or self.target_labels

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "iters": self.iters, "adversarial": self.adversarial,
                "align": list(self.align), "target_labels": self.target_labels}


@dataclass
class Data:
    sources: dict[str, Dataset]      # domain name -> labelled dataset
    target: Dataset | None           # few-shot target (labels = pseudo-labels in retrain, else 255)


@dataclass
class State:
    phase: int = 0                   # index into phases
    it: int = 0                      # iterations done in that phase
    history: list[dict] = field(default_factory=list)  # finished phases: name, iters, seconds


# ----------------------------------------------------------------------------- data stream


class StreamSampler(Sampler):
    """Infinite stream of (index, flip, augmentation seed) whose k-th element depends only on (seed, k).

    Each epoch is a permutation drawn from a generator seeded by (seed, epoch), so resuming at
    batch k needs no saved sampler state. The augmentation seed of stream position p is
    (seed, p) folded into one integer (the dataset uses it only when photometric is on)."""

    def __init__(self, n: int, batch: int, seed: int, start_batch: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start = n, batch, seed, start_batch
        self.rank, self.world = rank, world  # rank r reads global batches r, r + world, ...

    def epoch(self, e: int) -> tuple[list[int], list[bool]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
        return torch.randperm(self.n, generator=g).tolist(), (torch.rand(self.n, generator=g) < 0.5).tolist()

    def __iter__(self) -> Iterator[tuple[int, bool, int]]:
        e, cache = -1, None
        k = self.start
        while True:
            g = k * self.world + self.rank
            for p in range(g * self.batch, (g + 1) * self.batch):
                ep = p // self.n
                if ep != e:
                    e, cache = ep, self.epoch(ep)
                perm, flips = cache
                yield perm[p % self.n], flips[p % self.n], abs(self.seed) * 1_000_003 + p
            k += 1


def make_loader(ds: Dataset, batch_size: int, workers: int, seed: int, start_batch: int,
                device: torch.device) -> Iterator:
    """An endless iterator of batches starting at batch `start_batch` of the (seed) stream.

    The DataLoader gets its own generator, so creating it never draws from the global RNG
    (a resumed run creates its loaders at another point of the RNG sequence)."""
    if len(ds) < batch_size:
        raise PhfaError(f"batch_size {batch_size} is larger than the {len(ds)} images available")
    sampler = StreamSampler(len(ds), batch_size, seed, start_batch, distributed.rank(), distributed.world_size())
    # never more workers than usable cores (torch warns, and they would only compete); the batches do
    # not depend on the count: every sample's augmentation is seeded by its place in the stream
    workers = min(workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return iter(DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                           pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0,
                           generator=torch.Generator().manual_seed(seed)))


def stream_seed(seed: int, phase: int, stream: int) -> int:
    """Seed of one random stream of one phase: 0 source, 1 target, 2 initialisation, 7/8 CycleGAN."""
    return seed * 101 + phase * 11 + stream


# ----------------------------------------------------------------------------- schedules


def poly_schedule(total: int, power: float) -> Callable[[int], float]:
    """LambdaLR factor (1 - it/total)^power (DeepLab's poly), clamped at 0 past `total`."""
    def factor(it: int) -> float:
        return max(0.0, 1 - it / total) ** power
    return factor


def nonfinite_advice(cfg: TrainConfig, it: int, bad: dict) -> str:
    """The likeliest cause of a non-finite segmentation loss, from the settings and when it happened."""
    if cfg.bn == "frozen" and cfg.pretrained == "none" and not cfg.init_stage:
        return ("BatchNorm is frozen at a random initialisation's statistics, so nothing normalises the "
                "activations: use --set bn=reference (batch statistics, as the reference code) or pretrained weights")
    if it < 10:
        return (f"at the start of training, with lr {cfg.lr:g}: check the initial weights (--pretrained) and the "
                "input images first, then lower the learning rate with --set lr=...")
    if set(bad) <= {"obj", "back", "class"}:
        return ("only the hierarchy losses: lower their weights (--set lambda_obj=, lambda_back=, lambda_class=) "
                "or the learning rate")
    return f"lower the learning rate (now {cfg.lr:g}) with --set lr=..."


# ----------------------------------------------------------------------------- segmentation


def run(cfg: TrainConfig, model: torch.nn.Module, phases: list[Phase], data: Data, out: Path,
        reporter: Reporter, state: State | None = None, resume: dict | None = None,
        device: torch.device | None = None, arch: dict | None = None, board: Board | None = None,
        validator: Validator | None = None) -> State:
    """Train through `phases`, writing out/last.pt (snapshots) and out/metrics.jsonl; `board` gets the
    metric lines and `validator` validates (with its best record in last.pt), at the stage step."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state = state or State()
    bf16 = use_bf16(cfg.precision, device)
    cl = use_channels_last(cfg.precision, device)
    model.to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    main = distributed.is_main()
    if not main:
        reporter = Silent()
    net = distributed.wrap(model, device)  # forward through DDP; state and param groups from model
    metrics_path = out / layout.METRIC_ROWS
    if resume is not None and main:
        done = {p.name for p in phases[:state.phase]}
        cur = phases[state.phase].name if state.phase < len(phases) else None
        truncate_jsonl(metrics_path, lambda r: r.get("phase") in done or (r.get("phase") == cur
                                                                        and r.get("iter", 0) <= state.it))
    for pi in range(state.phase, len(phases)):
        ph = phases[pi]
        start_it = state.it if pi == state.phase else 0
        offset = sum(p.iters for p in phases[:pi])  # the stage step this phase starts at
        # --- a fresh D, optimisers, schedules and memory per phase, seeded by (seed, phase)
        torch.manual_seed(stream_seed(cfg.seed, pi, 2))
        D = OutputDiscriminator(C.NUM_CLASSES, ndf=cfg.d_ndf).to(device) if ph.adversarial else None
        opt = make_optimizer(cfg, model)
        horizon = cfg.poly_iters or ph.iters
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, poly_schedule(horizon, cfg.poly_power))]
        opt_d = None
        if D is not None:
            opt_d = make_d_optimizer(cfg, D)
            schedulers.append(torch.optim.lr_scheduler.LambdaLR(opt_d, poly_schedule(horizon, cfg.poly_power)))
        memory = hierarchy_memory(cfg, ph.align, model.feature_dim, device)
        average, average_from = weight_average(cfg, model, ph.iters, device)
        if resume is not None and resume.get("phase_done"):
            resume = None  # the previous phase ended; this one starts fresh from the saved weights
        if resume is not None and pi == state.phase:
            opt.load_state_dict(resume["opt"])
            for s, sd in zip(schedulers, resume["schedulers"]):
                s.load_state_dict(sd)
            if D is not None:
                D.load_state_dict(resume["disc"])
                opt_d.load_state_dict(resume["opt_d"])
            if memory is not None and resume.get("memory") is not None:
                memory.load_state_dict(resume["memory"])
            if average is not None and resume.get("average") is not None:
                average.load_state_dict(resume["average"])
            torch.set_rng_state(resume["rng"])
            resume = None
        src_it = make_loader(data.sources[ph.source], cfg.batch_size, cfg.workers,
                             stream_seed(cfg.seed, pi, 0), start_it, device)
        tgt_it = make_loader(data.target, cfg.batch_size, cfg.workers, stream_seed(cfg.seed, pi, 1), start_it,
                             device) if ph.needs_target else None

        def snapshot(it: int, pi=pi, D=D, opt=opt, opt_d=opt_d, memory=memory, schedulers=schedulers,
                     average=average, phase_done: bool = False) -> Path:
            p = out / layout.LAST
            if main:
                checkpoint.save(p, {
                    "kind": "train-state", "arch": arch or {}, "config": cfg.to_dict(),
                    # a finished phase is saved as "phase pi+1, iteration 0": a resume starts the next one fresh
                    "phase": pi + 1 if phase_done else pi, "iter": 0 if phase_done else it,
                    "phase_done": phase_done, "history": state.history,
                    "model": model.state_dict(), "opt": opt.state_dict(),
                    "schedulers": [s.state_dict() for s in schedulers],
                    "disc": D.state_dict() if D is not None else None,
                    "opt_d": opt_d.state_dict() if opt_d is not None else None,
                    "memory": memory.state_dict() if memory is not None else None,
                    "average": average.state_dict() if average is not None and not phase_done else None,
                    "best": validator.state() if validator is not None else None,
                    "rng": torch.get_rng_state(),
                })
            return p

        model.train()
        if D is not None:
            D.train()
        t0 = time.time()
        def step(it: int, D=D, opt=opt, opt_d=opt_d, memory=memory, ph=ph, src_it=src_it, tgt_it=tgt_it,
                 average=average, average_from=average_from) -> dict[str, torch.Tensor]:
            losses = train_step(cfg, net, D, opt, opt_d, memory, ph, src_it, tgt_it, device, bf16)
            if average is not None and it >= average_from:
                average.update_parameters(model)  # the weights after iteration it + 1
            return losses

        loop(ph.name, start_it, ph.iters, step,
             schedulers=schedulers, reporter=reporter, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every,
             snapshot=snapshot, metrics_path=metrics_path if main else None, record={"phase": ph.name},
             check_every_step=device.type == "cpu", advice=lambda it, bad: nonfinite_advice(cfg, it, bad),
             last_good=out / layout.LAST if (out / layout.LAST).is_file() else None, board=board if main else None,
             step0=offset, after_step=validator.hook(offset, ph.name) if validator is not None and main else None)
        state.history.append({**ph.describe(),
                              "memory_counts": memory.counts() if memory is not None else None,
                              "participation": memories.participation(memory, C.CLASS_NAMES),
                              "seconds": round(time.time() - t0, 1)})
        if average is not None:  # the phase's result is the average; the batch counters stay the model's
            with torch.no_grad():
                own = model.state_dict()
                for k, v in average.module.state_dict().items():
                    if v.is_floating_point():
                        own[k].copy_(v)
        state.phase, state.it = pi + 1, 0
        snapshot(ph.iters, phase_done=True)  # the weights the next phase (or final.pt) starts from
    return state


def weight_average(cfg: TrainConfig, model: torch.nn.Module, iters: int,
                   device: torch.device) -> tuple[AveragedModel | None, int]:
    """The equal average of the weights after each of a phase's last `weight_average * iters`
    iterations (stochastic weight averaging, averaged densely), and the first iteration it takes.
    Batch-norm running statistics are averaged alike, not recomputed for the averaged weights as
    SWA does with a pass over the training data: an approximation that costs nothing."""
    if cfg.weight_average <= 0:
        return None, iters
    n = max(1, round(cfg.weight_average * iters))
    return AveragedModel(model, device=device, use_buffers=True), iters - n


def hierarchy_memory(cfg: TrainConfig, align, dim: int, device: torch.device) -> memories.HierarchyMemory | None:
    """The source memories of a phase aligning `align`: one per level (things: Eq. 1, stuff:
    Eq. 5), each with its own size; None when the phase uses neither level."""
    if "object" not in align and "background" not in align:
        return None
    return memories.HierarchyMemory(
        C.NUM_CLASSES, dim,
        object_size=(cfg.memory_size_object or memories.OBJECT_MEMORY_FACTOR * cfg.memory_size) if "object" in align else 0,
        background_size=cfg.memory_size if "background" in align else 0).to(device)


def fused(device: torch.device) -> bool:
    """Adam's fused kernel keeps its step counter on the parameters' device: the per-parameter
    implementation reads that counter on the host in every step (a device wait on a GPU)."""
    return device.type in ("cuda", "cpu")


def make_d_optimizer(cfg: TrainConfig, D: torch.nn.Module) -> torch.optim.Optimizer:
    """The discriminator's Adam (the reference's), fused where the device has the kernel."""
    return torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas_d,
                            fused=fused(next(D.parameters()).device))


def make_optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    """The segmentor's optimiser over its parameter groups (classifier at 10x lr): SGD with
    momentum as in the reference code, or AdamW (momentum as beta1) for from-scratch toy runs."""
    groups = model.param_groups(cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay,
                                 fused=fused(next(model.parameters()).device))
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_step(cfg: TrainConfig, model, D, opt, opt_d, memory, ph: Phase, src_it, tgt_it, device,
               bf16: bool) -> dict[str, torch.Tensor]:
    """One iteration of Eq. (10)/(11): source CE, memory update, backward; then the target
    terms; then D on detached probabilities. The learning rates are set by the schedulers."""
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    cl = torch.channels_last if use_channels_last(cfg.precision, device) else torch.contiguous_format
    opt.zero_grad(set_to_none=True)
    if opt_d is not None:
        opt_d.zero_grad(set_to_none=True)
    out: dict[str, torch.Tensor] = {}

    def batch(stream):
        x, y, _ = next(stream)
        x = x.to(device, non_blocking=True)
        if x.dtype == torch.uint8:  # the training loaders send uint8 (a quarter of the bytes)
            x = normalize(x)
        return x.contiguous(memory_format=cl), y.to(device, non_blocking=True)

    # --- source: supervised segmentation (lambda_seg * L_seg^S)
    xs, ys = batch(src_it)
    with amp:
        fs, ls = model(xs)
        up_s = upsample(ls, ys.shape[-2:])
        loss_seg = F.cross_entropy(up_s.float(), ys, ignore_index=C.IGNORE)
    total = cfg.lambda_seg * loss_seg
    out["seg"] = loss_seg.detach()

    # --- source side of the hierarchy: fill the feature memories (Eq. 1, 4, 5); detached.
    # `memory` is a HierarchyMemory (one ring per level) or a single FeatureMemory for both.
    obj_mem, back_mem = memories.level_memories(memory)
    if memory is not None:
        # SIM's check: store a pooled feature only if the classifier predicts its class
        classifier = getattr(model, "module", model).classifier if cfg.memory_classifier_check else None
        with torch.no_grad():
            ys_f = regions.downsample_labels(ys, fs.shape[-2:])
            correct = regions.correct_map(ls.argmax(1), ys_f)
            if "object" in ph.align:
                al.update_memory_objects(fs.float(), correct, obj_mem, top_k=cfg.object_top_k,
                                         classifier=classifier)
            if "background" in ph.align:
                al.update_memory_background(fs.float(), correct, back_mem, classifier=classifier)
    # backward the source part now: frees its activations before the target forward
    total.backward()
    total_val = total.detach()

    if tgt_it is not None:
        xt, yt = batch(tgt_it)
        with amp:
            ft, lt = model(xt)
            up_t = upsample(lt, xt.shape[-2:])
            prob_t = F.softmax(up_t.float(), dim=1)
            tl = 0
            # --- retrain: target CE on pseudo-labels (Eq. 9); an all-ignore batch adds 0, not NaN
            if ph.target_labels:
                valid = (yt != C.IGNORE).sum()
                loss_t = F.cross_entropy(up_t.float(), yt, ignore_index=C.IGNORE, reduction="sum") \
                    / valid.clamp(min=1)
                tl = tl + cfg.lambda_seg * loss_t
                out["seg_t"] = loss_t.detach()
            # --- adversarial: fool D, target labelled as source (lambda_adv * L_adv)
            if D is not None:
                loss_adv = adv.generator_adv_loss(D, prob_t)
                tl = tl + cfg.lambda_adv * loss_adv
                out["adv"] = loss_adv.detach()
            # --- category level: class-balanced max-squares (Eq. 2-3)
            if "category" in ph.align:
                loss_cls = class_balanced_max_square(prob_t, alpha=cfg.alpha)
                tl = tl + cfg.lambda_class * loss_cls
                out["class"] = loss_cls.detach()
            # --- object (Eq. 1) and background (Eq. 6) levels against the memory
            if memory is not None:
                if ph.target_labels:  # Eq. 11: classes from pseudo-labels
                    tmap = regions.downsample_labels(yt, ft.shape[-2:])
                else:
                    tmap = lt.detach().argmax(1)
                # Eq. 1: sum over images and classes of per-class means; Eq. 6: sum over images and classes
                if "object" in ph.align:
                    loss_obj = al.object_loss(ft.float(), tmap, obj_mem, top_k=cfg.object_top_k,
                                              require_full=cfg.memory_full_gate)
                    tl = tl + cfg.lambda_obj * loss_obj
                    out["obj"] = loss_obj.detach()
                if "background" in ph.align:
                    loss_back = al.background_loss(ft.float(), tmap, back_mem, require_full=cfg.memory_full_gate)
                    tl = tl + cfg.lambda_back * loss_back
                    out["back"] = loss_back.detach()
        if torch.is_tensor(tl):
            tl.backward()
            total_val = total_val + tl.detach()
        # --- discriminator: detached source / target probabilities, each /2 (lambda_d * L_D)
        if D is not None:
            prob_s = F.softmax(up_s.detach().float(), dim=1)
            with amp:
                loss_d = adv.discriminator_loss(D, prob_s, prob_t.detach())
            (cfg.lambda_d * loss_d).backward()
            distributed.average_grads(D)  # D is not DDP-wrapped (see runtime/distributed.py)
            out["d"] = loss_d.detach()
    opt.step()
    if opt_d is not None:
        opt_d.step()
    out["total"] = total_val
    return out
