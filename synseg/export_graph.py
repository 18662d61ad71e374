"""The local-contrast normalisation (normalization.local_contrast) as torch operations, for exported graphs.

    net = LocalContrastNet(unet_model, checkpoint_info["normalization"])   # raw image in, logits out
    torch.jit.trace(net, torch.zeros(1, 1, 97, 99))  /  torch.onnx.export(net, ...)

So a bioimage.io consumer (deepImageJ, ilastik, QuPath, bioimageio.core) that feeds the raw image gets
SynSeg's probability without SynSeg's code. Every step follows normalization.py with ops that trace and export
to ONNX (opset 17) with free sizes:
  - local background: grey opening with the same disc (cv2's elliptic structuring element, radius from the
    checkpoint) and the same mirrored border (OpenCV's BORDER_REFLECT_101 = torch's 'reflect' padding), as an
    erosion then a dilation, each the min / max over the disc's rows of a horizontal max-pool;
  - the noise model (noise_model): the same strided view of a big plane (step = ceil(sqrt(pixels / 2^20)); the
    steps 1..MAX_STEP are all computed and the image's own is picked, so the fit is the same up to 16.7 Mpx),
    the same Gaussian windows (cv2's kernel for the sigma, mirrored borders), the clipped variance, the quantile
    bins of the background level with their medians (sorting; the bins are contiguous in level order), the
    weighted line fit in closed form, the same fall-backs (flat noise, non-negative read noise) and the floor;
  - (x - background) / sqrt(max(alpha * background + beta, floor^2)), then asinh when the spec compresses.
A batch holds independent images (each normalised on its own). tests/test_export_model.py compares it with
normalization.normalize_image.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from synseg import normalization as norm

MAX_STEP = 4  # noise-model strides computed in the graph (planes up to (4 * 1024)^2 px fit exactly as SynSeg does)


def disc_rows(radius: float) -> list[tuple[int, int]]:
    """(dy, half width) of each row of cv2's elliptic structuring element of normalization.local_background."""
    import cv2

    r = max(1, int(round(radius)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    rows = []
    for i, row in enumerate(disc):
        cols = np.flatnonzero(row)
        lo, hi = int(cols.min()), int(cols.max())
        if hi - r != r - lo or len(cols) != hi - lo + 1:
            raise ValueError(f"structuring element of radius {r} is not symmetric rows: {disc}")
        rows.append((i - r, hi - r))
    return rows


def gauss_kernel(sigma: float) -> np.ndarray:
    """cv2.GaussianBlur's kernel for a float32 image and this sigma (size round(8 sigma + 1), odd)."""
    import cv2

    size = int(round(sigma * 4 * 2 + 1)) | 1
    return cv2.getGaussianKernel(size, sigma, cv2.CV_32F)[:, 0]


class Morphology(torch.nn.Module):
    """Grey opening of (B, 1, H, W) by a disc, OpenCV's BORDER_REFLECT_101 borders."""

    def __init__(self, radius: float):
        super().__init__()
        self.rows = disc_rows(radius)
        self.r = max(abs(dy) for dy, _ in self.rows)

    def _filter(self, x: torch.Tensor, sign: float) -> torch.Tensor:
        """sign 1: dilation (max over the disc), -1: erosion (min)."""
        r = self.r
        h, w = x.shape[-2], x.shape[-1]
        p = F.pad(x * sign, (r, r, r, r), mode="reflect")
        out = None
        for dy, half in self.rows:
            pooled = F.max_pool2d(p.narrow(2, r + dy, h), kernel_size=(1, 2 * half + 1), stride=1)
            pooled = pooled.narrow(3, r - half, w)
            out = pooled if out is None else torch.maximum(out, pooled)
        return out * sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._filter(self._filter(x, -1.0), 1.0)


class Gauss(torch.nn.Module):
    """cv2.GaussianBlur(x, (0, 0), sigma, borderType=BORDER_REFLECT_101) of (B, 1, H, W)."""

    def __init__(self, sigma: float):
        super().__init__()
        k = torch.from_numpy(gauss_kernel(sigma).astype(np.float32))
        self.half = len(k) // 2
        self.register_buffer("ky", k.view(1, 1, -1, 1))
        self.register_buffer("kx", k.view(1, 1, 1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.half
        x = F.conv2d(F.pad(x, (0, 0, h, h), mode="reflect"), self.ky)
        return F.conv2d(F.pad(x, (h, h, 0, 0), mode="reflect"), self.kx)


def _median_sorted(sorted_values: torch.Tensor, start: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """np.median of the `count` values from `start` in each row of an ascending (B, N) array (B, K)."""
    last = sorted_values.shape[-1] - 1
    lo = torch.clamp(start + torch.div(count - 1, 2, rounding_mode="floor"), 0, last)
    hi = torch.clamp(start + torch.div(count, 2, rounding_mode="floor"), 0, last)
    return 0.5 * (torch.gather(sorted_values, 1, lo) + torch.gather(sorted_values, 1, hi))


class NoiseFit(torch.nn.Module):
    """normalization.noise_model at one stride: (alpha, beta, floor) per image of the batch, float64."""

    def __init__(self, spec: dict, step: int):
        super().__init__()
        self.step = step
        self.opening = Morphology(max(1.0, float(spec.get("radius", norm.LOCAL_RADIUS)) / step))
        self.gauss = Gauss(max(1.0, float(spec.get("sigma", norm.LOCAL_SIGMA)) / step))
        self.floor_share = float(spec.get("floor", norm.LOCAL_FLOOR))
        self.register_buffer("qs", torch.linspace(0, 1, norm.FIT_BINS + 1, dtype=torch.float64))

    def forward(self, image: torch.Tensor):
        x = image[:, :, ::self.step, ::self.step]
        b = self.opening(x)
        r = x - b
        first = torch.sqrt(torch.clamp(self.gauss(r * r), min=0.0))
        r = torch.minimum(torch.maximum(r, -norm.LOCAL_CLIP * first), norm.LOCAL_CLIP * first)
        var = torch.clamp(self.gauss(r * r), min=0.0).flatten(1).double()
        level = b.flatten(1).double()
        live = var > 0
        n = live.sum(1, keepdim=True)  # (B, 1)
        big = torch.full_like(level, float("inf"))
        lev_sorted = torch.sort(torch.where(live, level, big), dim=1).values
        var_sorted = torch.sort(torch.where(live, var, big), dim=1).values
        zero = torch.zeros_like(n)
        var_median = _median_sorted(var_sorted, zero, n)  # (B, 1)
        # quantile edges of the live levels (np.quantile, linear), duplicates kept but counted once (np.unique)
        pos = self.qs[None, :] * (n - 1).clamp(min=0).double()
        k0 = torch.floor(pos).long()
        k1 = torch.minimum(k0 + 1, (n - 1).clamp(min=0).expand_as(k0))
        a, c = torch.gather(lev_sorted, 1, k0), torch.gather(lev_sorted, 1, k1)
        edges = a + (pos - k0.double()) * (c - a)  # (B, E)
        new = torch.ones_like(edges, dtype=torch.bool)
        new[:, 1:] = edges[:, 1:] != edges[:, :-1]
        n_unique = new.sum(1, keepdim=True)
        # bin of each live level: (unique edges <= level) - 1, clipped to 0 .. n_unique - 2 (np.searchsorted, right)
        below = ((edges[:, None, :] <= lev_sorted[:, :, None]) & new[:, None, :]).sum(2)
        which = torch.clamp(below - 1, min=0)
        which = torch.minimum(which, (n_unique - 2).clamp(min=0).expand_as(which))
        which = torch.where(torch.isfinite(lev_sorted), which, torch.full_like(which, norm.FIT_BINS + 1))
        bins = torch.arange(norm.FIT_BINS, device=image.device)
        counts = (which[:, :, None] == bins[None, None, :]).sum(1)  # (B, K), live pixels per bin
        starts = torch.cumsum(counts, 1) - counts
        xs = _median_sorted(lev_sorted, starts, counts)
        # var sorted within each bin: by bin, then by var (levels are sorted, so the bins are contiguous)
        var_by_level = torch.gather(torch.where(live, var, big),
                                    1, torch.sort(torch.where(live, level, big), dim=1).indices)
        top = torch.clamp(var_sorted.masked_fill(~torch.isfinite(var_sorted), 0.0).amax(1, keepdim=True), min=1e-30)
        key = which.double() + torch.where(torch.isfinite(var_by_level), var_by_level / (top * 1.0001),
                                           torch.zeros_like(var_by_level))
        order = torch.sort(key, dim=1).indices
        ys = _median_sorted(torch.gather(var_by_level, 1, order), starts, counts)
        use = counts >= 16
        weight = torch.where(use, torch.sqrt(counts.double()) / torch.clamp(ys, min=1e-12), torch.zeros_like(ys))
        xs = torch.where(use, xs, torch.zeros_like(xs))
        ys = torch.where(use, ys, torch.zeros_like(ys))
        # np.polyfit(xs, ys, 1, w=weight): least squares of weight * (ys - alpha xs - beta)
        w2 = weight * weight
        sw, sx, sy = w2.sum(1, keepdim=True), (w2 * xs).sum(1, keepdim=True), (w2 * ys).sum(1, keepdim=True)
        sxx, sxy = (w2 * xs * xs).sum(1, keepdim=True), (w2 * xs * ys).sum(1, keepdim=True)
        det = sw * sxx - sx * sx
        safe = torch.where(det != 0, det, torch.ones_like(det))
        alpha_fit = (sw * sxy - sx * sy) / safe
        beta_fit = (sxx * sy - sx * sxy) / safe
        big_x = torch.where(use, xs, torch.full_like(xs, -float("inf"))).amax(1, keepdim=True)
        small_x = torch.where(use, xs, torch.full_like(xs, float("inf"))).amin(1, keepdim=True)
        fits = (use.sum(1, keepdim=True) >= 2) & (big_x > small_x)
        flat = torch.where(use, weight, torch.zeros_like(weight))
        flat_beta = (flat * ys).sum(1, keepdim=True) / torch.clamp(flat.sum(1, keepdim=True), min=1e-300)
        negative = alpha_fit < 0
        # noise_model's fall-backs: too few bins -> flat at the median variance; a falling line -> flat at the
        # bins' weighted mean; a negative read-noise term -> raised to -alpha x the darkest bin's level
        alpha = torch.where(fits & ~negative, alpha_fit, torch.zeros_like(alpha_fit))
        beta_line = torch.where(beta_fit < 0, torch.maximum(beta_fit, -alpha_fit * small_x), beta_fit)
        beta = torch.where(fits, torch.where(negative, flat_beta, beta_line), var_median)
        # the floor: a share of the modelled noise at the median lit (> 0) live background level
        dark = ((lev_sorted <= 0) & torch.isfinite(lev_sorted)).sum(1, keepdim=True)
        lit = n - dark
        typical = torch.where(lit > 0, _median_sorted(lev_sorted, dark, lit), torch.zeros_like(var_median))
        floor = self.floor_share * torch.sqrt(torch.clamp(alpha * typical + beta, min=0.0))
        floor = torch.where(floor > 0, floor, self.floor_share * torch.sqrt(torch.clamp(var_median, min=0.0)))
        none = n == 0
        zero64 = torch.zeros_like(alpha)
        return (torch.where(none, zero64, alpha), torch.where(none, zero64, beta),
                torch.where(none, zero64, torch.nan_to_num(floor)))


class LocalContrast(torch.nn.Module):
    """normalization.normalize_image(x, spec) for mode 'local', on a (B, 1, H, W) float32 batch.

    margin > 0: the noise model is fitted to the input less `margin` px on every side. bioimage.io consumers pad
    the image by the model's halo before running it (bioimageio.core: mirrored), so with margin = halo the fit
    sees exactly the image, as SynSeg's does, and a whole-image prediction equals SynSeg's; a tile with its
    halo of real context is fitted on the tile itself. The input must then be larger than 2 x margin + 32 px.
    """

    def __init__(self, spec: dict, margin: int = 0):
        super().__init__()
        self.margin = int(margin)
        if spec.get("mode") != "local":
            raise ValueError(f"LocalContrast needs a 'local' normalisation, got {spec}")
        self.spec = dict(spec)
        self.opening = Morphology(float(spec.get("radius", norm.LOCAL_RADIUS)))
        self.fits = torch.nn.ModuleList(NoiseFit(spec, s) for s in range(1, MAX_STEP + 1))
        self.asinh = spec.get("compress") == "asinh"

    def model(self, x: torch.Tensor):
        """(alpha, beta, floor), each (B, 1) float64: the fit at the stride noise_model uses for this size."""
        m = self.margin
        if m:
            x = x[:, :, m:x.shape[2] - m, m:x.shape[3] - m]
        pixels = torch.ones_like(x[:, :1]).flatten(1).sum(1, keepdim=True).double()  # traced, not a constant
        step = torch.ceil(torch.sqrt(pixels / float(norm.FIT_PIXELS))).clamp(1, MAX_STEP)
        picked = [torch.zeros_like(pixels) for _ in range(3)]
        for s, fit in enumerate(self.fits, start=1):
            chosen = (step == s).double()
            for i, value in enumerate(fit(x)):
                picked[i] = picked[i] + chosen * value
        return picked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        alpha, beta, floor = self.model(x)
        b = self.opening(x)
        residual = x - b
        f = floor.float()[:, :, None, None]
        noise = torch.sqrt(torch.maximum(b * alpha.float()[:, :, None, None] + beta.float()[:, :, None, None],
                                         f * f))
        z = residual / torch.where(noise > 0, noise, torch.ones_like(noise))
        if self.asinh:  # asinh from log and sqrt: ONNX opset 17 export has no asinh
            a = torch.abs(z)
            z = torch.sign(z) * torch.log(a + torch.sqrt(a * a + 1.0))
        return torch.where(f > 0, z, torch.zeros_like(z))


class LocalContrastNet(torch.nn.Module):
    """A SynSeg U-Net with its local-contrast normalisation in front: raw image in, logits out."""

    def __init__(self, net: torch.nn.Module, spec: dict, margin: int = 0):
        super().__init__()
        self.normalize = LocalContrast(spec, margin)
        self.net = net
        self.depth = getattr(net, "depth", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def noise_model_of(image: np.ndarray, spec: dict) -> dict:
    """The graph's (alpha, beta, floor) of one 2D image, for comparing with normalization.noise_model."""
    with torch.inference_mode():
        values = LocalContrast(spec).model(torch.from_numpy(np.asarray(image, np.float32))[None, None])
    return dict(zip(("alpha", "beta", "floor"), (float(v[0, 0]) for v in values)))


