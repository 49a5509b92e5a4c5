"""`phfa eval`: mIoU of a run's stages or of a folder of predictions (pipeline.stages.evaluate)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from phfa_cli.common import ConfigOpt, err, guarded, metrics_table, out, run_data, stages_table
from pipeline import classes as C
from pipeline.runtime import layout


@guarded
def eval_cmd(
    config: ConfigOpt = None,
    run: Annotated[Optional[Path], typer.Option("--run", help="Evaluate a stage's final checkpoint of this run.")] = None,
    stage: Annotated[Optional[str], typer.Option("--stage", help="Stage folder name, e.g. adapt.")] = None,
    domain: Annotated[str, typer.Option(help="Domain holding the ground truth.")] = "cityscapes",
    split: Annotated[str, typer.Option(help="Split holding the ground truth.")] = "val",
    pred_dir: Annotated[Optional[Path], typer.Option("--pred-dir", help="Folder of prediction PNGs, named like the images.")] = None,
    pred_format: Annotated[str, typer.Option("--pred-format", help="trainid (0-18, 255) or labelid (Cityscapes ids 0-33).")] = "trainid",
    classes: Annotated[int, typer.Option(help="Evaluation subset: 19, 16 or 13 classes.")] = 19,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for metrics.json (and color/).")] = None,
    save_color: Annotated[bool, typer.Option("--save-color", help="Write colourised predictions to OUT/color.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace files in --out that phfa did not write.")] = False,
):
    """mIoU, per-class IoU and pixel accuracy of predictions against a labelled split.

    \b
    Example:
        phfa eval --run runs/demo                       (every finished stage, side by side)
        phfa eval --run runs/demo --stage adapt --classes 16
        phfa eval --config data/toytown/phfa-data.toml --pred-dir preds --domain cityscapes --split val
    """
    from pipeline.stages.evaluate import evaluate_folder

    cfg = run_data(run, config)
    if run is not None:
        from pipeline.stages.evaluate import evaluate_run, evaluated_stages
        stages = [stage] if stage is not None else evaluated_stages(run)
        results = []
        for st in stages:
            o = (out_dir / st if len(stages) > 1 else out_dir) if out_dir is not None else None
            results.append(evaluate_run(cfg, run, st, domain, split, classes=classes, out=o, save_color=save_color,
                                        overwrite=overwrite))
        if len(results) == 1:
            m = results[0]
            _print_metrics(m, escape(f"{domain}/{split}: {m['images']} images, {run}/{m['stage']}/final.pt"))
            out.print(f"metrics: {escape(str(m['metrics_path']))}")
        else:
            out.print(stages_table(results, f"{escape(str(domain))}/{escape(str(split))}: {escape(str(results[0]['images']))} images, every finished "
                                             f"stage of {escape(str(run))}"))
            for m in results:
                out.print(f"metrics ({escape(str(m['stage']))}): {escape(str(m['metrics_path']))}")
        return
    if pred_dir is None:
        raise_opt("--pred-dir (or --run RUN --stage STAGE)")
    m = evaluate_folder(cfg, domain, split, pred_dir, classes=classes, pred_format=pred_format,
                        out=out_dir, save_color=save_color, overwrite=overwrite)
    _print_metrics(m, escape(f"{domain}/{split}: {m['images']} images, predictions from {pred_dir}"))
    if out_dir is not None:
        out.print(f"metrics: {escape(str(out_dir / layout.METRICS))}")


def raise_opt(opt: str):
    from pipeline.errors import PhfaError
    raise PhfaError(f"{opt} is required")


def _print_metrics(m: dict, title: str) -> None:
    out.print(metrics_table(m, title))
    if m.get("outside_class_share", 0) > 0.5:
        err.print(f"[yellow]warning:[/] {100 * m['outside_class_share']:.0f} % of the predicted pixels are outside "
                  f"the {C.NUM_CLASSES} classes (is --pred-format {escape(m.get('pred_format', ''))} right?)")
    if m.get("resized_predictions"):
        err.print(f"[yellow]note:[/] {escape(str(m['resized_predictions']))} predictions differed in size from their "
                  "labels and were resized (nearest) to the label size")
    if m.get("unknown_label_pixels"):
        err.print(f"[yellow]note:[/] {escape(str(m['unknown_label_pixels']))} ground-truth pixels had ids outside the "
                  "label map and were ignored")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
