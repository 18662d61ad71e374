"""The real-data benchmark's diagnostic helpers, on synthetic spots (the shared real data is not needed)."""
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


@pytest.mark.parametrize("shift", [(2.0, 2.0), (0.0, 0.0), (-1.0, 1.5)])
def test_annotation_offset_recovers_a_constant_shift(shift):
    centres = np.array([[12.0, 12.0], [12.3, 40.6], [30.0, 25.0], [45.7, 10.2], [50.0, 50.0], [62.6, 1.0]])
    points = centres + np.array(shift)  # the last spot sits on the image edge
    assert rb.annotation_offset(spots_image(centres), points) == pytest.approx(shift, abs=0.2)


def test_moved_points_score_only_as_a_separate_diagnostic_row():
    centres = np.array([[12.0, 12.0], [12.0, 40.0], [30.0, 25.0], [45.0, 10.0], [50.0, 50.0]])
    mask = np.zeros((64, 64), bool)
    for cy, cx in centres.astype(int):
        mask[cy - 1:cy + 2, cx - 1:cx + 2] = True
    points = centres + 3.5  # beyond the 3 px tolerance: the official score must stay 0
    shift = rb.annotation_offset(spots_image(centres), points)
    table, scores = rb.score_spots({"SynSeg": mask}, points, shift)
    assert scores["SynSeg"]["f1"] == 0.0
    assert scores["SynSeg"]["f1_points_moved"] == 1.0
    assert table["F1 (precision / recall)"][0].startswith("0.00")
