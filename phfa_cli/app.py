"""phfa — adapt semantic segmentation from synthetic street scenes to real cameras (PHFA).

Usage (the embedded toytown benchmark; see README for real datasets):

    phfa data synth --out data/toytown --seed 0
    phfa data check --config data/toytown/phfa-data.toml unity gta5 cityscapes
    phfa eval --config data/toytown/phfa-data.toml --domain cityscapes --split val --pred-dir PRED
"""
from __future__ import annotations

from typing import Annotated

import typer

from phfa_cli import config_cmd, data_cmd, eval_cmd, export_cmd, predict_cmd, prepare_cmd, report_cmd, train_cmd
from phfa_cli.common import DEBUG

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Progressive Hierarchical Feature Alignment: synthetic -> real segmentation adaptation.")
data_app = typer.Typer(no_args_is_help=True, help="Generate (synth) or inspect (check) datasets.")
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        import platform
        from pipeline import __version__
        typer.echo(f"phfa {__version__} (Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False):
    DEBUG.set(debug)


# one module per command group; this module only assembles them, in the order `phfa --help` lists them
data_cmd.register(data_app)
prepare_cmd.register(app)
train_cmd.register(app)
eval_cmd.register(app)
predict_cmd.register(app)
export_cmd.register(app)
report_cmd.register(app)
config_cmd.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
