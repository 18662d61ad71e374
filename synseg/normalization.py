"""Input normalisation: how a raw 2D image of any dtype becomes the float32 a SynSeg network reads.

One spec dict (stored in every checkpoint as "normalization") names the mode; normalization_stats computes the
image-wide numbers once, apply_normalization maps the image or any crop of it with them, so a big plane is
normalised tile by tile without a float copy. NumPy only: no torch here.
"""
from __future__ import annotations

import math

import numpy as np

def normalize_image(image: np.ndarray, spec: dict) -> np.ndarray:
    """Map one 2D image of any dtype to the float32 the network was trained on.

    spec["mode"]:
      "standardize" - (x - mean) / std over the image (zero mean, unit variance);
      "percentile"  - (x - P[low]) / (P[high] - P[low]), defaults low=1, high=99.8;
      "median"      - original SynSeg vesicle rule: x * target / median(x > 0), target 500;
      "minmax255"   - original SynSeg cytoskeleton rule: min-max stretch to 0..255;
      "local"       - local contrast: (x - local background) / local noise (local_contrast), so a faint
                      structure beside a bright region reads the same as on a flat background.
    "standardize", "percentile" and "local" are invariant to global brightness (x -> a*x + b, a > 0).
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
    if mode not in MODES:
        raise ValueError(f"unknown normalization mode {mode!r}; use {', '.join(MODES)}")
    image = np.asarray(image)
    if mode == "local":
        return noise_model(image, spec)
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


def apply_normalization(image: np.ndarray, spec: dict, stats: dict, keep=None) -> np.ndarray:
    """Normalise an image, or any crop of it, with the whole image's `stats` (normalization_stats): float32.
    `keep`: see local_contrast (mode "local" only)."""
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
    if mode == "local":
        return local_contrast(x, spec, stats, keep)
    raise ValueError(f"unknown normalization mode {mode!r}; use {', '.join(MODES)}")


# --------------------------------------------------------------------------- local contrast

MODES = ("standardize", "percentile", "median", "minmax255", "local")
LOCAL_RADIUS = 7.0  # px at the model's pixel size: structures narrower than about 2 x 0.7 um are foreground
LOCAL_SIGMA = 4.0  # px: the window over which local variance is measured to fit the image's noise model
LOCAL_CLIP = 3.0  # residuals beyond this many first-pass noise units do not inflate the variance estimate
LOCAL_FLOOR = 0.25  # the noise is never taken below this fraction of its median over the image
FIT_PIXELS = 2 ** 20  # the noise model is fitted on at most about this many pixels (a strided view)
FIT_BINS = 24  # background-level quantile bins of the noise-model fit


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float32 image, mirrored borders."""
    import cv2

    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)


def _disc_radius(radius: float) -> int:
    """The opening's disc radius in whole px."""
    return max(1, int(round(radius)))


def local_reach(spec: dict) -> int:
    """px from a crop's edge within which local_contrast of the crop may differ from the whole image's (the
    opening erodes, then dilates, by the disc's radius); at an edge the crop shares with the image, none."""
    return 2 * _disc_radius(float(spec.get("radius", LOCAL_RADIUS)))


def local_background(x: np.ndarray, radius: float) -> np.ndarray:
    """Grey opening with a disc of `radius` px (float32): puncta and filaments narrower than the disc go,
    cell bodies, sheets, gradients and their sharp edges stay."""
    import cv2

    r = _disc_radius(radius)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.morphologyEx(np.ascontiguousarray(x, dtype=np.float32), cv2.MORPH_OPEN, disc,
                            borderType=cv2.BORDER_REFLECT_101)


def noise_model(image: np.ndarray, spec: dict) -> dict:
    """The image's noise as a function of its local background level b: variance = alpha * b + beta (shot
    noise plus read noise), fitted to the median local variance in quantile bins of b, so a bright region
    sets the noise of its own pixels only. The window (spec "sigma") is small so that the variance next to a
    bright region is measured mostly on the dark side. Also the floor: LOCAL_FLOOR x the modelled noise at
    the median background level above 0. A big plane is
    fitted on a strided view with the windows shrunk by the same stride.
    """
    image = np.asarray(image)
    step = max(1, int(math.ceil(math.sqrt(image.size / FIT_PIXELS))))
    x = np.ascontiguousarray(image[::step, ::step], dtype=np.float32)
    b = local_background(x, max(1.0, float(spec.get("radius", LOCAL_RADIUS)) / step))
    r = x - b
    sigma = max(1.0, float(spec.get("sigma", LOCAL_SIGMA)) / step)
    first = np.sqrt(np.maximum(_gauss(r * r, sigma), 0.0))
    r = np.clip(r, -LOCAL_CLIP * first, LOCAL_CLIP * first)
    var = np.maximum(_gauss(r * r, sigma), 0.0).ravel()
    level = b.ravel()
    live = var > 0
    if not live.any():
        return {"alpha": 0.0, "beta": 0.0, "floor": 0.0}
    level, var = level[live], var[live]
    edges = np.unique(np.quantile(level, np.linspace(0, 1, FIT_BINS + 1)))
    which = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, max(0, len(edges) - 2))
    xs, ys, ws = [], [], []
    for k in range(max(1, len(edges) - 1)):
        sel = which == k
        if sel.sum() >= 16:
            xs.append(float(np.median(level[sel])))
            ys.append(float(np.median(var[sel])))
            ws.append(float(sel.sum()))
    # relative residuals (weights 1/variance): the dark bins, where faint targets must be seen, count as much
    # as the bright ones whose variance is a hundred times larger
    xs, ys = np.array(xs), np.array(ys)
    ws = np.sqrt(np.array(ws)) / np.maximum(ys, 1e-12)
    alpha, beta = 0.0, float(np.median(var))
    if len(xs) >= 2 and np.ptp(xs) > 0:
        alpha, beta = (float(v) for v in np.polyfit(xs, ys, 1, w=ws))
        if alpha < 0:  # variance falling with brightness is not a camera: take it as flat
            alpha, beta = 0.0, float(np.average(ys, weights=ws))
        elif beta < 0:  # keep the line's slope; its read-noise term cannot be negative at the darkest level
            beta = max(beta, -alpha * float(xs.min()))
    # the floor: a fraction of the noise at the typical lit background (a zero-clipped export has none at 0)
    lit = level[level > 0]
    typical = float(np.median(lit)) if lit.size else 0.0
    floor = float(spec.get("floor", LOCAL_FLOOR) * math.sqrt(max(alpha * typical + beta, 0.0)))
    if floor <= 0:
        floor = float(spec.get("floor", LOCAL_FLOOR) * np.sqrt(np.median(var)))
    return {"alpha": alpha, "beta": beta, "floor": floor}


def local_contrast(x: np.ndarray, spec: dict, model: dict, keep=None) -> np.ndarray:
    """(x - local background) / noise, float32 (mode "local"): a punctum or a filament that stands k noise
    units above its own surroundings reads about k wherever it lies, beside a saturated cell body or on a
    dim edge of the field. Background: local_background (spec "radius"); noise: the image's noise_model at
    that background level, never below its floor. spec "compress": "asinh" maps z to asinh(z) (signed,
    about log(2z) for large z).

    Local: a crop gives the same values as the whole image more than 2 x radius from its edges, so tiles
    with the predictor's margins are normalised on their own with the whole plane's model. A constant
    image maps to zeros.

    `keep`: a function called with the contrast before the compression, bit for bit local_contrast(x, {**spec,
    "compress": None}, model), what the quality check measures (it copies what it needs: the array is then
    compressed in place), so that a plane the network normalises need not be normalised again for the check
    (tiling.plane_probability).
    """
    b = local_background(x, float(spec.get("radius", LOCAL_RADIUS)))
    residual = np.asarray(x, np.float32) - b
    floor = model["floor"]
    if floor <= 0:
        if keep is not None:
            keep(np.zeros_like(residual))
        return np.zeros_like(residual)
    b *= np.float32(model["alpha"])
    b += np.float32(model["beta"])
    np.maximum(b, np.float32(floor * floor), out=b)
    np.sqrt(b, out=b)
    residual /= b
    if keep is not None:
        keep(residual)
    if spec.get("compress") == "asinh":
        # noise and faint structure (|z| < ~2) stay nearly linear; a spot 250 noise units high reads ~6, so
        # the few bright objects of an image do not dominate the network's activations
        np.arcsinh(residual, out=residual)
    return residual
