"""`phfa data prepare`: pre-resized copies equal the on-the-fly decoding, stale entries are not
used, and SegDataset reads them (and says so with `prepared`)."""
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline.data import datasets, pngio, prepare
from pipeline.data.dataconfig import load_data_config

from conftest import write_cityscapes, write_gta5

runner = CliRunner()


def _prepare(cfg, domain, size, split=None):
    args = ["data", "prepare", domain, "--config", str(cfg), "--size", f"{size[0]}x{size[1]}"]
    if split:
        args += ["--split", split]
    return runner.invoke(app, args)


@pytest.mark.parametrize("domain,size,split", [("gta5", (17, 9), None), ("unity", (14, 7), None),
                                               ("cityscapes", (20, 10), "train"), ("cityscapes", (20, 10), "val"),
                                               ("mine", (12, 12), None)])
def test_prepared_pairs_equal_on_the_fly(tiny_data, domain, size, split):
    cfg_path, _ = tiny_data
    r = _prepare(cfg_path, domain, size, split)
    assert r.exit_code == 0, r.output
    assert "prepared" in r.output
    spec = load_data_config(cfg_path).domain(domain)
    split = split or datasets.train_split(spec)
    items = datasets.samples(spec, split)
    idx = prepare.open_index(spec, split, size, items)
    assert idx is not None and idx.covers_all()
    for s in items:
        img, lab = idx.get(s)
        ref_img, ref_lab = datasets.load_pair(spec, s, size)
        np.testing.assert_array_equal(img, ref_img)
        assert img.dtype == np.uint8 and img.shape == (size[1], size[0], 3)
        if ref_lab is None:
            assert lab is None
        else:
            np.testing.assert_array_equal(lab, ref_lab)
    ds = datasets.SegDataset(spec, split, size)
    assert ds.prepared
    assert not datasets.SegDataset(spec, split, (size[0] + 2, size[1])).prepared  # another size: not prepared
    # the tensors SegDataset hands out are those of the on-the-fly path
    x, y, name = ds[0]
    ref_img, ref_lab = datasets.load_pair(spec, items[0], size)
    from pipeline.data.transforms import to_tensor
    assert x.equal(to_tensor(ref_img)) and name == items[0].name
    if ref_lab is not None:
        assert np.array_equal(y.numpy(), ref_lab)


def test_segdataset_reads_the_cache(tiny_data, monkeypatch):
    cfg_path, _ = tiny_data
    assert _prepare(cfg_path, "gta5", (16, 8)).exit_code == 0
    spec = load_data_config(cfg_path).domain("gta5")
    ds = datasets.SegDataset(spec, "all", (16, 8))
    monkeypatch.setattr(datasets, "load_pair", lambda *a, **k: pytest.fail("decoded the full-size file"))
    for i in range(len(ds)):
        ds[i]


def test_stale_entry_is_not_used(tiny_data):
    cfg_path, _ = tiny_data
    size = (16, 8)
    assert _prepare(cfg_path, "gta5", size).exit_code == 0
    spec = load_data_config(cfg_path).domain("gta5")
    items = datasets.samples(spec, "all")
    # change the source image of sample 0 (new pixels, and a later mtime)
    s0 = items[0]
    rng = np.random.default_rng(99)
    pngio.write_png(s0.image, rng.integers(0, 255, (12, 24, 3), dtype=np.uint8))
    st = os.stat(s0.image)
    os.utime(s0.image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds = datasets.SegDataset(spec, "all", size)
    assert not ds.prepared
    fresh_img, _ = datasets.load_pair(spec, s0, size)
    x, _, _ = ds[0]
    from pipeline.data.transforms import to_tensor
    assert x.equal(to_tensor(fresh_img))           # the new file, not the stale copy
    assert ds._prepared.fresh[s0.name] is False and ds._prepared.count() == len(items) - 1
    # a changed label alone also makes the entry stale
    s1 = items[1]
    st = os.stat(s1.label)
    os.utime(s1.label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds = datasets.SegDataset(spec, "all", size)
    assert ds._prepared.fresh[s1.name] is False
    # preparing again rewrites only the stale entries
    r = _prepare(cfg_path, "gta5", size)
    assert r.exit_code == 0 and "2 written" in r.output, r.output
    assert datasets.SegDataset(spec, "all", size).prepared


def test_cache_under_phfa_cache_env(tmp_path, monkeypatch):
    write_gta5(tmp_path / "g", 3)
    cfg = tmp_path / "d.toml"
    cfg.write_text('[domains.g]\nformat = "gta5"\nroot = "g"\n')
    monkeypatch.setenv("PHFA_CACHE", str(tmp_path / "elsewhere"))
    assert _prepare(cfg, "g", (16, 8)).exit_code == 0
    assert not (tmp_path / "g" / ".phfa-cache").exists()
    assert list((tmp_path / "elsewhere").rglob("index.json"))
    assert datasets.SegDataset(load_data_config(cfg).domain("g"), "all", (16, 8)).prepared
    monkeypatch.delenv("PHFA_CACHE")
    assert not datasets.SegDataset(load_data_config(cfg).domain("g"), "all", (16, 8)).prepared


def test_cache_folder_is_not_listed_as_data(tmp_path):
    """Samples of a prepared domain are the same as before (the cache sits beside, not inside, the layout)."""
    write_cityscapes(tmp_path / "cs", 3, 2)
    cfg = tmp_path / "d.toml"
    cfg.write_text('[domains.cs]\nformat = "cityscapes"\nroot = "cs"\n')
    spec = load_data_config(cfg).domain("cs")
    before = datasets.samples(spec, "train")
    assert _prepare(cfg, "cs", (16, 8)).exit_code == 0
    assert datasets.samples(spec, "train") == before


def test_cli_errors(tiny_data):
    cfg_path, _ = tiny_data
    r = _prepare(cfg_path, "nope", (16, 8))
    assert r.exit_code == 2 and "unknown domain" in r.output
    r = runner.invoke(app, ["data", "prepare", "gta5", "--config", str(cfg_path), "--size", "big"])
    assert r.exit_code == 2 and "WIDTHxHEIGHT" in r.output
    for opts, word in ((["--size", "100000x100000"], "--size"), (["--size", "16x8", "--workers", "-1"], "--workers")):
        r = runner.invoke(app, ["data", "prepare", "gta5", "--config", str(cfg_path), *opts])
        assert r.exit_code == 2 and word in r.output and "Traceback" not in r.output, r.output
