"""Input normalisation: how a raw 2D image of any dtype becomes the float32 a SynSeg network reads.

One spec dict (stored in every checkpoint as "normalization") names the mode; normalization_stats computes the
image-wide numbers once, apply_normalization maps the image or any crop of it with them, so a big plane is
normalised tile by tile without a float copy. NumPy only: no torch here.
"""
from __future__ import annotations

import math

import numpy as np

# How the original SynSeg scripts fed pixels to their two networks.
ORIGINAL_NORMALIZATION = {
    "vesicle": {"mode": "median", "target": 500.0},
    "cytoskeleton": {"mode": "minmax255"},
}


def normalize_image(image: np.ndarray, spec: dict) -> np.ndarray:
    """Map one 2D image of any dtype to the float32 the network was trained on.

    spec["mode"]:
      "standardize" - (x - mean) / std over the image (zero mean, unit variance);
      "percentile"  - (x - P[low]) / (P[high] - P[low]), defaults low=1, high=99.8;
      "median"      - original SynSeg vesicle rule: x * target / median(x > 0), target 500;
      "minmax255"   - original SynSeg cytoskeleton rule: min-max stretch to 0..255.
    The first two are invariant to global brightness (x -> a*x + b, a > 0).
    A constant image maps to all zeros instead of dividing by zero.
    Same as apply_normalization(image, spec, normalization_stats(image, spec)).
    """
    return apply_normalization(image, spec, normalization_stats(image, spec))


def _histogram(image: np.ndarray, band: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) of an integer image of at most 16 bits, counted in bands of rows (no full-size copies)."""
    lo, hi = int(image.min()), int(image.max())
    counts = np.zeros(hi - lo + 1, np.int64)
    flat = image.reshape(image.shape[0], -1) if image.ndim > 1 else image.reshape(1, -1)
    for r in range(0, flat.shape[0], band):
        counts += np.bincount((flat[r:r + band].ravel().astype(np.int32) - lo), minlength=counts.size)
    values = np.arange(lo, hi + 1, dtype=np.float64)
    keep = counts > 0
    return values[keep], counts[keep]


def _percentiles(values: np.ndarray, counts: np.ndarray, qs) -> list[float]:
    """np.percentile's default (linear) rule on the sorted data that (values, counts) describe."""
    ends = np.cumsum(counts)  # sorted position k holds values[searchsorted(ends, k, 'right')]
    n = int(ends[-1])
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        k = int(math.floor(pos))
        a = values[np.searchsorted(ends, k, side="right")]
        b = values[np.searchsorted(ends, min(k + 1, n - 1), side="right")]
        out.append(float(a + (pos - k) * (b - a)))
    return out


def normalization_stats(image: np.ndarray, spec: dict) -> dict:
    """The image-wide numbers a normalisation mode needs: mean/std, low/high percentiles, median of the
    positive pixels, or min/max.

    Integer images of up to 16 bits are counted in a histogram, so a 20000 x 20000 plane needs no float copy;
    other images are read as float32, as normalize_image always did.
    """
    mode = spec.get("mode", "standardize")
    if mode not in ("standardize", "percentile", "median", "minmax255"):
        raise ValueError(f"unknown normalization mode {mode!r}; use standardize, percentile, median or minmax255")
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer) and image.dtype.itemsize <= 2 and image.size:
        values, counts = _histogram(image)
        if mode == "standardize":
            n = counts.sum()
            mean = float((values * counts).sum() / n)
            return {"mean": mean, "std": float(math.sqrt((counts * (values - mean) ** 2).sum() / n))}
        if mode == "percentile":
            lo, hi = _percentiles(values, counts, (spec.get("low", 1.0), spec.get("high", 99.8)))
            return {"lo": lo, "hi": hi if hi > lo else float(values[-1])}
        if mode == "median":
            pos = values > 0
            return {"median": _percentiles(values[pos], counts[pos], (50.0,))[0] if pos.any() else 0.0}
        return {"min": float(values[0]), "max": float(values[-1])}
    x = np.asarray(image, dtype=np.float32)
    if mode == "standardize":
        return {"mean": float(x.mean()), "std": float(x.std())}
    if mode == "percentile":
        lo, hi = (float(v) for v in np.percentile(x, [spec.get("low", 1.0), spec.get("high", 99.8)]))
        return {"lo": lo, "hi": hi if hi > lo else float(x.max())}
    if mode == "median":
        pos = x[x > 0]
        return {"median": float(np.median(pos)) if pos.size else 0.0}
    return {"min": float(x.min()), "max": float(x.max())}


def apply_normalization(image: np.ndarray, spec: dict, stats: dict) -> np.ndarray:
    """Normalise an image, or any crop of it, with the whole image's `stats` (normalization_stats): float32."""
    x = np.asarray(image, dtype=np.float32)
    mode = spec.get("mode", "standardize")
    if mode == "standardize":
        std = stats["std"]
        return (x - np.float32(stats["mean"])) / np.float32(std) if std > 0 else np.zeros_like(x)
    if mode == "percentile":
        lo, hi = stats["lo"], stats["hi"]
        return ((x - lo) / np.float32(hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(x)
    if mode == "median":
        med = stats["median"]
        return x * np.float32(spec.get("target", 500.0) / med) if med > 0 else x
    if mode == "minmax255":
        lo, hi = stats["min"], stats["max"]
        return (x - lo) * np.float32(255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
    raise ValueError(f"unknown normalization mode {mode!r}; use standardize, percentile, median or minmax255")
