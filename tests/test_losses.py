"""Adversarial, max-squares (Eq. 2-3) and alignment (Eq. 1, 4-6) losses, checked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipeline.losses.adversarial import (
    bce_to,
    discriminator_loss,
    generator_adv_loss,
)
from pipeline.classes import STUFF_CLASSES, THING_CLASSES
from pipeline.losses.alignment import (
    background_loss,
    nearest_l1,
    object_loss,
    update_memory_background,
    update_memory_objects,
)
from pipeline.losses.memory import FeatureMemory, HierarchyMemory, level_memories, participation
from pipeline.losses.regions import (
    class_regions,
    components,
    converged,
    correct_map,
    downsample_labels,
    object_regions,
    pooled_logits,
)
from pipeline.losses.maxsquare import class_balanced_max_square

CAR, PERSON, ROAD, SKY = 13, 11, 0, 10


def object_features(feats, label_map, classes=THING_CLASSES, connectivity=2, top_k=0):
    """(class, masked-average feature) of each kept component, in the order they are found."""
    return [(c, f) for c, _, f in object_regions(feats, label_map, classes, connectivity, top_k).found()]


def class_features(feats, label_map, classes=STUFF_CLASSES):
    """(class, class-averaged feature) per image and class present."""
    return [(c, f) for c, _, f in class_regions(feats, label_map, classes).found()]


# ----------------------------------------------------------------------------- adversarial


def test_bce_by_hand():
    x = torch.tensor([[0.0, 2.0]])
    # label 1: logit 0 -> ln 2; logit 2 -> -ln sigmoid(2) = ln(1 + e^-2); mean of the two.
    assert bce_to(x, 1.0).item() == pytest.approx((math.log(2) + math.log(1 + math.exp(-2))) / 2, rel=1e-6)
    # label 0: logit 0 -> ln 2; logit 2 -> -ln(1 - sigmoid(2)) = ln(1 + e^2).
    assert bce_to(x, 0.0).item() == pytest.approx((math.log(2) + math.log(1 + math.exp(2))) / 2, rel=1e-6)


class _ConstD(nn.Module):
    """D(p) = a * mean over channels of p, one patch per pixel."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(2.0))

    def forward(self, p):
        return self.a * p.mean(dim=1, keepdim=True)


def test_generator_adv_loss_freezes_d():
    d = _ConstD()
    prob = torch.full((1, 2, 1, 1), 0.5, requires_grad=True)
    loss = generator_adv_loss(d, prob)
    # D output = 2 * 0.5 = 1, judged against the source label 0: ln(1 + e^1).
    assert loss.item() == pytest.approx(math.log(1 + math.e), rel=1e-6)
    loss.backward()
    assert prob.grad is not None and d.a.grad is None
    assert d.a.requires_grad  # restored after the call


def test_discriminator_loss_detaches_and_halves():
    d = _ConstD()
    src = torch.zeros((1, 2, 1, 1), requires_grad=True)  # D = 0
    tgt = torch.full((1, 2, 1, 1), 0.5, requires_grad=True)  # D = 1
    loss = discriminator_loss(d, src, tgt)
    # source vs 0 at logit 0: ln 2; target vs 1 at logit 1: ln(1 + e^-1); each halved.
    assert loss.item() == pytest.approx((math.log(2) + math.log(1 + math.exp(-1))) / 2, rel=1e-6)
    loss.backward()
    assert src.grad is None and tgt.grad is None and d.a.grad is not None


# ----------------------------------------------------------------------------- max-squares


def _example_prob(requires_grad=False):
    # One image, 2 classes, 2x2 pixels a=(0,0) b=(0,1) c=(1,0) d=(1,1):
    # a (0.9, 0.1)  b (0.8, 0.2)  c (0.6, 0.4)  d (0.3, 0.7)
    p0 = torch.tensor([[0.9, 0.8], [0.6, 0.3]])
    prob = torch.stack([p0, 1 - p0])[None].clone()
    return prob.requires_grad_(requires_grad)


def test_max_square_by_hand():
    prob = _example_prob(requires_grad=True)
    # argmax: a, b, c -> class 0, d -> class 1, so N_0 = 3, N_1 = 1, N = 4. With alpha = 0.5:
    # w_0 = 1 / (3^0.5 * 4^0.5) = 1 / (2 sqrt 3),  w_1 = 1 / (1 * 4^0.5) = 1/2.
    # sum_c p^2: a .81+.01 = .82, b .64+.04 = .68, c .36+.16 = .52, d .09+.49 = .58.
    # loss = -((.82 + .68 + .52) / (2 sqrt 3) + .58 / 2) / 2 = -(2.02 / 3.4641016 + .29) / 2
    w0 = 1 / (2 * math.sqrt(3))
    expected = -(2.02 * w0 + 0.58 * 0.5) / 2
    assert expected == pytest.approx(-0.4365619, abs=1e-6)
    loss = class_balanced_max_square(prob, alpha=0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # The weights are constants: d loss / d p = -p * w (no gradient through the counts).
    loss.backward()
    assert prob.grad[0, 0, 0, 0].item() == pytest.approx(-0.9 * w0, abs=1e-6)
    assert prob.grad[0, 1, 1, 1].item() == pytest.approx(-0.7 * 0.5, abs=1e-6)


def test_max_square_default_alpha():
    # alpha = 0.2: w_0 = 1 / (3^0.2 * 4^0.8), w_1 = 1 / (1 * 4^0.8).
    w0 = 1 / (3**0.2 * 4**0.8)
    w1 = 1 / 4**0.8
    expected = -(2.02 * w0 + 0.58 * w1) / 2
    assert class_balanced_max_square(_example_prob()).item() == pytest.approx(expected, abs=1e-6)


def test_max_square_ignore_mask():
    prob = _example_prob()
    ignore = torch.tensor([[[False, False], [False, True]]])  # drop pixel d
    # N_0 = 3, N = 3 (alpha 0.5): w_0 = 1 / (3^0.5 * 3^0.5) = 1/3; loss = -(2.02 / 3) / 2.
    loss = class_balanced_max_square(prob, alpha=0.5, ignore=ignore)
    assert loss.item() == pytest.approx(-2.02 / 6, abs=1e-6)
    all_ignored = torch.ones(1, 2, 2, dtype=torch.bool)
    assert class_balanced_max_square(prob, ignore=all_ignored).item() == 0.0


def test_max_square_batch_equals_mean_of_singles():
    torch.manual_seed(0)
    prob = torch.softmax(torch.randn(2, 5, 4, 6) * 3, dim=1)
    # Give the two images very different class histograms.
    prob[1] = torch.softmax(torch.randn(5, 4, 6) + torch.tensor([4.0, 0, 0, 0, 0])[:, None, None], dim=0)
    ignore = torch.rand(2, 4, 6) < 0.2
    batch = class_balanced_max_square(prob, ignore=ignore)
    singles = [class_balanced_max_square(prob[i : i + 1], ignore=ignore[i : i + 1]) for i in range(2)]
    assert batch.item() == pytest.approx((singles[0].item() + singles[1].item()) / 2, abs=1e-6)


# ----------------------------------------------------------------------------- label maps


def test_correct_map():
    pred = torch.tensor([[[0, 1], [2, 3]]])
    gt = torch.tensor([[[0, 2], [2, 255]]])
    assert correct_map(pred, gt).tolist() == [[[0, 255], [2, 255]]]


def test_downsample_labels_nearest():
    labels = torch.arange(16).reshape(1, 4, 4)
    # nearest takes rows/cols 0 and 2
    assert downsample_labels(labels, (2, 2)).tolist() == [[[0, 2], [8, 10]]]
    assert downsample_labels(labels.to(torch.uint8), 4).dtype == torch.long


# ----------------------------------------------------------------------------- components and averages


def test_components_connectivity():
    lm = torch.full((1, 6, 6), ROAD)
    lm[0, 0:2, 0:2] = CAR  # blob 1
    lm[0, 4, 4] = lm[0, 4, 5] = lm[0, 5, 5] = CAR  # blob 2, far from blob 1
    lm[0, 0, 4] = lm[0, 1, 5] = PERSON  # touching only diagonally
    lm[0, 2, 2] = PERSON  # diagonal to blob 1 but another class: its own component
    feats = torch.zeros(1, 3, 6, 6)
    found = [c for c, _ in object_features(feats, lm)]
    assert found.count(CAR) == 2
    assert found.count(PERSON) == 2  # diagonal pair joined (connectivity 2) + the lone pixel
    found4 = [c for c, _ in object_features(feats, lm, connectivity=1)]
    assert found4.count(CAR) == 2 and found4.count(PERSON) == 3
    assert ROAD not in found  # a stuff class is not an object


def _toy_scene():
    # 3x3 map, D = 2: channel 0 = pixel index 0..8, channel 1 = 10 everywhere.
    #   CAR    CAR    ROAD
    #   ROAD   ROAD   ROAD
    #   CAR    ROAD   PERSON
    feats = torch.stack([torch.arange(9.0).reshape(3, 3), torch.full((3, 3), 10.0)])[None]
    lm = torch.tensor([[[CAR, CAR, ROAD], [ROAD, ROAD, ROAD], [CAR, ROAD, PERSON]]])
    return feats, lm


def test_object_features_masked_average_by_hand():
    feats, lm = _toy_scene()
    got = sorted((c, f.tolist()) for c, f in object_features(feats, lm))
    # car {0, 1} -> (0.5, 10); car {6} -> (6, 10); person {8} -> (8, 10)
    assert got == [(PERSON, [8.0, 10.0]), (CAR, [0.5, 10.0]), (CAR, [6.0, 10.0])]


def test_object_features_keep_graph_and_resize_labels():
    feats, lm = _toy_scene()
    feats.requires_grad_(True)
    (c, f), *_ = [x for x in object_features(feats, lm) if x[0] == PERSON]
    f.sum().backward()
    grad = feats.grad[0, 0]
    assert grad[2, 2] == 1.0 and grad.sum() == 1.0  # only the person pixel, weight 1/|mask|
    big = lm.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # 6x6 label map
    assert sorted(c for c, _ in object_features(feats.detach(), big)) == [PERSON, CAR, CAR]


def test_class_features_by_hand():
    feats, lm = _toy_scene()
    feats2 = torch.cat([feats, feats * 2])
    lm2 = torch.cat([lm, torch.full_like(lm, SKY)])
    got = sorted((c, f.tolist()) for c, f in class_features(feats2, lm2))
    # image 0 road pixels {2, 3, 4, 5, 7}: mean 21/5 = 4.2; image 1 all sky: mean of 2*(0..8) = 8, 20.
    assert got == [(ROAD, [pytest.approx(4.2), 10.0]), (SKY, [8.0, 20.0])]


# ----------------------------------------------------------------------------- memory


def test_memory_ring_and_state_dict():
    mem = FeatureMemory(num_classes=19, size=3, dim=2)
    assert not mem.has(CAR) and mem.samples(CAR).shape == (0, 2)
    for i in range(5):  # w + 2 pushes: the first two are overwritten
        mem.push(CAR, torch.tensor([[float(i), 0.0]]))
    assert mem.has(CAR) and int(mem.count[CAR]) == 3
    assert sorted(mem.samples(CAR)[:, 0].tolist()) == [2.0, 3.0, 4.0]
    mem.push(CAR, torch.tensor([[5.0, 0.0]]))  # next overwrite hits the oldest (2)
    assert sorted(mem.samples(CAR)[:, 0].tolist()) == [3.0, 4.0, 5.0]
    # One bulk push of w + 2 equals pushing them one by one.
    bulk = FeatureMemory(num_classes=19, size=3, dim=2)
    bulk.push(CAR, torch.tensor([[float(i), 0.0] for i in range(5)]))
    seq = FeatureMemory(num_classes=19, size=3, dim=2)
    for i in range(5):
        seq.push(CAR, torch.tensor([[float(i), 0.0]]))
    assert torch.equal(bulk.bank, seq.bank) and torch.equal(bulk.ptr, seq.ptr)
    # Round trip through state_dict restores contents and ring position.
    restored = FeatureMemory(num_classes=19, size=3, dim=2)
    restored.load_state_dict(mem.state_dict())
    for name in ("bank", "count", "ptr"):
        assert torch.equal(getattr(restored, name), getattr(mem, name))
    assert set(mem.state_dict()) == {"bank", "count", "ptr", "joined"}


def test_memory_stores_detached_copies():
    """The memory keeps a copy: changing the pushed tensor later changes nothing, and a loss
    through the memory sends no gradient back to the features that filled it."""
    mem = FeatureMemory(num_classes=19, size=2, dim=2)
    x = torch.ones(1, 2, requires_grad=True)
    y = x * 3
    mem.push(PERSON, y)
    with torch.no_grad():
        y.add_(100)
    assert torch.equal(mem.samples(PERSON), torch.full((1, 2), 3.0))
    (mem.samples(PERSON).sum() + 0 * x.sum()).backward()
    assert torch.equal(x.grad, torch.zeros(1, 2))
    with pytest.raises(ValueError):
        mem.push(PERSON, torch.ones(1, 3))


def test_nearest_l1_by_hand():
    q = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    bank = torch.tensor([[1.0, 0.0], [3.0, 3.0]])
    # q0: |0-1|+|0-0| = 1, |0-3|+|0-3| = 6 -> 1/2;  q1: 2+1 = 3, 0+2 = 2 -> 2/2
    assert nearest_l1(q, bank).tolist() == [0.5, 1.0]


# ----------------------------------------------------------------------------- losses with the memory


def test_object_loss_by_hand_and_gradients():
    feats, lm = _toy_scene()
    feats.requires_grad_(True)
    mem = FeatureMemory(num_classes=19, size=2, dim=2)
    mem.push(CAR, torch.tensor([[0.0, 0.0], [1.0, 10.0]]))  # car's memory is full
    bank_before = mem.bank.clone()
    loss = object_loss(feats, lm, mem)
    # car (0.5, 10): to (0,0) 10.5, to (1,10) 0.5 -> 0.5/2 = 0.25
    # car (6, 10):   to (0,0) 16,   to (1,10) 5   -> 5/2 = 2.5
    # person: memory empty -> not counted. Car's mean over its two components: 1.375.
    assert loss.item() == pytest.approx(1.375)
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert feats.grad[0, :, 2, 2].abs().sum() == 0  # person pixel: no memory, no gradient
    assert feats.grad[0, :, 1, 1].abs().sum() == 0  # road pixel
    assert not mem.bank.requires_grad and mem.bank.grad is None
    assert torch.equal(mem.bank, bank_before)


def test_background_loss_by_hand():
    feats, lm = _toy_scene()
    feats.requires_grad_(True)
    mem = FeatureMemory(num_classes=19, size=2, dim=2)
    mem.push(ROAD, torch.tensor([[4.0, 10.0], [0.0, 0.0]]))
    # road mean (4.2, 10): to (4, 10) 0.2 -> 0.2 / 2 = 0.1; sky absent; other stuff classes empty.
    loss = background_loss(feats, lm, mem)
    assert loss.item() == pytest.approx(0.1, abs=1e-6)
    loss.backward()
    assert feats.grad[0, 0, 0, 2].item() == pytest.approx(0.5 / 5)  # sign(+0.2) / D / |road|
    assert mem.bank.grad is None


def test_empty_memory_gives_zero_with_graph():
    feats, lm = _toy_scene()
    feats.requires_grad_(True)
    mem = FeatureMemory(num_classes=19, size=4, dim=2)
    for loss in (object_loss(feats, lm, mem), background_loss(feats, lm, mem)):
        assert loss.item() == 0.0
        loss.backward()
    assert feats.grad.abs().sum() == 0
    # No component at all (all road, no thing class): also zero.
    assert object_loss(feats, torch.zeros_like(lm), mem).item() == 0.0


def test_update_memory_from_source():
    feats, lm = _toy_scene()
    feats.requires_grad_(True)
    pred = lm.clone()
    pred[0, 2, 0] = ROAD  # the lone car pixel is predicted wrongly: not in the correct map
    correct = correct_map(pred, lm)
    obj = FeatureMemory(num_classes=19, size=4, dim=2)
    back = FeatureMemory(num_classes=19, size=4, dim=2)
    assert update_memory_objects(feats, correct, obj) == 2  # one car, one person
    assert obj.samples(CAR).tolist() == [[0.5, 10.0]]
    assert obj.samples(PERSON).tolist() == [[8.0, 10.0]]
    assert update_memory_background(feats, correct, back) == 1
    assert back.samples(ROAD).tolist() == [[pytest.approx(4.2), 10.0]]  # pixel 6 was road-predicted but is car
    assert not obj.bank.requires_grad and not back.bank.requires_grad


# ----------------------------------------------------------------------------- Eq. 1 / 6 reductions, SIM's options


def _full_memory(cls_samples: dict[int, list[list[float]]]) -> FeatureMemory:
    """A memory whose listed classes are exactly full (size = the longest list)."""
    size = max(len(v) for v in cls_samples.values())
    mem = FeatureMemory(num_classes=19, size=size, dim=2)
    for c, rows in cls_samples.items():
        assert len(rows) == size
        mem.push(c, torch.tensor(rows))
    return mem


def _fragments_scene():
    """One 4x6 image, D = 2, feature = (column index, 0): three one-pixel person fragments in
    columns 0, 2, 4 of row 0 and one car filling column 5 (rows 0-3)."""
    feats = torch.stack([torch.arange(6.0).repeat(4, 1), torch.zeros(4, 6)])[None]
    lm = torch.full((1, 4, 6), ROAD)
    lm[0, 0, 0] = lm[0, 0, 2] = lm[0, 0, 4] = PERSON
    lm[0, :, 5] = CAR
    return feats, lm


def test_object_loss_is_per_class_mean_summed_over_classes():
    """Eq. 1: (1/|T_k|) sum over each class's components, then summed over classes. Three person
    fragments next to one car: the car counts as much as all persons together."""
    feats, lm = _fragments_scene()
    mem = _full_memory({PERSON: [[0.0, 0.0]], CAR: [[1.0, 0.0]]})
    # persons (0,0), (2,0), (4,0) to (0,0): L1 0, 2, 4 -> /D = 0, 1, 2; mean 1.
    # car (5, 0) to (1, 0): 4 / 2 = 2.
    loss = object_loss(feats, lm, mem)
    assert loss.item() == pytest.approx(1.0 + 2.0)
    # The former pooled mean over all four components would be (0 + 1 + 2 + 2) / 4 = 1.25.
    assert loss.item() != pytest.approx(1.25)


def test_object_loss_sums_images_and_gradient_weights():
    feats, lm = _fragments_scene()
    feats2 = torch.cat([feats, feats]).requires_grad_(True)
    lm2 = torch.cat([lm, torch.full_like(lm, ROAD)])  # second image: no object at all
    lm2[1, 3, 0] = CAR                                 # ... but one car pixel, feature (0, 0)
    mem = _full_memory({PERSON: [[0.0, 0.0]], CAR: [[1.0, 0.0]]})
    loss = object_loss(feats2, lm2, mem)
    # image 0: 1 + 2 (above); image 1: car (0, 0) to (1, 0): 1 / 2 = 0.5. Sum over images: 3.5.
    assert loss.item() == pytest.approx(3.5)
    loss.backward()
    # A person fragment's pixel carries 1/3 (mean over 3 fragments) * sign / D; the car pixel of
    # image 0 carries 1/4 (its 4 pixels) * sign(5 - 1) / D.
    assert feats2.grad[0, 0, 0, 2].item() == pytest.approx(1 / 3 / 2)
    assert feats2.grad[0, 0, 0, 5].item() == pytest.approx(1 / 4 / 2)
    assert feats2.grad[1, 0, 3, 0].item() == pytest.approx(-1 / 2)


def test_background_loss_sums_images_and_classes():
    """Eq. 6: a sum over images and the stuff classes present (no mean over pairs)."""
    feats, lm = _toy_scene()
    feats2 = torch.cat([feats, feats * 2])
    lm2 = torch.cat([lm, torch.full_like(lm, SKY)])
    lm2[1, 0, 0] = ROAD
    mem = _full_memory({ROAD: [[4.0, 10.0]], SKY: [[8.0, 20.0]]})
    # image 0: road (4.2, 10) -> 0.2 / 2 = 0.1
    # image 1: road = pixel 0 of feats * 2 = (0, 20) -> (4 + 10) / 2 = 7;
    #          sky = pixels 1..8 of feats * 2: mean (9, 20) -> 1 / 2 = 0.5
    loss = background_loss(feats2, lm2, mem)
    assert loss.item() == pytest.approx(0.1 + 7.0 + 0.5, abs=1e-5)
    assert loss.item() != pytest.approx((0.1 + 7.0 + 0.5) / 3, abs=1e-3)  # not the mean over pairs


def test_top_k_ties_keep_the_component_found_first():
    """Per (class, image) the k largest components; between equal sizes the one whose first pixel
    comes first in raster order (scikit-image's numbering); each image ranks its own."""
    feats = torch.stack([torch.arange(8.0).repeat(3, 1), torch.zeros(3, 8)])[None].repeat(2, 1, 1, 1)
    lm = torch.full((2, 3, 8), ROAD)
    lm[0, 0, 0] = CAR                      # 1 pixel, column 0
    lm[0, 0, 2:4] = CAR                    # 2 pixels, columns 2-3: mean 2.5
    lm[0, 0, 5:7] = CAR                    # 2 pixels, columns 5-6: mean 5.5
    lm[0, 2, 7] = PERSON
    lm[1, 2, 0] = CAR                      # image 1: 1 pixel, then 3 pixels
    lm[1, 2, 4:7] = CAR
    got = object_features(feats, lm, top_k=2)
    assert [(c, f[0].item()) for c, f in got] == [(CAR, 2.5), (CAR, 5.5), (PERSON, 7.0), (CAR, 0.0), (CAR, 5.0)]
    got1 = object_features(feats, lm, top_k=1)
    assert [(c, f[0].item()) for c, f in got1] == [(CAR, 2.5), (PERSON, 7.0), (CAR, 5.0)]
    assert len(object_features(feats, lm, top_k=0)) == 6


def _serpentine(h, w):
    a = torch.full((h, w), -1)
    for y in range(0, h, 2):
        a[y] = 0
        if y + 1 < h:
            a[y + 1, w - 1 if (y // 2) % 2 == 0 else 0] = 0
    return a


@pytest.mark.parametrize("connectivity", [1, 2])
def test_components_equal_scikit_image(connectivity):
    """The device algorithm gives scikit-image's partition, numbered by first pixel, on random
    maps of several classes and on a serpentine (the longest path a map can hold)."""
    from skimage.measure import label as sk_label
    g = torch.Generator().manual_seed(0)
    maps = [torch.where(torch.rand(3, 17, 30, generator=g) < p, torch.randint(0, 3, (3, 17, 30), generator=g), -1)
            for p in (0.4, 0.6, 0.8)]
    maps.append(_serpentine(45, 80)[None])
    for lm in maps:
        root = components(lm, connectivity)
        assert converged(lm, root, connectivity)
        r = root.view(lm.shape)
        for b in range(lm.shape[0]):
            ref = sk_label((lm[b] + 1).numpy(), background=0, connectivity=connectivity)
            mask = lm[b] >= 0
            pairs = set(zip(ref[mask.numpy()].tolist(), r[b][mask].tolist()))
            assert len(pairs) == ref.max() == len(set(r[b][mask].tolist()))
            # each root is its component's first pixel in raster order
            flat = torch.arange(lm[b].numel()).view(lm[b].shape) + b * lm[b].numel()
            for comp in range(1, ref.max() + 1):
                pix = flat[torch.from_numpy(ref == comp)]
                assert set(r[b][torch.from_numpy(ref == comp)].tolist()) == {int(pix.min())}
    # too few rounds leave the serpentine unfinished: the check can fail
    lm = _serpentine(45, 80)[None]
    assert not converged(lm, components(lm, connectivity, rounds=2), connectivity)


def test_top_k_components_on_target_and_source():
    """Only the k largest components per class and image count (SIM: 10): a speckle is dropped."""
    feats = torch.stack([torch.arange(6.0).repeat(4, 1), torch.zeros(4, 6)])[None]
    lm = torch.full((1, 4, 6), ROAD)
    lm[0, :, 0:2] = CAR   # 8 pixels, mean feature (0.5, 0)
    lm[0, 0:2, 3] = CAR   # 2 pixels, (3, 0)
    lm[0, 3, 5] = CAR     # 1 pixel,  (5, 0): the speckle
    mem = _full_memory({CAR: [[0.0, 0.0]]})
    # distances / D: 0.25, 1.5, 2.5
    assert object_loss(feats, lm, mem, top_k=0).item() == pytest.approx((0.25 + 1.5 + 2.5) / 3)
    assert object_loss(feats, lm, mem, top_k=2).item() == pytest.approx((0.25 + 1.5) / 2)
    assert object_loss(feats, lm, mem, top_k=1).item() == pytest.approx(0.25)
    assert object_loss(feats, lm, mem).item() == object_loss(feats, lm, mem, top_k=10).item()
    src = FeatureMemory(num_classes=19, size=5, dim=2)
    assert update_memory_objects(feats, lm, src, top_k=2) == 2
    assert sorted(src.samples(CAR)[:, 0].tolist()) == [0.5, 3.0]
    assert [c for c, _ in object_features(feats, lm, top_k=1)] == [CAR]


def test_full_memory_gate():
    """A class takes part once its memory is full (SIM), not after one sample, unless asked."""
    feats, lm = _toy_scene()
    feats.requires_grad_(True)
    mem = FeatureMemory(num_classes=19, size=3, dim=2)
    mem.push(CAR, torch.tensor([[1.0, 10.0], [0.0, 0.0]]))  # 2 of 3
    mem.push(PERSON, torch.tensor([[0.0, 0.0]] * 3))        # full
    # person (8, 10) to (0, 0): 18 / 2 = 9.
    gated = object_loss(feats, lm, mem)
    assert gated.item() == pytest.approx(9.0)
    # without the gate car joins: (0.25 + 2.5) / 2 = 1.375
    assert object_loss(feats, lm, mem, require_full=False).item() == pytest.approx(9.0 + 1.375)
    mem.push(CAR, torch.tensor([[100.0, 100.0]]))           # now full: car joins
    assert object_loss(feats, lm, mem).item() == pytest.approx(9.0 + 1.375)
    back = FeatureMemory(num_classes=19, size=2, dim=2)
    back.push(ROAD, torch.tensor([[4.0, 10.0]]))
    empty = background_loss(feats, lm, back)
    assert empty.item() == 0.0 and empty.requires_grad     # zero, still connected to the graph
    assert background_loss(feats, lm, back, require_full=False).item() == pytest.approx(0.1)


class _LinearClassifier(nn.Module):
    """logit[CAR] = 5 - f0, logit[PERSON] = f0 - 5, logit[ROAD] = 0, every other class -100."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 19, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-100.0)
            self.conv.weight[CAR, 0] = -1.0
            self.conv.bias[CAR] = 5.0
            self.conv.weight[PERSON, 0] = 1.0
            self.conv.bias[PERSON] = -5.0
            self.conv.bias[ROAD] = 0.0

    def forward(self, x):
        return self.conv(x)


def test_classifier_check_on_both_levels():
    """A pooled source feature is stored only if the classifier predicts its class (SIM's check)."""
    feats, lm = _toy_scene()
    clf = _LinearClassifier()
    # car (0.5, 10): CAR 4.5 > PERSON -4.5 -> kept; car (6, 10): PERSON 1 > CAR -1 -> dropped;
    # person (8, 10): PERSON 3 -> kept.
    assert pooled_logits(clf, torch.tensor([[6.0, 10.0]])).argmax(1).item() == PERSON
    obj = FeatureMemory(num_classes=19, size=4, dim=2)
    assert update_memory_objects(feats, lm, obj, classifier=clf) == 2
    assert obj.samples(CAR).tolist() == [[0.5, 10.0]]
    assert obj.samples(PERSON).tolist() == [[8.0, 10.0]]
    # road (4.2, 10): CAR 0.8 > ROAD 0 -> not stored; without the check it is.
    back = FeatureMemory(num_classes=19, size=4, dim=2)
    assert update_memory_background(feats, lm, back, classifier=clf) == 0 and not back.has(ROAD)
    assert update_memory_background(feats, lm, back) == 1 and back.has(ROAD)
    unchecked = FeatureMemory(num_classes=19, size=4, dim=2)
    assert update_memory_objects(feats, lm, unchecked) == 3


def test_hierarchy_memory_levels_state_dict_and_counts():
    mem = HierarchyMemory(num_classes=19, dim=2, object_size=5, background_size=2)
    obj, back = level_memories(mem)
    assert (obj.size, back.size) == (5, 2)
    obj.push(CAR, torch.ones(3, 2))
    back.push(ROAD, torch.ones(4, 2))
    counts = mem.counts()
    assert len(counts) == 19 and counts[CAR] == 3 and counts[ROAD] == 2 and sum(counts) == 5
    keys = {f"{lvl}.{b}" for lvl in ("objects", "background") for b in ("bank", "count", "ptr", "joined")}
    assert set(mem.state_dict()) == keys
    restored = HierarchyMemory(num_classes=19, dim=2, object_size=5, background_size=2)
    restored.load_state_dict(mem.state_dict())
    assert restored.counts() == counts and torch.equal(restored.objects.bank, obj.bank)
    only_obj = HierarchyMemory(num_classes=19, dim=2, object_size=5, background_size=0)
    assert only_obj.background is None
    assert set(only_obj.state_dict()) == {"objects.bank", "objects.count", "objects.ptr", "objects.joined"}
    single = FeatureMemory(num_classes=19, size=3, dim=2)
    assert level_memories(single) == (single, single) and level_memories(None) == (None, None)


def test_memory_records_which_classes_took_part():
    """`joined` marks a class once it contributes a term (its ring full under the gate), never before."""
    from pipeline.classes import CLASS_NAMES
    mem = HierarchyMemory(num_classes=19, dim=2, object_size=2, background_size=2)
    obj, _ = level_memories(mem)
    obj.push(CAR, torch.ones(2, 2))            # full
    obj.push(PERSON, torch.ones(1, 2))         # not full: gated out
    feats = torch.zeros(1, 2, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255, dtype=torch.long)
    target[0, :2, :2] = CAR
    target[0, 2:, 2:] = PERSON
    object_loss(feats, target, obj, require_full=True)
    assert obj.joined[CAR] and not obj.joined[PERSON]
    assert participation(mem, CLASS_NAMES) == {"object": ["car"], "background": []}


def test_push_many_equals_one_push_per_class_in_order():
    """The device-side push of many classes at once stores what one `push` per class would, with
    each class's valid candidates in ascending `order`, including overflowing and wrapping rings."""
    g = torch.Generator().manual_seed(3)
    a = FeatureMemory(num_classes=19, size=3, dim=2)
    b = FeatureMemory(num_classes=19, size=3, dim=2)
    classes = torch.tensor([CAR, PERSON, ROAD])
    for _ in range(4):
        feats = torch.randn(3, 5, 2, generator=g)
        valid = torch.rand(3, 5, generator=g) < 0.6
        valid[0] = True                                   # car: 5 at once into a ring of 3
        order = torch.randperm(15, generator=g).view(3, 5)
        n = a.push_many(classes, feats, valid, order)
        assert int(n) == int(valid.sum())
        for i, c in enumerate(classes.tolist()):
            rows = [j for j in sorted(range(5), key=lambda j: int(order[i, j])) if valid[i, j]]
            if rows:
                b.push(c, feats[i, rows])
    for name in ("bank", "count", "ptr"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
