"""phfa — adapt semantic segmentation from synthetic street scenes to real cameras (PHFA).

Usage (the embedded toytown benchmark; see README for real datasets):

    phfa data synth --out data/toytown --seed 0
    phfa data check --config data/toytown/phfa-data.toml unity gta5 cityscapes
    phfa eval --config data/toytown/phfa-data.toml --domain cityscapes --split val --pred-dir PRED
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from rich.markup import escape

from phfa_cli.common import DEBUG, err, guarded, metrics_table, out, stages_table
from pipeline import classes as C
from pipeline.runtime import layout

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Progressive Hierarchical Feature Alignment: synthetic -> real segmentation adaptation.")
data_app = typer.Typer(no_args_is_help=True, help="Generate (synth) or inspect (check) datasets.")
app.add_typer(data_app, name="data")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Data config (TOML); default ./phfa-data.toml.")]


@app.callback()
def _root(ctx: typer.Context,
          debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False):
    DEBUG.set(debug)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


@data_app.command("synth")
@guarded
def data_synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write toytown into.")],
    seed: Annotated[int, typer.Option(help="Generator seed (same seed: the same labels on any machine, images within 1 grey level).")] = 0,
    count: Annotated[Optional[list[str]], typer.Option("--count", metavar="NAME=N", help="Images per set, e.g. gta5=1000 (unity, gta5, cityscapes_train, cityscapes_val).")] = None,
    thicken: Annotated[float, typer.Option(help="Widen poles, lights, signs, people and two-wheelers this many times (1-8), in every domain; 1 = as drawn, 3 = calibrated default.")] = 3.0,
):
    """Generate the toytown benchmark (unity/SYNTHIA, gta5/GTA5, cityscapes layouts + phfa-data.toml)."""
    from pipeline.data import toytown
    from pipeline.errors import PhfaError

    counts = {}
    for c in count or []:
        k, _, v = c.partition("=")
        if not v.strip().isdigit():
            raise PhfaError(f"--count {c!r}: expected NAME=N, e.g. gta5=1000")
        counts[k.strip()] = int(v)

    tasks: dict[str, int] = {}
    with _progress() as prog:
        def cb(name, done, total):
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total)
            prog.update(tasks[name], completed=done)
        summary = toytown.generate(out_dir, seed=seed, counts=counts or None, progress=cb, thicken=thicken)
    t = Table(title=f"toytown (seed {escape(str(seed))}) written to {escape(str(out_dir))}", title_justify="left")
    t.add_column("domain/split")
    t.add_column("images", justify="right")
    for k, v in summary.items():
        t.add_row(k, str(v))
    out.print(t)
    out.print(f"data config: {escape(str(out_dir / 'phfa-data.toml'))}")


@data_app.command("check")
@guarded
def data_check(
    domains: Annotated[list[str], typer.Argument(metavar="DOMAIN", help="Domain names from the data config.")],
    config: ConfigOpt = None,
    split: Annotated[Optional[list[str]], typer.Option("--split", metavar="SPLIT", help="Only these splits (default: all on disk).")] = None,
):
    """Dataset doctor: counts, sizes, class frequencies, unreadable files, size mismatches, unknown ids."""
    from pipeline.data.check import check_domain
    from pipeline.data.dataconfig import load_data_config

    cfg = load_data_config(config)
    for d in domains:
        cfg.domain(d, option="DOMAIN")  # unknown names fail before any work
    usable = True
    reports = []
    with _progress() as prog:
        tasks: dict[str, int] = {}

        def cb(name, done, total):
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total)
            prog.update(tasks[name], completed=done)
        for d in domains:
            reports.append(check_domain(cfg, d, split, progress=cb))
    for rep in reports:
        if rep.error:
            err.print(f"[red]{escape(str(rep.domain))}:[/] {escape(str(rep.error))}")
            usable = False
            continue
        t = Table(title=f"{escape(str(rep.domain))} ({escape(str(cfg.domains[rep.domain].format))}, {escape(str(cfg.domains[rep.domain].root))})",
                  title_justify="left")
        t.add_column("class")
        for s in rep.splits:
            t.add_column(f"{s.split} %", justify="right")
        tots = [max(int(s.class_pixels.sum()), 1) for s in rep.splits]
        for c, name in enumerate(C.CLASS_NAMES):
            t.add_row(name, *[("—" if s.class_pixels[c] == 0 else f"{100 * s.class_pixels[c] / tot:.2f}")
                              for s, tot in zip(rep.splits, tots)])
        t.add_section()
        t.add_row("images (labelled)", *[f"{s.images} ({s.labelled})" for s in rep.splits])
        t.add_row("sizes", *[", ".join(f"{w}x{h}:{n}" for (w, h), n in s.sizes.most_common(3)) for s in rep.splits])
        t.add_row("ignored px %", *[f"{100 * s.ignored_pixels / max(tot + s.ignored_pixels, 1):.1f}"
                                    for s, tot in zip(rep.splits, tots)])
        t.add_row("classes present", *[str(int((s.class_pixels > 0).sum())) + "/19" for s in rep.splits])
        out.print(t)
        for s in rep.splits:
            for u in s.unreadable:
                err.print(f"[red]unreadable[/] {escape(str(u))}")
            for m in s.size_mismatch[:10]:
                err.print(f"[yellow]size mismatch[/] {escape(str(m))} (resized, nearest, when read)")
            if len(s.size_mismatch) > 10:
                err.print(f"[yellow]… {escape(str(len(s.size_mismatch) - 10))} more size mismatches[/]")
            if s.unknown_ids:
                err.print(f"[yellow]{escape(str(rep.domain))}/{escape(str(s.split))}:[/] {escape(str(s.unknown_ids))} pixels in {escape(str(s.files_with_unknown))} "
                          "files have ids outside the label map (read as 255, ignored)")
            for k in s.known_bad:
                err.print(f"[yellow]known issue[/] {escape(str(k))}")
        usable &= rep.usable
    if not usable:
        err.print("[red]not usable:[/] fix the problems named above")
        raise typer.Exit(2)
    out.print("[green]usable[/]")


RunOpt = Annotated[Path, typer.Option("--run", help="Run folder: runs/<name>.")]
PresetOpt = Annotated[str, typer.Option("--preset", help="auto (paper on a CUDA machine, toy on a CPU-only one) | paper (Table I, GPU) | toy (CPU, toytown).")]
PretrainedOpt = Annotated[Optional[str], typer.Option("--pretrained", help="Initial weights: imagenet | none | PATH to a local state dict (default: the preset's; the toy preset starts aligning stages from the run's source-only stage).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a preset field: key=value (repeatable).")]


def _resolve_preset(preset: str) -> str:
    """`auto`: the paper preset where CUDA is available, else the CPU toy preset (said on stderr)."""
    if preset != "auto":
        return preset
    import torch
    chosen = "paper" if torch.cuda.is_available() else "toy"
    if chosen == "toy":
        err.print("note: no CUDA device: using --preset toy (the CPU preset); pass --preset paper to insist")
    return chosen


def _train_config(preset: str, sets, iters, seed, precision=None, extra=(), pretrained=None):
    from pipeline.config import preset as make_preset
    preset = _resolve_preset(preset)
    return make_preset(preset).overrides(list(sets or []) + _option_pairs(iters, seed, precision, pretrained)
                                         + list(extra))


def _option_pairs(iters=None, seed=None, precision=None, pretrained=None) -> list[str]:
    """The training options as `--set` pairs. `--iters N` is what this stage runs, warm-started or not;
    `--pretrained` is where it starts, so it replaces a preset's init_stage."""
    pairs = []
    if pretrained is not None:
        pairs += [f"pretrained={pretrained}", "init_stage="]
    if iters is not None:
        pairs += [f"iters={iters}", "init_iters=0"]
    if seed is not None:
        pairs.append(f"seed={seed}")
    if precision is not None:
        pairs.append(f"precision={precision}")
    return pairs


def _run_training(fn):
    """Run a training stage with a progress reporter; Ctrl-C prints the resume command (exit 130)."""
    from phfa_cli.reporting import make_reporter
    from pipeline.train import Interrupted

    rep = make_reporter()
    try:
        return fn(rep)
    except Interrupted as e:
        rep.close()
        if e.restored:
            err.print("[yellow]interrupted: the new attempt is dropped and the stage it was to replace is back "
                      "as it was; run the command again to replace it[/]")
        else:
            err.print(f"[yellow]{escape(str(e))}[/]")
            err.print(f"resume with: {escape(str(_command_line()))} --resume")
        raise typer.Exit(130)
    finally:
        rep.close()


def _command_line() -> str:
    import shlex, sys
    return "phfa " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command("adapt")
@guarded
def adapt_cmd(
    run: RunOpt,
    sources: Annotated[str, typer.Option("--sources", help="Ordered source domains: preliminary,...,primary.")],
    target: Annotated[Optional[str], typer.Option(help="Target domain (default: the one with few_shot).")] = None,
    config: ConfigOpt = None,
    preset: PresetOpt = "auto",
    sets: SetOpt = None,
    pretrained: PretrainedOpt = None,
    no_adversarial: Annotated[bool, typer.Option("--no-adversarial", help="Drop output-space adversarial alignment.")] = False,
    no_hierarchy: Annotated[bool, typer.Option("--no-hierarchy", help="Drop all hierarchy losses.")] = False,
    align: Annotated[Optional[str], typer.Option(help="Hierarchy levels to use: object,category,background.")] = None,
    iters: Annotated[Optional[int], typer.Option(help="Iterations per phase.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    tag: Annotated[Optional[str], typer.Option(help="Stage folder adapt-TAG (default: named after the ablation).")] = None,
    source_style: Annotated[str, typer.Option("--source-style", help="raw | translated (CycleGAN) | fda: train on the run's translated sources.")] = "raw",
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16 + channels-last on CUDA, fp32 + channels-last on CPU) | bf16 | fp32 (contiguous).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted stage from last.pt.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a finished stage.")] = False,
):
    """Progressive adversarial adaptation + hierarchical feature alignment (Eq. 10)."""
    from pipeline.data.dataconfig import load_data_config

    data = load_data_config(config)  # data config and settings are checked before torch is imported
    source_list = [s.strip() for s in sources.split(",") if s.strip()]
    for s_ in source_list:
        data.domain(s_, option="--sources")
    extra = []
    if no_adversarial:
        extra.append("adversarial=false")
    if no_hierarchy:
        extra.append("align=")
    elif align is not None:
        extra.append(f"align={align}")
    cfg = _train_config(preset, sets, iters, seed, precision, extra, pretrained)
    from pipeline.stages.adapt import adapt
    man = _run_training(lambda rep: adapt(
        data, run, source_list, target, cfg, tag=tag, force=force,
        resume=resume, source_style=source_style, reporter=rep, command=_command_line()))
    if man is None:  # a non-zero rank of a torchrun job: rank 0 reports
        return
    _print_trained(man)


@app.command("translate")
@guarded
def translate_cmd(
    run: RunOpt,
    source: Annotated[str, typer.Option(help="Source domain to translate.")] = "gta5",
    target: Annotated[Optional[str], typer.Option(help="Target domain (default: the one with few_shot).")] = None,
    method: Annotated[str, typer.Option(help="cyclegan (paper, Eq. 7) or fda (training-free).")] = "cyclegan",
    seg_checkpoint: Annotated[Optional[Path], typer.Option("--seg-checkpoint", help="Frozen segmentor for the perceptual loss (Eq. 7).")] = None,
    seg_from: Annotated[Optional[str], typer.Option("--seg-from", help="Use final.pt of this stage of the run, e.g. adapt-noadv-nohier.")] = None,
    config: ConfigOpt = None,
    preset: PresetOpt = "auto",
    sets: SetOpt = None,
    iters: Annotated[Optional[int], typer.Option(help="CycleGAN iterations.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted training or write.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a finished stage.")] = False,
):
    """Image-level alignment: translate a source domain to the target style (CycleGAN or FDA)."""
    from pipeline.config import translate_preset
    from pipeline.data.dataconfig import load_data_config
    from pipeline.stages.translate import translate

    data = load_data_config(config)
    pairs = list(sets or []) + [f"method={method}"]
    if iters is not None:
        pairs.append(f"iters={iters}")
    if seed is not None:
        pairs.append(f"seed={seed}")
    cfg = translate_preset(_resolve_preset(preset)).overrides(pairs)
    from pipeline.errors import PhfaError
    if seg_from is not None:
        if seg_checkpoint is not None:
            raise PhfaError("give --seg-checkpoint or --seg-from, not both")
        from pipeline.runtime.layout import plain_name
        from pipeline.runtime.run import StageDir
        sd = StageDir(run, plain_name(seg_from, "--seg-from"))
        if not (sd.path / layout.FINAL).is_file():
            raise PhfaError(f"--seg-from: {sd.path / layout.FINAL} does not exist; run that stage first "
                            f"(e.g. `phfa adapt --run {run} --sources {source} --no-adversarial --no-hierarchy`)")
        seg_checkpoint = sd.model("--seg-from")
    man = _run_training(lambda rep: translate(
        data, run, source, target, cfg, seg_checkpoint=seg_checkpoint, force=force, resume=resume, reporter=rep,
        seg_option="--seg-from" if seg_from is not None else "--seg-checkpoint",
        command=_command_line()))
    w = man["written"]
    out.print(f"[green]finished[/] {escape(str(man['domain']['root']))}: {escape(str(w['images']))} images ({escape(str(w['written']))} written, "
              f"{escape(str(w['skipped_existing']))} already there) in the {escape(str(man['domain']['format']))} layout; "
              f"perceptual loss: {escape(str(man['perceptual']))}")
    out.print(f"train on it with: phfa adapt --run {escape(str(run))} --sources ... --source-style "
              f"{escape(str('fda' if cfg.method == 'fda' else 'translated'))}")


@app.command("pseudolabel")
@guarded
def pseudolabel_cmd(
    run: RunOpt,
    from_stage: Annotated[Optional[str], typer.Option("--from", help="Stage whose model labels the target (default: the run's PHFA stage, the translated-source one when it exists).")] = None,
    images: Annotated[str, typer.Option("--images", help="fewshot (the run's few-shot list) | all (the whole target train split).")] = "fewshot",
    config: ConfigOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per forward pass.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Redo an interrupted stage.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a finished stage.")] = False,
):
    """Self-guidance, Eq 8: class-wise confidence thresholds and pseudo-label PNGs of the target."""
    from pipeline.data.dataconfig import load_data_config
    from pipeline.stages.pseudolabel import pseudolabel

    data = load_data_config(config)
    man = _run_training(lambda rep: pseudolabel(data, run, from_stage, images, force=force, resume=resume,
                                                batch_size=batch_size, reporter=rep, command=_command_line()))
    stage_dir = Path(man["outputs"]["thresholds"]).parent
    out.print(pseudolabel_table(stage_dir))
    out.print(f"[green]finished[/] {escape(str(stage_dir))}: {escape(str(man['inputs']['images']))} pseudo-labels in "
              f"{escape(str(man['outputs']['domain']['root']))} ({100 * man['metrics']['kept_share']:.1f} % of pixels kept)")
    out.print(f"retrain on them with: phfa retrain --run {escape(str(run))}" +
              (f" --labels {escape(str(stage_dir.name))}" if stage_dir.name != "pseudolabel" else ""))


def pseudolabel_table(stage_dir: Path) -> Table:
    import json
    th = json.loads((stage_dir / "thresholds.json").read_text())
    dpath = stage_dir / "diagnostic.json"
    diag = json.loads(dpath.read_text()) if dpath.is_file() else None
    t = Table(title=f"pseudo-labels of {escape(str(th['images']))} images from {escape(str(th['from_stage']))} (Eq. 8, cap {escape(str(th['cap']))})"
              + ("; precision/coverage: DIAGNOSTIC ONLY (target ground truth, never used for adaptation)"
                 if diag else ""), title_justify="left")
    for col in ("class", "threshold", "predicted px", "kept %") + (("precision %", "coverage %") if diag else ()):
        t.add_column(col, justify="left" if col == "class" else "right")
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for name, row in th["classes"].items():
        cells = [name, "—" if row["threshold"] is None else f"{row['threshold']:.4f}", str(row["predicted_pixels"]),
                 pct(row["kept_share"])]
        if diag:
            d = diag["classes"][name]
            cells += [pct(d["precision"]), pct(d["coverage"])]
        t.add_row(*cells)
    if diag:
        t.add_section()
        t.add_row("all", "", "", pct(th["kept_share"]), pct(diag["precision"]), pct(diag["coverage"]))
    return t


@app.command("retrain")
@guarded
def retrain_cmd(
    run: RunOpt,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Pseudolabel stage to train on (default: the most recently finished one).")] = None,
    config: ConfigOpt = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Take the hyper-parameters from this preset instead of the labels' adapt stage config (its adversarial and hierarchy switches are kept).")] = None,
    sets: SetOpt = None,
    pretrained: PretrainedOpt = None,
    iters: Annotated[Optional[int], typer.Option(help="Iterations per phase.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default: the adapt stage's, so the init is the same).")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16 + channels-last on CUDA, fp32 + channels-last on CPU) | bf16 | fp32 (contiguous).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted stage from last.pt.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a finished stage.")] = False,
):
    """Self-guided retraining, Eq 9 and 11: from the initial weights, adapt's phases + target CE."""
    from pipeline.data.dataconfig import load_data_config
    from pipeline.stages.retrain import base_config, preset_config, retrain

    data = load_data_config(config)
    pairs = list(sets or []) + _option_pairs(iters, seed, precision, pretrained)
    base = (preset_config(_train_config(preset, [], None, None), run, labels) if preset is not None
            else base_config(run, labels))
    cfg = base.overrides(pairs)
    man = _run_training(lambda rep: retrain(data, run, cfg, labels, force=force, resume=resume, reporter=rep,
                                            command=_command_line()))
    if man is None:
        return
    _print_trained(man)


def _print_trained(man: dict) -> None:
    stage_dir = Path(man["outputs"]["final"]).parent
    out.print(f"[green]finished[/] {escape(str(stage_dir))}: " + ", ".join(f"{escape(str(p['name']))} ({escape(str(p['iters']))} it, {escape(str(p['seconds']))} s)"
                                                            for p in man["phases_done"]))
    if man.get("metrics"):
        import json
        m = json.loads((stage_dir / layout.METRICS).read_text())
        out.print(metrics_table(m, f"{escape(str(man['target']))}/val after {escape(str(stage_dir.name))}"))


@app.command("eval")
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
    """mIoU, per-class IoU and pixel accuracy of predictions against a labelled split."""
    from pipeline.data.dataconfig import load_data_config
    from pipeline.stages.evaluate import evaluate_folder

    cfg = load_data_config(config)
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


from phfa_cli import predict_cmd, prepare_cmd, report_cmd  # noqa: E402  (commands in their own modules)

predict_cmd.register(app)
report_cmd.register(app)
prepare_cmd.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
