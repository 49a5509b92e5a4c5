"""The training commands: `phfa adapt`, `translate`, `pseudolabel`, `retrain` (pipeline.stages)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from phfa_cli.common import ConfigOpt, PresetOpt, PretrainedOpt, RunOpt, SetOpt, err, guarded, metrics_table, out, run_data
from pipeline.runtime import layout


def _resolve_preset(preset: str) -> str:
    """`auto`: the paper preset where CUDA is available, else the CPU toy preset (said on stderr)."""
    if preset != "auto":
        return preset
    import torch
    chosen = "paper" if torch.cuda.is_available() else "toy"
    if chosen == "toy":
        err.print("note: no CUDA device: using --preset toy (the CPU preset); pass --preset paper to insist")
    return chosen


def _train_config(preset: str, sets, iters=None, seed=None, precision=None, pretrained=None, **fields):
    from pipeline.config import configure, preset as make_preset
    return configure(make_preset(_resolve_preset(preset)), sets,
                     **_option_fields(iters, seed, precision, pretrained), **fields)


def _option_fields(iters=None, seed=None, precision=None, pretrained=None) -> dict:
    """The training options as config fields. `--iters N` is what this stage runs, warm-started or not;
    `--pretrained` is where it starts, so it replaces a preset's init_stage."""
    out = dict(seed=seed, precision=precision)
    if pretrained is not None:
        out.update(pretrained=pretrained, init_stage="")
    if iters is not None:
        out.update(iters=iters, init_iters=0)
    return out


def _run_training(fn):
    """Run a training stage with a progress reporter; Ctrl-C prints the resume command (exit 130)."""
    from phfa_cli.reporting import make_reporter
    from pipeline.runtime.loop import Interrupted

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
    """Progressive adversarial adaptation + hierarchical feature alignment (Eq. 10).

    \b
    Example (a run's first stage names the data config; later ones find it in the run):
        phfa adapt --config data/toytown/phfa-data.toml --run runs/demo --sources gta5 --no-adversarial --no-hierarchy
        phfa adapt --run runs/demo --sources unity,gta5 --source-style translated
    """
    data = run_data(run, config)  # data config and settings are checked before torch is imported
    source_list = [s.strip() for s in sources.split(",") if s.strip()]
    for s_ in source_list:
        data.domain(s_, option="--sources")
    levels = () if no_hierarchy else None if align is None else tuple(a.strip() for a in align.split(",") if a.strip())
    cfg = _train_config(preset, sets, iters, seed, precision, pretrained,
                        adversarial=False if no_adversarial else None, align=levels)
    from pipeline.stages.adapt import adapt
    man = _run_training(lambda rep: adapt(
        data, run, source_list, target, cfg, tag=tag, force=force,
        resume=resume, source_style=source_style, reporter=rep, command=_command_line()))
    if man is None:  # a non-zero rank of a torchrun job: rank 0 reports
        return
    _print_trained(man)


@guarded
def translate_cmd(
    run: RunOpt,
    source: Annotated[str, typer.Option(help="Source domain to translate.")] = "gta5",
    target: Annotated[Optional[str], typer.Option(help="Target domain (default: the one with few_shot).")] = None,
    method: Annotated[str, typer.Option(help="cyclegan (paper, Eq. 7) or fda (training-free).")] = "cyclegan",
    seg_checkpoint: Annotated[Optional[Path], typer.Option("--seg-checkpoint", help="Frozen segmentor for the perceptual loss (Eq. 7), a final.pt file (default: none, the loss is off).")] = None,
    seg_from: Annotated[Optional[str], typer.Option("--seg-from", help="Frozen segmentor for the perceptual loss (Eq. 7): final.pt of this stage of the run, e.g. adapt-noadv-nohier (default: none, the loss is off).")] = None,
    config: ConfigOpt = None,
    preset: PresetOpt = "auto",
    sets: SetOpt = None,
    iters: Annotated[Optional[int], typer.Option(help="CycleGAN iterations.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted training or write.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a finished stage.")] = False,
):
    """Image-level alignment: translate a source domain to the target style (CycleGAN or FDA).

    \b
    Example:
        phfa translate --run runs/demo --source gta5 --seg-from adapt-noadv-nohier
        phfa translate --run runs/demo --source gta5 --method fda
    """
    from pipeline.config import configure, translate_preset
    from pipeline.stages.translate import translate

    data = run_data(run, config)
    cfg = configure(translate_preset(_resolve_preset(preset)), sets, method=method, iters=iters, seed=seed)
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
    """Self-guidance, Eq 8: class-wise confidence thresholds and pseudo-label PNGs of the target.

    \b
    Example:
        phfa pseudolabel --run runs/demo
        phfa pseudolabel --run runs/demo --from adapt --images all
    """
    from pipeline.stages.pseudolabel import pseudolabel

    data = run_data(run, config)
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
    """Self-guided retraining, Eq 9 and 11: from the initial weights, adapt's phases + target CE.

    \b
    Example:
        phfa retrain --run runs/demo
        phfa retrain --run runs/demo --labels pseudolabel-adapt --iters 2000
    """
    from pipeline.config import configure
    from pipeline.stages.retrain import base_config, preset_config, retrain

    data = run_data(run, config)
    base = (preset_config(_train_config(preset, []), run, labels) if preset is not None
            else base_config(run, labels))
    cfg = configure(base, sets, **_option_fields(iters, seed, precision, pretrained))
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


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt_cmd)
    app.command("translate")(translate_cmd)
    app.command("pseudolabel")(pseudolabel_cmd)
    app.command("retrain")(retrain_cmd)
