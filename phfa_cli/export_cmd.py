"""`phfa export`: a checkpoint as one ONNX or TorchScript file (the logic is pipeline.stages.export).

    phfa export --run runs/toy --format onnx --out toy.onnx
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from phfa_cli.common import err, guarded, out, parse_size


def register(app: typer.Typer) -> None:
    """Add the `export` command to `app`."""

    @app.command("export")
    @guarded
    def export_cmd(
        fmt: Annotated[str, typer.Option("--format", help="onnx (.onnx, dynamic batch/height/width) | torchscript (.ts or .pt, traced).")],
        out_file: Annotated[Path, typer.Option("--out", help="The file to write (.onnx for onnx; .ts or .pt for torchscript); its folder must exist.")],
        checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Segmentor checkpoint (final.pt).")] = None,
        run: Annotated[Optional[Path], typer.Option("--run", help="Use a stage of this run (default: its final stage).")] = None,
        stage: Annotated[Optional[str], typer.Option("--stage", help="Stage folder of --run, e.g. retrain or adapt.")] = None,
        size: Annotated[Optional[str], typer.Option("--size", metavar="W,H", help="ONNX: fix the input width and height to W,H (default: free, checked at the stage's target_size); TorchScript: the size it is traced and checked at.")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
    ):
        """Export a stage's segmentation model (image N x 3 x H x W -> logits N x 19 x H x W, upsampled
        inside the graph) with its classes and normalisation as metadata; the file is checked against
        the PyTorch model on target images of the run's data before it is kept.

        \b
        Example:
            phfa export --run runs/demo --format onnx --out demo.onnx
            phfa export --run runs/demo --stage adapt --format torchscript --out adapt.ts --size 1024,512
        """
        from pipeline.stages.export import check_format, check_out, export
        from pipeline.stages.predict import resolve_checkpoint

        f = check_format(fmt)
        check_out(out_file, f, overwrite)  # before anything is loaded
        ckpt, picked = resolve_checkpoint(checkpoint, run, stage)
        if picked is not None:
            err.print(f"using stage '{escape(picked)}' of {escape(str(run))} (its final model; --stage to choose)")
        s = export(ckpt, out_file, f, run=run, stage=picked or stage, size=parse_size(size), overwrite=overwrite)
        c = s["check"]
        shape = " x ".join(str(v) for v in s["input_shape"])
        sizes = " (the first also at {}x{})".format(*c["sizes"][1]) if len(c["sizes"]) > 1 else ""
        out.print(f"check: {escape(c['input'])} at {c['sizes'][0][0]}x{c['sizes'][0][1]}{sizes}: max |logit diff| {c['max_abs_diff']:.2g} "
                  f"(tolerance {c['tolerance']:.2g} = {c['atol']:g} + {c['rtol']:g} x max |logit|), argmax agreement {c['argmax_agreement']:.3f} % "
                  f"(at least {c['min_agreement']:g} %)")
        out.print(f"wrote {escape(s['out'])} ({s['format']}, {s['size_mb']:.1f} MB): input image float32 {shape} "
                  f"(trained at {s['train_size'][0]}x{s['train_size'][1]}), output logits 19 classes at the input size, "
                  f"in {s['seconds']:.1f} s")
