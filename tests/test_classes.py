import numpy as np

from pipeline import classes as C


def test_train_ids_are_table_ii_order():
    assert C.CLASS_NAMES[:3] == ("road", "sidewalk", "building")
    assert C.CLASS_NAMES[-1] == "bicycle" and len(C.CLASS_NAMES) == 19
    assert [l.train_id for l in C.TRAIN_LABELS] == list(range(19))


def test_gta5_map_matches_design():
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert C.GTA5_ID_TO_TRAIN_ID == expected
    lut = C.lookup_table(C.GTA5_ID_TO_TRAIN_ID)
    assert lut[7] == 0 and lut[33] == 18 and lut[0] == 255 and lut[29] == 255 and lut[200] == 255


def test_synthia_map_and_subsets():
    assert len(C.SYNTHIA_ID_TO_TRAIN_ID) == 19
    assert C.SYNTHIA_ID_TO_TRAIN_ID[1] == 10 and C.SYNTHIA_ID_TO_TRAIN_ID[21] == 3
    assert len(C.SUBSETS[16]) == 16 and len(C.SUBSETS[13]) == 13
    assert set(C.SUBSETS[16]) - set(C.SUBSETS[13]) == {3, 4, 5}
    assert not {9, 14, 16} & set(C.SUBSETS[16])  # terrain, truck, train are not in SYNTHIA


def test_things_and_stuff_partition_the_classes():
    assert sorted(C.THING_CLASSES + C.STUFF_CLASSES) == list(range(19))


def test_colorize():
    rgb = C.colorize(np.array([[0, 255]], np.uint8))
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 0)
