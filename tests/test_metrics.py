"""metrics.py on hand-made masks whose answers are known by hand."""
import math

import numpy as np
import pytest

from synseg import metrics


def square(shape=(32, 32), y=8, x=8, h=10, w=10):
    m = np.zeros(shape, np.uint8)
    m[y:y + h, x:x + w] = 1
    return m


def disk_mask(shape, centres, r=2):
    yy, xx = np.indices(shape)
    m = np.zeros(shape, bool)
    for cy, cx in centres:
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return m


# ---------------------------------------------------------------- identical, empty

def test_identical_masks_score_perfectly():
    gt = square()
    assert metrics.pixel_scores(gt, gt) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0,
                                            "accuracy": 1.0}
    assert metrics.hd95(gt, gt) == 0.0
    assert metrics.cldice(gt, gt) == 1.0
    assert metrics.skeleton_scores(gt, gt, tol=0) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    obj = metrics.object_scores(gt, gt)
    assert (obj["f1"], obj["matches"], obj["mean_matched_iou"]) == (1.0, 1, 1.0)


def test_empty_prediction_scores_zero():
    gt, empty = square(), np.zeros((32, 32), np.uint8)
    s = metrics.pixel_scores(empty, gt)
    assert (s["dice"], s["iou"], s["precision"], s["recall"]) == (0.0, 0.0, 0.0, 0.0)
    assert s["accuracy"] == pytest.approx(1 - 100 / 1024)
    assert metrics.hd95(empty, gt) == math.inf
    assert metrics.cldice(empty, gt) == 0.0
    assert metrics.skeleton_scores(empty, gt)["recall"] == 0.0
    obj = metrics.object_scores(empty, gt)
    assert (obj["recall"], obj["f1"], obj["n_pred"], obj["n_gt"]) == (0.0, 0.0, 0, 1)
    spots = metrics.spot_scores(empty, [[12, 12]])
    assert (spots["recall"], spots["f1"], spots["n_pred"]) == (0.0, 0.0, 0)


def test_empty_ground_truth_penalises_any_prediction():
    pred, empty = square(), np.zeros((32, 32), np.uint8)
    s = metrics.pixel_scores(pred, empty)
    assert (s["dice"], s["precision"], s["recall"]) == (0.0, 0.0, 0.0)
    assert metrics.hd95(pred, empty) == math.inf
    assert metrics.object_scores(pred, empty)["precision"] == 0.0
    assert metrics.spot_scores(pred, np.zeros((0, 2)))["precision"] == 0.0


def test_both_empty_is_a_perfect_answer():
    empty = np.zeros((16, 16), np.uint8)
    assert metrics.pixel_scores(empty, empty)["dice"] == 1.0
    assert metrics.hd95(empty, empty) == 0.0
    assert metrics.cldice(empty, empty) == 1.0
    assert metrics.object_scores(empty, empty)["f1"] == 1.0
    assert metrics.spot_scores(empty, np.zeros((0, 2)))["f1"] == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        metrics.hd95(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="differs"):
        metrics.object_scores(np.ones((4, 4)), np.ones((5, 4)))


# ---------------------------------------------------------------- one-pixel shift

def test_one_pixel_shift_known_dice_iou_hd95():
    gt = square()
    pred = np.roll(gt, 1, axis=1)  # 10x10 square moved right by one pixel
    s = metrics.pixel_scores(pred, gt)
    assert s["dice"] == pytest.approx(0.9)  # overlap 90 of 100 + 100
    assert s["iou"] == pytest.approx(90 / 110)
    assert metrics.hd95(pred, gt) == pytest.approx(1.0)
    assert metrics.hd95(pred, gt, spacing=0.156) == pytest.approx(0.156)
    assert metrics.hd95(pred, gt, spacing=(1.0, 0.2)) == pytest.approx(0.2)  # shift is along x
    assert metrics.object_scores(pred, gt)["f1"] == 1.0  # IoU 0.82 >= 0.5


def test_hausdorff_of_two_points_is_their_distance():
    a, b = np.zeros((12, 12), bool), np.zeros((12, 12), bool)
    a[2, 2], b[5, 6] = True, True  # a 3-4-5 triangle
    assert metrics.hd95(a, b) == pytest.approx(5.0)
    assert metrics.hd95(a, b, percentile=100) == pytest.approx(5.0)


def test_hd95_ignores_a_few_outlying_boundary_pixels():
    gt = square((64, 64), 10, 10, 40, 40)
    pred = gt.copy()
    pred[60, 60] = 1  # one stray pixel far away: the classical Hausdorff sees it, HD95 does not
    assert metrics.hd95(pred, gt, percentile=100) == pytest.approx(math.hypot(11, 11))
    assert metrics.hd95(pred, gt) == 0.0


def test_bad_spacing_is_refused():
    with pytest.raises(ValueError, match="spacing"):
        metrics.hd95(square(), square(), spacing=0)


# ---------------------------------------------------------------- AUC

def test_auc_known_values_and_single_class():
    gt = np.array([[0, 0, 1, 1]])
    assert metrics.auc(np.array([[0.1, 0.4, 0.35, 0.8]]), gt) == pytest.approx(0.75)
    assert metrics.auc(gt * 0.9 + 0.05, gt) == 1.0
    assert metrics.auc(1 - gt, gt) == 0.0
    assert math.isnan(metrics.auc(np.random.default_rng(0).random((4, 4)), np.zeros((4, 4))))


# ---------------------------------------------------------------- thin structures

def test_cldice_forgives_width_but_not_breaks():
    gt = np.zeros((20, 60), bool)
    gt[9:12, 5:55] = True  # a 3-px-wide filament
    fat = np.zeros_like(gt)
    fat[8:13, 5:55] = True  # same centreline, wider: Dice drops, clDice does not
    assert metrics.pixel_scores(fat, gt)["dice"] < 0.8
    assert metrics.cldice(fat, gt) == 1.0
    half = gt.copy()
    half[:, 30:] = False  # only the left half found: precision 1, sensitivity about 1/2
    assert metrics.cldice(half, gt) == pytest.approx(2 * 0.5 / 1.5, abs=0.04)


def test_skeleton_scores_tolerance_in_pixels():
    gt = np.zeros((20, 40), bool)
    gt[8, 5:35] = True
    pred = np.roll(gt, 2, axis=0)  # parallel line two pixels off
    assert metrics.skeleton_scores(pred, gt, tol=2) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert metrics.skeleton_scores(pred, gt, tol=1) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    short = gt.copy()
    short[:, 20:] = False  # 15 of 30 gt pixels, all of them on the gt line
    s = metrics.skeleton_scores(short, gt, tol=0)
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(0.5)


# ---------------------------------------------------------------- objects

def test_two_touching_objects_merge_into_one_component():
    gt = np.zeros((12, 20), np.uint16)
    gt[2:6, 2:6] = 1   # 16 px
    gt[2:6, 6:12] = 2  # 24 px, touching the first
    assert metrics.label_objects(gt)[1] == 2  # instance labels are kept
    assert metrics.label_objects(gt > 0)[1] == 1  # a binary mask makes one component
    merged = metrics.object_scores(gt > 0, gt)  # IoU 16/40 and 24/40: only the larger matches
    assert (merged["matches"], merged["precision"], merged["recall"]) == (1, 1.0, 0.5)
    assert merged["mean_matched_iou"] == pytest.approx(0.6)
    assert metrics.object_scores(gt, gt)["f1"] == 1.0


def test_equal_halves_match_only_once():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:6, 2:4], gt[2:6, 4:6] = 1, 2  # the union has IoU exactly 0.5 with each half
    s = metrics.object_scores(gt > 0, gt)
    assert (s["matches"], s["n_pred"], s["n_gt"]) == (1, 1, 2)


def test_connectivity_of_diagonal_neighbours():
    m = np.zeros((6, 6), bool)
    m[1, 1] = m[2, 2] = True
    assert metrics.label_objects(m, connectivity=2)[1] == 1
    assert metrics.label_objects(m, connectivity=1)[1] == 2
    labels = np.array([[5, 5], [7, 7]])  # a label image with no background
    lab, n = metrics.label_objects(labels)
    assert n == 2 and set(np.unique(lab)) == {1, 2}


# ---------------------------------------------------------------- points

def test_hungarian_beats_greedy_nearest():
    gt = [[0.0, 0.0], [0.0, 5.0]]
    pred = [[0.0, 2.4], [0.0, -2.5]]  # greedy takes (pred0, gt0) first and strands pred1
    assert sorted(metrics.match_points(pred, gt, tol=3)) == [(0, 1), (1, 0)]
    assert metrics.point_scores(pred, gt, tol=3)["f1"] == 1.0


def test_point_tolerance_is_inclusive():
    assert metrics.match_points([[0, 3.0]], [[0, 0]], tol=3) == [(0, 0)]
    assert metrics.match_points([[0, 3.01]], [[0, 0]], tol=3) == []


def test_spot_scores_known_counts():
    shape = (40, 40)
    mask = disk_mask(shape, [(10, 10), (10, 30), (30, 10)])  # three spots
    points = np.array([[11.0, 9.0],    # 1.4 px from spot 1: match
                       [10.0, 33.5],   # 3.5 px from spot 2: too far
                       [30.0, 10.0],   # on spot 3: match
                       [35.0, 35.0]])  # nothing there: missed
    s = metrics.spot_scores(mask, points, tol=3)
    assert (s["matches"], s["n_pred"], s["n_gt"]) == (2, 3, 4)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    np.testing.assert_allclose(metrics.component_centroids(mask), [[10, 10], [10, 30], [30, 10]])


def test_assign_pairs_maximises_matches_first():
    # row 0 can take col 0 (cheap) or col 1; row 1 only col 0: the best answer uses both rows
    pairs = metrics.assign_pairs([0, 0, 1], [0, 1, 0], [0.1, 0.9, 0.5])
    assert sorted(pairs) == [(0, 1), (1, 0)]


# ---------------------------------------------------------------- touching objects

def n_components(mask):
    return metrics.label_objects(np.asarray(mask, np.uint8))[1]


def test_separate_touching_smaller_label_keeps_its_pixels():
    labels = np.zeros((12, 20), np.int32)
    labels[2:9, 2:10] = 2
    labels[3:8, 10:16] = 1  # shares a border with label 2
    labels[0, 18] = 3  # alone
    mask = metrics.separate_touching(labels)
    assert mask.dtype == np.uint8 and mask.shape == labels.shape and set(np.unique(mask)) <= {0, 1}
    assert n_components(mask) == 3
    assert mask[3:8, 10:16].all()  # the smaller label is whole
    assert not mask[2:9, 9].any()  # the larger one gave up the column beside it
    assert mask[2:9, 2:9].all() and mask[0, 18] == 1


def test_separate_touching_diagonal_contact_and_no_labels():
    labels = np.zeros((6, 6), np.int32)
    labels[1, 1], labels[2, 2] = 5, 4  # touching at a corner only
    mask = metrics.separate_touching(labels)
    assert mask[2, 2] == 1 and mask[1, 1] == 0
    assert not metrics.separate_touching(np.zeros((5, 7), np.int32)).any()


def test_separate_touching_keeps_the_largest_piece_of_a_cut_label():
    labels = np.zeros((10, 21), np.int32)
    labels[3:7, 2:19] = 2
    labels[1:9, 12:15] = 1  # label 1 cuts label 2 into a long left and a short right piece
    mask = metrics.separate_touching(labels)
    assert n_components(mask) == 2
    assert mask[3:7, 2:11].all() and mask[1:9, 12:15].all()
    assert not mask[:, 15:].any()  # the short piece is dropped: one component per label
