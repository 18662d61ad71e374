"""From a probability map to a mask and its measurements: threshold, split of touching objects, object
tables and skeleton measures.

  - Threshold: a number, or 'otsu' on the probability map (resolve_threshold).
  - Split (tasks with `split`, on by default, --no-split turns it off): touching objects are split so that
    each connected component of the written mask is one object. Inside every connected component that is
    large enough to hold two, seeds are the local maxima of the smoothed image intensity at least
    `min_distance` px apart (default: the median object radius in the image); a watershed on the inverted
    intensity grows them back to the mask, and where two regions meet (8-connected) the one with the larger
    label gives up a 1-px line (metrics.separate_touching). The vesicle generator draws the gaps between
    touching vesicles in its training masks with the same function, so the network already learns most of
    this separation.
  - Measurements (a task's `measure`): ObjectMeasure - number of connected objects (8-connectivity), their
    mean area and one row per object (spots.measure_spots adds sub-pixel centre, contrast, SNR);
    SkeletonMeasure - total skeleton length (skimage skeletonize; steps between 8-neighbours counted 1 or
    sqrt 2) and the number of junctions (clusters of skeleton pixels with three or more skeleton
    neighbours). In um / um^2 when the pixel size is known, else in px.
A big plane is labelled window by window (spots.label_windows), with the same result.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np


def resolve_threshold(prob: np.ndarray, spec: str) -> float:
    """A numeric threshold from '0.5'-like text, or Otsu's threshold of the probability map for 'otsu'."""
    if str(spec).lower() == "otsu":
        from skimage.filters import threshold_otsu

        lo, hi = float(prob.min()), float(prob.max())
        if hi - lo < 1e-6:  # nothing to separate
            return 0.5
        sample = prob[:: max(1, prob.shape[0] // 2048), :: max(1, prob.shape[1] // 2048)]
        return float(threshold_otsu(sample))
    return float(spec)


def parse_threshold(text: str) -> str:
    """argparse type: 'otsu' or a number strictly between 0 and 1."""
    if text.lower() == "otsu":
        return "otsu"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold {text!r}: use a number between 0 and 1 or 'otsu'") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"threshold {value} is outside (0, 1); use e.g. 0.5 or 'otsu'")
    return text


def label8(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels of a 2D binary mask."""
    from scipy import ndimage

    return ndimage.label(mask, structure=np.ones((3, 3), bool))


def split_touching(mask: np.ndarray, intensity: np.ndarray, min_distance: float | None = None,
                   in_place: bool = False) -> np.ndarray:
    """Split touching blobs: watershed from intensity peaks, 1-px background lines between objects.

    The lines follow metrics.separate_touching, the rule the vesicle generator draws its training masks
    with (the smaller label keeps its pixels; a label cut in two keeps its largest piece). Works component
    by component, and on a big plane window by window (spots.label_windows, the same result), so memory
    stays bounded. `min_distance` in px (seeds closer than that merge); None estimates it as the median
    equivalent radius of the components. Returns a bool mask; in_place: `mask` itself (a bool array), with a
    bit-packed copy of the original (1/8 of its size) to label from.
    """
    from synseg.segment import spots

    mask = np.asarray(mask, bool)
    whole = None  # a plane of one window (spots.label_windows) is labelled once, for the estimate and the split
    if len(spots.bands(mask.shape)) == 1:
        labels, n = label8(mask)
        whole = labels, n, np.bincount(labels.ravel(), minlength=n + 1)
    if min_distance is None:
        if whole is not None:
            areas = whole[2][1:]
        else:
            areas = [np.bincount(labels.ravel(), minlength=last + 1)[first:last + 1]
                     for _, labels, first, last in spots.label_windows(mask)]
            areas = np.concatenate(areas) if areas else np.zeros(0)
        if areas.size == 0:
            return mask.copy()
        min_distance = max(2.0, math.sqrt(float(np.median(areas)) / math.pi))
    md = max(1, int(round(min_distance)))
    sigma = max(1.0, md / 4.0)  # denoise only: more would merge the peaks of touching vesicles
    pad = int(math.ceil(3 * sigma))
    min_area = math.pi * md ** 2  # a component smaller than one typical vesicle is left whole
    out = mask if in_place else mask.copy()
    if whole is not None:
        _split_window(out, whole[0], 1, whole[1], intensity, md, sigma, pad, min_area, whole[2])
        return out
    source = PackedMask(mask) if in_place else mask  # objects are found in the mask as it came in
    for y0, labels, first, last in spots.label_windows(source, margin=pad):
        _split_window(out[y0:y0 + len(labels)], labels, first, last, intensity[y0:y0 + len(labels)],
                      md, sigma, pad, min_area)
    return out


class PackedMask:
    """A read-only 2D bool mask kept as bits (np.packbits); slicing rows gives the bool rows back."""

    def __init__(self, mask: np.ndarray):
        self.shape, self.bits = mask.shape, np.packbits(mask, axis=1)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.unpackbits(self.bits[rows], axis=1, count=self.shape[1]).view(bool)

    def __array__(self, dtype=None, copy=None):
        return self[:].astype(dtype or bool, copy=False)


def _split_window(out: np.ndarray, labels: np.ndarray, first: int, last: int, intensity: np.ndarray,
                  md: int, sigma: float, pad: int, min_area: float, areas: np.ndarray | None = None) -> None:
    """split_touching for the components first..last of one window, written into `out` (the window's rows).

    A component is split only where skimage's peak_local_max finds two or more seeds in it. Which components
    those are is decided for all of them at once (_needs_split: their smoothed crops side by side in a few
    strips, one filter call each), and only those go through the per-component steps below, so a plane of
    thousands of single vesicles costs a few array passes instead of thousands of peak_local_max calls.
    """
    from scipy import ndimage

    if areas is None:
        areas = np.bincount(labels.ravel(), minlength=last + 1)
    h, w = labels.shape
    boxes = []
    for idx, sl in enumerate(ndimage.find_objects(labels, max_label=last)[first - 1:], start=first):
        if sl is None or areas[idx] < min_area:
            continue
        boxes.append((idx, max(sl[0].start - pad, 0), max(sl[1].start - pad, 0), min(sl[0].stop + pad, h),
                      min(sl[1].stop + pad, w)))
    if not boxes:
        return
    boxes = np.array(boxes, np.int64)
    for idx, y0, x0, y1, x1 in boxes[_needs_split(labels, intensity, boxes, md, sigma)]:
        _split_component(out, labels, intensity, idx, y0, x0, y1, x1, md, sigma)


def _split_component(out, labels, intensity, idx, y0, x0, y1, x1, md, sigma) -> None:
    """The seeded watershed of one component in its crop [y0:y1, x0:x1], written into `out`."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    from synseg.metrics import separate_touching

    region = labels[y0:y1, x0:x1] == idx
    smooth = ndimage.gaussian_filter(intensity[y0:y1, x0:x1].astype(np.float32), sigma)
    peaks = peak_local_max(smooth, min_distance=md, labels=region.astype(np.int32), exclude_border=False)
    if len(peaks) < 2:
        return
    markers = np.zeros(region.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    parts = watershed(-smooth, markers, mask=region)
    keep = separate_touching(parts) > 0
    sub = out[y0:y1, x0:x1]
    sub[region] = keep[region]


def _reflect(i: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Index into a line of length n of position i under scipy.ndimage's 'reflect' extension (d c b a | a b c d)."""
    m = np.mod(i, 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


def _needs_split(labels: np.ndarray, intensity: np.ndarray, boxes: np.ndarray, md: int, sigma: float) -> np.ndarray:
    """Bool per row (idx, y0, x0, y1, x1) of `boxes`: may peak_local_max find two or more seeds in that component?

    False only where _split_component certainly finds fewer than two, so skipping those changes nothing. Each crop
    is smoothed exactly as _split_component smooths it (reflected at the crop's own edges: the crop is laid into a
    strip with `reach` reflected pixels around it, where `reach` is the Gaussian's radius, and a pixel of the crop
    sees the same values in the same order as in the crop alone). Then, as peak_local_max does: seed candidates are
    the component's pixels equal to the maximum of the component within (2 md + 1)^2 and above the crop's minimum;
    seeds are taken greedily, brightest first, each at least md (Chebyshev) from the seeds before, so there are two
    or more exactly when some candidate lies md or more from the first. A component where every pixel is such a
    maximum (peak_local_max's 'trivial image' rule) is reported True and left to _split_component.
    """
    from scipy import ndimage

    reach = int(4.0 * sigma + 0.5)  # gaussian_filter's radius at its default truncate=4
    idx, y0, x0, y1, x1 = boxes.T
    hc, wc = y1 - y0, x1 - x0
    hp, wp = hc + 2 * reach, wc + 2 * reach
    need = np.zeros(len(boxes), bool)
    bg = np.finfo(np.float32).min
    order = np.argsort(hp, kind="stable")
    # strips of crops of similar height (at most 25% + 8 rows of padding below each), side by side
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and hp[order[stop]] <= 1.25 * hp[order[start]] + 8 and \
                wp[order[start:stop + 1]].sum() * hp[order[stop]] <= 2 ** 22:
            stop += 1
        group = order[start:stop]
        start = stop
        height = int(hp[group].max())
        widths = wp[group]
        col0 = np.concatenate([[0], np.cumsum(widths)[:-1]])
        crop = np.repeat(np.arange(len(group)), widths)  # strip column -> crop (within the group)
        local_c = np.arange(int(widths.sum())) - col0[crop] - reach  # column within the crop, -reach..wc+reach-1
        local_r = np.arange(height)[:, None] - reach  # (height, 1)
        g = group[crop]
        cols = x0[g] + _reflect(local_c, wc[g])
        rows = y0[g][None, :] + _reflect(local_r, hc[g][None, :])
        strip = intensity[rows, cols[None, :]].astype(np.float32)
        smooth = ndimage.gaussian_filter(strip, sigma)
        inside = (local_r >= 0) & (local_r < hc[g][None, :]) & (local_c >= 0)[None, :] & (local_c < wc[g])[None, :]
        region = inside & (labels[rows, cols[None, :]] == idx[g][None, :])
        # the crop's minimum (peak_local_max's threshold): per column, then per crop
        low = np.minimum.reduceat(np.where(inside, smooth, np.inf).min(axis=0), col0)
        values = np.where(region, smooth, bg)
        peak = region & (values == ndimage.maximum_filter(values, size=2 * md + 1, mode="constant", cval=bg))
        count = np.add.reduceat(peak.sum(axis=0), col0)
        trivial = count == np.add.reduceat(region.sum(axis=0), col0)
        peak &= smooth > low[crop][None, :]
        r, c = np.nonzero(peak)
        k = crop[c]
        lr, lc = local_r[r, 0], local_c[c]
        # brightest first, ties in raster order of the crop (peak_local_max's stable sort)
        first = np.lexsort((lr * wc[group[k]] + lc, -smooth[r, c], k))
        k, lr, lc = k[first], lr[first], lc[first]
        lead = np.ones(len(k), bool)
        lead[1:] = k[1:] != k[:-1]
        top = np.flatnonzero(lead)[np.cumsum(lead) - 1]
        far = np.maximum(np.abs(lr - lr[top]), np.abs(lc - lc[top])) >= md
        split = np.zeros(len(group), bool)
        split[k[far]] = True
        need[group] = split | trivial
    return need


def object_table(labels: np.ndarray, intensity: np.ndarray, band: int | None = None, row0: int = 0) -> list[dict]:
    """Per-object rows: label, centroid y/x (px), area (px) and mean intensity of the raw image.

    Sums are gathered in bands of rows (default: 1024, fewer beyond 2048 px width: ~2 Mpx per band), so a big
    plane needs no full-size float64 copies. `row0`: the plane row where labels and intensity start when they
    are a window of a bigger plane (centroid_y in plane rows).
    """
    n = int(labels.max())
    if n == 0:
        return []
    from synseg.segment import spots

    intensity = np.asarray(intensity)
    band = band or max(1, min(1024, 2 ** 21 // labels.shape[1]))
    area, sum_y, sum_x, sum_i = (np.zeros(n + 1) for _ in range(4))
    # the objects' pixels only, band by band in raster order: the sums of a whole-band bincount, to the bit
    for rr, cc, lb in spots.object_pixels(labels, band):
        area += np.bincount(lb, minlength=n + 1)
        sum_y += np.bincount(lb, weights=(rr + row0).astype(np.float64), minlength=n + 1)
        sum_x += np.bincount(lb, weights=cc.astype(np.float64), minlength=n + 1)
        sum_i += np.bincount(lb, weights=intensity[rr, cc].astype(np.float64), minlength=n + 1)
    return [{"label": i, "centroid_y": sum_y[i] / area[i], "centroid_x": sum_x[i] / area[i],
             "area_px": int(area[i]), "mean_intensity": sum_i[i] / area[i]} for i in range(1, n + 1) if area[i]]


def skeleton_stats(mask: np.ndarray, band: int = 2048) -> tuple[float, int]:
    """(total skeleton length in px, number of junctions) of a 2D binary mask.

    Length adds 1 for every pair of 4-neighbours and sqrt(2) for every pair of diagonal neighbours on
    the skeleton; a junction is a cluster of skeleton pixels with three or more skeleton neighbours.
    Counted in bands of `band` rows (and junction clusters window by window), so a big plane needs
    no full-size temporaries beyond the skeleton and the junction pixels.
    """
    import cv2
    from skimage.morphology import skeletonize

    from synseg.segment import spots

    sk = skeletonize(np.asarray(mask, bool))
    if not sk.any():
        return 0.0, 0
    kernel = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8)
    straight = diagonal = 0
    hub = np.zeros(sk.shape, bool)
    h = sk.shape[0]
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        # one row of context on either side: pairs across the band edge, neighbours of the edge rows
        a, b = max(0, y0 - 1), min(h, y1 + 1)
        s = sk[a:b].view(np.uint8)
        top = y0 - a  # pairs (r, r+1) with r in y0..y1-1 inside this band (the last band has no r = h-1 pair)
        pairs = slice(top, top + (y1 - y0) - (1 if y1 == h else 0))
        straight += np.count_nonzero(s[pairs] & s[pairs.start + 1:pairs.stop + 1])
        straight += np.count_nonzero(s[top:top + y1 - y0, 1:] & s[top:top + y1 - y0, :-1])
        diagonal += np.count_nonzero(s[pairs, 1:] & s[pairs.start + 1:pairs.stop + 1, :-1])
        diagonal += np.count_nonzero(s[pairs, :-1] & s[pairs.start + 1:pairs.stop + 1, 1:])
        # skeleton neighbours of every pixel (OpenCV: the counts of scipy's convolve, mode constant, 7x faster)
        neighbours = cv2.filter2D(s, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        hub[y0:y1] = sk[y0:y1] & (neighbours[top:top + y1 - y0] >= 3)
    del sk
    junctions = sum(last - first + 1 for _, _, first, last in spots.label_windows(hub))
    return float(straight + math.sqrt(2.0) * diagonal), int(junctions)


# --------------------------------------------------------------------------- measurements

SUMMARY_COLUMNS = ("file", "mask", "shape", "axes", "pixel_size_um", "scale", "threshold", "foreground_fraction",
                   "qc", "expected_score")  # qc.py: "ok" or the reasons, and the expected score beside it
# qc.FIGURES: the figures behind the qc column, the last columns of summary.csv
QC_FIGURES = ("qc_saturated", "qc_zero", "qc_jpeg", "qc_tail", "qc_peak_snr", "qc_extent", "qc_width",
              "qc_blobness", "qc_uncertain", "qc_unexplained", "qc_kept", "qc_elongated", "qc_solid")
# spots.measure_spots: sub-pixel centre of the background-subtracted signal, local background and contrast
SPOT_FIELDS = ("y", "x", "peak", "background", "contrast", "snr", "integrated_intensity", "peak_probability")
OBJECT_FIELDS = ["file", "plane", "label", "centroid_y", "centroid_x", "area", "area_unit", "mean_intensity",
                 *SPOT_FIELDS]


class ObjectMeasure:
    """Vesicles: one row per 8-connected object of the mask (objects.csv); count and mean area per file."""

    columns = ("count", "mean_area", "area_unit")
    uses_prob = True  # peak_probability per object

    def __init__(self, src: Path):
        self.src, self.objects = str(src), []

    def add(self, k: int, mask: np.ndarray, plane: np.ndarray, prob: np.ndarray | None = None) -> None:
        """Measure the mask of plane k; `plane` is the raw image, `prob` the probability map (or None)."""
        from synseg.segment import spots

        number = 0
        # window by window on a big plane (spots.label_windows): no full-size label image
        for y0, labels, first, last in spots.label_windows(mask, margin=spots.RING_MARGIN):
            rows = slice(y0, y0 + len(labels))
            basic = [r for r in object_table(labels, plane[rows], row0=y0) if first <= r["label"] <= last]
            detail = {r["label"]: r for r in spots.measure_spots(plane[rows], labels,
                                                                 None if prob is None else prob[rows], row0=y0)}
            for row in basic:
                extra = detail.get(row["label"], {})
                row.update({key: extra.get(key, "") for key in SPOT_FIELDS})
                number += 1
                row.update(file=self.src, plane=k, label=number)
                self.objects.append(row)
            del labels

    def summary(self, px: float | None) -> dict:
        """Summary columns of the file, in um^2 when the pixel size `px` is known (else px^2)."""
        unit, scale = ("um^2", px * px) if px else ("px^2", 1.0)
        for o in self.objects:
            o["area"], o["area_unit"] = f"{o['area_px'] * scale:.6g}", unit
        mean = f"{np.mean([o['area_px'] for o in self.objects]) * scale:.6g}" if self.objects else ""
        return {"count": len(self.objects), "mean_area": mean, "area_unit": unit}


class SkeletonMeasure:
    """Filaments: total skeleton length and number of junctions per file (no per-object table)."""

    columns = ("skeleton_length", "length_unit", "junctions")
    uses_prob = False

    def __init__(self, src: Path):
        self.objects, self.length_px, self.junctions = [], 0.0, 0

    def add(self, k: int, mask: np.ndarray, plane: np.ndarray, prob: np.ndarray | None = None) -> None:
        """Add the skeleton of plane k's mask."""
        length, junctions = skeleton_stats(mask)
        self.length_px += length
        self.junctions += junctions

    def summary(self, px: float | None) -> dict:
        """Summary columns of the file, in um when the pixel size `px` is known (else px)."""
        return {"skeleton_length": f"{self.length_px * (px or 1.0):.6g}", "length_unit": "um" if px else "px",
                "junctions": self.junctions}

