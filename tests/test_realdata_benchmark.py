"""The real-data benchmark's scoring helpers, on synthetic spots and filaments (no shared data needed)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import realdata_benchmark as rb  # noqa: E402


def spots_image(centres, size=64, sigma=1.2):
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    img = np.full((size, size), 100.0)
    for cy, cx in centres:
        img += 1000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    return img


CENTRES = np.array([[12.0, 12.0], [12.3, 40.6], [30.0, 25.0], [45.7, 10.2], [50.0, 50.0]])


def test_score_spots_at_both_tolerances():
    mask = np.zeros((64, 64), bool)
    for cy, cx in CENTRES.astype(int):
        mask[cy - 1:cy + 2, cx - 1:cx + 2] = True
    calls = {"SynSeg": rb.metrics.component_centroids(mask), "off by 2 px": CENTRES + [2.0, 0.0],
             "missing": "n/a (not installed)"}
    scores = rb.score_spots(calls, CENTRES)
    assert scores["SynSeg"]["f1"] == 1.0 and scores["SynSeg"]["f1_tight"] == 1.0
    assert scores["off by 2 px"]["f1"] == 1.0 and scores["off by 2 px"]["f1_tight"] == 0.0
    rows = rb.spot_rows("img", scores)
    assert rows[2] == ["img", "missing", "n/a (not installed)", "", ""]


def test_log_points_find_isolated_spots():
    found = rb.log_points(spots_image(CENTRES), 0.2)
    assert rb.metrics.point_scores(found, CENTRES, 1.5)["f1"] == 1.0


def test_edge_share_and_branch_length():
    image = np.zeros((80, 80))
    image[10:70, 10:70] = 100.0  # one bright square cell
    outline = rb.cell_outline(image, blur_px=1.0)
    edge = np.zeros((80, 80), bool)
    edge[10:12, 15:65] = True  # a line along the cell's edge
    inner = np.zeros((80, 80), bool)
    inner[39:41, 15:65] = True  # a fibre through the middle
    assert rb.edge_share(edge, outline) > 0.9
    assert rb.edge_share(inner, outline) == 0.0
    dashes = np.zeros((80, 80), bool)
    for x0 in range(15, 65, 10):
        dashes[39:41, x0:x0 + 4] = True
    assert rb.mean_branch_length(inner) > 5 * rb.mean_branch_length(dashes)
    assert np.isnan(rb.mean_branch_length(np.zeros((8, 8), bool)))


@pytest.mark.parametrize("kind", ["spots", "filaments"])
def test_method_masks_shapes(kind):
    img = spots_image(CENTRES)
    masks = rb.method_masks(img, kind, "n/a")
    assert all(m.shape == img.shape for m in masks.values() if isinstance(m, np.ndarray))
