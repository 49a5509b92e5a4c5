"""Is a stage's target result limited by its batch-norm statistics? Evaluate it twice.

    .venv/bin/python bench/diagnostics/bn_stats.py --run runs/toy --config data/toytown/phfa-data.toml \
        --stages adapt-noadv-nohier adapt-nohier adapt-it

With trainable batch norm (the toy preset), adversarial and hierarchy stages forward source
and target batches separately in training mode: each domain is normalised by its own batch
statistics, while the running statistics used at test time average the two. This prints, per
stage, the target-val mIoU with the stored running statistics (what `phfa eval` reports) and
with statistics re-estimated on the run's few-shot target images (AdaBN: weights unchanged, only
the BN means and variances, from unlabelled target images the method may use). A large gap
says the stored statistics, not the weights, limit the stage. A diagnostic, not a method stage.

`--source gta5` adds a third column: statistics re-estimated on the first `--source-count`
training images of that source domain. For a stage trained with `weight_average` (whose stored
statistics are the average of the window's running statistics) it is the usual stochastic
weight averaging recipe, statistics recomputed for the averaged weights on the training data:

    .venv/bin/python bench/diagnostics/bn_stats.py --run R --config T/phfa-data.toml \
        --stages adapt-noadv-nohier --source gta5
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from pipeline import metrics
from pipeline.data import datasets
from pipeline.data.dataconfig import load_data_config
from pipeline.inference import evaluate
from pipeline.models.segmentor import load_segmentor
from pipeline.runtime import layout


@torch.no_grad()
def reestimate_bn(model: torch.nn.Module, ds: datasets.SegDataset, batch: int) -> torch.nn.Module:
    """A copy of `model` whose BN running statistics are the plain average over `ds` (AdaBN)."""
    m = copy.deepcopy(model)
    for b in m.modules():
        if isinstance(b, torch.nn.modules.batchnorm._BatchNorm):
            b.reset_running_stats()
            b.momentum = None   # cumulative average over every batch
    m.train()
    for i in range(0, len(ds), batch):
        x = torch.stack([ds[j][0] for j in range(i, min(i + batch, len(ds)))])
        m(x)
    return m.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--stages", nargs="+", required=True)
    ap.add_argument("--target", default="cityscapes")
    ap.add_argument("--source", default=None, help="also re-estimate on this source domain's training images")
    ap.add_argument("--source-count", type=int, default=200, help="how many of its first training images")
    a = ap.parse_args()
    run, cfg = Path(a.run), load_data_config(a.config)
    spec = cfg.domain(a.target)
    names = datasets.few_shot_names(spec, 0, layout.few_shot_file(run, a.target))  # the list the run wrote
    dev = torch.device("cpu")
    extra = f" {a.source + ' BN':>9s}" if a.source else ""
    print(f"{'stage':28s} {'stored BN':>9s} {'target BN':>9s}{extra}   (target-val mIoU, 19 classes)")
    for st in a.stages:
        model, ck = load_segmentor(run / st / layout.FINAL)
        # evaluate at the size the stage trained the target at; re-estimate with its batch size
        size, batch = tuple(ck["config"]["target_size"]), ck["config"]["batch_size"]
        ds = datasets.SegDataset(spec, "train", names=names, size=size)
        model.eval()
        stored = metrics.summarize(evaluate(model, spec, "val", size, dev))["miou"]
        adabn = metrics.summarize(evaluate(reestimate_bn(model, ds, batch), spec, "val", size, dev))["miou"]
        line = f"{st:28s} {stored:9.2f} {adabn:9.2f}"
        if a.source:
            src = cfg.domain(a.source)
            sds = datasets.SegDataset(src, datasets.train_split(src), size=tuple(ck["config"]["source_size"]))
            sds = torch.utils.data.Subset(sds, range(min(a.source_count, len(sds))))
            line += f" {metrics.summarize(evaluate(reestimate_bn(model, sds, batch), spec, 'val', size, dev))['miou']:9.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
