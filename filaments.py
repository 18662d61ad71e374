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
Euclidean disc), so it is continuous wherever the drawn line is.

    group = add_filament_args(parser)          # the "structures" flags
    in_focus, out_of_focus, mask = render_structures(rng, (512, 512), 0.1, 1.2, args, cells=cells)
"""
from __future__ import annotations

import argparse
import math

import cv2
import numpy as np

SCENES = ("cytoskeleton", "er", "mitochondria")
TUBE_PX = 2.0  # wider paths are drawn as solid tubes; thinner ones as lines (their width is below the PSF)
MAX_DENSITY = 2.0  # um of free filament per um^2 of image: about the densest real cortex or tissue

# (flag, default MIN MAX, type, help): every range is drawn per image (domain randomisation).
_RANGES = [
    ("--filaments", (20, 800), int,
     "free filaments per image in a cytoskeleton scene (log-uniform, capped at 2 um of filament per um^2 "
     "of image); asters, bundles, meshworks and filopodia come on top"),
    ("--filament-length", (1.5, 40.0), float, "filament contour length (um; per-image mean log-uniform)"),
    ("--persistence-length", (1.0, 150.0), float,
     "persistence length (um, log-uniform): tens to hundreds for microtubules, ~1-10 for wiggly actin"),
    ("--filament-width", (0.02, 0.12), float,
     "physical filament width (um) before blur; most are far below the resolution limit"),
    ("--brightness-between", (0.2, 0.7), float,
     "spread (sd of log brightness) between filaments of one image"),
    ("--brightness-along", (0.1, 0.5), float,
     "spread (sd of log brightness) along a filament: uneven labelling, beads, fading"),
    ("--out-of-focus", (0.0, 0.6), float,
     "fraction of structures out of focus: blurred haze, not in the mask"),
    ("--mask-half-width", (0.1, 0.15), float,
     "mask = every pixel within this distance of an in-focus centreline (unit: --mask-unit)"),
    ("--er-mesh-size", (0.8, 3.0), float, "typical ER polygon diameter (um)"),
    ("--mito-width", (0.25, 0.6), float, "mitochondrion tube width (um)"),
]
_POSITIVE = ("--filament-length", "--persistence-length", "--filament-width", "--er-mesh-size", "--mito-width")
_PROBS = [
    ("--aster-prob", 0.25, "probability that a cytoskeleton image has radial asters around centrosomes"),
    ("--bundle-prob", 0.4, "probability that a cytoskeleton image has parallel bundles"),
    ("--meshwork-prob", 0.3, "probability that a cytoskeleton image has a dense meshwork of short filaments"),
    ("--filopodia-prob", 0.3, "probability that a cytoskeleton image has filopodia: straight bundles "
     "sticking out of the cell edge"),
    ("--confine-prob", 0.7, "probability that structures stay inside the drawn cells (else they fill the "
     "frame, as in tissue)"),
    ("--cortex-prob", 0.5, "probability of a bright diffuse rim just inside the cell edge (actin cortex, "
     "lamellipodium): sharp outside, fading inwards, never in the mask"),
    ("--aligned-prob", 0.5, "probability that an image's filaments share a preferred direction"),
    ("--er-prob", 0.2, "probability that an image is an ER network instead of a cytoskeleton"),
    ("--mito-prob", 0.1, "probability that an image is a mitochondria network instead of a cytoskeleton"),
]


def add_filament_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the "structures" group: MIN MAX ranges drawn per image, and mixture probabilities."""
    group = parser.add_argument_group("structures", "what is drawn; each MIN MAX range is sampled per image")
    for flag, default, typ, help_ in _RANGES:
        group.add_argument(flag, nargs=2, type=typ, default=list(default), metavar=("MIN", "MAX"), help=help_)
    group.add_argument("--mask-unit", choices=("um", "px"), default="um", help="unit of --mask-half-width")
    for flag, default, help_ in _PROBS:
        group.add_argument(flag, type=float, default=default, metavar="P", help=help_)
    group.add_argument("--num_curves", "--num-curves", type=int, default=None, metavar="N",
                       help="original SynSeg flag: exactly N free filaments per image (sets --filaments N N)")
    return group


def check_filament_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fail through parser.error, naming the flag, on impossible structure parameters."""
    if args.num_curves is not None:
        if args.num_curves < 0:
            parser.error(f"--num_curves must be >= 0, got {args.num_curves}")
        args.filaments = [args.num_curves, args.num_curves]
    for flag, _, _, _ in _RANGES:
        lo, hi = getattr(args, _dest(flag))
        positive = flag in _POSITIVE
        if lo < 0 or (lo == 0 and positive):
            parser.error(f"{flag}: MIN must be {'> 0' if positive else '>= 0'}, got {lo}")
        if lo > hi:
            parser.error(f"{flag}: MIN {lo} is above MAX {hi}")
    if args.out_of_focus[1] > 1:
        parser.error(f"--out-of-focus: a fraction must be <= 1, got {args.out_of_focus[1]}")
    for flag, _, _ in _PROBS:
        p = getattr(args, _dest(flag))
        if not 0.0 <= p <= 1.0:
            parser.error(f"{flag} must be a probability in [0, 1], got {p}")
    if args.er_prob + args.mito_prob > 1.0:
        parser.error(f"--er-prob + --mito-prob must be <= 1, got {args.er_prob} + {args.mito_prob}")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


# ----------------------------------------------------------------------------------------------
# Sampling helpers


def _uniform(rng, lohi) -> float:
    lo, hi = lohi
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def _loguniform(rng, lohi) -> float:
    lo, hi = lohi
    return float(lo) if lo == hi else float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


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


class _Image:
    """Per-image state: the rng, geometry, drawn nuisance levels and the stroke list."""

    def __init__(self, rng, shape, pixel_size_um, psf_sigma_px, args, cells):
        self.rng, self.shape, self.px, self.args = rng, shape, pixel_size_um, args
        self.sampler = _Sampler(rng, shape, cells)
        self.strokes = _Strokes()
        self.solid_in = np.zeros(shape, np.float32)    # filled sheets / centrosomes (in the mask)
        self.solid_out = None                          # out-of-focus sheets, made on demand
        self.diffuse = None                            # in-focus signal that is not a target (cortex)
        self.min_width = math.sqrt(2 * math.pi) * max(psf_sigma_px, 0.5)
        self.ds = min(1.0, 0.1 / pixel_size_um)  # vertex step (px): <= 0.1 um keeps wiggly actin smooth
        self.sd_between = _uniform(rng, args.brightness_between)
        self.sd_along = _uniform(rng, args.brightness_along)
        self.oof = _uniform(rng, args.out_of_focus)
        self.beads = rng.uniform(0.1, 0.45)  # punctate labelling along filaments (sd of log brightness)
        self.direction = rng.uniform(0, math.pi)
        # preferred direction (nematic: either way along it), with a von Mises concentration; strongly
        # aligned images also pull wiggly filaments back towards it (an OU walk of the tangent angle)
        self.kappa = _loguniform(rng, (1.0, 40.0)) if rng.random() < args.aligned_prob else 0.0
        self.align_px = (_loguniform(rng, (1.0, 10.0)) / pixel_size_um) if self.kappa > 3 else math.inf

    def um(self, v):
        return np.asarray(v, float) / self.px

    def angles(self, n, aligned=True):
        """Initial directions: around the image's preferred direction (either way) or uniform."""
        if aligned and self.kappa > 0:
            return self.direction + self.rng.vonmises(0.0, self.kappa, n) / 2 + math.pi * self.rng.integers(0, 2, n)
        return self.rng.uniform(0, 2 * math.pi, n)

    def brightness(self, n, scale=1.0):
        return scale * np.exp(self.sd_between * self.rng.standard_normal(n) - self.sd_between ** 2 / 2)

    def focus(self, n):
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

    def solid_out_canvas(self):
        if self.solid_out is None:
            self.solid_out = np.zeros(self.shape, np.float32)
        return self.solid_out

    # -- structures --------------------------------------------------------------------------

    def free_filaments(self):
        a, rng = self.args, self.rng
        lo, hi = a.filaments
        n = int(round(_loguniform(rng, (max(lo, 0.5), max(hi, 0.5))))) if hi > 0 else 0
        mean_len = _loguniform(rng, a.filament_length)
        area_um2 = self.shape[0] * self.shape[1] * self.px ** 2
        n = max(min(n, lo), min(n, int(MAX_DENSITY * area_um2 / mean_len)))
        if n == 0:
            return
        length = _around(rng, mean_len, n, 0.5, a.filament_length)
        lp = _around(rng, _loguniform(rng, a.persistence_length), n, 0.4, a.persistence_length)
        width = _around(rng, _loguniform(rng, a.filament_width), n, 0.3, a.filament_width)
        start = self.sampler.points(n)
        self.add_worms(start, self.angles(n), length, lp, self.brightness(n), width, self.focus(n),
                       free=rng.random(n) < 0.1, aligned=True)

    def filopodia(self):
        """Straight, bright actin bundles from just inside the cell edge outwards, not cut at the edge."""
        rng, cells = self.rng, self.sampler.cells
        if cells is None:
            return
        c8 = cells.astype(np.uint8)
        edge = np.flatnonzero(c8 - cv2.erode(c8, np.ones((3, 3), np.uint8)))
        if edge.size == 0:
            return
        h, w = self.shape
        n = int(rng.integers(3, 30))
        # clusters of parallel-ish protrusions around a few edge points
        seeds = edge[rng.integers(0, edge.size, max(1, n // 4))]
        pick = seeds[rng.integers(0, len(seeds), n)]
        yx = np.stack([pick // w, pick % w], 1).astype(float) + rng.normal(0, self.um(1.0), (n, 2))
        # outward normal from the cell mask around each point: away from the inside pixels' mean offset
        r = max(2, int(self.um(1.0)))
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
        back = self.um(rng.uniform(0.5, 2.0, len(yx)))
        start = yx - back[:, None] * np.stack([np.sin(theta), np.cos(theta)], 1)
        m = len(yx)
        self.add_worms(start, theta, rng.uniform(2.0, 12.0, m), np.full(m, 30.0),
                       self.brightness(m, rng.uniform(0.7, 2.0)), np.full(m, 0.15), self.focus(m),
                       free=np.ones(m, bool), beads=0.1)

    def cortex(self):
        """Diffuse bright rim inside the cell edge: a sharp edge the model must not call a filament."""
        rng, cells = self.rng, self.sampler.cells
        if cells is None:
            return
        c8 = cells.astype(np.uint8)
        dist = cv2.distanceTransform(c8, cv2.DIST_L2, 3)
        rim = cv2.exp(dist * np.float32(-1.0 / self.um(rng.uniform(0.3, 3.0))))
        # patchy along the edge: brighter in some stretches (lamellipodia), faint in others
        patch = cv2.resize(rng.uniform(0.0, 1.0, (8, 8)).astype(np.float32), self.shape[::-1],
                           interpolation=cv2.INTER_LINEAR)
        self.diffuse = rim * patch * c8 * np.float32(rng.uniform(0.3, 2.0))

    def asters(self):
        a, rng = self.args, self.rng
        for centre in self.sampler.points(int(rng.integers(1, 4))):
            n = int(rng.integers(8, 50))
            theta = rng.uniform(0, 2 * math.pi, n)
            r0 = self.um(rng.uniform(0.2, 0.6))
            start = centre + r0 * np.stack([np.sin(theta), np.cos(theta)], 1)
            hi = max(a.filament_length[1], a.filament_length[0])
            length = rng.uniform(min(3.0, hi), hi, n)
            lp = np.full(n, max(20.0, a.persistence_length[1] / 2))
            focus = np.full(n, rng.random() >= self.oof)
            self.add_worms(start, theta, length, lp, self.brightness(n), np.full(n, a.filament_width[0]),
                           focus, free=np.zeros(n, bool))
            if focus[0]:  # the centrosome: a bright sub-micron spot at the hub, part of the structure
                radius = max(1, int(round(self.um(rng.uniform(0.15, 0.4)))))
                cv2.circle(self.solid_in, (int(round(centre[1])), int(round(centre[0]))), radius,
                           float(rng.uniform(0.8, 2.5)), -1)

    def bundles(self):
        a, rng = self.args, self.rng
        nb = int(rng.integers(1, 7))
        axis_len = rng.uniform(max(a.filament_length[0], 4.0), max(a.filament_length[1], 5.0), nb)
        lp_axis = np.full(nb, max(10.0, a.persistence_length[1] / 3))
        n_steps = np.maximum(1, np.ceil(self.um(axis_len) / self.ds)).astype(np.int64)
        axes = _worm(rng, self.sampler.points(nb), self.angles(nb), n_steps, self.um(lp_axis), self.ds)
        axis_valid = _truncate(self.sampler, axes, n_steps, rng.random(nb) < 0.3)
        tang = np.gradient(axes, axis=1)
        tang /= np.maximum(np.linalg.norm(tang, axis=-1, keepdims=True), 1e-9)
        normal = np.stack([-tang[..., 1], tang[..., 0]], -1)
        members = rng.integers(2, 9, nb)
        b = np.repeat(np.arange(nb), members)
        k = len(b)
        spread = self.um(rng.uniform(0.05, 0.35, nb))[b]
        offset = rng.uniform(-0.5, 0.5, k) * spread
        nv = axis_valid[b]
        s = (rng.uniform(0, 0.3, k) * nv).astype(np.int64)
        e = np.maximum(s + 2, (rng.uniform(0.7, 1.0, k) * nv).astype(np.int64))
        idx = np.minimum(s[:, None] + np.arange(axes.shape[1])[None, :], axes.shape[1] - 1)
        verts = axes[b[:, None], idx] + offset[:, None, None] * normal[b[:, None], idx]
        n_valid = np.minimum(e, nv) - s
        focus = np.repeat(rng.random(nb) >= self.oof, members)
        corr = self.rng.uniform(0.5, 3.0) / self.px / self.ds
        r, c = np.nonzero(np.arange(verts.shape[1])[None, :] < n_valid[:, None])
        amp = self.brightness(k)[r] * _brightness_along(rng, r, [(self.sd_along, corr)])
        width = np.full(k, _loguniform(rng, a.filament_width))
        self.add_flat(verts[r, c], r, amp, self.um(width), focus)

    def meshwork(self):
        a, rng = self.args, self.rng
        for centre in self.sampler.points(int(rng.integers(1, 3))):
            radius = self.um(rng.uniform(4.0, 25.0))
            n = int(np.clip(rng.uniform(0.3, 1.5) * (radius * self.px) ** 2, 10, 1500))
            r = radius * np.sqrt(rng.random(n))
            phi = rng.uniform(0, 2 * math.pi, n)
            start = centre + np.stack([r * np.sin(phi), r * np.cos(phi)], 1)
            length = rng.uniform(0.5, 4.0, n)
            lp = np.exp(rng.uniform(math.log(0.5), math.log(5.0), n))
            self.add_worms(start, self.angles(n, aligned=rng.random() < 0.5), length, lp,
                           self.brightness(n, rng.uniform(0.4, 1.0)), np.full(n, a.filament_width[0]),
                           self.focus(n))

    def er_network(self):
        a, rng = self.args, self.rng
        h, w = self.shape
        side = self.um(_uniform(rng, a.er_mesh_size)) / 2  # hexagon side; polygon diameter ~ 2 sides
        # the network fills a few patches of the cells and thins out towards the patch edges
        centres = self.sampler.points(int(rng.integers(1, 4)))
        radii = self.um(rng.uniform(8.0, 30.0, len(centres)))
        y0 = max(0.0, float((centres[:, 0] - radii).min())) - 2 * side
        y1 = min(h - 1.0, float((centres[:, 0] + radii).max())) + 2 * side
        x0 = max(0.0, float((centres[:, 1] - radii).min())) - 2 * side
        x1 = min(w - 1.0, float((centres[:, 1] + radii).max())) + 2 * side
        # honeycomb as a brick wall: vertex (i, j) joins (i, j +- 1) and, when i + j is odd, (i + 1, j)
        ri = np.arange(math.floor(y0 / (1.5 * side)), math.ceil(y1 / (1.5 * side)) + 1)
        cj = np.arange(math.floor(x0 / (0.866 * side)), math.ceil(x1 / (0.866 * side)) + 1)
        ii, jj = np.meshgrid(ri, cj, indexing="ij")
        odd = (ii + jj) % 2 == 1
        pos = np.stack([ii * 1.5 * side + np.where(odd, side / 4, -side / 4), jj * 0.866 * side], -1)
        pos = pos + self._warp(pos) + rng.normal(0, rng.uniform(0.15, 0.35) * side, pos.shape)
        nr, nc = ii.shape
        idx = np.arange(nr * nc).reshape(nr, nc)
        e0 = np.concatenate([idx[:, :-1].ravel(), idx[:-1][odd[:-1]]])
        e1 = np.concatenate([idx[:, 1:].ravel(), idx[1:][odd[:-1]]])
        flat = pos.reshape(-1, 2)
        p0, p1 = flat[e0], flat[e1]
        mid = (p0 + p1) / 2
        region = np.zeros(len(mid))
        for centre, rad in zip(centres, radii):
            region = np.maximum(region, 1 - np.hypot(*(mid - centre).T) / rad)
        keep = self.sampler.inside(p0, beyond_frame=True) & self.sampler.inside(p1, beyond_frame=True)
        keep &= rng.random(len(mid)) < np.clip(region * 3, 0, 1) * (1 - rng.uniform(0.02, 0.15))
        p0, p1 = p0[keep], p1[keep]
        n = len(p0)
        if n:
            # each tubule slightly bent: five vertices with a sine bow across the edge
            t = np.linspace(0, 1, 5)
            d = p1 - p0
            normal = np.stack([-d[:, 1], d[:, 0]], 1)
            bow = rng.normal(0, 0.08, n)[:, None] * np.sin(np.pi * t)[None, :]
            verts = p0[:, None] + t[None, :, None] * d[:, None] + bow[..., None] * normal[:, None]
            row = np.repeat(np.arange(n), 5)
            amp = self.brightness(n)[row] * _brightness_along(rng, row, [(self.sd_along / 2, 0)])
            width = self.um(_around(rng, _loguniform(rng, (0.05, 0.12)), n, 0.3, (0.03, 0.2)))
            self.add_flat(verts.reshape(-1, 2), row, amp, width, rng.random(n) >= self.oof / 2)
            # a few sheets: irregular flat patches on the network, in focus or as haze
            for k in rng.choice(n, size=min(n, int(rng.integers(0, 6))), replace=False):
                self.sheet(p0[k], self.um(rng.uniform(0.4, 2.0)), rng.uniform(0.4, 1.0), rng.random() >= self.oof)

    def _warp(self, pos):
        """Smooth displacement (a few long sine waves) so polygon sizes vary across the network."""
        rng = self.rng
        out = np.zeros_like(pos)
        for _ in range(3):
            wavelength = self.um(rng.uniform(5.0, 25.0))
            k = rng.normal(size=2)
            k *= 2 * math.pi / wavelength / np.linalg.norm(k)
            amp = rng.uniform(0, 0.25) / np.linalg.norm(k)  # slope < 1: the mesh never folds
            out += amp * np.sin(pos @ k + rng.uniform(0, 2 * math.pi))[..., None] * rng.normal(size=2)
        return out

    def sheet(self, centre, radius_px, amp, in_focus):
        """Filled irregular polygon (ER sheet): in the mask when in focus."""
        rng = self.rng
        m = int(rng.integers(7, 13))
        phi = np.sort(rng.uniform(0, 2 * math.pi, m))
        r = radius_px * rng.uniform(0.6, 1.2, m)
        pts = centre + np.stack([r * np.sin(phi), r * np.cos(phi)], 1)
        poly = np.rint(pts[:, ::-1] * 4).astype(np.int32)  # (x, y) with 2 fractional bits
        canvas = self.solid_in if in_focus else self.solid_out_canvas()
        cv2.fillPoly(canvas, [poly], float(amp), lineType=cv2.LINE_8, shift=2)

    def mitochondria(self):
        a, rng = self.args, self.rng
        n = int(rng.integers(10, 200))
        length = np.exp(rng.uniform(math.log(0.5), math.log(8.0), n))
        width = _around(rng, _loguniform(rng, a.mito_width), n, 0.15, a.mito_width)
        lp = rng.uniform(1.0, 6.0, n)
        start = self.sampler.points(n)
        theta = self.angles(n)
        amp, focus = self.brightness(n), self.focus(n)
        self.add_worms(start, theta, length, lp, amp, width, focus, beads=0.1)
        # branches: a shorter tube leaving a point of its parent at a steep angle (same brightness)
        br = np.flatnonzero(rng.random(n) < 0.3)
        if br.size:
            along = rng.uniform(0.2, 0.8, br.size) * length[br]
            bstart = start[br] + self.um(along)[:, None] * np.stack([np.sin(theta[br]), np.cos(theta[br])], 1)
            btheta = theta[br] + rng.choice([-1, 1], br.size) * rng.uniform(0.7, 1.6, br.size)
            self.add_worms(bstart, btheta, length[br] * rng.uniform(0.3, 0.7, br.size), lp[br], amp[br],
                           width[br], focus[br], beads=0.1)


def render_structures(rng: np.random.Generator, shape: tuple[int, int], pixel_size_um: float,
                      psf_sigma_px: float, args: argparse.Namespace, cells: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image's structures.

    Returns (in_focus, out_of_focus, mask): in_focus and out_of_focus are float32 (H, W) densities
    of relative brightness before any blur (a thin filament of brightness 1 peaks near 1 after a
    Gaussian PSF of psf_sigma_px); out-of-focus structures are meant to be blurred heavily and are
    not in the mask. mask is uint8 0/1: every pixel within the drawn --mask-half-width of an
    in-focus centreline (or of an in-focus tube, sheet or centrosome body). `cells` (bool H x W)
    is where structures live; filaments mostly stop at its edge.
    """
    h, w = shape
    confine = rng.random() < args.confine_prob
    img = _Image(rng, (h, w), pixel_size_um, psf_sigma_px, args, cells if confine else None)
    scene = rng.choice(len(SCENES), p=[1 - args.er_prob - args.mito_prob, args.er_prob, args.mito_prob])
    if SCENES[scene] == "cytoskeleton":
        img.free_filaments()
        if rng.random() < args.aster_prob:
            img.asters()
        if rng.random() < args.bundle_prob:
            img.bundles()
        if rng.random() < args.meshwork_prob:
            img.meshwork()
        if rng.random() < args.filopodia_prob and confine and cells is not None:
            img.filopodia()
    elif SCENES[scene] == "er":
        img.er_network()
    else:
        img.mitochondria()
    if rng.random() < args.cortex_prob and confine and cells is not None:
        img.cortex()

    # points at most 1 px apart keep the rounded centreline 8-connected; a PSF of sigma >= 0.8 px
    # smooths away the ripple of 1 px spacing, a sharper one gets half-pixel spacing
    step = 1.0 if psf_sigma_px >= 0.8 else 0.5
    y, x, weight, focus = img.strokes.samples(step, img.min_width)
    in_focus = _splat(y[focus], x[focus], weight[focus], (h, w)) + img.solid_in
    if img.diffuse is not None:
        in_focus += img.diffuse
    out_focus = _splat(y[~focus], x[~focus], weight[~focus], (h, w))
    if img.solid_out is not None:
        out_focus += img.solid_out
    half = _uniform(rng, args.mask_half_width)
    half_px = half / pixel_size_um if args.mask_unit == "um" else half
    # the centreline is rasterised with a margin, so a line just outside the frame still marks the
    # edge pixels within reach of it
    pad = int(math.floor(half_px)) + 1
    core = np.pad((img.solid_in > 0).astype(np.uint8), pad)
    _mark(core, y[focus], x[focus], pad)
    mask = np.ascontiguousarray(_dilate_disc(core, half_px)[pad:-pad, pad:-pad])
    return in_focus, out_focus, mask
