"""ONE training loop for source-only, adapt (Eq. 10) and retrain (Eq. 11).

A run is a list of phases (progressive sources, paper III-B): phase k trains on source k
against the target, starting from phase k-1's weights. Which losses take part is switched
by the phase, never by a copy of the loop:

    source-only    L = lambda_seg * CE(source)
    adapt (Eq. 10) L = lambda_seg * CE(source) + lambda_adv * L_adv + L_hierarchy,  D: lambda_d * L_D
    retrain (11)   the same plus lambda_seg * CE(target, pseudo-labels); hierarchy on pseudo-labels

    L_hierarchy = lambda_obj * L_obj (Eq. 1) + lambda_class * L_class (Eq. 2-3)
                + lambda_back * L_back (Eq. 4-6)

The data stream is a function of (seed, phase, iteration), so `--resume` continues with
exactly the batches, learning rate, optimiser, memory and RNG state it stopped at.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline import classes as C
from pipeline import metrics
from pipeline.config import TrainConfig
from pipeline.errors import PhfaError
from pipeline.losses import adversarial as adv
from pipeline.losses import alignment as al
from pipeline.losses.maxsquare import class_balanced_max_square
from pipeline.models.discriminator import OutputDiscriminator
from pipeline.runtime import checkpoint, distributed
from pipeline.runtime.progress import Reporter, Silent


class Interrupted(Exception):
    """Ctrl-C during training: last.pt was saved."""

    def __init__(self, path: Path, it: int, phase: str):
        super().__init__(f"interrupted at iteration {it} of phase {phase}; saved {path}")
        self.path, self.it, self.phase = path, it, phase


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


@dataclass
class Data:
    sources: dict[str, Dataset]      # domain name -> labelled dataset
    target: Dataset | None           # few-shot target (labels = pseudo-labels in retrain, else 255)


@dataclass
class State:
    phase: int = 0                   # index into phases
    it: int = 0                      # iterations done in that phase
    history: list[dict] = field(default_factory=list)  # finished phases: name, iters, seconds


class StreamSampler(Sampler):
    """Infinite stream of (index, flip) whose k-th element depends only on (seed, k).

    Each epoch is a permutation drawn from a generator seeded by (seed, epoch), so resuming at
    batch k needs no saved sampler state."""

    def __init__(self, n: int, batch: int, seed: int, start_batch: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start = n, batch, seed, start_batch
        self.rank, self.world = rank, world  # rank r reads global batches r, r + world, ...

    def _epoch(self, e: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
        return torch.randperm(self.n, generator=g).tolist(), (torch.rand(self.n, generator=g) < 0.5).tolist()

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        e, cache = -1, None
        k = self.start
        while True:
            g = k * self.world + self.rank
            for p in range(g * self.batch, (g + 1) * self.batch):
                ep = p // self.n
                if ep != e:
                    e, cache = ep, self._epoch(ep)
                perm, flips = cache
                yield perm[p % self.n], flips[p % self.n]
            k += 1


def _loader(ds: Dataset, cfg: TrainConfig, seed: int, start_batch: int, device: torch.device):
    if len(ds) < cfg.batch_size:
        raise PhfaError(f"batch_size {cfg.batch_size} is larger than the {len(ds)} images available")
    sampler = StreamSampler(len(ds), cfg.batch_size, seed, start_batch, distributed.rank(), distributed.world_size())
    return iter(DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler,
                           num_workers=cfg.workers, pin_memory=device.type == "cuda", drop_last=True,
                           persistent_workers=cfg.workers > 0))


def poly_lr(base: float, it: int, total: int, power: float) -> float:
    return base * (1 - it / total) ** power


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    return device.type == "cuda" and cfg.precision in ("auto", "bf16")


def _up(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def _phase_seed(seed: int, phase: int, stream: int) -> int:
    return seed * 101 + phase * 11 + stream


def run(cfg: TrainConfig, model: torch.nn.Module, phases: list[Phase], data: Data, out: Path,
        reporter: Reporter, state: State | None = None, resume: dict | None = None,
        device: torch.device | None = None, arch: dict | None = None) -> State:
    """Train through `phases`, writing out/last.pt (snapshots) and out/metrics.jsonl."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state = state or State()
    bf16 = use_bf16(cfg, device)
    model.to(device)
    if bf16:
        model.to(memory_format=torch.channels_last)
    main = distributed.is_main()
    if not main:
        reporter = Silent()
    net = distributed.wrap(model, device)  # forward through DDP; state and param groups from model
    metrics_path = out / "metrics.jsonl"
    for pi in range(state.phase, len(phases)):
        ph = phases[pi]
        start_it = state.it if pi == state.phase else 0
        D = OutputDiscriminator(C.NUM_CLASSES).to(device) if ph.adversarial else None
        opt = torch.optim.SGD(model.param_groups(cfg.lr), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas_d) if D is not None else None
        memory = al.FeatureMemory(C.NUM_CLASSES, cfg.memory_size, model.feature_dim).to(device) \
            if ("object" in ph.align or "background" in ph.align) else None
        if resume is not None and pi == state.phase:
            opt.load_state_dict(resume["opt"])
            if D is not None:
                D.load_state_dict(resume["disc"])
                opt_d.load_state_dict(resume["opt_d"])
            if memory is not None and resume.get("memory") is not None:
                memory.load_state_dict(resume["memory"])
            torch.set_rng_state(resume["rng"])
            resume = None
        src_it = _loader(data.sources[ph.source], cfg, _phase_seed(cfg.seed, pi, 0), start_it, device)
        tgt_it = _loader(data.target, cfg, _phase_seed(cfg.seed, pi, 1), start_it, device) \
            if ph.needs_target else None

        def snapshot(it: int) -> Path:
            p = out / "last.pt"
            if not main:
                return p
            checkpoint.save(p, {
                "kind": "train-state", "arch": arch or {}, "config": cfg.to_dict(),
                "phase": pi, "iter": it, "history": state.history,
                "model": model.state_dict(), "opt": opt.state_dict(),
                "disc": D.state_dict() if D is not None else None,
                "opt_d": opt_d.state_dict() if opt_d is not None else None,
                "memory": memory.state_dict() if memory is not None else None,
                "rng": torch.get_rng_state(),
            })
            return p

        reporter.phase(ph.name, start_it, ph.iters)
        model.train()
        if D is not None:
            D.train()
        sums: dict[str, torch.Tensor] = {}
        n_acc = 0
        t0 = time.time()
        last_good = out / "last.pt" if (out / "last.pt").is_file() else None
        it = start_it
        try:
            for it in range(start_it, ph.iters):
                losses = _step(cfg, net, D, opt, opt_d, memory, ph, src_it, tgt_it, it, device, bf16)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0) + v
                n_acc += 1
                check_now = device.type == "cpu" or (it + 1) % cfg.log_every == 0 or it + 1 == ph.iters
                if check_now and not torch.isfinite(losses["total"]):
                    raise PhfaError(f"loss became {float(losses['total'])} at iteration {it + 1} of phase "
                                    f"'{ph.name}'; last good checkpoint: {last_good or 'none'} "
                                    "(lower the learning rate with --set lr=...)")
                reporter.step(it + 1)
                if (it + 1) % cfg.log_every == 0 or it + 1 == ph.iters:
                    vals = {k: float(v) / n_acc for k, v in sums.items()}  # the only host sync
                    vals["lr"] = opt.param_groups[0]["lr"]
                    reporter.log(it + 1, vals)
                    if main:
                        _append_jsonl(metrics_path, {"phase": ph.name, "iter": it + 1, **vals})
                    sums, n_acc = {}, 0
                if (it + 1) % cfg.ckpt_every == 0 and it + 1 < ph.iters:
                    last_good = snapshot(it + 1)
        except KeyboardInterrupt:
            p = snapshot(it)  # iteration `it` did not complete: resume repeats it
            raise Interrupted(p, it, ph.name) from None
        state.history.append({"name": ph.name, "source": ph.source, "iters": ph.iters,
                              "memory_counts": memory.counts() if memory is not None else None,
                              "adversarial": ph.adversarial, "align": list(ph.align),
                              "target_labels": ph.target_labels, "seconds": round(time.time() - t0, 1)})
        state.phase, state.it = pi + 1, 0
        if pi == len(phases) - 1:
            snapshot(ph.iters)  # last.pt of a finished run: the complete final state
    return state


def _append_jsonl(path: Path, rec: dict) -> None:
    import json
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _step(cfg, model, D, opt, opt_d, memory, ph: Phase, src_it, tgt_it, it, device, bf16) -> dict:
    """One iteration: the algorithm of Eq. (10)/(11) in the order of DESIGN section 3."""
    lr = poly_lr(cfg.lr, it, ph.iters, cfg.poly_power)
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    if opt_d is not None:
        for g in opt_d.param_groups:
            g["lr"] = poly_lr(cfg.lr_d, it, ph.iters, cfg.poly_power)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    cl = torch.channels_last if bf16 else torch.contiguous_format
    opt.zero_grad(set_to_none=True)
    if opt_d is not None:
        opt_d.zero_grad(set_to_none=True)
    out: dict[str, torch.Tensor] = {}

    def batch(stream):
        x, y, _ = next(stream)
        return x.to(device, non_blocking=True).contiguous(memory_format=cl), y.to(device, non_blocking=True)

    # --- source: supervised segmentation (lambda_seg * L_seg^S)
    xs, ys = batch(src_it)
    with amp:
        fs, ls = model(xs)
        up_s = _up(ls, ys.shape[-2:])
        loss_seg = F.cross_entropy(up_s.float(), ys, ignore_index=C.IGNORE)
    total = cfg.lambda_seg * loss_seg
    out["seg"] = loss_seg.detach()

    # --- source side of the hierarchy: fill the feature memory (Eq. 1, 4, 5); detached
    if memory is not None:
        with torch.no_grad():
            ys_f = al.downsample_labels(ys, fs.shape[-2:])
            correct = al.correct_map(ls.argmax(1), ys_f)
            if "object" in ph.align:
                al.update_memory_objects(fs.float(), correct, memory)
            if "background" in ph.align:
                al.update_memory_background(fs.float(), correct, memory)
    # backward the source part now: frees its activations before the target forward
    total.backward()
    total_val = total.detach()

    if tgt_it is not None:
        xt, yt = batch(tgt_it)
        with amp:
            ft, lt = model(xt)
            up_t = _up(lt, xt.shape[-2:])
            prob_t = F.softmax(up_t.float(), dim=1)
            tl = 0
            # --- retrain: target CE on pseudo-labels (Eq. 9)
            if ph.target_labels:
                loss_t = F.cross_entropy(up_t.float(), yt, ignore_index=C.IGNORE)
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
                    tmap = al.downsample_labels(yt, ft.shape[-2:])
                else:
                    tmap = lt.detach().argmax(1)
                if "object" in ph.align:
                    loss_obj = al.object_loss(ft.float(), tmap, memory)
                    tl = tl + cfg.lambda_obj * loss_obj
                    out["obj"] = loss_obj.detach()
                if "background" in ph.align:
                    loss_back = al.background_loss(ft.float(), tmap, memory)
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


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, size, bf16: bool) -> torch.Tensor:
    """Logits upsampled (bilinear, align_corners=True) to `size` (H, W)."""
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    with amp:
        _, logits = model(x)
    return _up(logits.float(), size)


@torch.no_grad()
def evaluate(model: torch.nn.Module, spec, split: str, size: tuple[int, int], device: torch.device,
             bf16: bool = False, reporter: Reporter | None = None) -> "torch.Tensor":
    """Confusion matrix of `model` on a labelled split: inputs resized to `size`, logits
    upsampled to each label's native size. Accumulates on the device; one sync at the end."""
    from pipeline.data import datasets, formats

    model.eval()
    items = datasets.samples(spec, split)
    conf = torch.zeros(C.NUM_CLASSES, C.NUM_CLASSES + 1, dtype=torch.long, device=device)
    for s in items:
        if s.label is None:
            raise PhfaError(f"{spec.name}/{split}: {s.image} has no label; evaluation needs a labelled split")
        img, _ = datasets.load_pair(spec, s, size, with_label=False)
        gt = formats.decode_label(spec.format, s.label).train_ids
        x = datasets.to_tensor(img)[None].to(device)
        logits = predict_logits(model, x, gt.shape, bf16)
        conf += metrics.confusion_torch(logits.argmax(1)[0], torch.from_numpy(gt).to(device))
    model.train()
    return conf.cpu().numpy()
