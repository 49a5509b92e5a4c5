"""`phfa predict`: label any images with a checkpoint (the logic is pipeline.stages.predict)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from phfa_cli.common import parse_size, err, guarded, out


def register(app: typer.Typer) -> None:
    """Add the `predict` command to `app`."""

    @app.command("predict")
    @guarded
    def predict_cmd(
        images: Annotated[list[str], typer.Argument(metavar="IMAGES", help="Image files, folders (recursive .png/.jpg/.jpeg) or quoted glob patterns ('**' recursive).")],
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for <stem>.png (trainIds), <stem>_color.png, <stem>_overlay.png.")],
        checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Segmentor checkpoint (final.pt).")] = None,
        run: Annotated[Optional[Path], typer.Option("--run", help="Use a stage of this run (default: its final stage).")] = None,
        stage: Annotated[Optional[str], typer.Option("--stage", help="Stage folder of --run, e.g. retrain or adapt.")] = None,
        overlay: Annotated[bool, typer.Option("--overlay", help="Also write the image blended 50/50 with the colours.")] = False,
        batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per forward pass (default 8 on CUDA, 4 on CPU).")] = None,
        precision: Annotated[Optional[str], typer.Option(help="auto (bf16 on CUDA) | bf16 | fp32 (default: the checkpoint's).")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace files in --out that phfa did not write.")] = False,
        size: Annotated[Optional[str], typer.Option("--size", metavar="W,H", help="Size the network sees each image at (default: the size the model was trained on, its target_size).")] = None,
    ):
        """Predict trainId maps (and colour/overlay images) for any images, at each image's own size.

        Each image is resized to the model's training size (or --size), labelled, and the labels
        are scaled back to the image's own size.

        \b
        Example:
            phfa predict photos/ --run runs/demo --out preds
            phfa predict 'drive/**/*.jpg' --run runs/demo --stage adapt --out preds --size 1024,512 --overlay
        """
        from pipeline.stages.predict import predict, resolve_checkpoint

        ckpt, picked = resolve_checkpoint(checkpoint, run, stage)
        if picked is not None:
            err.print(f"using stage '{escape(picked)}' of {escape(str(run))} (its final model; --stage to choose)")
        with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=True, disable=not err.is_terminal) as prog:
            task = prog.add_task("predict", total=None)
            s = predict(images, out_dir, ckpt, overlay=overlay, batch_size=batch_size, precision=precision,
                        overwrite=overwrite, size=parse_size(size), progress=lambda done, total: prog.update(task, completed=done, total=total))
        for r in s["renamed"]:
            err.print(f"[yellow]name clash:[/] {escape(r['image'])} -> {escape(r['output'])}")
        for k in s["skipped"]:
            err.print(f"[red]skipped[/] {escape(k['path'])}: {escape(k['reason'])}")
        w, h = s["target_size"]
        out.print(f"wrote {s['written']} prediction(s) to {escape(s['out'])} (each image through the network at "
                  f"{w}x{h}{'' if size else ', the training size; --size W,H to change'}, labels at its own size) "
                  f"in {s['seconds']:.1f} s "
                  f"({s['images_per_s']:.2f} images/s, {escape(s['device'])}, {escape(s['precision'])})"
                  + (f"; skipped {len(s['skipped'])}" if s["skipped"] else ""))
        if s["skipped"]:
            raise typer.Exit(2)
