"""The vectorised decision step equals the per-component code it replaced, to the bit, on random fixtures.

split_touching (postprocess._needs_split picks the components peak_local_max would seed twice or more),
spots.measure_spots, spots.core_pixels and postprocess.object_table (objects' pixels only) are compared with the
earlier implementations, kept here verbatim as references: masks equal, every table value equal.
"""
import math
from contextlib import nullcontext

import numpy as np
import pytest
from scipy import ndimage

from synseg.segment import postprocess, spots

EIGHT = np.ones((3, 3), bool)


# --------------------------------------------------------------------------- the references (before 2026-12-07)

def ref_split_touching(mask, intensity, min_distance=None):
    """postprocess.split_touching as it was: peak_local_max on every component large enough, one at a time."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    from synseg.metrics import separate_touching

    mask = np.asarray(mask, bool)
    labels, n = ndimage.label(mask, EIGHT)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    if min_distance is None:
        if n == 0:
            return mask.copy()
        min_distance = max(2.0, math.sqrt(float(np.median(areas[1:])) / math.pi))
    md = max(1, int(round(min_distance)))
    sigma = max(1.0, md / 4.0)
    pad = int(math.ceil(3 * sigma))
    min_area = math.pi * md ** 2
    out = mask.copy()
    h, w = labels.shape
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or areas[idx] < min_area:
            continue
        y0, x0 = max(sl[0].start - pad, 0), max(sl[1].start - pad, 0)
        y1, x1 = min(sl[0].stop + pad, h), min(sl[1].stop + pad, w)
        region = labels[y0:y1, x0:x1] == idx
        smooth = ndimage.gaussian_filter(intensity[y0:y1, x0:x1].astype(np.float32), sigma)
        peaks = peak_local_max(smooth, min_distance=md, labels=region.astype(np.int32), exclude_border=False)
        if len(peaks) < 2:
            continue
        markers = np.zeros(region.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        parts = watershed(-smooth, markers, mask=region)
        keep = separate_touching(parts) > 0
        sub = out[y0:y1, x0:x1]
        sub[region] = keep[region]
    return out


def ref_measure_spots(image, labels, prob=None, band=None, chunk=20000, row0=0):
    """spots.measure_spots as it was: sums over every pixel of each band."""
    img, lab = np.asarray(image), np.asarray(labels)
    n = int(lab.max()) if lab.size else 0
    if n == 0:
        return []
    h, w = img.shape
    band = band or max(1, min(1024, 2 ** 21 // w))
    cols = np.arange(w, dtype=np.float64)
    area, sum_y, sum_x = (np.zeros(n + 1) for _ in range(3))
    peak = np.full(n + 1, -np.inf)
    pmax = np.full(n + 1, np.nan)
    for y0 in range(0, h, band):
        lb = lab[y0:y0 + band].ravel()
        rows = np.repeat(np.arange(row0 + y0, row0 + y0 + len(lb) // w, dtype=np.float64), w)
        area += np.bincount(lb, minlength=n + 1)
        sum_y += np.bincount(lb, weights=rows, minlength=n + 1)
        sum_x += np.bincount(lb, weights=np.tile(cols, len(lb) // w), minlength=n + 1)
        np.maximum.at(peak, lb, img[y0:y0 + band].ravel().astype(np.float64))
        if prob is not None:
            pb = np.full(n + 1, -np.inf)
            np.maximum.at(pb, lb, np.asarray(prob[y0:y0 + band], np.float64).ravel())
            pmax = np.fmax(pmax, np.where(np.isfinite(pb), pb, np.nan))
    present = area[1:] > 0
    centre = np.stack([sum_y[1:], sum_x[1:]], axis=1) / np.maximum(area[1:, None], 1)
    busy = ndimage.binary_dilation(lab > 0, iterations=2)
    offsets = spots._ring_offsets(*spots.RING)
    background = np.zeros(n + 1, np.float64)
    noise = np.ones(n + 1, np.float64)
    for start in range(0, n, chunk):
        c = np.rint(centre[start:start + chunk]).astype(np.int64)
        ys = c[:, None, 0] - row0 + offsets[None, :, 0]
        xs = c[:, None, 1] + offsets[None, :, 1]
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        ys, xs = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
        vals = img[ys, xs].astype(np.float64)
        free = inside & ~busy[ys, xs]
        use = np.where(free.sum(axis=1, keepdims=True) >= 8, free, inside)
        vals[~use] = np.nan
        with np.errstate(invalid="ignore"):
            med = np.nanmedian(vals, axis=1)
            mad = np.nanmedian(np.abs(vals - med[:, None]), axis=1)
            sd = np.nanstd(vals, axis=1)
        background[1 + start:1 + start + len(c)] = np.nan_to_num(med)
        noise[1 + start:1 + start + len(c)] = np.maximum(np.nan_to_num(np.maximum(1.4826 * mad, 0.5 * sd)), 1e-6)
    total, wy, wx, integrated = (np.zeros(n + 1) for _ in range(4))
    for y0 in range(0, h, band):
        lb = lab[y0:y0 + band].ravel()
        rows = np.repeat(np.arange(row0 + y0, row0 + y0 + len(lb) // w, dtype=np.float64), w)
        diff = img[y0:y0 + band].ravel().astype(np.float64) - background[lb]
        sig = np.where(lb > 0, np.maximum(diff, 0.0), 0.0)
        total += np.bincount(lb, weights=sig, minlength=n + 1)
        wy += np.bincount(lb, weights=sig * rows, minlength=n + 1)
        wx += np.bincount(lb, weights=sig * np.tile(cols, len(lb) // w), minlength=n + 1)
        integrated += np.bincount(lb, weights=diff, minlength=n + 1)
    out = []
    for i in np.flatnonzero(present) + 1:
        weighted = total[i] > 0
        contrast = float(peak[i] - background[i])
        out.append({"label": int(i),
                    "y": float(wy[i] / total[i]) if weighted else float(centre[i - 1, 0]),
                    "x": float(wx[i] / total[i]) if weighted else float(centre[i - 1, 1]),
                    "area": int(area[i]), "peak": float(peak[i]), "background": float(background[i]),
                    "contrast": contrast, "snr": float(contrast / noise[i]),
                    "integrated_intensity": float(integrated[i]), "peak_probability": float(pmax[i])})
    return out


def ref_core_pixels(labels, image, rows, first, core):
    """spots.core_pixels as it was: scipy's maximum_position over the whole plane."""
    n = int(labels.max())
    level = np.full(n + 1, -np.inf)
    mine = np.arange(first, first + len(rows))
    contrast = np.array([r["contrast"] for r in rows], np.float64)
    background = np.array([r["background"] for r in rows], np.float64)
    level[mine] = np.where(contrast > 0, background + core * contrast, -np.inf)
    values = np.asarray(image, np.float64)
    candidate = (labels > 0) & (values >= level[labels])
    parts, _ = ndimage.label(candidate, structure=EIGHT)
    peaks = ndimage.maximum_position(values, labels, mine)
    wanted = np.zeros(int(parts.max()) + 1, bool)
    wanted[[parts[p] for p in peaks]] = True
    wanted[0] = False
    others = np.ones(n + 1, bool)
    others[mine] = False
    others[0] = False
    return wanted[parts] | others[labels]


def ref_object_table(labels, intensity, band=None, row0=0):
    """postprocess.object_table as it was."""
    n = int(labels.max())
    if n == 0:
        return []
    band = band or max(1, min(1024, 2 ** 21 // labels.shape[1]))
    area, sum_y, sum_x, sum_i = (np.zeros(n + 1) for _ in range(4))
    cols = np.arange(labels.shape[1], dtype=np.float64)
    for y0 in range(0, labels.shape[0], band):
        lab = labels[y0:y0 + band]
        flat = lab.ravel()
        rows = np.repeat(np.arange(row0 + y0, row0 + y0 + lab.shape[0], dtype=np.float64), lab.shape[1])
        area += np.bincount(flat, minlength=n + 1)
        sum_y += np.bincount(flat, weights=rows, minlength=n + 1)
        sum_x += np.bincount(flat, weights=np.tile(cols, lab.shape[0]), minlength=n + 1)
        sum_i += np.bincount(flat, weights=intensity[y0:y0 + band].ravel().astype(np.float64), minlength=n + 1)
    return [{"label": i, "centroid_y": sum_y[i] / area[i], "centroid_x": sum_x[i] / area[i],
             "area_px": int(area[i]), "mean_intensity": sum_i[i] / area[i]} for i in range(1, n + 1) if area[i]]


# --------------------------------------------------------------------------- fixtures

def blobs(seed, shape=(150, 170), n=70, dtype=np.uint16, quantum=257, plateaus=False):
    """Random spots of several sizes, many touching (pairs and clusters), some cut by the border; quantised
    intensities (every value a multiple of `quantum`: ties), optional saturated plateaus. (image, mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape, dtype=np.float64)
    img = np.full(shape, 30.0)
    for _ in range(n):
        cy, cx = rng.uniform(-3, shape[0] + 3), rng.uniform(-3, shape[1] + 3)
        s, a = rng.uniform(0.8, 4.0), rng.uniform(20, 220)
        img += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        if rng.random() < 0.5:  # a touching neighbour
            dy, dx = rng.normal(0, 2.5 * s, 2)
            img += rng.uniform(0.5, 1.2) * a * np.exp(-((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2) / (2 * s * s))
    img += rng.normal(0, 4, shape)
    if plateaus:
        img = np.minimum(img, np.percentile(img, 97))
    img = np.clip(np.round(img), 0, 255)
    mask = ndimage.gaussian_filter(img, 1.0) > 30 + rng.uniform(15, 40)
    return (img * quantum).astype(dtype), mask


FIXTURES = [dict(seed=s) for s in range(4)] + [dict(seed=10, plateaus=True), dict(seed=11, plateaus=True),
                                                dict(seed=12, dtype=np.float32, quantum=1.0 / 255),
                                                dict(seed=13, shape=(64, 300), n=40, dtype=np.uint8, quantum=1)]


def rows_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == y[k] or (np.isnan(x[k]) and np.isnan(y[k])), (k, x[k], y[k])


# --------------------------------------------------------------------------- the comparisons

@pytest.mark.parametrize("fixture", FIXTURES)
def test_split_touching_equals_the_per_component_reference(fixture):
    image, mask = blobs(**fixture)
    for md in (None, 1, 2, 3, 5, 8):
        want = ref_split_touching(mask, image, md)
        np.testing.assert_array_equal(postprocess.split_touching(mask, image, md), want)
        lean = mask.copy()
        np.testing.assert_array_equal(postprocess.split_touching(lean, image, md, in_place=True), want)


def test_split_touching_in_row_windows_equals_the_reference(monkeypatch):
    """A plane of several windows (spots.label_windows): each window's components decided at once, the same."""
    image, mask = blobs(3, shape=(300, 90), n=90)
    want = {md: ref_split_touching(mask, image, md) for md in (None, 2, 4)}
    monkeypatch.setattr(spots, "WINDOW_PIXELS", 90 * 40)  # bands of 256 rows (label_windows' least)
    image, mask = np.tile(image, (3, 1)), np.tile(mask, (3, 1))  # 900 rows: four windows
    for md, one in want.items():
        got = postprocess.split_touching(mask, image, md if md else ref_md(mask))
        np.testing.assert_array_equal(got[:300], one)
        np.testing.assert_array_equal(got, ref_split_touching(mask, image, md if md else ref_md(mask)))


def ref_md(mask):
    areas = np.bincount(ndimage.label(mask, EIGHT)[0].ravel())[1:]
    return max(2.0, math.sqrt(float(np.median(areas)) / math.pi))


@pytest.mark.parametrize("fixture", FIXTURES[:3] + FIXTURES[4:6])
def test_needs_split_names_exactly_the_components_peak_local_max_seeds_twice(fixture):
    """The strip-wise decision against peak_local_max on every component's own crop: the same components."""
    from skimage.feature import peak_local_max

    image, mask = blobs(**fixture)
    labels, n = ndimage.label(mask, EIGHT)
    for md in (1, 2, 3, 6):
        sigma = max(1.0, md / 4.0)
        pad = int(math.ceil(3 * sigma))
        boxes, seeds = [], []
        for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
            y0, x0 = max(sl[0].start - pad, 0), max(sl[1].start - pad, 0)
            y1, x1 = min(sl[0].stop + pad, mask.shape[0]), min(sl[1].stop + pad, mask.shape[1])
            boxes.append((idx, y0, x0, y1, x1))
            smooth = ndimage.gaussian_filter(image[y0:y1, x0:x1].astype(np.float32), sigma)
            region = (labels[y0:y1, x0:x1] == idx).astype(np.int32)
            seeds.append(len(peak_local_max(smooth, min_distance=md, labels=region, exclude_border=False)))
        need = postprocess._needs_split(labels, image, np.array(boxes), md, sigma)
        seeds = np.array(seeds)
        assert np.all(need[seeds >= 2])  # never skips a component that is split
        if not fixture.get("plateaus"):  # flat tops aside (left to peak_local_max, as tiny components), exactly those
            big = np.bincount(labels.ravel())[1:] >= 9
            np.testing.assert_array_equal(need[big], seeds[big] >= 2)
        assert 0 < np.count_nonzero(seeds >= 2) < n


@pytest.mark.parametrize("fixture", FIXTURES)
def test_measure_spots_and_object_table_equal_the_whole_band_sums(fixture):
    image, mask = blobs(**fixture)
    labels = ndimage.label(mask, EIGHT)[0]
    prob = np.random.default_rng(1).random(mask.shape).astype(np.float32)
    for band, row0 in ((None, 0), (7, 0), (13, 250)):
        rows_equal(spots.measure_spots(image, labels, prob, band=band, row0=row0),
                   ref_measure_spots(image, labels, prob, band=band, row0=row0))
        rows_equal(spots.measure_spots(image, labels, band=band, row0=row0, chunk=17),
                   ref_measure_spots(image, labels, band=band, row0=row0, chunk=17))
        rows_equal(postprocess.object_table(labels, image, band=band, row0=row0),
                   ref_object_table(labels, image, band=band, row0=row0))


@pytest.mark.parametrize("fixture", FIXTURES)
def test_core_pixels_and_filter_spots_equal_the_reference(fixture, monkeypatch):
    image, mask = blobs(**fixture)
    labels, n = ndimage.label(mask, EIGHT)
    rows = spots.measure_spots(image, labels)
    for first in (1, 1 + n // 3):
        for core in (0.3, 0.5, 0.9):
            mine = rows[first - 1:first - 1 + n // 2]
            np.testing.assert_array_equal(spots.core_pixels(labels, image, mine, first, core),
                                          ref_core_pixels(labels, image, mine, first, core))
    got = spots.filter_spots(mask, image, min_snr=3.0, core=0.5)
    monkeypatch.setattr(spots, "measure_spots", ref_measure_spots)
    monkeypatch.setattr(spots, "core_pixels", ref_core_pixels)
    want = spots.filter_spots(mask, image, min_snr=3.0, core=0.5)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]


def test_core_pixels_with_tied_peaks_in_two_parts_asks_maximum_position(monkeypatch):
    """An object whose brightest value is reached at both ends of a dip: the part scipy's maximum_position names
    is kept, as before (the rare case where the whole-plane call is still made)."""
    image = np.zeros((20, 30))
    image[10, 5:25] = 100.0
    image[10, 6], image[10, 22] = 1000.0, 1000.0  # two equal peaks, the middle below half of them
    labels = (image > 0).astype(np.int32)
    rows = spots.measure_spots(image, labels)
    calls = []
    real = ndimage.maximum_position
    monkeypatch.setattr(spots.ndimage, "maximum_position", lambda *a: calls.append(1) or real(*a))
    got = spots.core_pixels(labels, image, rows, 1, 0.5)
    assert calls and got.sum() == 1  # one of the two peaks, alone above half its contrast
    np.testing.assert_array_equal(got, ref_core_pixels(labels, image, rows, 1, 0.5))


def test_nanmedian_rows_equals_numpys_nanmedian():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, m = rng.integers(1, 60), rng.integers(1, 220)
        values = np.round(rng.normal(100, 30, (n, m)), rng.integers(0, 3)) * rng.choice([1, 1e-3, 257])
        values[rng.random((n, m)) < rng.random()] = np.nan
        values[0] = np.nan if rng.random() < 0.3 else values[0]
        with np.errstate(invalid="ignore"), pytest.warns() if np.isnan(values).all(axis=1).any() else nullcontext():
            want = np.nanmedian(values, axis=1)
        np.testing.assert_array_equal(spots.nanmedian_rows(values), want)


def test_skeleton_stats_neighbour_counts_equal_scipys_convolve(monkeypatch):
    """skeleton_stats counts skeleton neighbours with OpenCV's filter2D: the junctions of scipy's convolve."""
    rng = np.random.default_rng(3)
    mask = ndimage.binary_dilation(rng.random((300, 260)) < 0.004, iterations=1)
    for _ in range(40):  # random lines: crossings make junctions
        y0, x0, y1, x1 = rng.integers(0, 260, 4)
        n = max(abs(y1 - y0), abs(x1 - x0)) + 1
        mask[np.linspace(y0, y1, n).round().astype(int), np.linspace(x0, x1, n).round().astype(int)] = True
    mask = ndimage.binary_dilation(mask)
    got = postprocess.skeleton_stats(mask, band=97)
    import cv2

    kernel = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8)
    s = (rng.random((50, 70)) < 0.4).view(np.uint8)
    np.testing.assert_array_equal(cv2.filter2D(s, -1, kernel, borderType=cv2.BORDER_CONSTANT),
                                  ndimage.convolve(s, kernel, mode="constant"))
    monkeypatch.setattr(cv2, "filter2D", lambda s, depth, k, borderType: ndimage.convolve(s, k, mode="constant"))
    want = postprocess.skeleton_stats(mask, band=97)
    assert got == want and got[1] > 10
