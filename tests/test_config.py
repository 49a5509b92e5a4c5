"""Every setting's range is checked in one place, for every config, before anything runs."""
import pytest
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline.config import PRESETS, TRANSLATE_PRESETS, preset, translate_preset, validate
from pipeline.errors import PhfaError

runner = CliRunner()


def test_presets_are_valid():
    for name in PRESETS:
        validate(preset(name))
    for name in TRANSLATE_PRESETS:
        validate(translate_preset(name))


@pytest.mark.parametrize("pair", ["source_size=0x0", "source_size=-8x8", "target_size=64", "ckpt_every=0",
                                  "log_every=0", "workers=-1", "batch_size=0", "iters=0", "lr=0", "lambda_adv=-1",
                                  "memory_size=0", "betas_d=0.9,1.5", "poly_iters=10", "aux_share=0",
                                  "aux_share=1.5", "d_ndf=0", "photometric_range=1", "photometric_range=-0.1",
                                  "val_every=-1"])
def test_train_settings_out_of_range_are_refused(pair):
    with pytest.raises(PhfaError, match=pair.split("=")[0]):
        preset("toy").overrides([pair])


@pytest.mark.parametrize("pair", ["batch_size=0", "ckpt_every=0", "preview_every=0", "crop=0x0", "lr=-1"])
def test_translate_settings_out_of_range_are_refused(pair):
    with pytest.raises(PhfaError, match=pair.split("=")[0]):
        translate_preset("toy").overrides([pair])


def test_cli_reports_a_bad_setting_in_one_line_before_any_folder(tmp_path):
    cfg = tmp_path / "d.toml"
    (tmp_path / "g/images").mkdir(parents=True)
    cfg.write_text('[domains.gta5]\nformat = "gta5"\nroot = "g"\n')
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(tmp_path / "R"), "--sources", "gta5",
                            "--preset", "toy", "--set", "log_every=0"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "log_every" in r.output, r.output
    assert not (tmp_path / "R").exists()


def test_auxiliary_phases_run_their_share_and_d_has_its_width():
    """aux_share shortens every earlier progressive phase, never the primary one; d_ndf is D's width."""
    import torch

    from pipeline import train
    from pipeline.stages.adapt import build_phases

    cfg = preset("toy").overrides(["iters=10", "init_iters=0", "aux_share=0.25"])
    assert [p.iters for p in build_phases(cfg, ["unity", "synthia", "gta5"])] == [2, 2, 10]
    assert [p.iters for p in build_phases(cfg, ["gta5"])] == [10]
    assert [p.iters for p in build_phases(cfg.overrides(["iters=1"]), ["unity", "gta5"])] == [1, 1]
    assert [p.iters for p in build_phases(preset("paper"), ["unity", "gta5"])] == [120_000, 120_000]
    # the toy preset's aligning stages start from the source-only model and run init_iters; the rows
    # without alignment (source-only, oracle) keep the calibrated iters
    toy = preset("toy")
    assert [p.iters for p in build_phases(toy, ["unity", "gta5"])] == [250, 500]
    so = toy.overrides(["adversarial=false", "align="])
    assert [p.iters for p in build_phases(so, ["gta5"])] == [1000]
    D = train.OutputDiscriminator(19, ndf=cfg.d_ndf)
    assert [m.out_channels for m in D.modules() if isinstance(m, torch.nn.Conv2d)][0] == cfg.d_ndf
