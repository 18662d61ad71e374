"""Per-spot measurements and the automatic per-image contrast cut of the vesicle (spot) model.

The network decides *where* compact puncta are, from what it sees in its receptive field. Whether a
punctum is one an expert would mark also depends on the whole image: on the display contrast the
brightest spots set. That image-level decision is made here, explicitly, from the image's own
distribution of spot contrasts (no annotation, nothing tuned per dataset):

    table = measure_spots(image, labels, prob)          # one dict per labelled object
    keep, info = contrast_cut(table)                    # bool per object, and what was decided
    print(describe_cut(info))                           # the line the segmentation log shows

Contrast of a spot = its peak pixel minus the median of a ring 4-9 px around it (pixels of other
objects excluded). When the log-contrasts of an image's candidates form two clearly separated groups
(a two-component Gaussian mixture with Ashman's D >= MIN_SEPARATION and a valley in the smoothed
density between them), the dim group is dropped: objects below the bottom of that valley. Otherwise every
object is kept.
Coordinates follow the project's convention: the centre of pixel (i, j) is the point (i, j).
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

RING = (4.0, 9.0)  # px: inner and outer radius of the local-background ring
MIN_SEPARATION = 2.0  # Ashman's D between the two groups; below it the contrasts count as one population
MAX_VALLEY = 0.8  # lowest density between the two means over the lower of the two peaks
MIN_OBJECTS = 20  # fewer candidates than this: no cut (a mixture of a handful of values means nothing)
COLUMNS = ("label", "y", "x", "area", "peak", "background", "contrast", "snr", "integrated_intensity",
           "peak_probability")
# rows a window must hold above and below an object for its measurements to equal the whole plane's:
# the ring's outer radius, the 2-px growth of the other objects, one more for rounding
RING_MARGIN = int(math.ceil(RING[1])) + 3
WINDOW_PIXELS = 2 ** 24  # about this many pixels per row window of a big plane (labels: 4 bytes each)


def bands(shape: tuple[int, int], margin: int = 0, rows: int | None = None) -> list[tuple[int, int]]:
    """The bands of rows [a, b) whose objects label_windows yields window by window."""
    height, width = shape
    rows = rows or max(256, WINDOW_PIXELS // max(1, width))
    return [(a, min(height, a + rows)) for a in range(0, height, rows)]


def label_windows(mask: np.ndarray, margin: int = 0, rows: int | None = None):
    """8-connected labels of a big 2D mask, window by window, so that no full-size label image is needed.

    Yields (y0, labels, first, last): labels = the 8-connected labels of mask[y0:y0 + len(labels)], in which
    the objects numbered first..last are whole objects of the plane, each with at least `margin` rows of
    the window above and below it (or the plane's edge). Every object of the plane turns up in exactly one
    window (the one whose band of `rows` rows holds its top row), in the order a whole-plane labelling
    numbers them (raster order of their first pixel), so consecutive windows continue the numbering.
    A plane of at most `rows` rows (default: WINDOW_PIXELS / width) is one window, labelled whole.
    """
    if not hasattr(mask, "shape"):  # anything that slices into bool rows will do (predict.PackedMask)
        mask = np.asarray(mask)
    height = mask.shape[0]
    structure = np.ones((3, 3), bool)
    for a, b in bands(mask.shape, margin, rows):
        y0 = max(0, a - max(margin, 1))  # a row above, at least: an object from above shows it enters there
        halo = max(2 * margin, 64)
        while True:
            y1 = min(height, b + halo)
            labels, _ = ndimage.label(mask[y0:y1], structure=structure)
            # objects whose first pixel lies above the band are numbered first, those of the band next
            first = int(labels[:a - y0].max()) + 1 if a > y0 else 1
            last = int(labels[:b - y0].max())
            if y1 == height or last < first:
                break
            # an object of the band that reaches the window's lower edge may go on below it: widen the window
            bottom = max(sl[0].stop for sl in ndimage.find_objects(labels, max_label=last)[first - 1:])
            if bottom + margin < y1 - y0:  # a free row below it, and the margin
                break
            halo *= 2
        yield y0, labels, first, last



def object_pixels(labels: np.ndarray, band: int):
    """Yield (rows, cols, labels) of the labelled pixels of each band of `band` rows, in raster order."""
    for y0 in range(0, labels.shape[0], band):
        rr, cc = np.nonzero(labels[y0:y0 + band])
        yield rr + y0, cc, labels[y0:y0 + band][rr, cc]


def _grown(mask: np.ndarray) -> np.ndarray:
    """`mask` grown by 2 px (4-connected steps: scipy's binary_dilation(mask, iterations=2)), by OpenCV."""
    import cv2

    diamond = np.array([[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]], np.uint8)
    return cv2.dilate(mask.view(np.uint8), diamond, borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)


def nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """np.nanmedian(values, axis=1) of a 2D float array, to the bit (NaN where a row holds no number), without the
    masked-array machinery numpy uses for rows this short (about 1 ms a call, four calls a frame). Like numpy: the
    mean of the two middle numbers, (low + high) / 2, or (x + x) / 2 for an odd count."""
    ordered = np.sort(values, axis=1)  # NaN last
    count = np.count_nonzero(~np.isnan(values), axis=1)
    high = count // 2
    low = np.where(count % 2 == 1, high, high - 1)
    rows = np.arange(len(values))
    out = (ordered[rows, np.maximum(low, 0)] + ordered[rows, np.minimum(high, values.shape[1] - 1)]) / 2.0
    out[count == 0] = np.nan
    return out


def _ring_offsets(inner: float, outer: float) -> np.ndarray:
    """(M, 2) integer (dy, dx) offsets with inner <= distance <= outer."""
    r = int(math.ceil(outer))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    d = np.hypot(yy, xx)
    sel = (d >= inner) & (d <= outer)
    return np.stack([yy[sel], xx[sel]], axis=1)


def measure_spots(image: np.ndarray, labels: np.ndarray, prob: np.ndarray | None = None,
                  band: int | None = None, chunk: int = 20000, row0: int = 0) -> list[dict]:
    """One row per label 1..labels.max() of a 2D image (raw intensities, any dtype).

    y, x: centroid of the background-subtracted intensity inside the object (sub-pixel);
    area (px); peak (highest pixel); background (median of the ring around the object, other objects
    excluded); contrast = peak - background; snr = contrast / ring noise (1.4826 x MAD, at least half
    the ring's s.d. so a background-subtracted, all-zero ring gives a finite value);
    integrated_intensity = sum of (pixel - background) over the object; peak_probability (when prob
    is given). Labels absent from the image give no row. Sums run over bands of `band` rows, so a large
    plane needs no full-size float copies (default: 1024 rows, fewer for planes wider than 2048 px, so that
    a band's float64 temporaries stay near 16 MB each). `row0`: the plane row where image and labels start,
    when they are a window of a bigger plane (label_windows); y is then in the plane's rows.
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.ndim != 2 or img.shape != lab.shape:
        raise ValueError(f"measure_spots needs a 2D image and labels of its shape, got {img.shape}, {lab.shape}")
    n = int(lab.max()) if lab.size else 0
    if n == 0:
        return []
    h, w = img.shape
    band = band or max(1, min(1024, 2 ** 21 // w))
    # The objects' pixels, band by band in raster order: each sum below adds them in the order a sum over the
    # whole band adds them (the background pixels only ever went to bin 0), so the figures are the same to the bit.
    prob = None if prob is None else np.asarray(prob)
    area, sum_y, sum_x = (np.zeros(n + 1) for _ in range(3))
    peak = np.full(n + 1, -np.inf)
    pmax = np.full(n + 1, np.nan)
    for rr, cc, lb in object_pixels(lab, band):
        area += np.bincount(lb, minlength=n + 1)
        sum_y += np.bincount(lb, weights=(rr + row0).astype(np.float64), minlength=n + 1)
        sum_x += np.bincount(lb, weights=cc.astype(np.float64), minlength=n + 1)
        np.maximum.at(peak, lb, img[rr, cc].astype(np.float64))
        if prob is not None:
            pb = np.full(n + 1, -np.inf)
            np.maximum.at(pb, lb, prob[rr, cc].astype(np.float64))
            pmax = np.fmax(pmax, np.where(np.isfinite(pb), pb, np.nan))
    present = area[1:] > 0
    centre = np.stack([sum_y[1:], sum_x[1:]], axis=1) / np.maximum(area[1:, None], 1)
    # Local background: ring around the geometric centre, other objects (grown by 2 px) left out.
    busy = _grown(lab > 0)
    offsets = _ring_offsets(*RING)
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
        # too few free ring pixels (crowded spot): fall back to the whole ring
        use = np.where(free.sum(axis=1, keepdims=True) >= 8, free, inside)
        vals[~use] = np.nan
        with np.errstate(invalid="ignore"):
            med = nanmedian_rows(vals)
            mad = nanmedian_rows(np.abs(vals - med[:, None]))
            sd = np.nanstd(vals, axis=1)
        background[1 + start:1 + start + len(c)] = np.nan_to_num(med)
        noise[1 + start:1 + start + len(c)] = np.maximum(np.nan_to_num(np.maximum(1.4826 * mad, 0.5 * sd)), 1e-6)
    del busy
    # Sub-pixel centre and integrated intensity from the background-subtracted signal, band by band.
    total, wy, wx, integrated = (np.zeros(n + 1) for _ in range(4))
    for rr, cc, lb in object_pixels(lab, band):  # again, band by band: a dense plane's pixels are never all held
        diff = img[rr, cc].astype(np.float64) - background[lb]
        sig = np.maximum(diff, 0.0)
        total += np.bincount(lb, weights=sig, minlength=n + 1)
        wy += np.bincount(lb, weights=sig * (rr + row0).astype(np.float64), minlength=n + 1)
        wx += np.bincount(lb, weights=sig * cc.astype(np.float64), minlength=n + 1)
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


def two_means_split(x: np.ndarray) -> float:
    """The exact 1-D two-means split: the largest value of the lower group (sorted scan of every split)."""
    s = np.sort(np.asarray(x, np.float64))
    c, c2, k = np.cumsum(s), np.cumsum(s * s), np.arange(1, len(s))
    within = (c2[k - 1] - c[k - 1] ** 2 / k) + ((c2[-1] - c2[k - 1]) - (c[-1] - c[k - 1]) ** 2 / (len(s) - k))
    return float(s[int(np.argmin(within))])


def two_gaussians(x: np.ndarray, tol: float = 1e-3, reg: float = 1e-6, max_iter: int = 100):
    """(means, variances) of a two-component 1-D Gaussian mixture fitted to x by EM.

    Started from the exact two-means split and stopped when the mean log-likelihood gains less than `tol`
    (variances floored by `reg`), the settings of scikit-learn's GaussianMixture, which this replaces
    because importing it cost 1.4 s of every segmentation run. Deterministic, no random restarts.
    """
    x = np.asarray(x, np.float64)
    upper = x > two_means_split(x)
    resp = np.stack([~upper, upper], axis=1).astype(np.float64)
    previous = -np.inf
    for _ in range(max_iter):
        nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
        weights, means = nk / len(x), (resp * x[:, None]).sum(axis=0) / nk
        variances = (resp * (x[:, None] - means) ** 2).sum(axis=0) / nk + reg
        logp = np.log(weights) - 0.5 * (np.log(2 * np.pi * variances) + (x[:, None] - means) ** 2 / variances)
        top = logp.max(axis=1, keepdims=True)
        total = top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))
        resp = np.exp(logp - total[:, None])
        if abs(total.mean() - previous) < tol:
            break
        previous = total.mean()
    return means, variances


def gaussian_density(data: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of 1-D `data` at `points`, Scott's bandwidth (as scipy.stats.gaussian_kde, whose
    import cost 0.9 s of every run; equal to it within 1e-14)."""
    data = np.asarray(data, np.float64)
    bw2 = float(np.var(data, ddof=1)) * len(data) ** (-0.4)
    d2 = (np.asarray(points, np.float64)[:, None] - data[None, :]) ** 2
    return np.exp(-0.5 * d2 / bw2).sum(axis=1) / (len(data) * math.sqrt(2 * math.pi * bw2))


def contrast_cut(rows: list[dict], min_separation: float = MIN_SEPARATION) -> tuple[np.ndarray, dict]:
    """Decide per object whether it belongs to the image's bright (expert-visible) group.

    Returns (keep: bool array per row, info: dict with "candidates", "kept", "cut" (contrast at the
    decision boundary, or None), "separation" (Ashman's D, or None) and "reason").
    """
    n = len(rows)
    info = {"candidates": n, "kept": n, "cut": None, "separation": None}
    keep = np.ones(n, bool)
    if n < MIN_OBJECTS:
        info["reason"] = f"fewer than {MIN_OBJECTS} candidates"
        return keep, info
    contrast = np.array([r["contrast"] for r in rows], np.float64)
    if np.count_nonzero(contrast > 0) < MIN_OBJECTS:
        info["reason"] = f"fewer than {MIN_OBJECTS} candidates brighter than their surroundings"
        return keep, info
    # Objects no brighter than their ring are not puncta; they neither shape the mixture nor survive a cut.
    positive = contrast > 0
    x = np.log(contrast[positive])[:, None]
    if float(np.ptp(x)) < 1e-6:
        info["reason"] = "all contrasts equal"
        return keep, info
    means, variances = two_gaussians(x[:, 0])
    sds = np.sqrt(variances)
    separation = float(abs(means[1] - means[0]) / math.sqrt((sds[0] ** 2 + sds[1] ** 2) / 2.0))
    info["separation"] = separation
    if separation < min_separation:
        info["reason"] = f"one population (separation {separation:.2f} < {min_separation})"
        return keep, info
    # Two groups need a valley between them: the smoothed density between the two means well below both
    # peaks (a broad, flat population also splits into two Gaussians with a large D, but has no valley).
    # The boundary is the bottom of that valley: everything above it is kept. (The mixture's 0.5-posterior
    # point leans on the Gaussian shape of each group and sat above the valley on tissue and bead images.)
    kde = functools.partial(gaussian_density, x[:, 0])
    between = np.linspace(min(means), max(means), 256)
    density = kde(between)
    low = int(np.argmin(density))
    boundary = float(between[low])
    peaks = min(float(kde(np.linspace(x.min(), between[low], 128)).max()),
                float(kde(np.linspace(between[low], x.max(), 128)).max()))
    valley = float(density[low]) / max(peaks, 1e-12)
    info["valley"] = valley
    if valley > MAX_VALLEY:
        info["reason"] = f"one population (no valley: density ratio {valley:.2f} > {MAX_VALLEY})"
        return keep, info
    keep = np.zeros(n, bool)
    keep[positive] = x[:, 0] >= boundary
    info["cut"] = float(math.exp(boundary))
    info["kept"] = int(keep.sum())
    info["reason"] = f"two populations (separation {separation:.2f}, valley {valley:.2f})"
    return keep, info


def describe_cut(info: dict) -> str:
    """One log line for a filter_spots (or contrast_cut) decision."""
    kept = info.get("kept_by_cut", info["kept"])
    if info.get("cut") is None:
        text = f"spot contrast cut: none, {kept} candidates kept ({info['reason']})"
    else:
        text = (f"spot contrast cut: kept {kept} of {info['candidates']} candidates with contrast >= "
                f"{info['cut']:.4g} ({info['reason']})")
    if "min_snr" in info:
        text += f"; --min-snr {info['min_snr']:g} dropped {info['below_min_snr']} more, {info['kept']} kept"
    return text


def filter_spots(mask: np.ndarray, image: np.ndarray, prob: np.ndarray | None = None,
                 in_place: bool = False, cut: bool = True, min_snr: float = 0.0,
                 core: float = 0.0) -> tuple[np.ndarray, dict]:
    """The decision step on a binary mask: (mask with the dropped objects removed, info).

    cut: the contrast cut (contrast_cut); min_snr > 0: also drop objects whose snr (measure_spots) is below it,
    the user's knob for counting only bright spots. core > 0: every kept object is trimmed to its core, the
    pixels at least background + core x contrast that connect to its peak (core_pixels; 0.5: the spot's
    half-maximum area), so a bright spot's mask does not spread over its blur and its centre is that of the
    signal. Only the measurements decide, so `prob` is not needed. A big plane is measured in row windows
    (label_windows), with the same result as a whole-plane labelling. in_place: change `mask` itself (a bool
    array), which saves a second full-size mask.
    """
    mask = np.asarray(mask, bool)
    windows, rows = [], []
    for y0, labels, first, last in label_windows(mask, margin=RING_MARGIN):
        part = measure_spots(image[y0:y0 + len(labels)], labels, row0=y0)
        rows += [r for r in part if first <= r["label"] <= last]
        windows.append((y0, len(labels), last - first + 1))
        del labels
    if cut:
        keep, info = contrast_cut(rows)
    else:
        keep = np.ones(len(rows), bool)
        info = {"candidates": len(rows), "kept": len(rows), "cut": None, "separation": None, "reason": "off"}
    if min_snr > 0:
        low = np.array([r["snr"] < min_snr for r in rows], bool)
        info["kept_by_cut"] = info["kept"]
        info["min_snr"], info["below_min_snr"] = float(min_snr), int((low & keep).sum())
        keep &= ~low
        info["kept"] = int(keep.sum())
    if info["kept"] == len(rows) and core <= 0:
        return mask, info
    out = mask if in_place else mask.copy()
    done = 0
    structure = np.ones((3, 3), bool)
    for (y0, n_rows, count), (a, b) in zip(windows, bands(mask.shape, RING_MARGIN)):
        # The same windows again. Objects of earlier bands may be gone from `out` by now, which renumbers the
        # window but leaves this band's own objects (whole objects: removing others cannot change them).
        labels, _ = ndimage.label(out[y0:y0 + n_rows], structure=structure)
        first = int(labels[:a - y0].max()) + 1 if a > y0 else 1
        drop = np.zeros(int(labels.max()) + 1, bool)
        drop[first:first + count] = ~keep[done:done + count]
        window = out[y0:y0 + n_rows]
        if core > 0 and count:
            trimmed = core_pixels(labels, image[y0:y0 + n_rows], rows[done:done + count], first, core)
            info["trimmed_pixels"] = info.get("trimmed_pixels", 0) + int(np.count_nonzero(window & ~trimmed))
            window &= trimmed
        done += count
        window[drop[labels]] = False
    return out, info


def core_pixels(labels: np.ndarray, image: np.ndarray, rows: list[dict], first: int, core: float) -> np.ndarray:
    """Bool mask: the pixels of labels first..first + len(rows) - 1 (measured in `rows`) that are at least
    background + core x contrast and connect (8-neighbours) to the object's brightest pixel; every other
    label's pixels unchanged, background False. An object no brighter than its ring is left whole."""
    n = int(labels.max())
    level = np.full(n + 1, -np.inf)
    mine = np.arange(first, first + len(rows))
    contrast = np.array([r["contrast"] for r in rows], np.float64)
    background = np.array([r["background"] for r in rows], np.float64)
    level[mine] = np.where(contrast > 0, background + core * contrast, -np.inf)
    rr, cc = np.nonzero(labels)
    lb = labels[rr, cc]
    values = np.asarray(image)[rr, cc].astype(np.float64)
    above = values >= level[lb]
    candidate = np.zeros(labels.shape, bool)
    candidate[rr[above], cc[above]] = True
    parts, _ = ndimage.label(candidate, structure=np.ones((3, 3), bool))
    # The part holding each object's brightest pixel. Where an object's brightest value is reached in pixels of two
    # parts (ties), the part is the one of the pixel scipy's maximum_position names, asked of the whole plane as
    # before: its choice among ties rests on the order of an unstable sort of every pixel.
    top = np.full(n + 1, -np.inf)
    np.maximum.at(top, lb, values)
    at = values == top[lb]
    owner, part = lb[at], parts[rr[at], cc[at]]
    low, high = np.full(n + 1, np.iinfo(np.int64).max), np.full(n + 1, -1)
    np.minimum.at(low, owner, part)
    np.maximum.at(high, owner, part)
    wanted = np.zeros(int(parts.max()) + 1, bool)
    if np.any(low[mine] != high[mine]):
        peaks = ndimage.maximum_position(np.asarray(image, np.float64), labels, mine)
        wanted[[parts[p] for p in peaks]] = True
    else:
        wanted[low[mine]] = True
    wanted[0] = False
    others = np.ones(n + 1, bool)
    others[mine] = False
    others[0] = False
    return wanted[parts] | others[labels]
