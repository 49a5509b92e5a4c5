"""`phfa config show`: every key `--set` accepts, its value in each preset and what it does."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from phfa_cli.common import guarded, out


def _value(v) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    return str(v).lower() if isinstance(v, bool) else str(v)


def settings_table(title: str, configs: dict, docs: dict[str, str]) -> Table:
    """key | value per preset | comment; a key whose presets differ is marked."""
    t = Table(title=title, title_justify="left", show_lines=False)
    t.add_column("key", no_wrap=True)
    for name in configs:
        t.add_column(name, no_wrap=True)
    t.add_column("what it does")
    dicts = {n: c.to_dict() for n, c in configs.items()}
    for key in next(iter(dicts.values())):
        vals = [_value(d[key]) for d in dicts.values()]
        differs = len(set(vals)) > 1
        t.add_row(f"[bold]{key}[/]" if differs else key, *map(escape, vals), escape(docs.get(key, "")))
    return t


@guarded
def show_cmd(
    preset: Annotated[Optional[str], typer.Option("--preset", help="Show one preset: paper | toy (default: both side by side).")] = None,
):
    """Every setting `--set KEY=VALUE` accepts, with its value in each preset and its meaning.

    \b
    Example:
        phfa config show --preset toy
        phfa adapt --run runs/demo --sources gta5 --preset toy --set lr=1e-3 --set iters=2000
    """
    from pipeline.config import PRESETS, TRANSLATE_PRESETS, TrainConfig, TranslateConfig, field_docs
    from pipeline.config import preset as train_preset, translate_preset

    names = [preset] if preset is not None else list(PRESETS)
    train = {n: train_preset(n) for n in names}
    trans = {n: translate_preset(n) for n in names if n in TRANSLATE_PRESETS}
    out.print(settings_table("phfa adapt / retrain --set KEY=VALUE (bold: the presets differ)", train,
                             field_docs(TrainConfig)))
    out.print(settings_table("phfa translate --set KEY=VALUE", trans, field_docs(TranslateConfig)))
    out.print("Sizes are W,H (e.g. --set target_size=512,256); booleans true/false; a preset is chosen with "
              "--preset (auto: paper on a CUDA machine, toy otherwise).")


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(no_args_is_help=True, help="The settings of the training presets.")
    config_app.command("show")(show_cmd)
    app.add_typer(config_app, name="config")
