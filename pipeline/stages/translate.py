"""`phfa translate`: image-level alignment (paper III-C-3, Eq. 7).

`--method cyclegan` (the paper's): a CycleGAN trained on all source images and only the
target's few-shot images; with a segmentation checkpoint, the perceptual loss of Eq. (7)
keeps the frozen segmentor's (instance-normalised) logits of x, G(x) and F(G(x)) close.
`--method fda` (beyond the paper, training-free): Fourier domain adaptation swaps the
low-frequency amplitude of each source image with that of a random few-shot target image.

Both write every source image translated to the target style at the size `adapt` trains
at, as a new domain in the source's own layout (labels resized nearest, ids unchanged),
under RUN/translate-<source>[-fda]/domain/. `phfa adapt --source-style translated|fda`
trains on it. Writing is resumable: every file is written atomically, label before image,
and an image that exists is complete, so an interrupted write continues where it stopped.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline import classes as C
from pipeline.config import TranslateConfig, from_dict
from pipeline.data import datasets, formats, pngio
from pipeline.data.check import check_files
from pipeline.data.dataconfig import DataConfig, DomainSpec
from pipeline.data.fda import FDATranslator
from pipeline.data.transforms import denormalize
from pipeline.errors import PhfaError
from pipeline.inference import use_bf16
from pipeline.models.cyclegan import CycleGAN, from_gan_range, to_gan_range
from pipeline.models.segmentor import load_segmentor
from pipeline.runtime import checkpoint
from pipeline.runtime.layout import domain_root, few_shot_file, translate_stage
from pipeline.runtime.progress import Reporter
from pipeline.runtime.run import StageDir, now, sha256
from pipeline import train as T
from pipeline.runtime import layout
from pipeline.runtime.loop import Interrupted, loop, truncate_jsonl
from pipeline.runtime.tensorboard import Board

_GTA_PALETTE = C.label_id_palette()


# ----------------------------------------------------------------------------- writing


def _layout_paths(fmt: str, root: Path, s: formats.Sample, src_root: Path) -> tuple[Path, Path]:
    m = formats.dataset_manifest(fmt)
    rel_img = s.image.relative_to(src_root / m["images"])
    rel_lab = s.label.relative_to(src_root / m["labels"])
    return root / m["images"] / rel_img, root / m["labels"] / rel_lab


def _write_label(fmt: str, src: Path, dst: Path, size: tuple[int, int]) -> None:
    """The source label with its ids unchanged, resized nearest to `size` (W, H)."""
    if fmt == "synthia":
        import cv2
        raw = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise PhfaError(f"cannot read label {src}")
        if raw.ndim == 2:
            raw = np.stack([raw] * 3, -1)
        rgb = raw[..., :3][..., ::-1]
        if (rgb.shape[1], rgb.shape[0]) != tuple(size):
            rgb = np.stack([np.asarray(Image.fromarray(rgb[..., c].astype(np.uint16).astype(np.int32))
                                       .resize(size, Image.NEAREST)) for c in range(3)], -1)
        pngio.write_png16(dst, rgb.astype(np.uint16))
        return
    ids = pngio.read_index(src)
    if (ids.shape[1], ids.shape[0]) != tuple(size):
        ids = np.asarray(Image.fromarray(ids).resize(size, Image.NEAREST))
    pngio.write_png(dst, ids, palette=_GTA_PALETTE if fmt == "gta5" else None)


def write_domain(spec: DomainSpec, out_root: Path, size: tuple[int, int], translate_fn, reporter: Reporter) -> dict:
    """Translate every source image with `translate_fn(uint8 HxWx3, index) -> uint8` and write the
    domain; images already on disk are skipped (resume)."""
    split = datasets.train_split(spec)
    items = [s for s in datasets.samples(spec, split) if s.label is not None]
    if not items:
        raise PhfaError(f"source domain '{spec.name}' has no labelled images to translate under {spec.root}")
    done = skipped = 0
    t0 = time.time()
    reporter.phase("write", 0, len(items), unit="images")
    for i, s in enumerate(items):
        img_p, lab_p = _layout_paths(spec.format, out_root, s, spec.root)
        img_p = img_p.with_suffix(".png")
        if img_p.is_file() and lab_p.is_file():
            skipped += 1
        else:
            _write_label(spec.format, s.label, lab_p, size)
            img, _ = datasets.load_pair(spec, s, size, with_label=False)
            pngio.write_png(img_p, translate_fn(img, i))
            done += 1
        reporter.step(i + 1)
        if (i + 1) % 100 == 0 or i + 1 == len(items):
            reporter.log(i + 1, {"written": done, "skipped": skipped})
    return {"images": len(items), "written": done, "skipped_existing": skipped,
            "seconds": round(time.time() - t0, 1)}


# ----------------------------------------------------------------------------- CycleGAN


def _gan_batch(x: torch.Tensor, crop: tuple[int, int], hflip: bool = False) -> torch.Tensor:
    """ImageNet-normalised batch -> random crop, each image flipped left-right with probability 1/2
    when `hflip` (global torch RNG, so a resumed run draws the same), in [-1, 1]."""
    w, h = crop
    H, W = x.shape[-2:]
    if H < h or W < w:
        raise PhfaError(f"crop {w}x{h} is larger than the images ({W}x{H}); lower --set crop=WxH")
    top = int(torch.randint(0, H - h + 1, ()))
    left = int(torch.randint(0, W - w + 1, ()))
    x = x[..., top:top + h, left:left + w]
    if hflip:
        flip = (torch.rand(x.shape[0]) < 0.5).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    return to_gan_range(denormalize(x))


def _preview(path: Path, src: torch.Tensor, fake: torch.Tensor, tgt: torch.Tensor) -> None:
    """One row: source | translated | a target image (all [-1, 1])."""
    def u8(t):
        return (from_gan_range(t[0].float()).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    a, b, c = u8(src), u8(fake), u8(tgt)
    h = max(a.shape[0], c.shape[0])
    pad = lambda im: np.pad(im, ((0, h - im.shape[0]), (0, 2), (0, 0)), constant_values=255)  # noqa: E731
    pngio.write_png(path, np.concatenate([pad(a), pad(b), pad(c)], 1))


def translate(data: DataConfig, run: Path, source: str, target: str | None, cfg: TranslateConfig,
              seg_checkpoint: Path | None = None, force: bool = False, resume: bool = False,
              seg_option: str = "--seg-checkpoint",
              reporter: Reporter | None = None, command: str = "phfa translate",
              device: torch.device | None = None) -> dict:
    reporter = reporter or Reporter()
    src_spec = data.domain(source, option="--source")
    target = target or data.default_target()
    tgt_spec = data.domain(target, option="--target")
    sd = StageDir(run, translate_stage(source, cfg.method))
    # input checks before anything is written
    src_items = datasets.samples(src_spec, datasets.train_split(src_spec))
    if not src_items:
        raise PhfaError(f"--source: domain '{source}' has no images")
    if not tgt_spec.few_shot:
        raise PhfaError(f"--target: domain '{target}' has no few_shot count in {data.path}; "
                        "translation uses only the few-shot target images")
    if cfg.method == "cyclegan" and any(c > min(a, b) for c, a, b in zip(cfg.crop, cfg.source_size, cfg.target_size)):
        raise PhfaError(f"crop {cfg.crop[0]}x{cfg.crop[1]} is larger than the training images "
                        f"(source {cfg.source_size[0]}x{cfg.source_size[1]}, target {cfg.target_size[0]}x"
                        f"{cfg.target_size[1]}); lower it with --set crop=WxH")
    if seg_checkpoint is not None:
        load_segmentor(seg_checkpoint, seg_option, expect_classes=C.NUM_CLASSES)
        if cfg.method == "fda":
            raise PhfaError(f"{seg_option} has no use with --method fda (there is nothing to train)")
    check_files(src_items, f"--source '{source}'")
    names = datasets.few_shot_names(tgt_spec, cfg.seed, few_shot_file(run, target))
    by = {s.name: s for s in datasets.samples(tgt_spec, datasets.train_split(tgt_spec))}
    check_files([by[n] for n in names if n in by], f"--target '{target}'")
    resuming = sd.begin(force=force, resume=resume, command=command)
    if resuming:
        old = sd.manifest().get("config")
        if old:
            cfg = from_dict(old, TranslateConfig)  # the interrupted run's settings win
        sd.write(status="running", resumed=now())
    try:
        return _translate(data, run, sd, src_spec, tgt_spec, src_items, source, target, cfg, seg_checkpoint,
                          resuming, reporter, device)
    except KeyboardInterrupt:
        e = Interrupted(sd.path / layout.LAST, 0, "write")
        e.restored = sd.interrupt(interrupted_at={"phase": "write", "iter": 0})
        raise e from None
    except Interrupted as e:
        e.restored = sd.interrupt(interrupted_at={"phase": e.phase, "iter": e.it})
        raise
    except BaseException:
        sd.restore()  # --force: the replaced stage comes back
        raise
    finally:
        sd.release()


def _translate(data, run, sd, src_spec, tgt_spec, src_items, source, target, cfg, seg_checkpoint, resuming,
               reporter, device):
    names = datasets.few_shot_names(tgt_spec, cfg.seed, few_shot_file(run, target))
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    sd.write(source=source, target=target, method=cfg.method, config=cfg.to_dict(),
             inputs={"data_config": str(data.path), "source_images": len(src_items), "target_few_shot": len(names),
                     "few_shot_list": str(few_shot_file(run, target)),
                     "seg_checkpoint": ({"path": str(seg_checkpoint), "sha256": sha256(seg_checkpoint)}
                                        if seg_checkpoint else None)},
             perceptual=("on (Eq. 7)" if seg_checkpoint else "off: no --seg-checkpoint / --seg-from given")
             if cfg.method == "cyclegan" else "n/a (fda)",
             domain={"name": f"{source}@{cfg.method}", "format": src_spec.format, "root": str(domain_root(sd.path))})
    t0 = time.time()
    if cfg.method == "fda":
        tgt_imgs = [datasets.load_pair(tgt_spec, s, cfg.target_size, with_label=False)[0]
                    for s in datasets.SegDataset(tgt_spec, datasets.train_split(tgt_spec), names=names).items]
        fda = FDATranslator(tgt_imgs, beta=cfg.fda_beta, seed=cfg.seed)
        written = write_domain(src_spec, domain_root(sd.path), cfg.source_size, fda, reporter)
        train_info = {}
    else:
        gan, train_info = _train_cyclegan(cfg, src_spec, tgt_spec, names, sd, seg_checkpoint, resuming,
                                          reporter, device)

        def fn(img: np.ndarray, i: int) -> np.ndarray:
            x = to_gan_range(torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255))[None].to(device)
            y = gan.translate(x)
            return (from_gan_range(y[0].float()).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        written = write_domain(src_spec, domain_root(sd.path), cfg.source_size, fn, reporter)
    return sd.finish(training=train_info, written=written, timings={"seconds": round(time.time() - t0, 1)})


def _train_cyclegan(cfg: TranslateConfig, src_spec, tgt_spec, names, sd: StageDir, seg_ckpt, resuming,
                    reporter: Reporter, device) -> tuple[CycleGAN, dict]:
    """Train the CycleGAN through the shared loop machinery (`pipeline.runtime.loop`): LambdaLR
    schedules saved in last.pt, NaN check, metric lines and their TensorBoard scalars
    (`pipeline.runtime.tensorboard`), snapshots, Ctrl-C between iterations."""
    from pipeline.losses.perceptual import SegPerceptualLoss

    torch.manual_seed(T.stream_seed(cfg.seed, 0, 2))
    gan = CycleGAN(cfg).to(device)
    opt_g, opt_d = gan.optimizers()
    lam = CycleGAN.lr_lambda(cfg.iters)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lam) for o in (opt_g, opt_d)]
    start, rng = 0, None
    final = sd.path / "cyclegan.pt"
    if final.is_file() and resuming:  # training finished earlier; only writing was interrupted
        ck = checkpoint.load(final, "--resume")
        gan.load_state_dict(ck["model"])
        return gan, ck.get("info", {})
    if resuming and (sd.path / layout.LAST).is_file():
        ck = checkpoint.load(sd.path / layout.LAST, "--resume")
        gan.load_state_dict(ck["model"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        for s, st in zip(schedulers, ck["schedulers"]):
            s.load_state_dict(st)
        gan.load_pools_state_dict(ck["pools"])
        rng = ck["rng"]
        start = ck["iter"]
        truncate_jsonl(sd.path / layout.METRIC_ROWS, lambda r: r.get("iter", 0) <= start)
    perceptual = None
    if seg_ckpt is not None:
        seg, _ = load_segmentor(seg_ckpt, "--seg-checkpoint", expect_classes=C.NUM_CLASSES)
        perceptual = SegPerceptualLoss(seg, lambda_ppl=cfg.lambda_ppl, lambda_recon=cfg.lambda_ppl_recon,
                                       num_classes=C.NUM_CLASSES).to(device)
    src_ds = datasets.SegDataset(src_spec, datasets.train_split(src_spec), cfg.source_size, labels=False,
                                 cache=cfg.cache)
    tgt_ds = datasets.SegDataset(tgt_spec, datasets.train_split(tgt_spec), cfg.target_size, labels=False,
                                 names=names, cache=cfg.cache)
    src_it = T.make_loader(src_ds, cfg.batch_size, cfg.workers, T.stream_seed(cfg.seed, 0, 7), start, device)
    tgt_it = T.make_loader(tgt_ds, cfg.batch_size, cfg.workers, T.stream_seed(cfg.seed, 0, 8), start, device)
    bf16 = use_bf16(cfg.precision, device)

    def snapshot(it):
        p = sd.path / layout.LAST
        checkpoint.save(p, {"kind": "cyclegan-state", "config": cfg.to_dict(), "iter": it,
                            "model": gan.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                            "schedulers": [s.state_dict() for s in schedulers],
                            "pools": gan.pools_state_dict(), "rng": torch.get_rng_state()})
        return p

    def step(it):
        xa, _, _ = next(src_it)
        xb, _, _ = next(tgt_it)
        a = _gan_batch(xa.to(device), cfg.crop, cfg.hflip)
        b = _gan_batch(xb.to(device), cfg.crop, cfg.hflip)
        losses = gan.train_step(a, b, opt_g, opt_d, perceptual=perceptual,
                                autocast_dtype=torch.bfloat16 if bf16 else None)
        if (it + 1) % cfg.preview_every == 0 or it + 1 == cfg.iters:
            _preview(sd.path / f"preview-{it + 1:06d}.png", a[:1], gan.translate(a[:1]), b[:1])
        return losses

    board = Board(sd.path, resumed_at=start if resuming else None)  # closed before the folder is finished or put back
    if rng is not None:  # last: everything built above may draw from the global RNG
        torch.set_rng_state(rng)
    t0 = time.time()
    try:
        loop("cyclegan", start, cfg.iters, step, schedulers=schedulers, reporter=reporter, log_every=cfg.log_every,
             ckpt_every=cfg.ckpt_every, snapshot=snapshot, metrics_path=sd.path / layout.METRIC_ROWS, record={},
             check_every_step=device.type == "cpu",
             last_good=sd.path / layout.LAST if (sd.path / layout.LAST).is_file() else None, board=board)
    finally:
        board.close()
    info = {"iters": cfg.iters, "seconds": round(time.time() - t0, 1), "perceptual": perceptual is not None,
            "prepared_cache": {"source": src_ds.prepared, "target": tgt_ds.prepared}}
    snapshot(cfg.iters)
    checkpoint.save(final, {"kind": "cyclegan", "config": cfg.to_dict(), "model": gan.state_dict(), "info": info})
    return gan, info
