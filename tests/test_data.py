"""Readers (round trips in the real encodings), few-shot selection, the bad inputs the README lists."""
import numpy as np
import pytest
from PIL import Image

from pipeline.data import datasets, formats, pngio
from pipeline.data.dataconfig import load_data_config
from pipeline.errors import PhfaError
from tests.conftest import GTA_PAL


def test_round_trip_every_format(tiny_data):
    cfg_path, truth = tiny_data
    cfg = load_data_config(cfg_path)
    for dom, split in (("gta5", "all"), ("unity", "all"), ("mine", "all")):
        ds = datasets.SegDataset(cfg.domain(dom), split)
        assert len(ds) == len(truth[dom])
        for img, lab, name in ds:
            assert img.shape[0] == 3 and img.dtype.is_floating_point
            np.testing.assert_array_equal(lab.numpy(), truth[dom][name])
    ds = datasets.SegDataset(cfg.domain("cityscapes"), "val")
    assert len(ds) == 4
    for _, lab, name in ds:
        np.testing.assert_array_equal(lab.numpy(), truth["cityscapes"][("val", name)])


def test_synthia_label_is_16bit_with_class_in_red(tmp_path):
    lab = np.zeros((3, 4, 3), np.uint16)
    lab[..., 0] = 21            # wall
    lab[..., 1] = 40000         # would wrap / pollute an 8-bit reader
    lab[..., 2] = 300
    p = tmp_path / "l.png"
    pngio.write_png16(p, lab)
    raw = open(p, "rb").read(26)
    assert raw[24] == 16 and raw[25] == 2  # bit depth 16, colour type RGB
    dec = formats.decode_label("synthia", p)
    assert (dec.train_ids == 3).all() and dec.unknown == 0


def test_gta5_label_is_palette_indices_not_colours(tmp_path):
    ids = np.array([[7, 26], [0, 33]], np.uint8)
    pngio.write_png(tmp_path / "l.png", ids, palette=GTA_PAL)
    assert Image.open(tmp_path / "l.png").mode == "P"
    np.testing.assert_array_equal(formats.decode_label("gta5", tmp_path / "l.png").train_ids, [[0, 13], [255, 18]])


def test_resize_image_bicubic_label_nearest(tiny_data):
    cfg_path, truth = tiny_data
    ds = datasets.SegDataset(load_data_config(cfg_path).domain("gta5"), "all", size=(12, 6))
    img, lab, name = ds[0]
    assert img.shape == (3, 6, 12) and lab.shape == (6, 12)
    assert set(np.unique(lab.numpy())) <= set(np.unique(truth["gta5"][name]))  # nearest: no new values


def test_few_shot_deterministic_and_seeded(tiny_data, tmp_path):
    names = [f"n{i:03d}" for i in range(100)]
    a = datasets.select_few_shot(names, 30, seed=0)
    assert a == datasets.select_few_shot(list(reversed(names)), 30, seed=0)
    assert a != datasets.select_few_shot(names, 30, seed=1)
    assert a == sorted(a) and len(set(a)) == 30
    cfg = load_data_config(tiny_data[0])
    lst = tmp_path / "run" / "fewshot.txt"
    first = datasets.few_shot_names(cfg.domain("cityscapes"), 0, lst)
    assert len(first) == 5 and lst.is_file()
    assert datasets.few_shot_names(cfg.domain("cityscapes"), 99, lst) == first  # the run keeps its list


def test_missing_root_named(tmp_path):
    (tmp_path / "c.toml").write_text('[domains.x]\nformat = "gta5"\nroot = "nope"\n')
    cfg = load_data_config(tmp_path / "c.toml")
    with pytest.raises(PhfaError, match="nope"):
        datasets.SegDataset(cfg.domain("x"), "all")


def test_unknown_domain_named(tiny_data):
    cfg = load_data_config(tiny_data[0])
    with pytest.raises(PhfaError, match="nosuch"):
        cfg.domain("nosuch")


def test_unreadable_png_named(tiny_data):
    cfg_path, _ = tiny_data
    bad = cfg_path.parent / "gta5" / "images" / "00001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    ds = datasets.SegDataset(load_data_config(cfg_path).domain("gta5"), "all")
    with pytest.raises(PhfaError, match="00001.png"):
        ds[1]


def test_list_line_escaping_root_refused(tiny_data):
    cfg_path, _ = tiny_data
    root = cfg_path.parent
    for line in ("../gta5/images/00000.png", "/etc/passwd", "images/../../x.png"):
        (root / "list.txt").write_text(f"images/00000.png\n{line}\n")
        (root / "c2.toml").write_text('[domains.g]\nformat = "gta5"\nroot = "gta5"\nlists = { all = "list.txt" }\n')
        with pytest.raises(PhfaError, match="line 2.*escapes"):
            datasets.samples(load_data_config(root / "c2.toml").domain("g"), "all")
    (root / "list.txt").write_text("images/00002.png\n")
    s = datasets.samples(load_data_config(root / "c2.toml").domain("g"), "all")
    assert [x.name for x in s] == ["00002"] and s[0].label is not None


def test_size_mismatch_warned_and_resized(tiny_data):
    cfg_path, _ = tiny_data
    lp = cfg_path.parent / "gta5" / "labels" / "00002.png"
    pngio.write_png(lp, np.full((6, 12), 7, np.uint8), palette=GTA_PAL)  # half size
    ds = datasets.SegDataset(load_data_config(cfg_path).domain("gta5"), "all")
    with pytest.warns(UserWarning, match="00002.png"):
        _, lab, _ = ds[2]
    assert lab.shape == (12, 24) and (lab == 0).all()


def test_unknown_ids_counted_as_ignore(tmp_path):
    ids = np.array([[7, 200, 201], [26, 34, 0]], np.uint8)
    pngio.write_png(tmp_path / "l.png", ids, palette=GTA_PAL)
    dec = formats.decode_label("gta5", tmp_path / "l.png")
    assert dec.unknown == 3
    np.testing.assert_array_equal(dec.train_ids, [[0, 255, 255], [13, 255, 255]])


def test_bad_config(tmp_path):
    with pytest.raises(PhfaError, match="does not exist"):
        load_data_config(tmp_path / "phfa-data.toml")
    (tmp_path / "c.toml").write_text('[domains.x]\nformat = "kitti"\nroot = "."\n')
    with pytest.raises(PhfaError, match="kitti"):
        load_data_config(tmp_path / "c.toml")


@pytest.mark.parametrize("body,match", [
    ('root = 5', "root must be a path in quotes, not 5"),
    ('root = ["gta5"]', "root must be a path in quotes"),
    ('root = "gta5"\nlists = "l.txt"', "lists must be a table"),
    ('root = "gta5"\nlists = { all = 5 }', "lists.all must be a path in quotes"),
    ('root = "gta5"\nfew_shot = true', "few_shot must be a positive integer, not True"),
    ('root = "gta5"\nfew_shot = 2.5', "few_shot must be a positive integer"),
])
def test_config_values_of_the_wrong_type_are_named(tmp_path, body, match):
    (tmp_path / "c.toml").write_text(f'[domains.x]\nformat = "gta5"\n{body}\n')
    with pytest.raises(PhfaError, match=match):
        load_data_config(tmp_path / "c.toml")


def test_a_config_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "c.toml").write_bytes(b'[domains.x]\nformat = "gta5"\nroot = "\xff"\n')
    with pytest.raises(PhfaError, match="c.toml is not UTF-8"):
        load_data_config(tmp_path / "c.toml")


def test_16_bit_labels_are_read_exactly_or_refused_by_name(tmp_path):
    import cv2
    ids = np.full((4, 6), 7, np.uint16)
    cv2.imwrite(str(tmp_path / "ok.png"), ids)                     # 16-bit, every id < 256: exact
    assert formats.decode_label("gta5", tmp_path / "ok.png").train_ids.tolist() == [[0] * 6] * 4
    ids[1, 2] = 256 + 7                                             # would wrap to 7 (road) modulo 256
    cv2.imwrite(str(tmp_path / "wrap.png"), ids)
    for fmt in ("gta5", "cityscapes", "folder"):
        with pytest.raises(PhfaError, match="wrap.png is a 16-bit image holding id 263"):
            formats.decode_label(fmt, tmp_path / "wrap.png")


def test_data_check_names_a_16_bit_label(tiny_data):
    import cv2
    from pipeline.data.check import check_domain
    cfg_path, _ = tiny_data
    lp = cfg_path.parent / "gta5" / "labels" / "00003.png"
    ids = pngio.read_index(lp).astype(np.uint16)
    ids[0, 0] = 300
    cv2.imwrite(str(lp), ids)
    rep = check_domain(load_data_config(cfg_path), "gta5")
    assert not rep.usable and any("00003.png" in u and "16-bit" in u for s in rep.splits for u in s.unreadable)


def test_data_manifests_describe_each_format():
    for fmt in ("gta5", "synthia", "cityscapes", "folder"):
        m = formats.dataset_manifest(fmt)
        assert m["format"] == fmt and "valid_label_ids" in m
    assert {k["file"] for k in formats.dataset_manifest("gta5")["known_bad"]} == {"15188.png", "17705.png"}
