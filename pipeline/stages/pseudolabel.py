"""`phfa pseudolabel`: self-guided pseudo-labels of the target images (paper III-D, Eq. 8).

The adapted model (`--from`, default the run's final adapt stage) predicts every few-shot
target image (`--images all`: the whole target train split) at the stage's `target_size`.
The class-wise thresholds of Eq. 8, min(0.9, median confidence of the pixels predicted c),
come from `pipeline.pseudolabel` in memory that does not grow with the number of images:
predictions are recomputed for each pass instead of kept (pass 1 histograms, pass 2 the
exact median, pass 3 writes the labels).

Outputs in RUN/pseudolabel[-<from>]/:
    domain/labels/<name>.png   uint8 trainId pseudo-labels (255 = ignore), computed at target_size and
                               stored at the image's own size (nearest)
    domain/images/<name>.png   links to the target images (copied only where links fail)
    phfa-data.toml             the pseudo-labelled domain in `folder` format, for `phfa data check`
    thresholds.json            per class: threshold, pixels predicted and kept
    diagnostic.json            (target train labels present) precision/coverage: a diagnostic only
    preview/<name>.png         image | pseudo-label, for a few images
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline import classes as C
from pipeline import inference
from pipeline import pseudolabel as rule
from pipeline.config import check_range, from_dict
from pipeline.data import datasets, pngio
from pipeline.data.dataconfig import DataConfig, DomainSpec
from pipeline.data.transforms import to_tensor
from pipeline.errors import PhfaError
from pipeline.models.segmentor import load_segmentor
from pipeline.runtime import layout
from pipeline.runtime.atomic import write_json, write_text
from pipeline.runtime.progress import Reporter
from pipeline.runtime.run import StageDir, sha256
from pipeline.runtime.runindex import RunIndex

IMAGE_SETS = ("fewshot", "all")
PREVIEWS = 8


def default_from_stage(run: Path) -> str:
    """The stage pseudo-labels come from without --from: the run's PHFA stage (the one on
    translated sources when there is one), else its latest adapt stage that is not the oracle."""
    picked = RunIndex(run).adaptation()
    if picked is None:
        raise PhfaError(f"--from: {run} has no finished adapt stage to take pseudo-labels from; run "
                        f"`phfa adapt --run {run} --sources unity,gta5` first")
    return picked


def check_from_stage(run: Path, stage: str) -> Path:
    layout.plain_name(stage, "--from")
    sd = StageDir(run, stage)
    if not sd.path.is_dir():
        done = RunIndex(run).models()
        raise PhfaError(f"--from: {run} has no stage '{stage}'" +
                        (f" (stages with a model: {', '.join(done)})" if done else
                         f"; run `phfa adapt --run {run} --sources unity,gta5` first"))
    if not sd.finished() or not (sd.path / layout.FINAL).is_file():
        raise PhfaError(f"--from: stage {sd.path} is unfinished (no final.pt); finish it first "
                        f"(`--resume` continues it)")
    return sd.model("--from")


def _batches(model, spec: DomainSpec, items, size, device, bf16, batch: int, reporter: Reporter | None, label: str):
    """Yield (items, conf [B,H,W] float32, pred [B,H,W] int64) at `size`, on `device`."""
    if reporter is not None:
        reporter.phase(label, 0, len(items), unit="images")
    W, H = size
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        x = torch.stack([to_tensor(datasets.load_pair(spec, s, size, with_label=False)[0]) for s in chunk]).to(device)
        prob = torch.softmax(inference.predict_logits(model, x, (H, W), bf16), dim=1)
        conf, pred = prob.max(1)
        if reporter is not None:
            reporter.step(min(i + batch, len(items)))
        yield chunk, conf, pred


def _link(src: Path, dst: Path) -> str:
    """dst -> src as a symlink (no copy); a hard link or a copy where links are not possible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    try:
        os.symlink(os.path.abspath(src), dst)
        return "symlink"
    except OSError:
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            shutil.copyfile(src, dst)
            return "copy"


def pseudolabel(data: DataConfig, run: Path, from_stage: str | None = None, images: str = "fewshot",
                force: bool = False, resume: bool = False, batch_size: int | None = None,
                reporter: Reporter | None = None, command: str = "phfa pseudolabel",
                device: torch.device | None = None) -> dict:
    reporter = reporter or Reporter()
    run = Path(run)
    if images not in IMAGE_SETS:
        raise PhfaError(f"--images must be one of {', '.join(IMAGE_SETS)}, not '{images}'")
    if batch_size is not None:
        check_range("--batch-size", batch_size, at_least=1, at_most=1024)
    if not run.is_dir():
        raise PhfaError(f"--run: {run} does not exist; run `phfa adapt --run {run} --sources unity,gta5` first")
    picked = from_stage is None
    from_stage = from_stage or default_from_stage(run)
    ckpt = check_from_stage(run, from_stage)
    if picked:
        reporter.message(f"pseudo-labels from stage '{from_stage}' (the run's final adapt stage; --from to choose)")
    src_man = StageDir(run, from_stage).manifest() or {}
    model, ck = load_segmentor(ckpt, "--from", expect_classes=C.NUM_CLASSES)
    tcfg = from_dict(ck.get("config", {}))
    target = src_man.get("target") or ck.get("target") or data.default_target()
    spec = data.domain(target, option="--target")
    split = datasets.train_split(spec)
    if images == "fewshot":
        names = datasets.few_shot_names(spec, tcfg.seed, layout.few_shot_file(run, target))
        by = {s.name: s for s in datasets.samples(spec, split)}
        missing = [n for n in names if n not in by]
        if missing:
            raise PhfaError(f"{layout.few_shot_file(run, target)} names {len(missing)} image(s) not in "
                            f"{spec.root}, e.g. {missing[0]}")
        items = [by[n] for n in names]
    else:
        items = datasets.samples(spec, split)
    sd = StageDir(run, layout.pseudolabel_stage(from_stage))
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = inference.use_bf16(tcfg.precision, device)
    batch = batch_size or (8 if device.type == "cuda" else 4)
    # --- everything is checked: open the stage (a rerun recomputes; predictions are deterministic)
    sd.begin(force=force, resume=resume, command=command)
    try:
        return _write(sd, run, from_stage, ckpt, model, tcfg, spec, target, split, images, items, device, bf16,
                      batch, reporter)
    except KeyboardInterrupt:
        if sd.interrupt(interrupted_at={"phase": "pseudolabel", "iter": 0}):
            reporter.message(f"interrupted: {sd.path} is back as it was before --force")
        raise
    except BaseException:
        sd.restore()
        raise
    finally:
        sd.release()


def _write(sd, run, from_stage, ckpt, model, tcfg, spec, target, split, images, items, device, bf16, batch,
           reporter) -> dict:
    t0 = time.time()
    model.to(device).eval()
    size = tuple(tcfg.target_size)
    sd.write(from_stage=from_stage, target=target, images=images, config={"target_size": list(size)},
             inputs={"checkpoint": str(ckpt), "checkpoint_sha256": sha256(ckpt), "target_root": str(spec.root),
                     "split": split, "images": len(items),
                     "few_shot_list": str(layout.few_shot_file(run, target)) if images == "fewshot" else None})

    # --- passes 1 and 2: the exact class-wise medians (Eq. 8), predictions recomputed per pass
    def passes():
        for _, conf, pred in _batches(model, spec, items, size, device, bf16, batch, reporter, "confidences"):
            yield conf, pred
    thresholds = rule.class_thresholds(passes, C.NUM_CLASSES, cap=rule.CAP)

    # --- pass 3: pseudo-labels, kept shares, diagnostic (ground truth only for the report)
    dom = layout.domain_root(sd.path)
    counts = rule.ClassCounts(C.NUM_CLASSES)
    has_gt = all(s.label is not None for s in items)
    linked: dict[str, int] = {}
    n = 0
    for chunk, conf, pred in _batches(model, spec, items, size, device, bf16, batch, reporter, "pseudo-labels"):
        labels = rule.apply_thresholds(conf, pred, thresholds).cpu()
        for s, lab_t, p in zip(chunk, labels, pred.cpu()):
            lab = lab_t.numpy()
            # stored at the image's own size (nearest), so the pair reads like any dataset; the readers
            # resize both back to target_size, which gives these labels again for integer ratios
            w, h = pngio.image_size(s.image)
            full = lab if (w, h) == size else np.asarray(Image.fromarray(lab).resize((w, h), Image.NEAREST))
            pngio.write_png(dom / "labels" / f"{s.name}.png", full)
            how = _link(s.image, dom / "images" / f"{s.name}{s.image.suffix.lower()}")
            linked[how] = linked.get(how, 0) + 1
            gt = torch.from_numpy(datasets.load_pair(spec, s, size, with_label=True)[1]) if has_gt else None
            counts.add(p, lab_t, gt)
            if n < PREVIEWS:
                img = datasets.load_pair(spec, s, size, with_label=False)[0]
                col = C.colorize(lab)
                col[lab == C.IGNORE] = 0
                pngio.write_png(sd.path / "preview" / f"{s.name}.png",
                                np.concatenate([img, np.full((img.shape[0], 2, 3), 255, np.uint8), col], 1))
            n += 1
    ks = counts.kept_share()
    table = {C.CLASS_NAMES[c]: {"threshold": thresholds[c], "predicted_pixels": ks[c]["predicted"],
                                "kept_pixels": ks[c]["kept"], "kept_share": ks[c]["share"]}
             for c in range(C.NUM_CLASSES)}
    total_pred = sum(v["predicted"] for v in ks.values())
    total_kept = sum(v["kept"] for v in ks.values())
    write_json(sd.path / "thresholds.json", {
        "from_stage": from_stage, "images": len(items), "cap": rule.CAP,
        "rule": "threshold_c = min(cap, median confidence of the pixels predicted c) (Eq. 8)",
        "thresholds": [thresholds[c] for c in range(C.NUM_CLASSES)], "classes": table,
        "kept_share": total_kept / max(total_pred, 1)})
    diag_out = None
    if has_gt:
        d = counts.diagnostic()
        correct = sum(v["correct"] for v in d.values())
        labelled = sum(v["labelled"] for v in d.values())
        truth = sum(v["truth"] for v in d.values())
        diag_out = {"note": "diagnostic only: uses the target's ground truth, which adaptation never uses",
                    "classes": {C.CLASS_NAMES[c]: {"precision": d[c]["precision"], "coverage": d[c]["coverage"]}
                                for c in range(C.NUM_CLASSES)},
                    "precision": correct / labelled if labelled else None,
                    "coverage": correct / truth if truth else None}
        write_json(sd.path / "diagnostic.json", diag_out)
    write_text(sd.path / "phfa-data.toml",
               f'# the pseudo-labelled target of stage {from_stage} (phfa pseudolabel)\n'
               f'[domains.{target}-pseudo]\nformat = "folder"\nroot = "domain"\n')
    return sd.finish(outputs={"domain": {"name": f"{target}-pseudo", "format": "folder", "root": str(dom)},
                              "images_linked": linked, "thresholds": str(sd.path / "thresholds.json"),
                              "diagnostic": str(sd.path / "diagnostic.json") if diag_out else None},
                     metrics={"kept_share": total_kept / max(total_pred, 1),
                              **({"diagnostic_precision": diag_out["precision"],
                                  "diagnostic_coverage": diag_out["coverage"]} if diag_out else {})},
                     timings={"seconds": round(time.time() - t0, 1)})


def pseudo_domain(stage_dir: Path, target: str) -> DomainSpec:
    """The pseudo-labelled target written by a pseudolabel stage, as an ordinary `folder` domain."""
    root = layout.domain_root(stage_dir)
    if not (root / "labels").is_dir():
        raise PhfaError(f"{stage_dir} holds no pseudo-labels (no {root / 'labels'})")
    return DomainSpec(name=f"{target}-pseudo", format="folder", root=root)

