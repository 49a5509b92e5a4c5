"""The paper's row name of a training stage (Table II/IV), from its role and what its manifest records.

One rule, used by every table and figure legend of the report (the folder name is shown beside it):

    oracle                       the oracle role (trained on target labels)
    FCN                          the source-only role (the paper's FCN row); "(progressive)" when it
                                 trained on more than one source
    +AA, +IT, +SG                the paper's cumulative chain on one raw or translated source and no
                                 hierarchy: adversarial (+AA), then on CycleGAN-translated sources
                                 (+IT), then retrained on its pseudo-labels (+SG)
    PHFA                         adversarial, every hierarchy level aligned in the last phase, more than
                                 one source (progressive) — the PHFA role; "+IT" / "+FDA" added for
                                 translated / FDA sources, "+SG" for a retraining of it
    full                         PHFA on translated sources, retrained (PHFA + IT + SG)
    anything else                its components composed in the order AA, HFA, IT (or FDA), SG, e.g.
                                 "+AA +HFA" (one source), "+AA +SG", "FCN +IT" (no adversarial
                                 phase); a partial hierarchy reads "+HFA" with its levels in the notes

Notes in brackets follow the name: a recorded weight of 0 for a component the stage uses
("λ_adv=0", "λ_obj=0", ...), "progressive" where the name does not say it, the retraining round
when it is above 1, and "target labels" for an adapt stage that read them without being the oracle.
Folder names never decide anything.
"""
from __future__ import annotations

from pipeline.config import ALIGN_LEVELS
from pipeline.runtime.runindex import Entry

LEVEL_SHORT = {"object": "obj", "category": "cat", "background": "bg"}
LEVEL_WEIGHT = {"object": "lambda_obj", "category": "lambda_class", "background": "lambda_back"}
STYLE_TOKEN = {"translated": "IT", "fda": "FDA"}
TRAINING_ROLES = ("oracle", "source-only", "phfa", "variant", "retrain")


def _zero(cfg: dict, key: str) -> bool:
    v = cfg.get(key)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0


def method_name(entry: Entry, role: str, round: int = 0) -> str | None:
    """The row name of a training stage (the rule in the module docstring); None for other kinds
    (translate, pseudolabel, ...). `role` and `round` are the run index's for this stage."""
    if role not in TRAINING_ROLES:
        return None
    if role == "oracle":
        return "oracle"
    progressive = len(entry.sources) > 1
    if role == "source-only":
        return "FCN" + (" (progressive)" if progressive else "")
    cfg = entry.manifest.get("config") if isinstance(entry.manifest.get("config"), dict) else {}
    sg = entry.kind == "retrain"
    aa = entry.adversarial
    levels = entry.align
    style = entry.style
    it = STYLE_TOKEN.get(style, style.upper() if style != "raw" else None)
    last = entry.phases[-1] if entry.phases else {}
    hierarchy = bool(last.get("adversarial")) and set(ALIGN_LEVELS) <= set(last.get("align") or [])

    notes = []
    if aa and _zero(cfg, "lambda_adv"):
        notes.append("λ_adv=0")
    notes += [f"λ_{LEVEL_WEIGHT[a].removeprefix('lambda_')}=0" for a in levels
              if a in LEVEL_WEIGHT and _zero(cfg, LEVEL_WEIGHT[a])]
    if levels and not set(ALIGN_LEVELS) <= set(levels):
        notes.insert(0, "HFA: " + "+".join(LEVEL_SHORT.get(a, a) for a in levels))
    if not sg and any(p.get("target_labels") for p in entry.phases):
        notes.append("target labels")

    if hierarchy and progressive:
        name = "full" if sg and style == "translated" else \
            "PHFA" + "".join(f" +{t}" for t in ([it] if it else []) + (["SG"] if sg else []))
    elif aa and not levels and not progressive and style in ("raw", "translated") and not (sg and style == "raw"):
        name = "+SG" if sg else "+IT" if style == "translated" else "+AA"
    else:
        tokens = (["AA"] if aa else []) + (["HFA"] if levels else []) + ([it] if it else []) + (["SG"] if sg else [])
        name = ("" if aa else "FCN ") + " ".join(f"+{t}" for t in tokens)
        if progressive:
            notes.append("progressive")
    if sg and round > 1:
        notes.append(f"round {round}")
    name = name.strip() or "FCN"
    return name + (f" ({', '.join(notes)})" if notes else "")
