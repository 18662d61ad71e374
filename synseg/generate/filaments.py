"""Thin fluorescent structures rendered in physical units, with exact masks.

Filaments are worm-like chains (the tangent angle does a random walk with variance ds / Lp per
step ds, Lp the persistence length): nearly straight microtubules, wiggly actin, radial asters,
parallel bundles and dense meshworks. Network organelles come too: ER-like polygon networks of
tubules meeting at three-way junctions (a warped, jittered honeycomb, thinned, with bent tubules) with a
few sheets, and mitochondria-like short, sometimes branched, tubes.

Every thin structure ends up as densely sampled polylines (points at most 1 px apart, all
structures of an image in one vectorised pass) splatted bilinearly into a density image, so
crossings add up and no whole-image array is made per object; tubes wider than the PSF and ER
sheets are filled with cv2. The same points, rounded to pixels, form an 8-connected centreline;
the mask is every pixel whose centre lies within a stated distance of it (dilation by an exact
Euclidean disc), so it is continuous wherever the drawn line is. Coordinates follow synth's pixel
convention: the centre of pixel (i, j) is the point (i, j).

    params = Filaments(er_prob=0.5)                  # or Filaments.from_args(args) after add_args(parser)
    context = synth.Context(pixel_size=0.1, psf_sigma=1.2, cells=cells)
    in_focus, out_of_focus, mask, _, _ = render(rng, (512, 512), params, context)
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from synseg.generate import synth
from synseg.generate.synth import option, span

SCENES = ("cytoskeleton", "er", "mitochondria")
TUBE_PX = 2.0  # wider paths are drawn as solid tubes; thinner ones as lines (their width is below the PSF)
MAX_DENSITY = 2.0  # um of free filament per um^2 of image: about the densest real cortex or tissue


def _prob(flag: str, default: float, help: str):
    return option(flag, default=default, type=float, low=0.0, high=1.0, metavar="P", help=help)


@dataclass(frozen=True)
class Filaments(synth.Flags):
    """Structure parameters: MIN MAX ranges drawn per image (domain randomisation) and mixture probabilities."""

    NEEDS_LEVELS: ClassVar[bool] = False
    COLUMNS: ClassVar[tuple | None] = None  # no per-object table
    MOTION: ClassVar[str] = "continuum"  # in a time-lapse: one structure that drifts, bends, grows (video.py)

    filaments: tuple = span("--filaments", default=(20, 800), low=0, integer=True,
                            help="free filaments per image in a cytoskeleton scene (log-uniform, capped at 2 um "
                                 "of filament per um^2 of image); asters, bundles, meshworks and filopodia come "
                                 "on top")
    filament_length: tuple = span("--filament-length", default=(1.5, 40.0), above=0.0,
                                  help="filament contour length (um; per-image mean log-uniform)")
    persistence_length: tuple = span("--persistence-length", default=(1.0, 150.0), above=0.0,
                                     help="persistence length (um, log-uniform): tens to hundreds for "
                                          "microtubules, ~1-10 for wiggly actin")
    filament_width: tuple = span("--filament-width", default=(0.02, 0.12), above=0.0,
                                 help="physical filament width (um) before blur; most are far below the "
                                      "resolution limit")
    brightness_between: tuple = span("--brightness-between", default=(0.2, 0.7), low=0.0,
                                     help="spread (sd of log brightness) between filaments of one image")
    brightness_along: tuple = span("--brightness-along", default=(0.1, 0.5), low=0.0,
                                   help="spread (sd of log brightness) along a filament: uneven labelling, "
                                        "beads, fading")
    out_of_focus: tuple = span("--out-of-focus", default=(0.0, 0.6), low=0.0, high=1.0,
                               help="fraction of structures out of focus: blurred haze, not in the mask")
    mask_half_width: tuple = span("--mask-half-width", default=(0.1, 0.15), low=0.0,
                                  help="mask = every pixel within this distance of an in-focus centreline "
                                       "(unit: --mask-unit)")
    er_mesh_size: tuple = span("--er-mesh-size", default=(0.8, 3.0), above=0.0,
                               help="typical ER polygon diameter (um)")
    mito_width: tuple = span("--mito-width", default=(0.25, 0.6), above=0.0, help="mitochondrion tube width (um)")
    mask_unit: str = option("--mask-unit", default="um", choices=("um", "px"), help="unit of --mask-half-width")
    aster_prob: float = _prob("--aster-prob", 0.25,
                              "probability that a cytoskeleton image has radial asters around centrosomes")
    bundle_prob: float = _prob("--bundle-prob", 0.4, "probability that a cytoskeleton image has parallel bundles")
    meshwork_prob: float = _prob("--meshwork-prob", 0.3,
                                 "probability that a cytoskeleton image has a dense meshwork of short filaments")
    filopodia_prob: float = _prob("--filopodia-prob", 0.3,
                                  "probability that a cytoskeleton image has filopodia: straight bundles "
                                  "sticking out of the cell edge")
    confine_prob: float = _prob("--confine-prob", 0.7,
                                "probability that structures stay inside the drawn cells (else they fill the "
                                "frame, as in tissue)")
    cortex_prob: float = _prob("--cortex-prob", 0.6,
                               "probability of a bright diffuse rim just inside the cell edge (actin cortex, "
                               "lamellipodium): sharp outside, fading inwards, never in the mask")
    cortex_brightness: tuple = span("--cortex-brightness", default=(0.3, 3.0), low=0.0,
                                    help="peak brightness of the cortex rim relative to a brightness-1 filament")
    aligned_prob: float = _prob("--aligned-prob", 0.5,
                                "probability that an image's filaments share a preferred direction")
    stress_fibre_prob: float = _prob("--stress-fibre-prob", 0.4,
                                     "probability that a cytoskeleton image has stress fibres: long, straight, "
                                     "often faint bundles across the cells, continuous in the mask")
    er_prob: float = _prob("--er-prob", 0.2, "probability that an image is an ER network instead of a cytoskeleton")
    er_cell_prob: float = _prob("--er-cell-prob", 0.7,
                                "probability that an ER image's network fills its cells, packed and bright towards "
                                "the cell middle (unresolved there, labelled only where a tubule stands out), "
                                "sparse and faint at the periphery; else a few uniform patches")
    mito_prob: float = _prob("--mito-prob", 0.1,
                             "probability that an image is a mitochondria network instead of a cytoskeleton")
    label_snr: float = option("--label-snr", default=0.0, type=float, low=0.0,
                              help="leave out of the mask the stretches of in-focus structure that a person "
                                   "could not see: where the line's contrast, averaged over about 0.5 um along "
                                   "it, stays below this many noise s.d. (shot + read noise where it lies; "
                                   "visible_mask); 0 labels everything in focus")

    def __post_init__(self):
        super().__post_init__()
        if self.er_prob + self.mito_prob > 1.0:
            raise ValueError(f"--er-prob + --mito-prob: {self.er_prob} + {self.mito_prob} is outside the "
                             "allowed range [0, 1]")

    @classmethod
    def from_args(cls, args: argparse.Namespace, **values):
        """From parsed arguments; the original --num_curves N means --filaments N N."""
        n = getattr(args, "num_curves", None)
        if n is not None and "filaments" not in values:
            synth.check_value("--num_curves", n, low=0)
            values["filaments"] = (n, n)
        return super().from_args(args, **values)

    def render(self, rng: np.random.Generator, shape, context: synth.Context) -> synth.Rendered:
        """synth's hook: the module's render with these parameters."""
        return render(rng, shape, self, context)

    def relabel(self, out: synth.Rendered, levels: synth.Levels, context: synth.Context) -> np.ndarray:
        """synth's hook, once the image's levels are known: the mask with --label-snr applied (visible_mask)."""
        if self.label_snr <= 0 or not out.mask.any():
            return out.mask
        return visible_mask(out.mask, out.in_focus, levels, context, self.label_snr)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Add the "structures" flags (and the original --num_curves) to a parser."""
    group = parser.add_argument_group("structures", "what is drawn; each MIN MAX range is sampled per image")
    Filaments.add_to(group)
    group.add_argument("--num_curves", "--num-curves", type=int, default=None, metavar="N",
                       help="original SynSeg flag: exactly N free filaments per image (sets --filaments N N)")


# ----------------------------------------------------------------------------------------------
# What a person can see

ALONG_UM = 0.25  # s.d. (um) of the Gaussian average along a line: an eye integrates about 0.5 um of it
MIN_PIECES_PX = 12  # a visible stretch shorter than this many mask pixels is dropped (a speck, not a line)


def visible_mask(mask: np.ndarray, in_focus: np.ndarray, levels: synth.Levels, context: synth.Context,
                 label_snr: float) -> np.ndarray:
    """The mask without the stretches no one could see: the in-focus structure's own photons (in_focus
    blurred by the PSF) over the noise s.d. where it lies (shot noise of the structure, cytoplasm, bright
    regions and background, plus read noise: levels.noise_sd), taken at the line's peak (a max filter over
    the mask's half width), averaged along the mask over ALONG_UM, kept where >= label_snr. Haze, debris and
    the camera's grain are left out of the noise (they make the rule generous). Pure: draws nothing."""
    psf = levels.psf_sigma
    own = synth.blur(in_focus, psf)
    density = own.copy()
    if context.cytoplasm is not None and levels.cytoplasm > 0:
        density += np.float32(levels.cytoplasm) * context.cytoplasm
    if context.bright is not None:
        density += context.bright
    snr = own * np.float32(levels.signal) / levels.noise_sd(density).astype(np.float32)
    reach = max(1, int(math.ceil(1.5 * psf)))
    peak = cv2.dilate(snr, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1)))
    inside = mask.astype(np.float32)
    sigma = max(1.0, ALONG_UM / context.pixel_size)
    along = synth.blur(peak * inside, sigma) / np.maximum(synth.blur(inside, sigma), 1e-6)
    keep = (mask > 0) & (along >= label_snr)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(keep.astype(np.uint8), connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < MIN_PIECES_PX)
    keep[np.isin(labels, small[small > 0])] = False
    return keep.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Sampling helpers


def _around(rng, centre: float, n: int, spread: float, lohi) -> np.ndarray:
    """n values log-normally scattered around `centre`, clipped to the flag's range."""
    return np.clip(centre * np.exp(spread * rng.standard_normal(n)), lohi[0], lohi[1])


class _Sampler:
    """Draws start points inside the cells (or anywhere) and tests whether points are inside."""

    def __init__(self, rng, shape, cells):
        self.rng, self.shape = rng, shape
        self.cells, self._flat = None, None
        if cells is not None and np.any(cells):  # no cell in the frame: structures go anywhere
            self.cells = np.asarray(cells, bool)
            self._flat = np.flatnonzero(self.cells)

    def points(self, n: int) -> np.ndarray:
        """(n, 2) float (y, x) points, inside a cell when cells were given."""
        h, w = self.shape
        if self._flat is None:
            return self.rng.uniform(0, 1, (n, 2)) * [h - 1, w - 1]
        idx = self._flat[self.rng.integers(0, self._flat.size, n)]
        return np.stack([idx // w, idx % w], 1) + self.rng.uniform(-0.5, 0.5, (n, 2))

    def inside(self, yx: np.ndarray, beyond_frame: bool = False) -> np.ndarray:
        """Bool array (yx.shape[:-1]): point lies in a cell (anywhere when no cells) and in the frame.

        With beyond_frame, points outside the frame count as inside (the cells there are unknown).
        """
        h, w = self.shape
        yi = np.rint(yx[..., 0]).astype(np.int64)
        xi = np.rint(yx[..., 1]).astype(np.int64)
        in_frame = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        ok = np.ones(in_frame.shape, bool) if beyond_frame else in_frame.copy()
        if self.cells is not None:
            in_cell = self.cells[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            ok &= in_cell | ~in_frame
        return ok


class _Strokes:
    """Accumulates polylines (in focus or not) as straight segments, then renders them in one pass."""

    def __init__(self):
        self.parts = []  # tuples of arrays: p0 (S,2), p1 (S,2), a0, a1, width_px, closes, in_focus

    def add_flat(self, pts, row, amp, width_px, in_focus):
        """Add polylines stored flat: pts (V, 2), row (V,) path index (each path contiguous), amp (V,).

        width_px and in_focus are per path (indexed by row).
        """
        if len(pts) < 2:
            return
        same = row[1:] == row[:-1]
        i = np.flatnonzero(same)  # segment i joins vertex i to vertex i + 1 of the same path
        if i.size == 0:
            return
        last = np.append(~same, True)  # vertex ends its path
        r = row[i]
        self.parts.append((pts[i], pts[i + 1], amp[i], amp[i + 1], np.asarray(width_px, float)[r],
                           last[i + 1], np.asarray(in_focus, bool)[r]))

    def samples(self, step, min_width):
        """Points along every segment, <= step apart: (y, x, weight, in_focus).

        weight = line density x length per point: a line of amplitude a has density
        a * max(width, min_width) per px of length (min_width = sqrt(2 pi) PSF sigma), so its peak
        after the PSF blur is ~a for lines thinner than the PSF and its area density is a otherwise.
        """
        if not self.parts:
            e = np.zeros(0)
            return e, e, e, np.zeros(0, bool)
        p0, p1, a0, a1, wid, closes, foc = (np.concatenate(c) for c in zip(*self.parts))
        d = p1 - p0
        length = np.hypot(d[:, 0], d[:, 1])
        n = np.maximum(1, np.ceil(length / step)).astype(np.int64)
        cnt = n + closes
        seg = np.repeat(np.arange(len(n)), cnt)
        t = (np.arange(len(seg)) - np.repeat(np.cumsum(cnt) - cnt, cnt)) / n[seg]
        y = p0[seg, 0] + t * d[seg, 0]
        x = p0[seg, 1] + t * d[seg, 1]
        weight = (a0[seg] + t * (a1 - a0)[seg]) * (np.maximum(wid, min_width) * (length / n))[seg]
        return y, x, weight, foc[seg]


def _splat(y, x, weight, shape) -> np.ndarray:
    """Bilinear splat of weighted points into a float32 image (sum over points)."""
    h, w = shape
    keep = (y > -1) & (y < h) & (x > -1) & (x < w)
    y, x, weight = y[keep] + 1, x[keep] + 1, weight[keep]  # one pixel of padding on every side
    y0, x0 = np.floor(y), np.floor(x)
    fy, fx = y - y0, x - x0
    wp = w + 2
    idx = y0.astype(np.int64) * wp + x0.astype(np.int64)
    idx = np.concatenate([idx, idx + 1, idx + wp, idx + wp + 1])
    wts = np.concatenate([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]) * np.tile(weight, 4)
    out = np.bincount(idx, wts, minlength=(h + 2) * wp).reshape(h + 2, wp)
    return out[1:-1, 1:-1].astype(np.float32)


def _mark(core: np.ndarray, y, x, pad: int = 0) -> None:
    """Set the pixels nearest to the points (the rasterised centreline); `core` has `pad` px of margin."""
    h, w = core.shape
    yi, xi = np.floor(y + 0.5).astype(np.int64) + pad, np.floor(x + 0.5).astype(np.int64) + pad
    ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    core.ravel()[yi[ok] * w + xi[ok]] = 1


def _dilate_disc(core: np.ndarray, radius_px: float) -> np.ndarray:
    """Pixels whose centre lies within radius_px of a set pixel's centre (exact Euclidean disc)."""
    r = int(math.floor(radius_px + 1e-6))
    if r < 1:
        return core.copy()
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    kernel = (yy ** 2 + xx ** 2 <= radius_px ** 2 + 1e-6).astype(np.uint8)
    return cv2.dilate(core, kernel)


# ----------------------------------------------------------------------------------------------
# Shapes


def _ar1(x: np.ndarray, rho: float) -> np.ndarray:
    """y[i] = rho * y[i-1] + x[i] along the last axis (y[-1] = 0), vectorised over the other axes.

    Uses y[i] = rho^i * cumsum(rho^-k x[k]) in blocks short enough that rho^-k stays below e^30.
    """
    if rho >= 1.0:
        return np.cumsum(x, axis=-1)
    m = x.shape[-1]
    block = max(1, int(30.0 / -math.log(rho)))
    out = np.empty_like(x)
    carry = np.zeros(x.shape[:-1])
    for s in range(0, m, block):
        k = np.arange(min(block, m - s))
        y = np.cumsum(x[..., s:s + block] * rho ** -k, axis=-1) * rho ** k + carry[..., None] * rho ** (k + 1)
        out[..., s:s + block] = y
        carry = y[..., -1]
    return out


def _worm(rng, start, theta0, n_steps, lp_px, ds, align_px=math.inf):
    """Worm-like chains: (N, M, 2) vertices from `start` with tangent-angle variance ds / Lp per step.

    With a finite align_px the angle relaxes back to theta0 over that length (an Ornstein-Uhlenbeck
    walk), which keeps wiggly filaments running along a shared direction.
    """
    n = len(start)
    m = int(n_steps.max()) + 1 if n else 1
    noise = rng.standard_normal((n, m - 1)) * np.sqrt(ds / lp_px)[:, None]
    if math.isfinite(align_px):
        dev = _ar1(noise, math.exp(-ds / align_px))
    else:
        dev = np.cumsum(noise, axis=1)
    theta = theta0[:, None] + np.concatenate([np.zeros((n, 1)), dev], 1)[:, : m - 1]
    steps = ds * np.stack([np.sin(theta), np.cos(theta)], -1)
    verts = np.concatenate([start[:, None, :], start[:, None, :] + np.cumsum(steps, 1)], 1)
    return verts


def _runs(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For flat paths (each path's vertices contiguous): (run number, index within the run) per vertex."""
    first = np.append(True, row[1:] != row[:-1])
    start = np.maximum.accumulate(np.where(first, np.arange(len(row)), 0))
    return np.cumsum(first) - 1, np.arange(len(row)) - start


def _smooth_along(rng, run, local, corr_samples) -> np.ndarray:
    """Unit-variance random values along flat paths, correlated over ~corr_samples vertices.

    Independent normal knots every corr_samples vertices of each path, linearly interpolated and
    rescaled to unit variance; white noise when corr_samples <= 1.
    """
    if corr_samples <= 1:
        return rng.standard_normal(len(run))
    pos = local / corr_samples
    k0 = np.floor(pos).astype(np.int64)
    f = pos - k0
    knots = np.bincount(run, minlength=run[-1] + 1 if len(run) else 0)  # vertices per path
    knots = np.ceil(knots / corr_samples).astype(np.int64) + 1
    offset = np.cumsum(knots) - knots
    values = rng.standard_normal(int(knots.sum()))
    idx = offset[run] + k0
    return ((1 - f) * values[idx] + f * values[idx + 1]) / np.sqrt((1 - f) ** 2 + f ** 2)


def _brightness_along(rng, row, terms) -> np.ndarray:
    """Lognormal brightness factor (mean ~1) along flat paths: terms = [(sd of log, correlation in vertices)]."""
    run, local = _runs(row)
    log = np.zeros(len(row))
    var = 0.0
    for sd, corr in terms:
        if sd > 0:
            log += sd * _smooth_along(rng, run, local, corr)
            var += sd * sd
    return np.exp(log - var / 2)


def _truncate(sampler, verts, n_steps, free):
    """Vertices kept per path: up to the first one that leaves the cells (all of them where `free`)."""
    m = verts.shape[1]
    n_valid = np.minimum(n_steps + 1, m)
    inside = sampler.inside(verts)
    first_out = np.where(inside.all(1), m, np.argmin(inside, 1))
    return np.where(free, n_valid, np.minimum(n_valid, first_out))


class _Canvas:
    """One image's drawing state: the rng, geometry, the per-image levels drawn from the flags, the strokes
    and the solid layers; the structure builders below draw into it."""

    def __init__(self, rng, shape, pixel_size_um, psf_sigma_px, params: Filaments, cells):
        self.rng, self.shape, self.px = rng, shape, pixel_size_um
        self.sampler = _Sampler(rng, shape, cells)
        self.strokes = _Strokes()
        self.solid_in = np.zeros(shape, np.float32)    # filled sheets / centrosomes (in the mask)
        self.solid_out = None                          # out-of-focus sheets, made on demand
        self.diffuse = None                            # in-focus signal that is not a target (cortex, haze)
        self.unlabelled = _Strokes()                   # sharp lines that are not targets (unresolved ER)
        self.min_width = math.sqrt(2 * math.pi) * max(psf_sigma_px, 0.5)
        self.ds = min(1.0, 0.1 / pixel_size_um)  # vertex step (px): <= 0.1 um keeps wiggly actin smooth
        self.sd_between = synth.draw(rng, params.brightness_between)
        self.sd_along = synth.draw(rng, params.brightness_along)
        self.oof = synth.draw(rng, params.out_of_focus)
        self.beads = rng.uniform(0.1, 0.45)  # punctate labelling along filaments (sd of log brightness)
        self.direction = rng.uniform(0, math.pi)
        # preferred direction (nematic: either way along it), with a von Mises concentration; strongly
        # aligned images also pull wiggly filaments back towards it (an OU walk of the tangent angle)
        self.kappa = synth.draw(rng, (1.0, 40.0), log=True) if rng.random() < params.aligned_prob else 0.0
        self.align_px = (synth.draw(rng, (1.0, 10.0), log=True) / pixel_size_um) if self.kappa > 3 else math.inf

    def um(self, v):
        """Lengths in um -> px (float array)."""
        return np.asarray(v, float) / self.px

    def angles(self, n, aligned=True):
        """Initial directions: around the image's preferred direction (either way) or uniform."""
        if aligned and self.kappa > 0:
            return self.direction + self.rng.vonmises(0.0, self.kappa, n) / 2 + math.pi * self.rng.integers(0, 2, n)
        return self.rng.uniform(0, 2 * math.pi, n)

    def brightness(self, n, scale=1.0):
        """n lognormal brightnesses (mean `scale`) with the image's spread between structures."""
        return scale * np.exp(self.sd_between * self.rng.standard_normal(n) - self.sd_between ** 2 / 2)

    def focus(self, n):
        """n in-focus flags at the image's out-of-focus fraction."""
        return self.rng.random(n) >= self.oof

    def add_worms(self, start, theta, length_um, lp_um, amp, width_um, in_focus, free=None,
                  aligned=False, beads=None):
        """Worm-like filaments from start points; cut where they leave the cells unless `free`."""
        n = len(start)
        if n == 0:
            return
        n_steps = np.maximum(1, np.ceil(self.um(length_um) / self.ds)).astype(np.int64)
        lp_px = self.um(lp_um)
        free = np.zeros(n, bool) if free is None else np.asarray(free)
        align = self.align_px if aligned else math.inf
        # paths of similar length are generated together, so little work goes into padding
        order = np.argsort(n_steps, kind="stable")
        pts, rows = [], []
        lo = 0
        while lo < n:
            hi = int(np.searchsorted(n_steps[order], 1.5 * n_steps[order[lo]], side="right"))
            sel = order[lo:hi]
            verts = _worm(self.rng, start[sel], theta[sel], n_steps[sel], lp_px[sel], self.ds, align)
            n_valid = _truncate(self.sampler, verts, n_steps[sel], free[sel])
            r, c = np.nonzero(np.arange(verts.shape[1])[None, :] < n_valid[:, None])
            pts.append(verts[r, c])
            rows.append(sel[r])
            lo = hi
        pts, rows = np.concatenate(pts), np.concatenate(rows)
        beads = self.beads if beads is None else beads
        corr = self.rng.uniform(0.5, 3.0) / self.px / self.ds
        a = amp[rows] * _brightness_along(self.rng, rows, [(self.sd_along, corr),
                                                            (beads, 0.15 / self.px / self.ds)])
        self.add_flat(pts, rows, a, self.um(width_um), in_focus)

    def add_flat(self, pts, rows, amp, width_px, in_focus):
        """Add flat polylines (see _Strokes.add_flat): thin ones as sampled lines, wide ones as tubes."""
        tube = width_px[rows] > TUBE_PX
        if tube.any():
            self.add_tubes(pts[tube], rows[tube], amp[tube], width_px, in_focus)
        self.strokes.add_flat(pts[~tube], rows[~tube], amp[~tube], width_px, in_focus)

    def add_tubes(self, pts, rows, amp, width_px, in_focus):
        """Wide tubes (mitochondria): solid polylines of their width, one brightness per tube.

        In the mask the whole tube body counts as centreline.
        """
        cut = np.flatnonzero(np.diff(rows)) + 1
        for p, r, a in zip(np.split(pts, cut), np.split(rows, cut), np.split(amp, cut)):
            k = r[0]
            canvas = self.solid_in if in_focus[k] else self.solid_out_canvas()
            poly = np.rint(p[:, ::-1] * 4).astype(np.int32)  # (x, y) with 2 fractional bits
            cv2.polylines(canvas, [poly], False, float(a.mean()), max(1, int(round(width_px[k]))),
                          lineType=cv2.LINE_8, shift=2)

    def diffuse_layer(self):
        """The in-focus, unlabelled diffuse layer, made on first use."""
        if self.diffuse is None:
            self.diffuse = np.zeros(self.shape, np.float32)
        return self.diffuse

    def solid_out_canvas(self):
        """The out-of-focus solid layer, made on first use."""
        if self.solid_out is None:
            self.solid_out = np.zeros(self.shape, np.float32)
        return self.solid_out


# ----------------------------------------------------------------------------------------------
# Structure builders: each draws one kind of structure into a _Canvas


def _free_filaments(canvas: _Canvas, p: Filaments) -> None:
    """Free filaments (--filaments of them, capped by MAX_DENSITY): worm-like chains, mostly aligned."""
    rng = canvas.rng
    lo, hi = p.filaments
    n = int(round(synth.draw(rng, (max(lo, 0.5), max(hi, 0.5)), log=True))) if hi > 0 else 0
    mean_len = synth.draw(rng, p.filament_length, log=True)
    area_um2 = canvas.shape[0] * canvas.shape[1] * canvas.px ** 2
    n = max(min(n, lo), min(n, int(MAX_DENSITY * area_um2 / mean_len)))
    if n == 0:
        return
    length = _around(rng, mean_len, n, 0.5, p.filament_length)
    lp = _around(rng, synth.draw(rng, p.persistence_length, log=True), n, 0.4, p.persistence_length)
    width = _around(rng, synth.draw(rng, p.filament_width, log=True), n, 0.3, p.filament_width)
    start = canvas.sampler.points(n)
    canvas.add_worms(start, canvas.angles(n), length, lp, canvas.brightness(n), width, canvas.focus(n),
                     free=rng.random(n) < 0.1, aligned=True)


def _filopodia(canvas: _Canvas) -> None:
    """Straight, bright actin bundles from just inside the cell edge outwards, not cut at the edge."""
    rng, cells = canvas.rng, canvas.sampler.cells
    if cells is None:
        return
    c8 = cells.astype(np.uint8)
    edge = np.flatnonzero(c8 - cv2.erode(c8, np.ones((3, 3), np.uint8)))
    if edge.size == 0:
        return
    h, w = canvas.shape
    n = int(rng.integers(3, 30))
    # clusters of parallel-ish protrusions around a few edge points
    seeds = edge[rng.integers(0, edge.size, max(1, n // 4))]
    pick = seeds[rng.integers(0, len(seeds), n)]
    yx = np.stack([pick // w, pick % w], 1).astype(float) + rng.normal(0, canvas.um(1.0), (n, 2))
    # outward normal from the cell mask around each point: away from the inside pixels' mean offset
    r = max(2, int(canvas.um(1.0)))
    normal = np.zeros((n, 2))
    for k, (y, x) in enumerate(np.clip(np.rint(yx), 0, [h - 1, w - 1]).astype(int)):
        win = cells[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
        iy, ix = np.nonzero(win)
        if iy.size:
            normal[k] = -(np.mean(iy) + max(0, y - r) - y), -(np.mean(ix) + max(0, x - r) - x)
    ok = np.hypot(*normal.T) > 0.3
    if not ok.any():
        return
    normal, yx = normal[ok], yx[ok]
    theta = np.arctan2(normal[:, 0], normal[:, 1]) + rng.normal(0, 0.3, len(yx))
    back = canvas.um(rng.uniform(0.5, 2.0, len(yx)))
    start = yx - back[:, None] * np.stack([np.sin(theta), np.cos(theta)], 1)
    m = len(yx)
    canvas.add_worms(start, theta, rng.uniform(2.0, 12.0, m), np.full(m, 30.0),
                     canvas.brightness(m, rng.uniform(0.7, 2.0)), np.full(m, 0.15), canvas.focus(m),
                     free=np.ones(m, bool), beads=0.1)


def _cortex(canvas: _Canvas, p: Filaments) -> None:
    """Diffuse bright rim inside the cell edge: a sharp edge the model must not call a filament.

    The fall-off ranges from a thin cortex (0.3 um) to a broad lamella (8 um) that is bright right up
    to a sharp edge, as in the Airyscan actin example.
    """
    rng, cells = canvas.rng, canvas.sampler.cells
    if cells is None:
        return
    c8 = cells.astype(np.uint8)
    dist = cv2.distanceTransform(c8, cv2.DIST_L2, 3)
    rim = cv2.exp(dist * np.float32(-1.0 / canvas.um(synth.draw(rng, (0.3, 8.0), log=True))))
    # patchy along the edge: brighter in some stretches (lamellipodia), fainter in others
    floor = rng.uniform(0.0, 0.8)
    patch = cv2.resize(rng.uniform(floor, 1.0, (8, 8)).astype(np.float32), canvas.shape[::-1],
                       interpolation=cv2.INTER_LINEAR)
    canvas.diffuse_layer()[:] += rim * patch * c8 * np.float32(synth.draw(rng, p.cortex_brightness))


def _stress_fibres(canvas: _Canvas) -> None:
    """3-30 stress fibres: long, nearly straight bundles across the cells, often faint over the bright
    cytoplasm, with uneven brightness along them; each is one continuous line in the mask."""
    rng = canvas.rng
    n = int(rng.integers(3, 31))
    start = canvas.sampler.points(n)
    theta = canvas.angles(n)  # along the image's preferred direction when it has one
    # both ways from the start point, each half stopping where it leaves its cell
    start, theta = np.concatenate([start, start]), np.concatenate([theta, theta + math.pi])
    length = np.tile(rng.uniform(5.0, 40.0, n) / 2, 2)
    lp = np.full(2 * n, synth.draw(rng, (50.0, 500.0), log=True))
    amp = np.tile(canvas.brightness(n, rng.uniform(0.3, 1.0)), 2)
    width = np.tile(rng.uniform(0.1, 0.3, n), 2)
    focus = np.tile(canvas.focus(n), 2)
    canvas.add_worms(start, theta, length, lp, amp, width, focus, free=np.zeros(2 * n, bool), beads=0.1)


def _asters(canvas: _Canvas, p: Filaments) -> None:
    """1-3 radial asters: stiff filaments growing out of a centrosome, which is drawn as a bright spot."""
    rng = canvas.rng
    for centre in canvas.sampler.points(int(rng.integers(1, 4))):
        n = int(rng.integers(8, 50))
        theta = rng.uniform(0, 2 * math.pi, n)
        r0 = canvas.um(rng.uniform(0.2, 0.6))
        start = centre + r0 * np.stack([np.sin(theta), np.cos(theta)], 1)
        hi = max(p.filament_length[1], p.filament_length[0])
        length = rng.uniform(min(3.0, hi), hi, n)
        lp = np.full(n, max(20.0, p.persistence_length[1] / 2))
        focus = np.full(n, rng.random() >= canvas.oof)
        canvas.add_worms(start, theta, length, lp, canvas.brightness(n), np.full(n, p.filament_width[0]),
                         focus, free=np.zeros(n, bool))
        if focus[0]:  # the centrosome: a bright sub-micron spot at the hub, part of the structure
            radius = max(1, int(round(canvas.um(rng.uniform(0.15, 0.4)))))
            cv2.circle(canvas.solid_in, (int(round(centre[1])), int(round(centre[0]))), radius,
                       float(rng.uniform(0.8, 2.5)), -1)


def _bundles(canvas: _Canvas, p: Filaments) -> None:
    """1-6 bundles: 2-8 filaments each running side by side along a shared worm-like axis."""
    rng = canvas.rng
    nb = int(rng.integers(1, 7))
    axis_len = rng.uniform(max(p.filament_length[0], 4.0), max(p.filament_length[1], 5.0), nb)
    lp_axis = np.full(nb, max(10.0, p.persistence_length[1] / 3))
    n_steps = np.maximum(1, np.ceil(canvas.um(axis_len) / canvas.ds)).astype(np.int64)
    axes = _worm(rng, canvas.sampler.points(nb), canvas.angles(nb), n_steps, canvas.um(lp_axis), canvas.ds)
    axis_valid = _truncate(canvas.sampler, axes, n_steps, rng.random(nb) < 0.3)
    tang = np.gradient(axes, axis=1)
    tang /= np.maximum(np.linalg.norm(tang, axis=-1, keepdims=True), 1e-9)
    normal = np.stack([-tang[..., 1], tang[..., 0]], -1)
    members = rng.integers(2, 9, nb)
    b = np.repeat(np.arange(nb), members)
    k = len(b)
    spread = canvas.um(rng.uniform(0.05, 0.35, nb))[b]
    offset = rng.uniform(-0.5, 0.5, k) * spread
    nv = axis_valid[b]
    s = (rng.uniform(0, 0.3, k) * nv).astype(np.int64)
    e = np.maximum(s + 2, (rng.uniform(0.7, 1.0, k) * nv).astype(np.int64))
    idx = np.minimum(s[:, None] + np.arange(axes.shape[1])[None, :], axes.shape[1] - 1)
    verts = axes[b[:, None], idx] + offset[:, None, None] * normal[b[:, None], idx]
    n_valid = np.minimum(e, nv) - s
    focus = np.repeat(rng.random(nb) >= canvas.oof, members)
    corr = canvas.rng.uniform(0.5, 3.0) / canvas.px / canvas.ds
    r, c = np.nonzero(np.arange(verts.shape[1])[None, :] < n_valid[:, None])
    amp = canvas.brightness(k)[r] * _brightness_along(rng, r, [(canvas.sd_along, corr)])
    width = np.full(k, synth.draw(rng, p.filament_width, log=True))
    canvas.add_flat(verts[r, c], r, amp, canvas.um(width), focus)


def _meshwork(canvas: _Canvas, p: Filaments) -> None:
    """1-2 round patches of dense, short, wiggly filaments (a cortical meshwork)."""
    rng = canvas.rng
    for centre in canvas.sampler.points(int(rng.integers(1, 3))):
        radius = canvas.um(rng.uniform(4.0, 25.0))
        n = int(np.clip(rng.uniform(0.3, 1.5) * (radius * canvas.px) ** 2, 10, 1500))
        r = radius * np.sqrt(rng.random(n))
        phi = rng.uniform(0, 2 * math.pi, n)
        start = centre + np.stack([r * np.sin(phi), r * np.cos(phi)], 1)
        length = rng.uniform(0.5, 4.0, n)
        lp = np.exp(rng.uniform(math.log(0.5), math.log(5.0), n))
        canvas.add_worms(start, canvas.angles(n, aligned=rng.random() < 0.5), length, lp,
                         canvas.brightness(n, rng.uniform(0.4, 1.0)), np.full(n, p.filament_width[0]),
                         canvas.focus(n))


def _er_network(canvas: _Canvas, p: Filaments) -> None:
    """ER: a warped, jittered honeycomb of bent tubules in a few patches of the cells, with a few sheets."""
    rng = canvas.rng
    h, w = canvas.shape
    side = canvas.um(synth.draw(rng, p.er_mesh_size)) / 2  # hexagon side; polygon diameter ~ 2 sides
    # the network fills a few patches of the cells and thins out towards the patch edges
    centres = canvas.sampler.points(int(rng.integers(1, 4)))
    radii = canvas.um(rng.uniform(8.0, 30.0, len(centres)))
    y0 = max(0.0, float((centres[:, 0] - radii).min())) - 2 * side
    y1 = min(h - 1.0, float((centres[:, 0] + radii).max())) + 2 * side
    x0 = max(0.0, float((centres[:, 1] - radii).min())) - 2 * side
    x1 = min(w - 1.0, float((centres[:, 1] + radii).max())) + 2 * side
    p0, p1 = _honeycomb(canvas, side, (y0, y1, x0, x1))
    mid = (p0 + p1) / 2
    region = np.zeros(len(mid))
    for centre, rad in zip(centres, radii):
        region = np.maximum(region, 1 - np.hypot(*(mid - centre).T) / rad)
    keep = canvas.sampler.inside(p0, beyond_frame=True) & canvas.sampler.inside(p1, beyond_frame=True)
    keep &= rng.random(len(mid)) < np.clip(region * 3, 0, 1) * (1 - rng.uniform(0.02, 0.15))
    p0, p1 = p0[keep], p1[keep]
    n = _tubules(canvas, p0, p1)
    if n:
        # a few sheets: irregular flat patches on the network, in focus or as haze
        for k in rng.choice(n, size=min(n, int(rng.integers(0, 6))), replace=False):
            _sheet(canvas, p0[k], canvas.um(rng.uniform(0.4, 2.0)), rng.uniform(0.4, 1.0), rng.random() >= canvas.oof)


def _honeycomb(canvas: _Canvas, side: float, box) -> tuple[np.ndarray, np.ndarray]:
    """Edges (p0, p1: (E, 2) px) of a warped, jittered honeycomb of hexagon side `side` px over box (y0, y1, x0, x1)."""
    rng = canvas.rng
    y0, y1, x0, x1 = box
    # honeycomb as a brick wall: vertex (i, j) joins (i, j +- 1) and, when i + j is odd, (i + 1, j)
    ri = np.arange(math.floor(y0 / (1.5 * side)), math.ceil(y1 / (1.5 * side)) + 1)
    cj = np.arange(math.floor(x0 / (0.866 * side)), math.ceil(x1 / (0.866 * side)) + 1)
    ii, jj = np.meshgrid(ri, cj, indexing="ij")
    odd = (ii + jj) % 2 == 1
    pos = np.stack([ii * 1.5 * side + np.where(odd, side / 4, -side / 4), jj * 0.866 * side], -1)
    pos = pos + _warp(canvas, pos) + rng.normal(0, rng.uniform(0.15, 0.35) * side, pos.shape)
    nr, nc = ii.shape
    idx = np.arange(nr * nc).reshape(nr, nc)
    e0 = np.concatenate([idx[:, :-1].ravel(), idx[:-1][odd[:-1]]])
    e1 = np.concatenate([idx[:, 1:].ravel(), idx[1:][odd[:-1]]])
    flat = pos.reshape(-1, 2)
    return flat[e0], flat[e1]


def _tubules(canvas: _Canvas, p0, p1, scale=1.0, labelled: bool = True) -> int:
    """Slightly bent ER tubules from p0 to p1 ((n, 2) px), brightness times `scale` (scalar or (n,));
    unlabelled ones are drawn in focus but kept out of the mask. Returns n."""
    rng = canvas.rng
    n = len(p0)
    if n == 0:
        return 0
    # each tubule slightly bent: five vertices with a sine bow across the edge
    t = np.linspace(0, 1, 5)
    d = p1 - p0
    normal = np.stack([-d[:, 1], d[:, 0]], 1)
    bow = rng.normal(0, 0.08, n)[:, None] * np.sin(np.pi * t)[None, :]
    verts = p0[:, None] + t[None, :, None] * d[:, None] + bow[..., None] * normal[:, None]
    row = np.repeat(np.arange(n), 5)
    amp = (canvas.brightness(n) * scale)[row] * _brightness_along(rng, row, [(canvas.sd_along / 2, 0)])
    width = canvas.um(_around(rng, synth.draw(rng, (0.05, 0.12), log=True), n, 0.3, (0.03, 0.2)))
    focus = rng.random(n) >= canvas.oof / 2
    if labelled:
        canvas.add_flat(verts.reshape(-1, 2), row, amp, width, focus)
    else:
        canvas.unlabelled.add_flat(verts.reshape(-1, 2), row, amp, width, np.ones(n, bool))
    return n


def _centrality(canvas: _Canvas) -> np.ndarray:
    """float32 HxW: 0 at the cell edge rising to 1 deep inside the cells (around a random centre without cells)."""
    rng = canvas.rng
    h, w = canvas.shape
    if canvas.sampler.cells is None:
        cy, cx = canvas.sampler.points(1)[0]
        yy, xx = np.ogrid[:h, :w]
        radius = canvas.um(rng.uniform(15.0, 40.0))
        return np.clip(1 - np.hypot(yy - cy, xx - cx) / radius, 0, 1).astype(np.float32)
    dist = cv2.distanceTransform(canvas.sampler.cells.astype(np.uint8), cv2.DIST_L2, 3)
    return np.clip(dist / max(1.0, float(dist.max()) * rng.uniform(0.6, 0.95)), 0, 1)


def _er_cell(canvas: _Canvas, p: Filaments) -> None:
    """ER filling the cells as in fixed or live cells imaged whole: a coarse, faint, sparse network at the
    periphery, a finer and brighter one towards the middle, and a packed perinuclear zone where tubules,
    sheets and haze are too close to resolve (drawn, not labelled) with only the tubules that stand out
    labelled; often a dark nucleus-sized hole in the middle."""
    rng = canvas.rng
    h, w = canvas.shape
    cent = _centrality(canvas)
    coarse = canvas.um(synth.draw(rng, p.er_mesh_size)) / 2
    # polygons shrink towards the middle, but labelled ones stay resolvable (sides >= 0.4 um)
    fine = max(canvas.um(0.4), coarse * rng.uniform(0.35, 0.7))
    split = rng.uniform(0.2, 0.55)  # centrality where the fine mesh takes over
    core = rng.uniform(0.55, 0.85)  # beyond it the network is packed too tightly to resolve
    hole = rng.uniform(0.85, 0.98) if rng.random() < 0.6 else 2.0  # the nucleus
    floor, gamma = rng.uniform(0.15, 0.5), rng.uniform(0.5, 2.0)  # peripheral brightness, its rise inwards

    def at(pts):
        yi = np.clip(np.rint(pts[:, 0]), 0, h - 1).astype(np.int64)
        xi = np.clip(np.rint(pts[:, 1]), 0, w - 1).astype(np.int64)
        return cent[yi, xi]

    def inside(a, b):
        return canvas.sampler.inside(a, beyond_frame=True) & canvas.sampler.inside(b, beyond_frame=True)

    box = (-2 * coarse, h - 1 + 2 * coarse, -2 * coarse, w - 1 + 2 * coarse)
    sheets = []
    for side, lo, hi in ((coarse, -1.0, split), (fine, split, hole)):
        p0, p1 = _honeycomb(canvas, side, box)
        c0 = at((p0 + p1) / 2)
        c = c0 + rng.normal(0, 0.03, len(p0))  # a ragged border between the two meshes
        keep = inside(p0, p1) & (c >= lo) & (c < hi) & (c0 > 0)
        # the outermost network thins out a little; a few tubules are missing everywhere
        keep &= rng.random(len(p0)) < np.clip(c / 0.1, 0.75, 1.0) * (1 - rng.uniform(0.02, 0.15))
        # in the packed zone only a share of the resolvable tubules stand out (brighter) and are labelled
        packed = c >= core
        keep &= ~packed | (rng.random(len(p0)) < rng.uniform(0.15, 0.5))
        p0, p1, c = p0[keep], p1[keep], c[keep]
        scale = (floor + (1 - floor) * np.clip(c, 0, 1) ** gamma) * np.where(c >= core, rng.uniform(1.0, 1.8), 1.0)
        _tubules(canvas, p0, p1, scale)
        sheets.extend(p0[c >= core][:int(rng.integers(0, 6))])
    # the unresolved part of the packed zone: a sub-resolution mesh and haze, signal but not mask
    packed_mask = (cent >= core) & (cent < hole)
    if packed_mask.any():
        p0, p1 = _honeycomb(canvas, canvas.um(rng.uniform(0.1, 0.18)), box)
        c = at((p0 + p1) / 2)
        keep = inside(p0, p1) & (c >= core) & (c < hole) & (rng.random(len(p0)) < rng.uniform(0.4, 0.9))
        level = rng.uniform(0.2, 0.7)
        _tubules(canvas, p0[keep], p1[keep], level * (floor + (1 - floor) * c[keep] ** gamma), labelled=False)
        ramp = np.clip((cent - core) / 0.1, 0, 1) * (cent < hole)
        haze = synth.blur(ramp.astype(np.float32), canvas.um(0.5)) * np.float32(rng.uniform(0.1, 0.8))
        canvas.diffuse_layer()[:] += haze
        for centre in sheets:  # unresolved sheets in the packed zone
            _sheet(canvas, centre, canvas.um(rng.uniform(0.3, 1.5)), rng.uniform(0.3, 0.8), True, labelled=False)


def _warp(canvas: _Canvas, pos):
    """Smooth displacement (a few long sine waves) so polygon sizes vary across the network."""
    rng = canvas.rng
    out = np.zeros_like(pos)
    for _ in range(3):
        wavelength = canvas.um(rng.uniform(5.0, 25.0))
        k = rng.normal(size=2)
        k *= 2 * math.pi / wavelength / np.linalg.norm(k)
        amp = rng.uniform(0, 0.25) / np.linalg.norm(k)  # slope < 1: the mesh never folds
        out += amp * np.sin(pos @ k + rng.uniform(0, 2 * math.pi))[..., None] * rng.normal(size=2)
    return out


def _sheet(canvas: _Canvas, centre, radius_px, amp, in_focus, labelled: bool = True) -> None:
    """Filled irregular polygon (ER sheet): in the mask when in focus and labelled."""
    rng = canvas.rng
    m = int(rng.integers(7, 13))
    phi = np.sort(rng.uniform(0, 2 * math.pi, m))
    r = radius_px * rng.uniform(0.6, 1.2, m)
    pts = centre + np.stack([r * np.sin(phi), r * np.cos(phi)], 1)
    poly = np.rint(pts[:, ::-1] * 4).astype(np.int32)  # (x, y) with 2 fractional bits
    if not in_focus:
        layer = canvas.solid_out_canvas()
    else:
        layer = canvas.solid_in if labelled else canvas.diffuse_layer()
    cv2.fillPoly(layer, [poly], float(amp), lineType=cv2.LINE_8, shift=2)


def _mitochondria(canvas: _Canvas, p: Filaments) -> None:
    """10-200 mitochondria: short wide tubes, some with a branch leaving at a steep angle."""
    rng = canvas.rng
    n = int(rng.integers(10, 200))
    length = np.exp(rng.uniform(math.log(0.5), math.log(8.0), n))
    width = _around(rng, synth.draw(rng, p.mito_width, log=True), n, 0.15, p.mito_width)
    lp = rng.uniform(1.0, 6.0, n)
    start = canvas.sampler.points(n)
    theta = canvas.angles(n)
    amp, focus = canvas.brightness(n), canvas.focus(n)
    canvas.add_worms(start, theta, length, lp, amp, width, focus, beads=0.1)
    # branches: a shorter tube leaving a point of its parent at a steep angle (same brightness)
    br = np.flatnonzero(rng.random(n) < 0.3)
    if br.size:
        along = rng.uniform(0.2, 0.8, br.size) * length[br]
        bstart = start[br] + canvas.um(along)[:, None] * np.stack([np.sin(theta[br]), np.cos(theta[br])], 1)
        btheta = theta[br] + rng.choice([-1, 1], br.size) * rng.uniform(0.7, 1.6, br.size)
        canvas.add_worms(bstart, btheta, length[br] * rng.uniform(0.3, 0.7, br.size), lp[br], amp[br],
                         width[br], focus[br], beads=0.1)


def render(rng: np.random.Generator, shape: tuple[int, int], params: Filaments,
           context: synth.Context) -> synth.Rendered:
    """Draw one image's structures; returns synth.Rendered with rows None.

    in_focus and out_of_focus are float32 (H, W) densities of relative brightness before any blur (a thin
    filament of brightness 1 peaks near 1 after a Gaussian PSF of context.psf_sigma px); out-of-focus
    structures are meant to be blurred heavily and are not in the mask. The mask is uint8 0/1: every
    pixel within the drawn --mask-half-width of an in-focus centreline (or of an in-focus tube, sheet or
    centrosome body). context.cells (bool H x W) is where structures live; filaments mostly stop at its edge.
    """
    h, w = shape
    p, cells = params, context.cells
    confine = rng.random() < p.confine_prob
    canvas = _Canvas(rng, (h, w), context.pixel_size, context.psf_sigma, p, cells if confine else None)
    scene = rng.choice(len(SCENES), p=[1 - p.er_prob - p.mito_prob, p.er_prob, p.mito_prob])
    if SCENES[scene] == "cytoskeleton":
        _free_filaments(canvas, p)
        if rng.random() < p.aster_prob:
            _asters(canvas, p)
        if rng.random() < p.bundle_prob:
            _bundles(canvas, p)
        if rng.random() < p.meshwork_prob:
            _meshwork(canvas, p)
        if rng.random() < p.filopodia_prob and confine and cells is not None:
            _filopodia(canvas)
        if rng.random() < p.stress_fibre_prob:
            _stress_fibres(canvas)
    elif SCENES[scene] == "er":
        if rng.random() < p.er_cell_prob:
            _er_cell(canvas, p)
        else:
            _er_network(canvas, p)
    else:
        _mitochondria(canvas, p)
    if rng.random() < p.cortex_prob and confine and cells is not None:
        _cortex(canvas, p)

    # points at most 1 px apart keep the rounded centreline 8-connected; a PSF of sigma >= 0.8 px
    # smooths away the ripple of 1 px spacing, a sharper one gets half-pixel spacing
    step = 1.0 if context.psf_sigma >= 0.8 else 0.5
    y, x, weight, focus = canvas.strokes.samples(step, canvas.min_width)
    in_focus = _splat(y[focus], x[focus], weight[focus], (h, w)) + canvas.solid_in
    if canvas.diffuse is not None:
        in_focus += canvas.diffuse
    if canvas.unlabelled.parts:
        uy, ux, uw, _ = canvas.unlabelled.samples(step, canvas.min_width)
        in_focus += _splat(uy, ux, uw, (h, w))
    out_focus = _splat(y[~focus], x[~focus], weight[~focus], (h, w))
    if canvas.solid_out is not None:
        out_focus += canvas.solid_out
    half = synth.draw(rng, p.mask_half_width)
    half_px = half / context.pixel_size if p.mask_unit == "um" else half
    # the centreline is rasterised with a margin, so a line just outside the frame still marks the
    # edge pixels within reach of it
    pad = int(math.floor(half_px)) + 1
    core = np.pad((canvas.solid_in > 0).astype(np.uint8), pad)
    _mark(core, y[focus], x[focus], pad)
    mask = np.ascontiguousarray(_dilate_disc(core, half_px)[pad:-pad, pad:-pad])
    return synth.Rendered(in_focus, out_focus, mask, None)
