"""The report's content as data: the run's stages (from the run index) with their evaluations, and
the document model the sections are built from (tables, paragraphs, figures)."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.dataconfig import DEFAULT_CONFIG, DataConfig, load_data_config
from pipeline.errors import PhfaError
from pipeline.runtime import layout
from pipeline.runtime.runindex import Entry, RunIndex
from pipeline.stages import runconfig
from pipeline.stages.report.methods import method_name


# ----------------------------------------------------------------------------- reading the run


@dataclass
class Stage:
    """One stage folder of the run (or the external oracle), as the report sees it: the run
    index's entry, its metrics.json and the role the report labels it with."""
    entry: Entry
    metrics: dict | None = None          # metrics.json (target val), training stages only
    external: bool = False               # given with --oracle, outside the run
    role: str = ""                       # source-only | oracle | "" (from the run index)
    method: str | None = None            # the paper's row name (methods.method_name); None: not a training stage

    name = property(lambda self: self.entry.name)
    path = property(lambda self: self.entry.path)
    manifest = property(lambda self: self.entry.manifest)
    finished = property(lambda self: self.entry.finished)
    phases = property(lambda self: self.entry.phases)
    adversarial = property(lambda self: self.entry.adversarial)
    align = property(lambda self: self.entry.align)
    sources = property(lambda self: self.entry.sources)
    style = property(lambda self: self.entry.style)

    @property
    def kind(self) -> str:
        return "adapt" if self.external else self.entry.kind

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def label(self) -> str:
        """The method name first, the folder name second: how tables and legends name the stage."""
        return f"{self.method} ({self.name})" if self.method else self.name

    @property
    def miou(self) -> float | None:
        v = (self.metrics or {}).get("miou")
        return float(v) if isinstance(v, (int, float)) else None


def read_json(path: Path) -> dict | None:
    try:
        v = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return v if isinstance(v, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by kill -9, or damaged (not UTF-8 JSON)
        if isinstance(r, dict):
            rows.append(r)
    return rows


def _evaluation(path: Path) -> dict | None:
    m = read_json(path / layout.METRICS)
    return m if m is not None and isinstance(m.get("iou"), dict) and isinstance(m.get("miou"), (int, float)) else None


def find_stages(index: RunIndex) -> list[Stage]:
    """Every stage of the run index (report/ and hidden folders aside), with its evaluation."""
    out = []
    for e in index.entries.values():
        st = Stage(e, method=method_name(e, index.role(e.name), index.round(e.name)))
        if e.kind in ("adapt", "retrain") and e.finished:
            st.metrics = _evaluation(e.path)
        out.append(st)
    return out


def external_oracle(path: Path) -> Stage:
    """The stage folder given with --oracle (its metrics.json; its manifest when there is one)."""
    path = Path(path)
    if path.is_file() and path.name == layout.METRICS:
        path = path.parent
    m = _evaluation(path) if path.is_dir() else None
    if m is None:
        raise PhfaError(f"--oracle: {path} is not a stage folder with a metrics.json (e.g. runs/other/adapt-oracle)")
    man = read_json(path / layout.MANIFEST) or {"status": "finished"}
    name = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return Stage(Entry(name, path, man), metrics=m, external=True, role="oracle", method="oracle")


def classify(index: RunIndex, evaluated: list[Stage], oracle: Stage | None) -> tuple[list[Stage], Stage | None,
                                                                                   Stage | None]:
    """(evaluated stages in the index's table order, the source-only stage, the oracle the gap is
    measured to: --oracle, else the run's own)."""
    src_name = index.source_only()
    for s in evaluated:
        s.role = "oracle" if index.role(s.name) == "oracle" else "source-only" if s.name == src_name else ""
    src = next((s for s in evaluated if s.name == src_name), None)
    if oracle is None:
        inside = [s for s in evaluated if s.role == "oracle"]
        oracle = max(inside, key=lambda s: (s.entry.finished_at, s.name)) if inside else None
    ordered = sorted(evaluated, key=lambda s: index.order_key(s.name))
    return ordered + ([oracle] if oracle is not None and oracle.external else []), src, oracle


def resolve_data_config(run: Path, config: Path | None) -> DataConfig | None:
    """`config` when given (errors as usual); else the data config the run's stages recorded, else
    ./phfa-data.toml (the rule of every command on a run); None when none is readable (the report
    then skips the panel)."""
    if config is not None:
        return load_data_config(config)
    for c in (runconfig.recorded(run), Path(DEFAULT_CONFIG)):
        if c is not None and c.is_file():
            try:
                return load_data_config(c)
            except PhfaError:
                continue
    return None


# ----------------------------------------------------------------------------- the document model


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    id: str | None = None
    keys: list[str] | None = None        # data-stage of each row (HTML)
    caption: str | None = None


@dataclass
class Para:
    text: str                            # `code` spans become <code>
    cls: str | None = None               # note | warn


@dataclass
class Figure:
    path: Path
    caption: str
    min_width: int = 0                   # small previews are shown enlarged (integer factor, pixelated)


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


def fmt_pct(v, digits: int = 1) -> str:
    return "—" if not isinstance(v, (int, float)) or math.isnan(v) else f"{100 * v:.{digits}f}"


def fmt_num(v, fmt: str) -> str:
    return "—" if not isinstance(v, (int, float)) or math.isnan(v) else format(v, fmt)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("_") or "x"


