"""Is a stage's target result limited by its batch-norm statistics? Evaluate it twice.

    .venv/bin/python bench/bn_stats.py --run runs/toy --config data/toytown/phfa-data.toml \
        --stages adapt-noadv-nohier adapt-nohier adapt-it

With trainable batch norm (the toy preset), adversarial and hierarchy stages forward source
and target batches separately in training mode: each domain is normalised by its own batch
statistics, while the running statistics used at test time average the two. This prints, per
stage, the target-val mIoU with the stored running statistics (what `phfa eval` reports) and
with statistics re-estimated on the run's few-shot target images (AdaBN: weights unchanged, only
the BN means and variances, from unlabelled target images the method may use). A large gap
says the stored statistics, not the weights, limit the stage. A diagnostic, not a method stage.
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
    a = ap.parse_args()
    run, cfg = Path(a.run), load_data_config(a.config)
    spec = cfg.domain(a.target)
    names = datasets.few_shot_names(spec, 0, layout.few_shot_file(run, a.target))  # the list the run wrote
    dev = torch.device("cpu")
    print(f"{'stage':28s} {'stored BN':>9s} {'target BN':>9s}   (target-val mIoU, 19 classes)")
    for st in a.stages:
        model, ck = load_segmentor(run / st / "final.pt")
        # evaluate at the size the stage trained the target at; re-estimate with its batch size
        size, batch = tuple(ck["config"]["target_size"]), ck["config"]["batch_size"]
        ds = datasets.SegDataset(spec, "train", names=names, size=size)
        model.eval()
        stored = metrics.summarize(evaluate(model, spec, "val", size, dev))["miou"]
        adabn = metrics.summarize(evaluate(reestimate_bn(model, ds, batch), spec, "val", size, dev))["miou"]
        print(f"{st:28s} {stored:9.2f} {adabn:9.2f}", flush=True)


if __name__ == "__main__":
    main()
