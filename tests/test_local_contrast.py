"""Local-contrast normalisation, bright-region scenes and the user's --min-snr knob (detect, then decide)."""
import argparse

import numpy as np
import pytest

from synseg import cli
from synseg import normalization
from synseg.segment import spots
from synseg.generate import synth
from synseg.generate import vesicles

SPEC = {"mode": "local", "radius": 7.0, "sigma": 4.0}


def gaussian_spot(shape, y, x, amplitude, sigma=1.5):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return amplitude * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2))


def test_local_contrast_is_brightness_invariant_float32_and_zero_for_constant():
    rng = np.random.default_rng(0)
    img = rng.poisson(200.0, (96, 96)).astype(np.float32) + gaussian_spot((96, 96), 40, 50, 150.0)
    a = normalization.normalize_image(img, SPEC)
    b = normalization.normalize_image(img * 37.0 + 5.0, SPEC)
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert not np.any(normalization.normalize_image(np.full((40, 40), 9.0, np.float32), SPEC))


def test_faint_spot_beside_a_saturated_body_reads_as_on_a_flat_background():
    rng = np.random.default_rng(1)
    shape = (160, 160)
    flat = np.full(shape, 100.0)
    body = flat.copy()
    body[20:80, 20:140] += 20000.0  # a saturated cell body: 200x the background, flat top
    spot = gaussian_spot(shape, 94, 80, 60.0)  # 14 px below the body's edge, peak SNR 6
    a = normalization.normalize_image(rng.poisson(flat + spot).astype(np.float32), SPEC)
    b = normalization.normalize_image(rng.poisson(body + spot).astype(np.float32), SPEC)
    assert a[94, 80] > 2.5 and b[94, 80] == pytest.approx(a[94, 80], rel=0.25)
    # a global stretch lets the body set the scale: the same spot all but vanishes
    g = normalization.normalize_image(rng.poisson(body + spot).astype(np.float32), {"mode": "percentile"})
    assert g[94, 80] - np.median(g[120:, :]) < 0.01


def test_a_tile_normalised_alone_equals_the_whole_plane_away_from_its_edges():
    rng = np.random.default_rng(2)
    img = rng.gamma(3.0, 50.0, (200, 220)).astype(np.float32)
    img[60:120, 30:90] += 3000.0
    stats = normalization.normalization_stats(img, SPEC)
    whole = normalization.apply_normalization(img, SPEC, stats)
    tile = normalization.apply_normalization(img[40:170, 20:200], SPEC, stats)
    np.testing.assert_allclose(tile[20:-20, 20:-20], whole[60:150, 40:180], rtol=1e-5, atol=1e-5)


def test_zero_clipped_export_keeps_its_spots():
    rng = np.random.default_rng(3)
    img = rng.poisson(100.0 + gaussian_spot((128, 128), 64, 64, 200.0), (128, 128)).astype(np.float32) - 110.0
    img = np.clip(img, 0, None)  # background-subtracted: most pixels exactly 0
    assert np.mean(img == 0) > 0.5
    z = normalization.normalize_image(img, SPEC)
    assert np.isfinite(z).all() and z[64, 64] > 5.0 * max(float(np.percentile(z, 90)), 1e-3)


def test_unknown_mode_lists_local():
    with pytest.raises(ValueError, match="local"):
        normalization.normalization_stats(np.zeros((4, 4)), {"mode": "nope"})


def test_bright_region_layer_is_large_and_a_saturated_image_is_flat_inside_it():
    scene = synth.Scene(vesicles.Vesicles(num_spots=(40, 40)), image_size=256,
                        background=synth.Background(bright_region_prob=1.0, bright_saturate_prob=1.0,
                                                    bright_region=(30.0, 30.0)))
    image, _, _ = synth.render_one(synth.image_rng(0, 3), scene)
    top = image.max()
    plateau = image >= top - 2
    assert plateau.sum() > 200  # a clipped region, not a few hot pixels
    layer = synth.bright_region_layer(synth.image_rng(0, 4), (256, 256), scene.background, 0.1, None)
    assert (layer > 0.5 * layer.max()).sum() > np.pi * 15 ** 2  # bodies >= 4 um across at 0.1 um/px


def test_bright_regions_off_draw_nothing():
    base = synth.Scene(vesicles.Vesicles(num_spots=(30, 30)), image_size=128)
    off = synth.Scene(vesicles.Vesicles(num_spots=(30, 30)), image_size=128,
                      background=synth.Background(bright_region=(5.0, 9.0)))
    a = synth.render_one(synth.image_rng(1, 0), base)
    b = synth.render_one(synth.image_rng(1, 0), off)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_min_snr_drops_only_the_faint_spots():
    rng = np.random.default_rng(4)
    shape = (120, 120)
    truth = np.zeros(shape, bool)
    clean = np.full(shape, 100.0)
    for k, (y, x) in enumerate([(20, 20), (20, 90), (90, 20), (90, 90)]):
        clean += gaussian_spot(shape, y, x, 400.0 if k % 2 else 40.0)
        truth[y - 2:y + 3, x - 2:x + 3] = True
    image = rng.poisson(clean).astype(np.float32)
    rows = spots.measure_spots(image, _labels(truth))
    snrs = sorted(r["snr"] for r in rows)
    assert snrs[1] < 10 < snrs[2]
    kept, info = spots.filter_spots(truth, image, cut=False, min_snr=10.0)
    assert _labels(kept).max() == 2 and info["below_min_snr"] == 2
    kept, info = spots.filter_spots(truth, image, cut=False)
    assert _labels(kept).max() == 4 and "min_snr" not in info
    assert "--min-snr 10 dropped 2 more, 2 kept" in spots.describe_cut(
        spots.filter_spots(truth, image, min_snr=10.0)[1])


def _labels(mask):
    from scipy import ndimage

    return ndimage.label(mask, structure=np.ones((3, 3)))[0]


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "abc"])
def test_finite_float_refuses_nan_inf_and_out_of_range(text):
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-snr", type=cli.finite_float(low=0.0))
    with pytest.raises(SystemExit):
        parser.parse_args(["--min-snr", text])
    assert parser.parse_args(["--min-snr", "3.5"]).min_snr == 3.5
