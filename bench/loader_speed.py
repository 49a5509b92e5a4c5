"""Data loading speed (CPU): full-size PNG decoding vs the `phfa data prepare` cache, one run.

    .venv/bin/python bench/loader_speed.py [--n 24] [--workers 0] [--smoke]

Writes N synthetic full-size pairs per domain into a temp folder, in the real layouts and
sizes (GTA5 1914x1052 palette labels, Cityscapes 2048x1024 labelIds; smooth random images
with sensor-like noise, so the PNGs compress like photographs, not like white noise), then
times `pipeline.data.datasets.SegDataset` at the paper's training sizes (source 1280x720,
target 1024x512) through `pipeline.train.make_loader`, before and after `phfa data prepare`;
then, on the prepared files, the image sent as float32 normalised in the loader against uint8
normalised after the transfer (what the training loaders do; on the GPU when there is one), the
transfer and normalisation counted. Prints images/s and ms of loader time per image and the
bytes each image sends. `--smoke` uses tiny images.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import classes as C
from pipeline.data import pngio

SRC_FULL, TGT_FULL = (1914, 1052), (2048, 1024)   # GTA5, Cityscapes native sizes (W, H)
SRC_SIZE, TGT_SIZE = (1280, 720), (1024, 512)     # paper training sizes


def photo_like(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth random colours plus a little noise: a PNG of this costs about what a photo costs."""
    small = rng.integers(0, 256, (max(2, h // 24), max(2, w // 24), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.int16)
    img = img + rng.normal(0, 3, (h, w, 1)).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def label_like(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Blocky trainId regions (segment-like, not per-pixel noise)."""
    small = rng.integers(0, C.NUM_CLASSES, (max(2, h // 64), max(2, w // 64)), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.NEAREST))


def write_synthetic(root: Path, n_src: int, n_tgt: int, src_full=SRC_FULL, tgt_full=TGT_FULL, seed: int = 0) -> Path:
    """GTA5-layout source and Cityscapes-layout target (train split) at full size; returns the data config."""
    rng = np.random.default_rng(seed)
    pal = C.label_id_palette()
    w, h = src_full
    for i in range(n_src):
        pngio.write_png(root / "gta5" / "images" / f"{i:05d}.png", photo_like(rng, w, h))
        pngio.write_png(root / "gta5" / "labels" / f"{i:05d}.png", C.TRAIN_ID_TO_LABEL_ID[label_like(rng, w, h)],
                        palette=pal)
    w, h = tgt_full
    for i in range(n_tgt):
        name = f"bench_{i:06d}_000019"
        pngio.write_png(root / "cityscapes" / "leftImg8bit" / "train" / "bench" / f"{name}_leftImg8bit.png",
                        photo_like(rng, w, h))
        pngio.write_png(root / "cityscapes" / "gtFine" / "train" / "bench" / f"{name}_gtFine_labelIds.png",
                        C.TRAIN_ID_TO_LABEL_ID[label_like(rng, w, h)])
    cfg = root / "phfa-data.toml"
    cfg.write_text('[domains.gta5]\nformat = "gta5"\nroot = "gta5"\n'
                   '[domains.cityscapes]\nformat = "cityscapes"\nroot = "cityscapes"\nfew_shot = 30\n')
    return cfg


def loader_rate(ds, n_batches: int, workers: int, batch: int = 1, device=None, to_device: bool = False
                ) -> tuple[float, float]:
    """(images/s, CPU ms per image) of `ds` through the training loader, after one warm-up batch
    per worker. The CPU time is this process's (all of the work when workers == 0), so it holds
    on a machine shared with other jobs, where the wall-clock rate does not. `to_device`: each
    batch also goes to `device` and is normalised there as the training step does."""
    import torch

    from pipeline.data.transforms import normalize
    from pipeline.train import make_loader

    device = device or torch.device("cpu")
    it = make_loader(ds, batch, workers, seed=0, start_batch=0, device=device)

    def take():
        x = next(it)[0]
        if to_device:
            x = x.to(device, non_blocking=True)
            x = normalize(x) if x.dtype == torch.uint8 else x
            if device.type == "cuda":
                torch.cuda.synchronize()
        return x
    for _ in range(max(1, workers)):
        take()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n_batches):
        take()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    del it
    return n_batches * batch / dt, 1000 * dc / (n_batches * batch)


def prepare_domain(spec, split: str, size, workers: int | None = None) -> dict:
    from pipeline.data import datasets, prepare

    return prepare.prepare_split(spec, split, size, datasets.samples(spec, split), datasets.load_pair,
                                 workers=workers)


def measure(root: Path, n: int, workers: int, src_size=SRC_SIZE, tgt_size=TGT_SIZE) -> dict:
    """{domain: {full_ips, prepared_ips, prepare_s}} for a synthetic tree written by write_synthetic."""
    import torch

    from pipeline.data import datasets
    from pipeline.data.dataconfig import load_data_config

    cfg = load_data_config(root / "phfa-data.toml")
    res = {}
    for dom, size in (("gta5", src_size), ("cityscapes", tgt_size)):
        spec = cfg.domain(dom)
        split = datasets.train_split(spec)
        full = datasets.SegDataset(spec, split, size)
        assert not full.prepared
        r = {"size": list(size), "images": len(full), "workers": workers}
        r["full_ips"], r["full_cpu_ms"] = loader_rate(full, n, workers)
        t0 = time.perf_counter()
        prepare_domain(spec, split, size)
        r["prepare_s"] = time.perf_counter() - t0
        prep = datasets.SegDataset(spec, split, size)
        assert prep.prepared
        r["prepared_ips"], r["prepared_cpu_ms"] = loader_rate(prep, n, workers)
        # float32 normalised in the loader vs uint8 normalised after the transfer, both delivered
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        r["device"] = dev.type
        r["float_ips"], r["float_cpu_ms"] = loader_rate(prep, n, workers, device=dev, to_device=True)
        raw = datasets.SegDataset(spec, split, size, raw=True)
        r["uint8_ips"], r["uint8_cpu_ms"] = loader_rate(raw, n, workers, device=dev, to_device=True)
        r["float_bytes"], r["uint8_bytes"] = 3 * size[0] * size[1] * 4, 3 * size[0] * size[1]
        res[dom] = r
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24, help="full-size images per domain (and batches timed)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: in-process, one core)")
    ap.add_argument("--smoke", action="store_true", help="tiny images: checks the code path only")
    a = ap.parse_args()
    src_full, tgt_full, src_size, tgt_size = SRC_FULL, TGT_FULL, SRC_SIZE, TGT_SIZE
    if a.smoke:
        src_full, tgt_full, src_size, tgt_size, a.n = (96, 52), (128, 64), (64, 36), (64, 32), 3
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_synthetic(Path(tmp), a.n, a.n, src_full, tgt_full)
        print(f"wrote {a.n}+{a.n} synthetic pairs (GTA5 {src_full[0]}x{src_full[1]}, Cityscapes "
              f"{tgt_full[0]}x{tgt_full[1]}) in {time.perf_counter() - t0:.1f} s")
        res = measure(Path(tmp), a.n, a.workers, src_size, tgt_size)
    print(f"SegDataset through make_loader, batch 1, {a.workers} workers "
          f"({'in-process: one core' if a.workers == 0 else 'worker processes'})")
    cpu = a.workers == 0
    for dom, r in res.items():
        w, h = r["size"]
        print(f"{dom:10s} -> {w}x{h}: full-size {r['full_ips']:6.1f} img/s"
              + (f" ({r['full_cpu_ms']:5.1f} ms CPU)" if cpu else "")
              + f"   prepared {r['prepared_ips']:6.1f} img/s"
              + (f" ({r['prepared_cpu_ms']:5.1f} ms CPU)" if cpu else "")
              + f"   x{r['prepared_ips'] / r['full_ips']:.1f} img/s"
              + (f", x{r['full_cpu_ms'] / r['prepared_cpu_ms']:.1f} CPU" if cpu else "")
              + f"   (prepare: {r['prepare_s']:.1f} s for {r['images']})")
    for dom, r in res.items():
        print(f"{dom:10s} prepared, delivered to {r['device']}: float32 from the loader {r['float_ips']:6.1f} img/s"
              + (f" ({r['float_cpu_ms']:5.1f} ms CPU)" if cpu else "")
              + f"   uint8 + normalise on {r['device']} {r['uint8_ips']:6.1f} img/s"
              + (f" ({r['uint8_cpu_ms']:5.1f} ms CPU)" if cpu else "")
              + f"   x{r['uint8_ips'] / r['float_ips']:.2f} img/s;"
              f" {r['float_bytes'] / 2**20:.1f} vs {r['uint8_bytes'] / 2**20:.1f} MiB an image")
    pair_full = 1 / (1 / res["gta5"]["full_ips"] + 1 / res["cityscapes"]["full_ips"])
    pair_prep = 1 / (1 / res["gta5"]["prepared_ips"] + 1 / res["cityscapes"]["prepared_ips"])
    print(f"source+target pairs/s: full-size {pair_full:.1f}, prepared {pair_prep:.1f} (x{pair_prep / pair_full:.1f})")
    if cpu:
        full_ms = res["gta5"]["full_cpu_ms"] + res["cityscapes"]["full_cpu_ms"]
        prep_ms = res["gta5"]["prepared_cpu_ms"] + res["cityscapes"]["prepared_cpu_ms"]
        print(f"CPU per source+target pair: full-size {full_ms:.0f} ms, prepared {prep_ms:.0f} ms "
              f"(x{full_ms / prep_ms:.1f}); cores to feed 17 steps/s: {17 * full_ms / 1000:.1f} vs "
              f"{17 * prep_ms / 1000:.1f}")


if __name__ == "__main__":
    main()
