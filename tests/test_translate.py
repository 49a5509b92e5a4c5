"""`phfa translate` (CycleGAN and FDA) on tiny data: the written domain, resume, bad inputs."""
import json

import pytest
import torch
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline.data import datasets
from pipeline.data.dataconfig import DomainSpec, load_data_config

runner = CliRunner()
SMALL = ["--preset", "toy", "--set", "crop=48,28", "--set", "source_size=56,30", "--set", "target_size=64,32",
         "--set", "log_every=1", "--set", "preview_every=2"]


@pytest.fixture
def tiny(tmp_path):
    from tests.conftest import write_cityscapes, write_gta5, write_synthia
    write_gta5(tmp_path / "gta5", 5, size=(64, 36))
    write_synthia(tmp_path / "unity", 4, size=(60, 34))
    write_cityscapes(tmp_path / "cityscapes", 8, 2, size=(64, 32))
    cfg = tmp_path / "d.toml"
    cfg.write_text('[domains.gta5]\nformat = "gta5"\nroot = "gta5"\n[domains.unity]\nformat = "synthia"\nroot = "unity"\n'
                   '[domains.cityscapes]\nformat = "cityscapes"\nroot = "cityscapes"\nfew_shot = 3\n')
    return tmp_path, cfg


def translate(cfg, run, *extra):
    return runner.invoke(app, ["translate", "--config", str(cfg), "--run", str(run), *SMALL, *extra])


def _same_labels(cfg, source, root, fmt, size):
    """Read back through the source's reader: trainIds equal to the source's at the written size."""
    spec = load_data_config(cfg).domain(source)
    orig = datasets.SegDataset(spec, "all", size=size)
    back = datasets.SegDataset(DomainSpec("t", fmt, root), "all")
    assert len(orig) == len(back)
    for (_, a, na), (img, b, nb) in zip(orig, back):
        assert na == nb and torch.equal(a, b)
        assert img.shape[-2:] == (size[1], size[0])


@pytest.mark.parametrize("source,fmt", [("gta5", "gta5"), ("unity", "synthia")])
def test_cyclegan_writes_domain_in_source_layout(tiny, source, fmt):
    root, cfg = tiny
    r = translate(cfg, root / "r", "--source", source, "--iters", "2")
    assert r.exit_code == 0, r.output
    stage = root / "r" / f"translate-{source}"
    man = json.loads((stage / "manifest.json").read_text())
    assert man["status"] == "finished" and man["perceptual"].startswith("off")
    assert man["inputs"]["target_few_shot"] == 3
    _same_labels(cfg, source, stage / "domain", fmt, (56, 30))
    assert list(stage.glob("preview-*.png"))


def test_fda_domain_and_adapt_on_it(tiny):
    root, cfg = tiny
    r = translate(cfg, root / "r", "--source", "gta5", "--method", "fda")
    assert r.exit_code == 0, r.output
    _same_labels(cfg, "gta5", root / "r/translate-gta5-fda/domain", "gta5", (56, 30))
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(root / "r"), "--sources", "gta5",
                            "--source-style", "fda", "--no-hierarchy", "--iters", "1", "--preset", "toy",
                            "--set", "source_size=64,32", "--set", "target_size=64,32", "--set", "batch_size=2",
                            "--set", "init_stage="])
    assert r.exit_code == 0, r.output
    man = json.loads((root / "r/adapt-fda-nohier/manifest.json").read_text())
    assert man["inputs"]["source_roots"]["gta5"].endswith("translate-gta5-fda/domain")


def test_adapt_translated_needs_translate_first(tiny):
    root, cfg = tiny
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(root / "r"), "--sources", "gta5",
                            "--source-style", "translated", "--preset", "toy"])
    assert r.exit_code == 2 and "phfa translate" in r.output


def test_perceptual_from_seg_checkpoint_and_class_check(tiny):
    root, cfg = tiny
    from pipeline.models.deeplab import build_deeplab
    from pipeline.runtime import checkpoint
    m = build_deeplab("resnet18", 19, "none")
    checkpoint.save(root / "seg.pt", {"kind": "segmentor", "arch": {"backbone": "resnet18", "num_classes": 19},
                                      "model": m.state_dict()})
    r = translate(cfg, root / "r", "--iters", "2", "--seg-checkpoint", str(root / "seg.pt"))
    assert r.exit_code == 0, r.output
    man = json.loads((root / "r/translate-gta5/manifest.json").read_text())
    assert man["perceptual"].startswith("on") and man["inputs"]["seg_checkpoint"]["sha256"]
    assert "ppl" in json.loads((root / "r/translate-gta5/metrics.jsonl").read_text().splitlines()[-1])
    checkpoint.save(root / "seg16.pt", {"kind": "segmentor", "arch": {"backbone": "resnet18", "num_classes": 16},
                                        "model": m.state_dict()})
    r = translate(cfg, root / "r2", "--iters", "2", "--seg-checkpoint", str(root / "seg16.pt"))
    assert r.exit_code == 2 and "16 classes" in r.output and not (root / "r2").exists()


def test_resume_training_and_writing(tiny, monkeypatch):
    root, cfg = tiny
    from pipeline.models.cyclegan import CycleGAN
    from pipeline.stages import translate as T
    real, n = CycleGAN.train_step, {"k": 0}

    def flaky(self, *a, **k):
        n["k"] += 1
        if n["k"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(CycleGAN, "train_step", flaky)
    r = translate(cfg, root / "r", "--iters", "4", "--set", "ckpt_every=1")
    assert r.exit_code == 130 and "--resume" in r.output
    assert torch.load(root / "r/translate-gta5/last.pt", weights_only=True)["iter"] == 2
    monkeypatch.setattr(CycleGAN, "train_step", real)
    # interrupt the write after 2 images
    real_write, w = T.pngio.write_png, {"k": 0}

    def flaky_write(path, *a, **k):
        if "images" in str(path):
            w["k"] += 1
            if w["k"] == 3:
                raise KeyboardInterrupt
        return real_write(path, *a, **k)
    monkeypatch.setattr(T.pngio, "write_png", flaky_write)
    r = translate(cfg, root / "r", "--iters", "4", "--resume")
    assert r.exit_code == 130
    imgs = sorted((root / "r/translate-gta5/domain/images").glob("*.png"))
    assert len(imgs) == 2 and not list((root / "r/translate-gta5/domain/images").glob(".*"))  # no partial file
    monkeypatch.setattr(T.pngio, "write_png", real_write)
    r = translate(cfg, root / "r", "--iters", "4", "--resume")
    assert r.exit_code == 0, r.output
    man = json.loads((root / "r/translate-gta5/manifest.json").read_text())
    assert man["written"] == {**man["written"], "images": 5, "written": 3, "skipped_existing": 2}
    assert man["training"]["iters"] == 4


def test_bad_inputs(tiny):
    root, cfg = tiny
    (root / "nothing/images").mkdir(parents=True)
    (root / "nothing/labels").mkdir(parents=True)
    bad = root / "bad.toml"
    bad.write_text(cfg.read_text() + '[domains.empty]\nformat = "gta5"\nroot = "nothing"\n')
    r = translate(bad, root / "r", "--source", "empty")
    assert r.exit_code == 2 and "no images" in r.output
    nofs = root / "nofs.toml"
    nofs.write_text(cfg.read_text().replace("few_shot = 3\n", ""))
    r = translate(nofs, root / "r", "--target", "cityscapes")
    assert r.exit_code == 2 and "few_shot" in r.output
