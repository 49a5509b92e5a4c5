"""Everything phfa's speed depends on, measured side by side in one process on one GPU.

    .venv/bin/python bench/gpu_report.py [--compile] [--budget-s 470] [--out FILE]
    .venv/bin/python bench/gpu_report.py --smoke [--out FILE]     # CPU, tiny sizes, code paths only

Prints a table per section and writes bench/results/<date>-<gpu>.json (all numbers, the
profile table and the settings). Timings move between machines and runs: compare the
ratios inside one report, not absolute numbers across reports.

Sections (in this order; any that would pass --budget-s is skipped with a note, so the
whole report stays under 8 minutes):

  train     DeepLab-v2 R101, source 1280x720 + target 1024x512, batch 1:
            (ref)     an AdaptSegNet-style step written here, plainly, as AdaptSegNet does it:
                      fp32, PyTorch defaults (cudnn.benchmark off, contiguous tensors), source
                      CE, target adversarial through an output-space D, D update, every loss
                      read back to the host for the log line;
            (adapt)   phfa's full adapt step, `pipeline.train.train_step` with adversarial +
                      object/category/background alignment, phfa's defaults (bf16 autocast +
                      channels_last on CUDA, cudnn.benchmark on, as the stage runner sets);
            (retrain) the same plus target CE on pseudo-labels (Eq. 9, 11).
            ms/step, peak memory, ratio to ref, FLOP/step (torch.utils.flop_counter on one
            step) and MFU against the card's dense bf16 peak (a small table by GPU name).
  profile   torch.profiler over a few adapt steps: top 15 ops by self device time, the GPU's
            busy share of the wall time, and host syncs per step.
  infer     eval / pseudolabel / predict share `pipeline.inference.predict_logits`: 1024x512
            input, logits upsampled to the 2048x1024 label size, argmax; images/s at batch 1
            and the best of batch 1, 2, 4, 8.
  cyclegan  `CycleGAN(TranslateConfig())` train step at the config's default crop (512x256;
            the paper does not give one), fp32 vs bf16 autocast.
  loader    synthetic full-size PNGs (GTA5 1914x1052, Cityscapes 2048x1024) through
            SegDataset + make_loader with the config's default workers, before and after
            `phfa data prepare`, against the step rate the adapt step needs.
  batch2    train rows at batch 2 (ms per step and per image pair).
  compile   (--compile) the adapt step with torch.compile(segmentor): compile time and ms/step.

Without CUDA (and without --smoke) it prints that it needs a CUDA GPU and exits 0.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import gc
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # loader_speed's synthetic data writer

# Dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name(); first match wins.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H200 NVL", 835.0), ("H200", 989.0),
    ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0),   # "H100 80GB HBM3" is the SXM card
    ("H800", 989.0), ("A100", 312.0), ("A800", 312.0),
    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
    ("RTX 4090", 165.0), ("RTX 3090", 71.0),
]

SYNC_EVENTS = ("aten::_local_scalar_dense", "aten::item", "aten::nonzero", "cudaStreamSynchronize",
               "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy", "cudaMemcpyAsync")


class OverBudget(Exception):
    pass


def peak_tflops(name: str) -> float | None:
    for key, v in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return v
    return None


class Report:
    def __init__(self, args, device):
        self.a = args
        self.dev = device
        self.t_start = time.perf_counter()
        self.cuda = device.type == "cuda"
        self.name = torch.cuda.get_device_name() if self.cuda else "cpu (smoke)"
        self.peak = peak_tflops(self.name) if self.cuda else None
        self.data: dict = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "device": self.name,
            "peak_bf16_tflops": self.peak, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpu_cores": os.cpu_count(), "smoke": args.smoke,
            "defaults": {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                         "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32},
            "sections": {}, "skipped": {}, "errors": {},
        }

    def left(self) -> float:
        return self.a.budget_s - (time.perf_counter() - self.t_start)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self):
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def mfu(self, flops: float | None, ms: float) -> float | None:
        if not flops or not self.peak or not ms:
            return None
        return flops / (ms / 1000) / (self.peak * 1e12)

    @contextmanager
    def section(self, name: str, estimate_s: float):
        """Run a section if the budget allows; a section still running at the budget is stopped."""
        left = self.left()
        if left < estimate_s:
            self.data["skipped"][name] = f"budget: {left:.0f} s left, the section needs ~{estimate_s:.0f} s"
            print(f"\n[{name}] skipped: {self.data['skipped'][name]}")
            yield None
            return
        print(f"\n[{name}]", flush=True)
        old = None
        if hasattr(signal, "SIGALRM"):
            def _alarm(signum, frame):
                raise OverBudget(name)
            old = signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(max(1, int(left)))
        t0 = time.perf_counter()
        try:
            yield self.data["sections"].setdefault(name, {})
        except OverBudget:
            self.data["skipped"][name] = "stopped at the budget (partial results kept)"
            print(f"  stopped: --budget-s reached during [{name}]")
        except Exception as e:  # one failing section (an OOM, a compile error) must not cost the others
            self.data["errors"][name] = f"{type(e).__name__}: {e}"
            print(f"  FAILED: {type(e).__name__}: {str(e)[:500]}")
            traceback.print_exc(limit=-3)
        finally:
            if old is not None:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, old)
            self.data["sections"].get(name, {})["seconds"] = round(time.perf_counter() - t0, 1)


# ----------------------------------------------------------------------------- inputs


def stream(dev, batch: int, w: int, h: int, labelled: bool = True):
    """Endless (x, y, names) batches already on the device: the steps are timed without the loader."""
    g = torch.Generator().manual_seed(batch * 7 + w)
    x = torch.randn(batch, 3, h, w, generator=g).to(dev)
    y = torch.randint(0, 19, (batch, h, w), generator=g)
    y[:, : h // 4] = 255  # sky-like ignore band, as pseudo-labels and GTA5 voids have
    if not labelled:
        y.fill_(255)
    y = y.to(dev)
    while True:
        yield x, y, ["x"] * batch


# ----------------------------------------------------------------------------- steps


def reference_step(model, D, opt, opt_d, src, tgt, lambda_adv: float):
    """One AdaptSegNet iteration (single output level), fp32, as its training script writes it."""
    interp = lambda t, size: F.interpolate(t, size=size, mode="bilinear", align_corners=True)  # noqa: E731
    bce = F.binary_cross_entropy_with_logits
    opt.zero_grad()
    opt_d.zero_grad()
    for p in D.parameters():  # train G: D takes no gradient
        p.requires_grad = False
    xs, ys, _ = next(src)
    _, pred = model(xs)
    pred = interp(pred, xs.shape[-2:])
    loss_seg = F.cross_entropy(pred, ys, ignore_index=255)
    loss_seg.backward()
    xt, _, _ = next(tgt)
    _, pred_t = model(xt)
    pred_t = interp(pred_t, xt.shape[-2:])
    d_out = D(F.softmax(pred_t, dim=1))
    loss_adv = bce(d_out, torch.full_like(d_out, 0.0))  # target labelled as source
    (lambda_adv * loss_adv).backward()
    for p in D.parameters():  # train D on detached outputs, each half
        p.requires_grad = True
    d_s = D(F.softmax(pred.detach(), dim=1))
    loss_d_s = bce(d_s, torch.full_like(d_s, 0.0)) / 2
    loss_d_s.backward()
    d_t = D(F.softmax(pred_t.detach(), dim=1))
    loss_d_t = bce(d_t, torch.full_like(d_t, 1.0)) / 2
    loss_d_t.backward()
    opt.step()
    opt_d.step()
    # AdaptSegNet accumulates every loss as a Python number for its per-iteration log line
    return [v.item() for v in (loss_seg, loss_adv, loss_d_s, loss_d_t)]


def steady_memory(cfg, dim: int, dev):
    """The feature memory of a phase with all three levels, as `pipeline.train.run` builds it,
    filled for every class: the state of a long run, where the object and background levels
    do their full work (an empty memory would skip them and flatter the step)."""
    from pipeline import classes as C
    from pipeline.losses import memory as memories

    obj = cfg.memory_size_object or memories.OBJECT_MEMORY_FACTOR * cfg.memory_size
    mem = memories.HierarchyMemory(C.NUM_CLASSES, dim, object_size=obj, background_size=cfg.memory_size).to(dev)
    levels = {id(m): m for m in memories.level_memories(mem) if m is not None}.values()
    g = torch.Generator(device=dev).manual_seed(0)
    for m in levels:
        for c in range(C.NUM_CLASSES):
            m.push(c, torch.rand(m.size, dim, generator=g, device=dev))
    return mem


def build_train(rep: Report, cfg, kind: str, batch: int, compile_model: bool = False):
    """(step callable, modules to free) for kind in ref | adapt | retrain."""
    from pipeline import train
    from pipeline.models.deeplab import build_deeplab
    from pipeline.models.discriminator import OutputDiscriminator

    dev = rep.dev
    torch.manual_seed(0)
    with torch.device(dev):  # initialise on the device: seconds less per row for R101
        model = build_deeplab(cfg.backbone, 19, "none", cfg.bn)
        D = OutputDiscriminator(19)
    (sw, sh), (tw, th) = cfg.source_size, cfg.target_size
    src = stream(dev, batch, sw, sh)
    if kind == "ref":  # AdaptSegNet's optimisers as its code builds them
        opt = torch.optim.SGD(model.param_groups(cfg.lr), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas_d)
        torch.backends.cudnn.benchmark = False  # PyTorch's default
        tgt = stream(dev, batch, tw, th, labelled=False)
        return (lambda: reference_step(model, D, opt, opt_d, src, tgt, cfg.lambda_adv)), [model, D, opt, opt_d]
    torch.backends.cudnn.benchmark = True  # what pipeline.stages.runner sets
    opt = train.make_optimizer(cfg, model)  # phfa's optimisers, as pipeline.train.run builds them
    opt_d = train.make_d_optimizer(cfg, D)
    bf16 = train.use_bf16(cfg.precision, dev)
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if compile_model:
        net = torch.compile(model, dynamic=False, backend="inductor" if rep.cuda else "eager")
    phase = train.Phase(kind, "s", 10**9, adversarial=True, align=("object", "category", "background"),
                        target_labels=kind == "retrain")
    mem = steady_memory(cfg, model.feature_dim, dev)
    tgt = stream(dev, batch, tw, th, labelled=kind == "retrain")
    step = lambda: train.train_step(cfg, net, D, opt, opt_d, mem, phase, src, tgt, dev, bf16)  # noqa: E731
    return step, [model, net, D, opt, opt_d, mem]


def count_flops(step) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as fc:
            step()
        return float(fc.get_total_flops())
    except Exception as e:  # an op the counter cannot trace must not cost the report
        print(f"  (FLOP count failed: {type(e).__name__}: {e})")
        return None


def time_steps(rep: Report, step, warmup: int, steps: int) -> tuple[float, float | None]:
    for _ in range(warmup):
        step()
    rep.sync()
    if rep.cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    rep.sync()
    return (time.perf_counter() - t0) / steps * 1000, rep.peak_gib()


def free(objs):
    """Drop a row's models and optimisers before the next row is built (the caller deletes its step)."""
    objs.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fmt(v, spec=".1f", none="n/a"):
    return none if v is None else format(v, spec)


def print_rows(rows: list[dict], ref_ms: float | None, per: str = "step"):
    print(f"  {'row':34s} {'ms/' + per:>9s} {'ms/pair':>8s} {'peak GiB':>9s} {'x ref':>6s} {'TFLOP':>7s} {'MFU':>6s}")
    for r in rows:
        ratio = r["ms"] / ref_ms if ref_ms else None
        r["ratio_to_ref"] = ratio
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        print(f"  {r['row']:34s} {r['ms']:9.1f} {r['ms'] / r['batch']:8.1f} {fmt(r.get('peak_gib'), '.2f'):>9s} "
              f"{fmt(ratio, '.2f'):>6s} {fmt(r['flops'] / 1e12 if r.get('flops') else None, '.2f'):>7s} {mfu:>6s}")


def train_rows(rep: Report, cfg, batch: int, out: dict, key: str):
    rows = out.setdefault(key, [])
    labels = {"ref": "ref AdaptSegNet fp32 defaults", "adapt": "phfa adapt (adv+hierarchy)",
              "retrain": "phfa retrain (+target CE)"}
    for kind in ("ref", "adapt", "retrain"):
        c = dataclasses.replace(cfg, precision="fp32") if kind == "ref" else cfg
        step, objs = build_train(rep, c, kind, batch)
        for _ in range(rep.a.warmup):
            step()
        flops = count_flops(step)
        ms, peak = time_steps(rep, step, 1, rep.a.steps)
        row = {"row": f"{labels[kind]} b{batch}", "kind": kind, "batch": batch, "ms": ms, "peak_gib": peak,
               "flops": flops, "mfu": rep.mfu(flops, ms), "precision": "fp32" if kind == "ref" else
               ("bf16+channels_last" if rep.cuda else "fp32 (CPU)")}
        rows.append(row)
        del step
        free(objs)
    print_rows(rows, rows[0]["ms"])
    print(f"  (ms/pair = ms per source+target image pair; MFU against {fmt(rep.peak, '.0f')} TFLOP/s dense bf16)")


# ----------------------------------------------------------------------------- sections


def under_fused_adam(event) -> bool:
    """The CPU build of the fused Adam kernel reads its step counter, a CPU tensor there (no
    device to wait for); on a GPU the counter stays on the device. Such reads are not counted."""
    while event is not None:
        if event.name.startswith("aten::_fused_adam"):
            return True
        event = event.cpu_parent
    return False


def sec_profile(rep: Report, cfg, out: dict):
    from torch.profiler import ProfilerActivity, profile

    step, objs = build_train(rep, cfg, "adapt", 1)
    for _ in range(rep.a.warmup):
        step()
    rep.sync()
    n = rep.a.profile_steps
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if rep.cuda else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        rep.sync()
        wall_ms = (time.perf_counter() - t0) * 1000
    del step
    free(objs)
    from torch.autograd import DeviceType

    avgs = prof.key_averages()
    dev_t = lambda e: getattr(e, "self_device_time_total", 0) or 0  # noqa: E731
    key = (lambda e: dev_t(e)) if rep.cuda else (lambda e: e.self_cpu_time_total)
    # operator rows only (each with the device time of the kernels it launched); kernels are in "table"
    top = sorted((e for e in avgs if e.device_type == DeviceType.CPU), key=key, reverse=True)[:15]
    out["steps"] = n
    out["wall_ms_per_step"] = wall_ms / n
    out["top_ops"] = [{"name": e.key, "calls_per_step": e.count / n, "self_device_ms_per_step": dev_t(e) / 1000 / n,
                       "self_cpu_ms_per_step": e.self_cpu_time_total / 1000 / n} for e in top]
    busy = sum(e.device_time_total for e in prof.events()  # kernels, copies and memsets on the device
               if e.device_type != DeviceType.CPU and not e.is_user_annotation) / 1000
    out["gpu_busy_share"] = busy / wall_ms if rep.cuda else None
    syncs = collections.Counter(e.name for e in prof.events() if e.name in SYNC_EVENTS and not under_fused_adam(e))
    syncs = {k: v / n for k, v in syncs.items()}
    out["host_syncs_per_step"] = syncs
    print(f"  {n} adapt steps under the profiler: {wall_ms / n:.1f} ms/step"
          + (f", GPU busy {100 * out['gpu_busy_share']:.0f}% of the wall time" if rep.cuda else ""))
    print(f"  {'op':48s} {'calls':>6s} {'self dev ms':>11s} {'self cpu ms':>11s}   (per step)")
    for r in out["top_ops"]:
        print(f"  {r['name'][:48]:48s} {r['calls_per_step']:6.1f} {r['self_device_ms_per_step']:11.2f} "
              f"{r['self_cpu_ms_per_step']:11.2f}")
    print("  host syncs per step: " + (", ".join(f"{k} {v:g}" for k, v in sorted(syncs.items())) or "none seen"))
    out["table"] = avgs.table(sort_by="self_device_time_total" if rep.cuda else "self_cpu_time_total", row_limit=15)


def sec_infer(rep: Report, cfg, out: dict):
    from pipeline.inference import predict_logits
    from pipeline.models.deeplab import build_deeplab

    tw, th = cfg.target_size
    size = (th * 2, tw * 2) if not rep.a.smoke else (th, tw)  # the 2048x1024 Cityscapes label
    with torch.device(rep.dev):
        model = build_deeplab(cfg.backbone, 19, "none", cfg.bn).eval()
    torch.backends.cudnn.benchmark = True
    rows = out.setdefault("rows", [])
    batches = (1, 2, 4, 8) if not rep.a.smoke else (1, 2)
    modes = [("fp32", False, False), ("bf16 (as the stages run now)", True, False), ("bf16+channels_last", True, True)] \
        if rep.cuda else [("fp32 (CPU)", False, False)]
    for label, bf16, cl in modes:
        m = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        for b in batches:
            x = torch.randn(b, 3, th, tw, device=rep.dev)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            step = lambda: predict_logits(m, x, size, bf16).argmax(1)  # noqa: E731
            for _ in range(rep.a.warmup):
                step()
            flops = count_flops(step) if b == 1 else None
            ms, peak = time_steps(rep, step, 0, max(rep.a.steps, 2))
            rows.append({"mode": label, "batch": b, "ms_per_batch": ms, "images_per_s": 1000 * b / ms,
                         "peak_gib": peak, "flops_per_image": flops, "mfu": rep.mfu(flops, ms) if flops else None})
    del model, m, step, x
    free([])
    print(f"  input {tw}x{th}, logits upsampled to {size[1]}x{size[0]}, argmax (eval / pseudolabel / predict)")
    print(f"  {'mode':30s} {'b1 img/s':>9s} {'b1 ms':>7s} {'best img/s':>11s} {'at batch':>9s} {'MFU b1':>7s}")
    for label, _, _ in modes:
        rs = [r for r in rows if r["mode"] == label]
        b1 = rs[0]
        best = max(rs, key=lambda r: r["images_per_s"])
        out.setdefault("summary", {})[label] = {"b1_images_per_s": b1["images_per_s"], "best_images_per_s":
                                                best["images_per_s"], "best_batch": best["batch"]}
        mfu = f"{100 * b1['mfu']:.1f}%" if b1.get("mfu") is not None else "n/a"
        print(f"  {label:30s} {b1['images_per_s']:9.1f} {b1['ms_per_batch']:7.1f} {best['images_per_s']:11.1f} "
              f"{best['batch']:9d} {mfu:>7s}")


def sec_cyclegan(rep: Report, out: dict):
    from pipeline.config import TranslateConfig
    from pipeline.models.cyclegan import CycleGAN

    tc = TranslateConfig()
    if rep.a.smoke:
        tc = TranslateConfig(ngf=8, ndf=8, n_blocks=1, crop=(64, 32))
    w, h = tc.crop
    torch.backends.cudnn.benchmark = True
    rows = out.setdefault("rows", [])
    for label, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
        torch.manual_seed(0)
        gan = CycleGAN(tc).to(rep.dev)
        og, od = gan.optimizers()
        a = torch.rand(tc.batch_size, 3, h, w, device=rep.dev) * 2 - 1
        b = torch.rand(tc.batch_size, 3, h, w, device=rep.dev) * 2 - 1
        step = lambda: gan.train_step(a, b, og, od, autocast_dtype=dtype)  # noqa: E731
        for _ in range(rep.a.warmup):
            step()
        flops = count_flops(step)
        ms, peak = time_steps(rep, step, 1, rep.a.steps)
        rows.append({"row": label, "ms": ms, "peak_gib": peak, "flops": flops, "mfu": rep.mfu(flops, ms),
                     "crop": [w, h], "batch": tc.batch_size})
        del gan, og, od, step
        free([])
    print(f"  crop {w}x{h} (TranslateConfig default), batch {tc.batch_size}, ResNet-{tc.n_blocks} generators, ngf {tc.ngf}")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        print(f"  {r['row']:16s} {r['ms']:8.1f} ms/step  peak {fmt(r['peak_gib'], '.2f')} GiB  MFU {mfu}")
    out["bf16_speedup"] = rows[0]["ms"] / rows[1]["ms"]
    print(f"  bf16 speed-up: x{out['bf16_speedup']:.2f}")


def sec_loader(rep: Report, cfg, out: dict, need_steps_per_s: dict):
    import loader_speed as ls

    from pipeline.data import datasets
    from pipeline.data.dataconfig import load_data_config
    from pipeline.train import make_loader

    if rep.a.smoke:
        src_full, tgt_full, n, workers = (96, 52), (128, 64), 3, 0
    else:
        src_full, tgt_full, n, workers = ls.SRC_FULL, ls.TGT_FULL, rep.a.loader_images, cfg.workers
    nb = max(3 * n, 6) if not rep.a.smoke else 4
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        ls.write_synthetic(root, n, n, src_full, tgt_full)
        out["write_s"] = time.perf_counter() - t0
        dc = load_data_config(root / "phfa-data.toml")
        src_spec, tgt_spec = dc.domain("gta5"), dc.domain("cityscapes")
        rows = out.setdefault("rows", [])
        for prepared in (False, True):
            if prepared:
                t0 = time.perf_counter()
                ls.prepare_domain(src_spec, "all", cfg.source_size)
                ls.prepare_domain(tgt_spec, "train", cfg.target_size)
                out["prepare_s"] = time.perf_counter() - t0
            src = datasets.SegDataset(src_spec, "all", cfg.source_size, labels=True)
            tgt = datasets.SegDataset(tgt_spec, "train", cfg.target_size, labels=False)
            assert src.prepared == prepared and tgt.prepared == prepared
            si = make_loader(src, 1, workers, 0, 0, rep.dev)
            ti = make_loader(tgt, 1, workers, 1, 0, rep.dev)
            for _ in range(max(1, workers)):  # start every worker
                next(si), next(ti)
            t0 = time.perf_counter()
            for _ in range(nb):
                next(si), next(ti)
            pairs = nb / (time.perf_counter() - t0)
            del si, ti
            rows.append({"prepared": prepared, "pairs_per_s": pairs, "workers_per_loader": workers})
    out.update(images_per_domain=n, src_full=list(src_full), tgt_full=list(tgt_full),
               cpu_cores=os.cpu_count())
    print(f"  {n}+{n} synthetic full-size PNGs (GTA5 {src_full[0]}x{src_full[1]} -> "
          f"{cfg.source_size[0]}x{cfg.source_size[1]}, Cityscapes {tgt_full[0]}x{tgt_full[1]} -> "
          f"{cfg.target_size[0]}x{cfg.target_size[1]}), {workers} workers per loader, {os.cpu_count()} CPU cores")
    for r in rows:
        print(f"  {'prepared cache' if r['prepared'] else 'full-size PNGs':16s} {r['pairs_per_s']:7.1f} "
              f"source+target pairs/s")
    for what, sps in need_steps_per_s.items():
        ok = [("keeps up" if r["pairs_per_s"] >= sps else f"GPU waits ({r['pairs_per_s'] / sps:.2f} of it)")
              for r in rows]
        print(f"  needed by {what}: {sps:.1f} pairs/s -> full-size: {ok[0]}; prepared: {ok[-1]}")
    out["needed_pairs_per_s"] = need_steps_per_s


def sec_compile(rep: Report, cfg, out: dict, eager_ms: float | None):
    step, objs = build_train(rep, cfg, "adapt", 1, compile_model=True)
    t0 = time.perf_counter()
    step()
    rep.sync()
    first = time.perf_counter() - t0
    for _ in range(2):
        step()
    ms, peak = time_steps(rep, step, 1, rep.a.steps)
    del step
    free(objs)
    out.update(first_step_s=first, compile_s=first - ms / 1000, ms=ms, peak_gib=peak, eager_ms=eager_ms,
               backend="inductor" if rep.cuda else "eager (smoke)")
    print(f"  torch.compile(segmentor, dynamic=False): compile {out['compile_s']:.1f} s, "
          f"{ms:.1f} ms/step, peak {fmt(peak, '.2f')} GiB"
          + (f", x{eager_ms / ms:.2f} vs eager {eager_ms:.1f} ms" if eager_ms else ""))


# ----------------------------------------------------------------------------- main


def result_path(rep: Report) -> Path:
    if rep.a.out:
        return Path(rep.a.out)
    if rep.a.smoke:
        return Path(tempfile.gettempdir()) / "phfa-gpu-report-smoke.json"
    slug = re.sub(r"[^a-z0-9]+", "-", rep.name.lower()).strip("-")
    p = HERE / "results" / f"{datetime.date.today().isoformat()}-{slug}.json"
    if p.exists():
        p = p.with_name(f"{p.stem}-{datetime.datetime.now():%H%M%S}.json")
    return p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compile", action="store_true", help="also time the adapt step under torch.compile")
    ap.add_argument("--budget-s", type=float, default=470, help="skip sections that would end past this")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per row")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per row")
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--loader-images", type=int, default=16, help="synthetic full-size images per domain")
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/<date>-<gpu>.json)")
    ap.add_argument("--smoke", action="store_true", help="CPU, resnet18, 64x32, 1-2 steps: code paths only")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available() and not a.smoke:
        print("bench/gpu_report.py needs a CUDA GPU (none found); nothing measured.")
        return 0
    from pipeline.config import preset

    dev = torch.device("cpu" if a.smoke else "cuda")
    cfg = dataclasses.replace(preset("paper"), backbone=a.backbone, pretrained="none")
    if a.smoke:
        cfg = dataclasses.replace(cfg, backbone="resnet18", source_size=(64, 32), target_size=(64, 32))
        a.steps, a.warmup, a.profile_steps = 1, 1, 1
    rep = Report(a, dev)
    d = rep.data
    d["config"] = {"backbone": cfg.backbone, "source_size": list(cfg.source_size),
                   "target_size": list(cfg.target_size), "bn": cfg.bn, "workers": cfg.workers,
                   "steps": a.steps, "warmup": a.warmup, "budget_s": a.budget_s}
    print(f"phfa GPU report: {rep.name}, torch {torch.__version__}, {cfg.backbone}, source "
          f"{cfg.source_size[0]}x{cfg.source_size[1]} + target {cfg.target_size[0]}x{cfg.target_size[1]}; "
          f"peak {fmt(rep.peak, '.0f')} TFLOP/s dense bf16; budget {a.budget_s:.0f} s")
    scale = 1 if rep.cuda else 0.05
    with rep.section("train", 60 * scale) as out:
        if out is not None:
            train_rows(rep, cfg, 1, out, "rows")
    with rep.section("profile", 20 * scale) as out:
        if out is not None:
            sec_profile(rep, cfg, out)
    with rep.section("infer", 40 * scale) as out:
        if out is not None:
            sec_infer(rep, cfg, out)
    with rep.section("cyclegan", 20 * scale) as out:
        if out is not None:
            sec_cyclegan(rep, out)
    b1 = {r["kind"]: r for r in d["sections"].get("train", {}).get("rows", [])}
    need = {f"phfa {k} b1 ({r['ms']:.0f} ms/step)": 1000 / r["ms"] for k, r in b1.items() if k != "ref"}
    with rep.section("loader", 60 * scale) as out:
        if out is not None:
            sec_loader(rep, cfg, out, need)
    with rep.section("batch2", 60 * scale) as out:
        if out is not None:
            train_rows(rep, cfg, 2, out, "rows")
    if a.compile:
        with rep.section("compile", 180 * scale) as out:
            if out is not None:
                sec_compile(rep, cfg, out, b1.get("adapt", {}).get("ms"))
    d["total_s"] = round(time.perf_counter() - rep.t_start, 1)
    path = result_path(rep)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d, indent=2, default=str) + "\n")
    print(f"\n{d['total_s']:.0f} s in all; skipped: {', '.join(d['skipped']) or 'nothing'}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
