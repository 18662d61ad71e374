"""The pure scoring functions of bench/isbi_tracking.py and bench/faint_filaments.py on tiny hand-made fixtures."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import faint_filaments as ff  # noqa: E402
import isbi_tracking as it  # noqa: E402


def track(tid, frames, y0, x0, vy=0.0, vx=1.0):
    """Rows (track_id, frame, y, x) of a straight track."""
    f = np.asarray(frames, np.float64)
    return np.column_stack([np.full(len(f), tid, np.float64), f, y0 + vy * (f - f[0]), x0 + vx * (f - f[0])])


def test_amplitude_for_snr_inverts_the_isbi_definition():
    for snr in (1, 2, 4, 7):
        a = it.amplitude_for_snr(snr, 10.0)
        assert a / np.sqrt(a + 10.0) == pytest.approx(snr)


def test_perfect_tracking_scores_one():
    truth = np.vstack([track(1, range(5), 10, 10), track(2, range(2, 6), 40, 40)])
    s = it.score_movie(truth, truth.copy())
    for k in ("det_recall", "det_precision", "det_f1", "link_recall", "link_precision", "alpha", "beta", "jsc",
              "jsc_theta"):
        assert s[k] == pytest.approx(1.0), k


def test_nothing_found_scores_zero():
    truth = track(1, range(4), 10, 10)
    s = it.score_movie(truth, np.zeros((0, 4)))
    assert s["det_recall"] == 0 and s["link_recall"] == 0 and s["alpha"] == 0 and s["jsc"] == 0
    assert s["jsc_theta"] == 0


def test_detection_matching_is_one_to_one_within_3_px():
    truth = np.array([[1, 0, 10.0, 10.0], [2, 0, 10.0, 12.0]])
    est = np.array([[5, 0, 10.0, 11.0], [6, 0, 30.0, 30.0]])  # one call between the two; one far away
    t2e, e2t = it.match_frames(truth, est)
    assert (t2e >= 0).sum() == 1 and e2t[1] == -1
    s = it.score_movie(truth, est)
    assert s["det_recall"] == 0.5 and s["det_precision"] == 0.5


def test_swapped_identities_break_links_but_not_detections():
    truth = np.vstack([track(1, range(4), 10, 10), track(2, range(4), 30, 10)])
    est = truth.copy()
    est[(est[:, 1] >= 2) & (est[:, 0] == 1), 0] = 9  # track 1 split in two halves: frames 0-1 and 2-3
    s = it.score_movie(truth, est)
    assert s["det_f1"] == 1.0
    assert s["link_recall"] == pytest.approx(5 / 6)  # 6 true links, the 1->2 link of track 1 lost
    assert s["link_precision"] == 1.0  # the 5 estimated links are all right
    # Chenouard: track 1 pairs with one half (2 points at distance 0, 2 missing at eps), the other half unpaired
    eps = it.EPS_PX
    assert s["alpha"] == pytest.approx(1 - 2 * eps / (8 * eps))
    assert s["beta"] == pytest.approx((8 * eps - 2 * eps) / (8 * eps + 2 * eps))
    assert s["jsc"] == pytest.approx(6 / 10)  # TP 6, FN 2, FP 2
    assert s["jsc_theta"] == pytest.approx(2 / 3)  # 2 paired of 2 true + 3 estimated


def test_chenouard_gated_distance_and_spurious_track():
    truth = track(1, range(3), 10, 10)
    est = np.vstack([truth + [0, 0, 1.0, 0], track(7, range(3), 80, 80)])  # 1 px off, plus a false track
    s = it.chenouard_scores(truth, est, eps=5.0)
    assert s["alpha"] == pytest.approx(1 - 3 * 1.0 / 15)
    assert s["beta"] == pytest.approx((15 - 3) / (15 + 15))
    assert s["jsc"] == pytest.approx(3 / 6) and s["jsc_theta"] == pytest.approx(0.5)


def test_nn_link_joins_close_points_and_starts_new_tracks():
    pts = np.array([[0, 10, 10], [0, 50, 50], [1, 11, 11], [1, 50, 58], [2, 12, 12]], np.float64)
    rows = it.nn_link(pts, max_step=5)
    ids = rows[:, 0]
    assert ids[0] == ids[2] == ids[4]  # the slow one stays one track
    assert ids[3] not in (ids[0], ids[1])  # an 8 px jump starts a new track
    assert len(np.unique(ids)) == 3


def test_simulated_movie_has_births_deaths_and_stays_in_frame():
    rng = np.random.default_rng(0)
    truth = it.simulate_tracks(rng, 20, 15, 64, mean_life=5)
    assert truth[:, 2:4].min() >= -0.5 and truth[:, 2:4].max() < 63.5
    assert len(np.unique(truth[:, 0])) > 20  # births happened
    movie = it.render_movie(rng, truth, 15, 64, it.amplitude_for_snr(7))
    assert movie.shape == (15, 64, 64) and movie.dtype == np.uint16


def test_skeleton_counts_with_tolerance():
    truth = np.zeros((20, 20), bool)
    truth[10, 2:18] = True
    pred = np.zeros_like(truth)
    pred[12, 2:10] = True  # 2 px off, half the length
    pred[2, 2:6] = True  # a false bit
    everywhere = np.ones_like(truth)
    c = ff.skeleton_counts(pred, truth, everywhere, everywhere)
    r = ff.rates(c)
    assert r["recall"] == pytest.approx(8 / 16)
    assert r["precision"] == pytest.approx(8 / 12)
    left = np.zeros_like(truth)
    left[:, :10] = True
    assert ff.rates(ff.skeleton_counts(pred, truth, left, everywhere))["recall"] == 1.0


def test_dice_counts_and_pooling():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros_like(a)
    b[1:3] = True
    c = ff.add_counts({}, ff.dice_counts(a, b, np.ones_like(a)))
    c = ff.add_counts(c, {"truth": 4, "truth_hit": 2, "pred": 0, "pred_hit": 0})
    r = ff.rates(c)
    assert r["dice"] == pytest.approx(0.5) and r["recall"] == 0.5 and np.isnan(r["precision"])


def test_bright_body_saturates_and_beside_ring():
    image = np.full((120, 120), 10.0)
    image[60, 60] = 20.0
    bright = ff.bright_body(image, (60, 60), ramp_angle=0.3)
    plateau = ff.plateau_of(bright)
    top = np.percentile(image, 99.9)
    assert bright.max() == pytest.approx(ff.SATURATE_AT * ff.BODY_PEAK * top)
    assert plateau[60, 60] and not plateau[5, 5]
    ring = ff.beside_region(plateau, 10)
    assert not (ring & plateau).any() and ring.any()


def test_curves_peak_at_their_amplitude():
    rng = np.random.default_rng(1)
    curve = np.column_stack([np.full(121, 32.0), np.arange(121) * 0.5 + 10])  # straight, along x
    img = ff.render_curves((64, 90), [curve], np.full((64, 90), 5.0))
    assert img[32, 40] == pytest.approx(5.0, rel=0.08)
    lines = ff.centre_lines((64, 90), [curve])
    assert lines[32, 10:70].all() and lines.sum() == 61
    curves = ff.random_curves(rng, (64, 64), n=3)
    assert all(c[:, 0].min() >= 3 and c[:, 0].max() <= 60 for c in curves)


def test_local_noise_measures_white_noise():
    rng = np.random.default_rng(2)
    noise = ff.local_noise(rng.normal(100, 4.0, (96, 96)))
    assert np.median(noise) == pytest.approx(4.0, rel=0.15)
