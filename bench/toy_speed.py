"""How fast is this machine for the toy chain? Toy-preset training steps, side by side, on CPU.

    .venv/bin/python bench/toy_speed.py [--steps 8] [--warmup 2] [--smoke]

Machines of one kind differ: the same `make reproduce` took 161 s for its source-only stage on
one 2-core machine and 353 s on another. Before reading a chain's wall time against the
30-minute goal, measure the machine. This times, in one process on random tensors at the toy
preset's sizes (batch, source and target sizes, backbone, discriminator width, optimiser):

  (a) a supervised step       source CE only                          (source-only, oracle)
  (b) an adversarial step     + target forward/backward + D           (unity phase of PHFA)
  (c) a full adapt step       + category, object and background terms (gta5 phase; retrain)

through the training loop's own `pipeline.train.train_step`, then prints seconds per step,
the ratios b/a and c/a, and the training part of the chain these imply: source-only
(`iters` supervised steps), PHFA and retraining (each `aux_share * n` adversarial +
`n` full steps, n = `init_iters` for the toy preset's warm-started aligning stages). Data loading, CycleGAN, pseudo-labels, evaluation and report are not in
it (together about 5 % of the chains measured on 2026-12-01 and 2026-12-02). `--smoke`: tiny sizes, one step.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one step: checks the code path only")
    a = ap.parse_args()

    from pipeline import classes as C
    from pipeline import train
    from pipeline.config import preset, primary_iters
    from pipeline.models.deeplab import build_deeplab
    from pipeline.models.discriminator import OutputDiscriminator

    cfg = preset("toy")
    if a.smoke:
        cfg = dataclasses.replace(cfg, source_size=(48, 32), target_size=(48, 32), batch_size=1)
        a.steps, a.warmup = 1, 1
    dev = torch.device("cpu")

    def stream(w, h):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(cfg.batch_size, 3, h, w, generator=g)
        y = torch.randint(0, C.NUM_CLASSES, (cfg.batch_size, h, w), generator=g)
        y[:, : h // 8] = C.IGNORE
        while True:
            yield x, y, ["x"]

    def seconds_per_step(phase: train.Phase) -> float:
        torch.manual_seed(0)
        model = build_deeplab(cfg.backbone, C.NUM_CLASSES, "none", cfg.bn).to(dev)
        opt = train.make_optimizer(cfg, model)
        D = opt_d = tgt = None
        if phase.adversarial:
            D = OutputDiscriminator(C.NUM_CLASSES, ndf=cfg.d_ndf).to(dev)
            opt_d = train.make_d_optimizer(cfg, D)
            tgt = stream(*cfg.target_size)
        memory = train.hierarchy_memory(cfg, phase.align, model.feature_dim, dev)
        src = stream(*cfg.source_size)
        for _ in range(a.warmup):
            train.train_step(cfg, model, D, opt, opt_d, memory, phase, src, tgt, dev, False)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            train.train_step(cfg, model, D, opt, opt_d, memory, phase, src, tgt, dev, False)
        return (time.perf_counter() - t0) / a.steps

    n = a.warmup + a.steps + 1
    sa = seconds_per_step(train.Phase("sup", "s", n, adversarial=False, align=()))
    sb = seconds_per_step(train.Phase("adv", "s", n, adversarial=True, align=()))
    sc = seconds_per_step(train.Phase("full", "s", n, adversarial=True, align=("object", "category", "background")))
    n_adapt = primary_iters(cfg)  # the toy preset's aligning stages run init_iters from the source-only model
    so, adapt = cfg.iters * sa, round(cfg.aux_share * n_adapt) * sb + n_adapt * sc
    print(f"toy preset on CPU ({torch.get_num_threads()} threads, torch {torch.__version__}): {cfg.backbone}, "
          f"batch {cfg.batch_size}, source {cfg.source_size[0]}x{cfg.source_size[1]}, "
          f"target {cfg.target_size[0]}x{cfg.target_size[1]}, D width {cfg.d_ndf}")
    print(f"(a) supervised step:            {sa:6.3f} s")
    print(f"(b) adversarial step:           {sb:6.3f} s   b/a {sb / sa:.2f}")
    print(f"(c) adversarial + hierarchy:    {sc:6.3f} s   c/a {sc / sa:.2f}")
    print(f"implied training time of `make reproduce`: source-only {so:.0f} s, PHFA {adapt:.0f} s, "
          f"retraining ~{adapt:.0f} s; total {so + 2 * adapt:.0f} s ({(so + 2 * adapt) / 60:.1f} min) "
          f"against the 30-minute goal")


if __name__ == "__main__":
    main()
