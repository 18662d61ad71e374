"""spots.py: per-spot measurements and the automatic contrast cut, on spots drawn in code."""
import numpy as np
from scipy import ndimage

from synseg.segment import spots


def gaussian_spots(shape, centres, amps, sigma=1.2, background=100.0, noise=2.0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape, dtype=np.float64)
    img = np.full(shape, background)
    for (cy, cx), a in zip(centres, amps):
        img += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    return img + rng.normal(0, noise, shape)


def grid_centres(n, step=16, offset=(8.3, 8.6)):
    side = int(np.ceil(np.sqrt(n)))
    return [(offset[0] + step * (i // side), offset[1] + step * (i % side)) for i in range(n)]


def label_spots(img, background, level):
    return ndimage.label(img > background + level, np.ones((3, 3)))[0]


def test_measure_spots_centres_contrast_and_intensity():
    centres = grid_centres(9)
    img = gaussian_spots((48, 48), centres, [200.0] * 9, noise=0.5)
    lab = label_spots(img, 100.0, 40.0)
    rows = spots.measure_spots(img, lab, prob=np.full(img.shape, 0.75, np.float32))
    assert len(rows) == 9
    got = np.array([(r["y"], r["x"]) for r in rows])
    err = np.hypot(*(got[:, None, :] - np.array(centres)[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    assert err.max() < 0.1  # pixel (i, j) has its centre at (i, j)
    for r in rows:
        assert abs(r["background"] - 100.0) < 1.0
        assert 150.0 < r["contrast"] < 210.0  # the peak pixel sits up to 0.5 px off the centre
        assert r["snr"] > 100
        assert r["integrated_intensity"] > 0
        assert r["peak_probability"] == 0.75
        assert set(r) == set(spots.COLUMNS)


def test_measure_spots_zero_background_gives_finite_snr():
    img = gaussian_spots((48, 48), grid_centres(4), [500.0] * 4, background=0.0, noise=0.0)
    img[img < 5] = 0.0  # background-subtracted: the rings are exactly zero
    rows = spots.measure_spots(img, label_spots(img, 0.0, 100.0))
    assert len(rows) == 4 and all(np.isfinite(r["snr"]) for r in rows)


def test_contrast_cut_drops_the_dim_group_of_a_bimodal_image():
    centres = grid_centres(64, step=12)
    amps = [400.0] * 32 + [25.0] * 32  # bright, expert-visible spots and faint specks
    img = gaussian_spots((100, 100), centres, amps, noise=1.0, seed=1)
    lab = label_spots(img, 100.0, 8.0)
    rows = spots.measure_spots(img, lab)
    assert len(rows) == 64
    keep, info = spots.contrast_cut(rows)
    kept = sorted(r["contrast"] > 200 for r, k in zip(rows, keep) if k)
    assert info["kept"] == 32 and all(kept), info
    assert info["cut"] is not None and 25 < info["cut"] < 400
    assert "kept 32 of 64" in spots.describe_cut(info)


def test_contrast_cut_keeps_one_population():
    rng = np.random.default_rng(2)
    centres = grid_centres(49, step=12)
    amps = np.exp(rng.uniform(np.log(60), np.log(240), 49))  # one broad population
    img = gaussian_spots((90, 90), centres, amps, noise=1.0, seed=3)
    rows = spots.measure_spots(img, label_spots(img, 100.0, 20.0))
    keep, info = spots.contrast_cut(rows)
    assert keep.all() and info["cut"] is None and "one population" in info["reason"]


def test_contrast_cut_needs_enough_candidates():
    rows = [{"contrast": c} for c in (1.0, 1.0, 500.0, 600.0)]
    keep, info = spots.contrast_cut(rows)
    assert keep.all() and "fewer than" in info["reason"]


def test_spot_core_trims_each_mask_to_its_half_maximum_around_the_peak():
    centres = [(20.0, 20.0), (20.0, 60.0), (60.4, 40.3)]
    img = gaussian_spots((80, 80), centres, [400.0, 400.0, 400.0], sigma=1.5, noise=0.5)
    yy, xx = np.indices(img.shape)
    # masks far wider than the spots (radius 6 px discs), the third one lopsided towards +x
    mask = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 36) | ((yy - 20) ** 2 + (xx - 60) ** 2 <= 36)
    mask |= (np.abs(yy - 60) <= 3) & (xx >= 38) & (xx <= 50)
    out, info = spots.filter_spots(mask, img, cut=False, core=0.5)
    lab, n = ndimage.label(out, np.ones((3, 3)))
    assert n == 3 and info["kept"] == 3 and info["trimmed_pixels"] > 0
    half_max_area = np.pi * (1.1774 * 1.5) ** 2  # the disc where a Gaussian of sigma 1.5 px is above half its peak
    for k, (cy, cx) in enumerate(centres, start=1):
        k = lab[int(round(cy)), int(round(cx))]
        assert abs(np.sum(lab == k) - half_max_area) < 4
        my, mx = ndimage.center_of_mass(lab == k)
        assert abs(my - cy) < 0.5 and abs(mx - cx) < 0.5  # the lopsided mask no longer drags the centre
    untouched, _ = spots.filter_spots(mask, img, cut=False, core=0.0)
    assert np.array_equal(untouched, mask)


def test_spot_core_leaves_an_object_no_brighter_than_its_ring_whole():
    img = np.full((40, 40), 100.0)
    img[18:23, 18:23] = 90.0  # a dim dent, not a spot: contrast <= 0
    mask = np.zeros(img.shape, bool)
    mask[18:23, 18:23] = True
    out, _ = spots.filter_spots(mask, img, cut=False, core=0.5)
    assert np.array_equal(out, mask)


def test_vesicle_script_trims_to_spot_cores_by_default_and_the_cytoskeleton_script_does_not():
    from synseg.segment import batch

    def parsed(task, *extra):
        return batch.get_args_parser(task).parse_args(["-i", "x.tif", "-o", "out", *extra])

    assert parsed("vesicle").spot_core == 0.5 and parsed("vesicle", "--spot-core", "0").spot_core == 0.0
    assert parsed("cytoskeleton").spot_core == 0.0


def test_two_gaussians_recovers_a_clear_mixture_and_the_density_matches_scipy():
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.0, 0.3, 700), rng.normal(3.0, 0.5, 300)])
    means, variances = spots.two_gaussians(x)
    order = np.argsort(means)
    assert np.allclose(means[order], [0.0, 3.0], atol=0.08)
    assert np.allclose(np.sqrt(variances[order]), [0.3, 0.5], atol=0.05)
    assert spots.two_means_split(x) < 1.6 < x.max()
    points = np.linspace(-1, 4, 37)
    assert np.allclose(spots.gaussian_density(x, points), gaussian_kde(x)(points), rtol=1e-10, atol=1e-14)
