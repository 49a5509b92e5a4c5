"""The run index: every stage of a run read once from its manifest, and the one rule that names
each stage's role and their order. eval, predict, report, pseudolabel, retrain and the bench
scripts all ask it; none decides a role on its own.

Roles come from what each manifest records — the stage's kind, its sources and target, the
source style, and for each phase whether it was adversarial, which hierarchy levels it aligned
and whether it read target labels — never from folder names:

    oracle        an adapt stage whose only source is the target (trained on target labels)
    source-only   an adapt stage on source labels alone: no adversarial phase, no alignment, raw
                  source images (the paper's FCN row)
    phfa          an adapt stage whose last phase is adversarial and aligns every hierarchy level
                  (Eq. 10); when a run holds several, the PHFA stage is the one on translated
                  sources (the paper's +IT), then the one with more sources (progressive), then
                  the most recently finished
    variant       any other adapt stage (an ablation: +AA, one level off, FDA sources, ...)
    retrain       a retrain stage (Eq. 11); its round is one more than the round of the stage its
                  pseudo-labels came from (an adapt stage is round 0)

The final model — what `predict` uses and `report` shows as "final" — is the last round of the
retraining that descends from the PHFA stage; else the last retrain round of any chain; else
the PHFA stage; else the most recently finished variant; else source-only; the oracle only when
the run holds nothing else. Target-val mIoU never chooses it (that would choose on the test split).

The table order (eval, report): source-only, variants (fewest components first), PHFA stages,
retrain rounds, the oracle last.

    python -m pipeline.runtime.runindex RUN            each stage, its role and status
    python -m pipeline.runtime.runindex RUN --final    the final model's stage name
    python -m pipeline.runtime.runindex RUN --finished STAGE   exit 0 when STAGE has finished
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ALIGN_LEVELS
from pipeline.errors import PhfaError
from pipeline.runtime import layout
from pipeline.runtime.run import StageDir, recover


@dataclass(frozen=True)
class Entry:
    """One stage folder of a run, as its manifest describes it."""
    name: str
    path: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return layout.stage_kind(self.name)

    @property
    def finished(self) -> bool:
        return self.manifest.get("status") == "finished"

    @property
    def finished_at(self) -> str:
        return str(self.manifest.get("finished") or "")

    @property
    def has_model(self) -> bool:
        return self.finished and self.kind in ("adapt", "retrain") and (self.path / layout.FINAL).is_file()

    @property
    def phases(self) -> list[dict]:
        p = self.manifest.get("phases")
        return [x for x in p if isinstance(x, dict)] if isinstance(p, list) else []

    @property
    def sources(self) -> list[str]:
        s = self.manifest.get("sources")
        return [str(x) for x in s] if isinstance(s, list) else []

    @property
    def target(self) -> str | None:
        return self.manifest.get("target")

    @property
    def style(self) -> str:
        return str(self.manifest.get("source_style") or "raw")

    @property
    def adversarial(self) -> bool:
        return any(bool(p.get("adversarial")) for p in self.phases)

    @property
    def align(self) -> tuple[str, ...]:
        levels = {a for p in self.phases for a in (p.get("align") or [])}
        return tuple(a for a in ALIGN_LEVELS if a in levels) + tuple(sorted(levels - set(ALIGN_LEVELS)))

    @property
    def from_stage(self) -> str | None:
        return self.manifest.get("from_stage")

    @property
    def components(self) -> int:
        """How many of the paper's components an adapt stage uses (the variants' table order)."""
        return int(self.adversarial) + int(self.style != "raw") + int(len(self.sources) > 1) + len(self.align)


class RunIndex:
    """The stages of `run` (hidden folders and report/ aside), each manifest read once."""

    def __init__(self, run: Path):
        self.run = Path(run)
        if not self.run.is_dir():
            raise PhfaError(f"--run: {self.run} does not exist")
        recover(self.run)
        self.entries: dict[str, Entry] = {}
        for p in sorted(self.run.iterdir()):
            if p.is_dir() and not p.name.startswith(".") and layout.stage_kind(p.name) != "report":
                man = StageDir(self.run, p.name).manifest()
                if man is not None:
                    self.entries[p.name] = Entry(p.name, p, man)

    # -- roles ---------------------------------------------------------------------------------

    def role(self, name: str) -> str:
        """oracle | source-only | phfa | variant | retrain for a training stage; else its kind."""
        e = self.entries[name]
        if e.kind == "retrain":
            return "retrain"
        if e.kind != "adapt":
            return e.kind
        if e.target and e.sources == [e.target]:
            return "oracle"
        if not e.adversarial and not e.align and e.style == "raw" \
                and not any(p.get("target_labels") for p in e.phases):
            return "source-only"
        last = e.phases[-1] if e.phases else {}
        if last.get("adversarial") and set(ALIGN_LEVELS) <= set(last.get("align") or []):
            return "phfa"
        return "variant"

    def _chain(self, name: str) -> tuple[int, str | None]:
        """(round, root) of a stage: a retrain's round is the number of retrain stages along its
        pseudo-label chain, its root the adapt stage the chain starts from; (0, itself) for an
        adapt stage. A chain that loops or loses a stage has no root."""
        seen: set[str] = set()
        e = self.entries.get(name)
        while e is not None and e.kind == "retrain" and e.name not in seen:
            seen.add(e.name)
            e = self.entries.get(e.from_stage or "")
        return len(seen), (e.name if e is not None and e.kind == "adapt" else None)

    def round(self, name: str) -> int:
        """0 for an adapt stage; a retrain stage's round along its pseudo-label chain."""
        return self._chain(name)[0]

    def root(self, name: str) -> str | None:
        """The adapt stage a retrain chain starts from (the stage itself for an adapt stage)."""
        return self._chain(name)[1]

    def models(self) -> list[str]:
        """Finished training stages with a final.pt, in table order."""
        return sorted((n for n, e in self.entries.items() if e.has_model), key=self.order_key)

    def order_key(self, name: str):
        """Where a training stage goes in a table (the order in the module docstring)."""
        e, role = self.entries[name], self.role(name)
        rank = {"source-only": 0, "variant": 1, "phfa": 2, "retrain": 3, "oracle": 4}[role]
        return (rank, e.components if role == "variant" else 0, self.round(name), e.finished_at, name)

    def with_role(self, role: str) -> list[str]:
        return [n for n in self.models() if self.role(n) == role]

    def source_only(self) -> str | None:
        """The source-only stage (the one with the fewest sources when there are several)."""
        c = self.with_role("source-only")
        return min(c, key=lambda n: (len(self.entries[n].sources), self.entries[n].finished_at, n)) if c else None

    def oracle(self) -> str | None:
        c = self.with_role("oracle")
        return max(c, key=lambda n: (self.entries[n].finished_at, n)) if c else None

    def phfa(self) -> str | None:
        """The PHFA stage: translated sources first, then more sources, then the latest."""
        def key(n):
            e = self.entries[n]
            return (e.style == "translated", len(e.sources), e.finished_at, n)
        c = self.with_role("phfa")
        return max(c, key=key) if c else None

    def final(self) -> str | None:
        """The run's final model (the rule in the module docstring); None when it has no model."""
        retrains = self.with_role("retrain")
        if retrains:
            phfa = self.phfa()
            own = [n for n in retrains if phfa is not None and self.root(n) == phfa]
            return max(own or retrains, key=lambda n: (self.round(n), self.entries[n].finished_at, n))
        for pick in (self.phfa(),
                     max(self.with_role("variant"), key=lambda n: (self.entries[n].finished_at, n), default=None),
                     self.source_only(), self.oracle()):
            if pick is not None:
                return pick
        return None

    def adaptation(self) -> str | None:
        """The stage pseudo-labels come from by default: the PHFA stage, else the most recently
        finished adapt stage that is not the oracle."""
        phfa = self.phfa()
        if phfa is not None:
            return phfa
        c = [n for n in self.models() if self.entries[n].kind == "adapt" and self.role(n) != "oracle"]
        return max(c, key=lambda n: (self.entries[n].finished_at, n)) if c else None

    def data_config(self) -> Path | None:
        """The data config the run's stages recorded: the most recent stage's that still exists."""
        for e in sorted(self.entries.values(), key=lambda e: (e.finished_at, e.name), reverse=True):
            inputs = e.manifest.get("inputs")
            path = inputs.get("data_config") if isinstance(inputs, dict) else None
            if isinstance(path, str) and Path(path).is_file():
                return Path(path)
        return None

    def latest(self, kind: str) -> str | None:
        """The most recently finished stage of a kind (e.g. the pseudo-labels retrain reads)."""
        c = [n for n, e in self.entries.items() if e.kind == kind and e.finished]
        return max(c, key=lambda n: (self.entries[n].finished_at, n)) if c else None


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: python -m pipeline.runtime.runindex RUN [--final | --finished STAGE]", file=sys.stderr)
        return 2
    try:
        idx = RunIndex(Path(argv[0]))
        if argv[1:2] == ["--finished"] and len(argv) == 3:
            e = idx.entries.get(argv[2])
            return 0 if e is not None and e.finished else 1
        if "--final" in argv[1:]:
            final = idx.final()
            if final is None:
                print(f"{argv[0]} holds no finished stage with a model", file=sys.stderr)
                return 1
            print(final)
            return 0
        final = idx.final()
        for n, e in idx.entries.items():
            role = idx.role(n) + (f" {idx.round(n)}" if e.kind == "retrain" else "")
            print(f"{n:32s} {role:12s} {e.manifest.get('status', '?'):12s}{'  final' if n == final else ''}")
    except PhfaError as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
