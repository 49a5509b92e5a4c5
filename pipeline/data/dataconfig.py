"""The data config (`phfa-data.toml`): named domains, each a layout (format) and a root.

```toml
[domains.gta5]
format = "gta5"            # gta5 | synthia | cityscapes | folder
root = "data/toytown/gta5" # relative paths are relative to this file's folder
[domains.cityscapes]
format = "cityscapes"
root = "data/toytown/cityscapes"
few_shot = 30              # unlabelled target images used for adaptation
# optional: lists = { train = "lists/train.txt" }  one image path per line, relative to root
```
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PhfaError
from pipeline.textfiles import read_text

FORMATS = ("gta5", "synthia", "cityscapes", "folder")
DEFAULT_CONFIG = "phfa-data.toml"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    format: str
    root: Path
    few_shot: int | None = None
    lists: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"format": self.format, "root": str(self.root)}
        if self.few_shot is not None:
            d["few_shot"] = self.few_shot
        if self.lists:
            d["lists"] = {k: str(v) for k, v in self.lists.items()}
        return d


@dataclass(frozen=True)
class DataConfig:
    path: Path
    domains: dict[str, DomainSpec]

    def domain(self, name: str, option: str = "--domain") -> DomainSpec:
        if name not in self.domains:
            known = ", ".join(sorted(self.domains)) or "none"
            raise PhfaError(f"{option}: unknown domain '{name}' (the data config {self.path} defines: {known})")
        return self.domains[name]

    def default_target(self) -> str:
        with_fs = [n for n, d in self.domains.items() if d.few_shot]
        if len(with_fs) != 1:
            raise PhfaError(
                f"--target: give the target domain explicitly ({self.path} has "
                f"{len(with_fs)} domains with few_shot set; the default needs exactly one)")
        return with_fs[0]


def _path(value, base: Path, what: str) -> Path:
    """A path value of the config (relative to its folder); anything but a non-empty string is refused."""
    if not isinstance(value, str) or not value.strip():
        raise PhfaError(f"{what} must be a path in quotes, not {value!r}")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def load_data_config(path: str | Path | None) -> DataConfig:
    path = Path(path or DEFAULT_CONFIG)
    if not path.is_file():
        hint = " (make one with `phfa data synth --out DIR`, or pass --config)" if path.name == DEFAULT_CONFIG else ""
        raise PhfaError(f"--config: data config {path} does not exist{hint}")
    try:
        raw = tomllib.loads(read_text(path, "--config: data config"))
    except tomllib.TOMLDecodeError as e:
        raise PhfaError(f"--config: {path} is not valid TOML: {e}") from e
    doms = raw.get("domains")
    if not isinstance(doms, dict) or not doms:
        raise PhfaError(f"--config: {path} has no [domains.NAME] tables")
    base = path.resolve().parent
    out: dict[str, DomainSpec] = {}
    for name, d in doms.items():
        if not isinstance(d, dict):
            raise PhfaError(f"{path}: [domains.{name}] must be a table")
        fmt = d.get("format")
        if fmt not in FORMATS:
            raise PhfaError(f"{path}: domain '{name}' has format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if "root" not in d:
            raise PhfaError(f"{path}: domain '{name}' has no root")
        root = _path(d["root"], base, f"{path}: domain '{name}' root")
        fs = d.get("few_shot")
        # TOML booleans are Python bools, which are ints: `few_shot = true` is not a count
        if fs is not None and (isinstance(fs, bool) or not isinstance(fs, int) or fs < 1):
            raise PhfaError(f"{path}: domain '{name}' few_shot must be a positive integer, not {fs!r}")
        raw_lists = d.get("lists") or {}
        if not isinstance(raw_lists, dict):
            raise PhfaError(f"{path}: domain '{name}' lists must be a table of split = \"file\" "
                            f"(e.g. lists = {{ train = \"lists/train.txt\" }}), not {raw_lists!r}")
        lists = {split: _path(lp, base, f"{path}: domain '{name}' lists.{split}") for split, lp in raw_lists.items()}
        out[name] = DomainSpec(name=name, format=fmt, root=root, few_shot=fs, lists=lists)
    return DataConfig(path=path, domains=out)
