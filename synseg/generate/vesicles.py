"""Vesicles and puncta: layout, brightness from a target SNR, anti-aliased rendering and the exact mask.

Vesicles range from below the resolution limit to about 1 um across, round to slightly elliptical,
mostly inside cells and partly in clusters, some touching. Each image draws a window of peak
signal-to-noise ratios and of sizes from the flag ranges, so a dataset spans faint and bright, small and
large, sparse and crowded. The mask covers each labelled in-focus vesicle's half-maximum footprint (for a
sub-resolution vesicle, the PSF core: radius ~1.18 PSF sigma); touching vesicles are kept apart by
metrics.separate_touching, so that connected components count them one by one. Out-of-focus vesicles
are only blurred haze, never in the mask. Coordinates follow synth's pixel convention (the centre of
pixel (i, j) is the point (i, j)), in the per-vesicle rows too.

    params = Vesicles(num_spots=(50, 50))             # or Vesicles.from_args(args) after add_args(parser)
    scene = synth.Scene(params, image_size=256)
    image, mask, rows = synth.render_one(synth.image_rng(0, 0), scene)
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.spatial import cKDTree

from synseg import metrics
from synseg.generate import synth
from synseg.generate.synth import option, span

HALF_MAX = math.sqrt(2.0 * math.log(2.0))  # half-width at half-maximum of a Gaussian, in sigmas
COLUMNS = ("y", "x", "radius", "brightness")  # per-vesicle rows: centre (px), radius (px), peak density


@dataclass(frozen=True)
class Vesicles(synth.Flags):
    """Vesicle parameters: MIN MAX ranges drawn per image, and the labelling cut-offs."""

    NEEDS_LEVELS: ClassVar[bool] = True  # brightness follows the image's noise (a target SNR)
    COLUMNS: ClassVar[tuple] = COLUMNS
    MOTION: ClassVar[str] = "particles"  # in a time-lapse: separate vesicles that move (video.py)

    num_spots: tuple = span("--num-spots", default=(30, 1200), low=0,
                            help="vesicles per image (log-uniform), in focus and out of focus")
    radius: tuple = span("--radius", default=(0.02, 0.5), low=0.001,
                         help="vesicle radius in um (log-uniform); 0.5 um = 1 um across")
    radius_spread: tuple = span("--radius-spread", default=(1.5, 25.0), low=1.0,
                                help="ratio of the largest to the smallest radius within one image")
    aspect: tuple = span("--aspect", default=(1.0, 1.35), low=1.0, help="long over short axis (1 = round)")
    snr: tuple = span("--snr", default=(1.5, 250.0), low=0.01,
                      help="peak signal-to-noise ratio of an in-focus vesicle (log-uniform)")
    label_snr: float = option("--label-snr", default=3.0, type=float, low=0.0,
                              help="in-focus vesicles with a lower peak SNR (against the noise where they lie) "
                                   "are drawn but left out of the mask (not detectable); 0 labels all")
    label_relative: float = option("--label-relative", default=0.0, type=float, low=0.0, below=1.0,
                                   help="in-focus vesicles dimmer than this fraction of the image's bright ones "
                                        "(90th percentile SNR) are drawn but left out of the mask; 0 turns it off")
    snr_spread: tuple = span("--snr-spread", default=(2.0, 30.0), low=1.0,
                             help="ratio of the brightest to the dimmest vesicle SNR within one image")
    cluster_fraction: tuple = span("--cluster-fraction", default=(0.0, 0.6), low=0.0, high=1.0,
                                   help="fraction of vesicles placed in clusters")
    cluster_size: tuple = span("--cluster-size", default=(0.3, 1.5), low=0.0, help="cluster spread (s.d.) in um")
    touching_fraction: tuple = span("--touching-fraction", default=(0.0, 0.25), low=0.0, high=1.0,
                                    help="fraction of vesicles placed right against another one")
    out_of_focus: tuple = span("--out-of-focus", default=(0.0, 0.3), low=0.0, high=1.0,
                               help="fraction of vesicles out of focus (blurred haze, not in the mask)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, **values):
        """From parsed arguments; the original --min_radius/--max_radius (pixels) become um here."""
        old = getattr(args, "radius_px", None)
        if old is not None and "radius" not in values:
            values["radius"] = tuple(v * args.pixel_size if v is not None else r for v, r in zip(old, args.radius))
        return super().from_args(args, **values)

    def render(self, rng: np.random.Generator, shape, context: synth.Context) -> synth.Rendered:
        """synth's hook: the module's render with these parameters."""
        return render(rng, shape, self, context)


class _OldBound(argparse.Action):
    """Original SynSeg flags that set one end of a range: --num_spots_min 300 -> num_spots[0] = 300."""

    def __init__(self, option_strings, dest, end=0, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.end = end

    def __call__(self, parser, namespace, value, option_string=None):
        bounds = list(getattr(namespace, self.dest) or (None, None))
        bounds[self.end] = value
        setattr(namespace, self.dest, bounds)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Add the vesicle flags (and the original SynSeg spellings) to a parser."""
    group = parser.add_argument_group("vesicles (MIN MAX, drawn per image)")
    Vesicles.add_to(group)
    # Original SynSeg spellings: one end of a range each (radius in px there, brightness unused now).
    for flag, dest, typ, end in (("--num_spots_min", "num_spots", int, 0), ("--num_spots_max", "num_spots", int, 1),
                                 ("--min_radius", "radius_px", float, 0), ("--max_radius", "radius_px", float, 1)):
        group.add_argument(flag, dest=dest, type=typ, action=_OldBound, end=end, help=argparse.SUPPRESS)
    parser.set_defaults(radius_px=None)


# --------------------------------------------------------------------------- layout

def sub_range(rng: np.random.Generator, bounds, spread) -> tuple[float, float]:
    """A per-image window inside [MIN, MAX] on a log scale, at most `spread` (a ratio) wide."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if hi <= lo or lo <= 0:
        return lo, hi
    width = min(math.log(synth.draw(rng, spread, log=True)), math.log(hi / lo))
    start = rng.uniform(math.log(lo), max(math.log(lo), math.log(hi) - width))
    return math.exp(start), min(hi, math.exp(start + width))


# The layout below measures positions from the frame's top-left corner (pixel i spans [i, i + 1)):
# that is how the original renderer did its arithmetic, and keeping it keeps the images byte for byte.
# draw_vesicles returns centres in synth's convention (pixel i centred on i), and _local_grids goes back.
_CORNER = 0.5


def draw_positions(rng: np.random.Generator, n: int, cells: np.ndarray | None, cluster_fraction: float,
                   cluster_sd_px: float, shape) -> np.ndarray:
    """(n, 2) float centres (y, x) from the top-left corner: mostly inside cells, a fraction in tight clusters."""
    h, w = shape
    inside = np.flatnonzero(cells) if cells is not None else np.zeros(0, np.int64)
    if inside.size < 16:  # no cell in view: anywhere
        return np.stack([rng.uniform(0, h, n), rng.uniform(0, w, n)], axis=1)
    n_cluster = int(round(n * cluster_fraction))
    n_free = n - n_cluster
    n_out = rng.binomial(n_free, 0.05)  # a few outside cells, as in real images
    picks = inside[rng.integers(0, inside.size, n_free - n_out)]
    free = np.stack([picks // w, picks % w], axis=1) + rng.uniform(0, 1, (picks.size, 2))
    out = np.stack([rng.uniform(0, h, n_out), rng.uniform(0, w, n_out)], axis=1)
    parts = [free, out]
    if n_cluster:
        n_centres = max(1, int(round(n_cluster / rng.uniform(3, 12))))
        centres = inside[rng.integers(0, inside.size, n_centres)]
        centres = np.stack([centres // w, centres % w], axis=1).astype(float)
        member = centres[rng.integers(0, n_centres, n_cluster)]
        parts.append(member + rng.normal(0, cluster_sd_px, (n_cluster, 2)))
    pos = np.concatenate(parts, axis=0)
    return pos[rng.permutation(len(pos))]


def crowded(pos: np.ndarray, half: np.ndarray, in_focus: np.ndarray, overlap: float = 0.9) -> np.ndarray:
    """Bool per vesicle: in focus and closer than overlap * (sum of footprint radii) to an earlier
    in-focus vesicle, i.e. the two would merge into one blob that no one could count as two."""
    clash = np.zeros(len(pos), bool)
    focus = np.flatnonzero(in_focus)
    if len(focus) < 2:
        return clash
    pairs = cKDTree(pos[focus]).query_pairs(2 * overlap * float(half[focus].max()), output_type="ndarray")
    if len(pairs):
        i, j = focus[pairs[:, 0]], focus[pairs[:, 1]]
        close = np.hypot(*(pos[i] - pos[j]).T) < overlap * (half[i] + half[j])
        clash[np.maximum(i, j)[close]] = True
    return clash


def labelled_spots(snr: np.ndarray, in_focus: np.ndarray, params: Vesicles) -> np.ndarray:
    """Which vesicles enter the mask: in focus, peak SNR >= --label-snr, and (with --label-relative F > 0)
    at least F times the 90th percentile SNR of the image's in-focus vesicles: as an annotator does, the
    dim puncta are left out where bright ones stand beside them."""
    labelled = in_focus & (snr >= params.label_snr)
    if params.label_relative > 0 and in_focus.any():
        labelled &= snr >= params.label_relative * np.percentile(snr[in_focus], 90)
    return labelled


def draw_vesicles(rng: np.random.Generator, shape, params: Vesicles, context: synth.Context) -> dict:
    """Positions, shapes and brightness of one image's vesicles, as arrays of equal length.

    Keys: y, x (centres, px), a, b (semi-axes, px), angle (rad), brightness (peak density after the PSF),
    density (flat density of the sharp ellipse), in_focus (bool), labelled (bool, labelled_spots:
    only these enter the mask). context.levels (the noise) sets the brightness from the drawn SNRs.
    """
    levels = context.levels
    if levels is None:
        raise ValueError("vesicles need the image's levels (synth.draw_levels) in the context")
    px = context.pixel_size
    n = int(round(synth.draw(rng, params.num_spots, log=True)))
    r_lo, r_hi = sub_range(rng, params.radius, params.radius_spread)
    radius = np.exp(rng.uniform(math.log(r_lo), math.log(r_hi), n)) / px if n else np.zeros(0)
    aspect = rng.uniform(params.aspect[0], params.aspect[1], n)
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    pos = draw_positions(rng, n, context.cells, synth.draw(rng, params.cluster_fraction),
                         synth.draw(rng, params.cluster_size) / px, shape)
    sigma = context.psf_sigma
    half = np.sqrt(np.maximum(a, b) ** 2 + (HALF_MAX * sigma) ** 2)  # footprint radius for spacing
    # Touching pairs: move some vesicles right against another one, footprints just meeting.
    touch = rng.random(n) < synth.draw(rng, params.touching_fraction)
    anchors = np.flatnonzero(~touch)
    if touch.any() and anchors.size:
        t = np.flatnonzero(touch)
        j = anchors[rng.integers(0, anchors.size, t.size)]
        theta = rng.uniform(0, 2 * np.pi, t.size)
        gap = (half[t] + half[j]) * rng.uniform(0.92, 1.1, t.size)
        pos[t] = pos[j] + gap[:, None] * np.stack([np.sin(theta), np.cos(theta)], axis=1)
    in_focus = rng.random(n) >= synth.draw(rng, params.out_of_focus)
    # Vesicles that would merge with another get a fresh place (twice at most), then are dropped.
    for _ in range(2):
        clash = crowded(pos, half, in_focus)
        if not clash.any():
            break
        pos[clash] = draw_positions(rng, int(clash.sum()), context.cells, 0.0, 0.0, shape)
    keep = ~crowded(pos, half, in_focus)
    # Centres just outside the frame are kept (their edge shows); farther ones are dropped.
    keep &= (pos[:, 0] > -1) & (pos[:, 0] < shape[0] + 1) & (pos[:, 1] > -1) & (pos[:, 1] < shape[1] + 1)
    pos, a, b, in_focus = pos[keep], a[keep], b[keep], in_focus[keep]
    n = len(pos)
    # Brightness from a target peak SNR against the local noise (shot noise of what lies beneath, read noise).
    s_lo, s_hi = sub_range(rng, params.snr, params.snr_spread)
    snr = np.exp(rng.uniform(math.log(s_lo), math.log(s_hi), n))
    yi = np.clip(pos[:, 0].astype(int), 0, shape[0] - 1)
    xi = np.clip(pos[:, 1].astype(int), 0, shape[1] - 1)
    cytoplasm = context.cytoplasm[yi, xi] if context.cytoplasm is not None else 0.0
    under = levels.cytoplasm * cytoplasm + 0.5 * levels.haze
    if context.bright is not None:  # the shot noise of a bright region under the vesicle counts too
        under = under + context.bright[yi, xi]
    brightness = snr * levels.noise_sd(under) / levels.signal
    brightness[~in_focus] *= rng.uniform(0.2, 1.0, int((~in_focus).sum()))  # defocused: dim haze
    # A flat ellipse of density d blurred by a Gaussian peaks at d * (1 - exp(-r^2 / 2 sigma^2)).
    r_eff2 = a * b
    eff_sigma = np.where(in_focus, sigma, sigma * levels.defocus)
    density = brightness / -np.expm1(-r_eff2 / (2 * eff_sigma ** 2))
    return {"y": pos[:, 0] - _CORNER, "x": pos[:, 1] - _CORNER, "a": a, "b": b,
            "angle": rng.uniform(0, np.pi, n), "brightness": brightness, "density": density, "in_focus": in_focus,
            # Faint in-focus spots are drawn but not labelled: an annotator would not call them, and
            # seeing them unlabelled teaches the model not to mark every noise-level bump or dim punctum.
            "labelled": labelled_spots(snr, in_focus, params)}


# --------------------------------------------------------------------------- rendering

def _local_grids(ys, xs, a, b, angle, half_w):
    """Pixel-centre offsets of (K, W, W) windows, rotated into each ellipse's frame and scaled by its axes.

    ys, xs: centres measured from the top-left corner (see _CORNER). Returns (top-left pixels (K, 2) int,
    normalised radius q = sqrt((u/a)^2 + (v/b)^2), (K, W, W)).
    """
    width = 2 * half_w + 1
    y0 = np.floor(ys).astype(int) - half_w
    x0 = np.floor(xs).astype(int) - half_w
    grid = np.arange(width, dtype=np.float32) + 0.5
    dy = grid[None, :, None] + (y0 - ys)[:, None, None].astype(np.float32)  # (K, W, 1)
    dx = grid[None, None, :] + (x0 - xs)[:, None, None].astype(np.float32)  # (K, 1, W)
    c = np.cos(angle).astype(np.float32)[:, None, None]
    s = np.sin(angle).astype(np.float32)[:, None, None]
    u = (dx * c + dy * s) / a.astype(np.float32)[:, None, None]
    v = (dy * c - dx * s) / b.astype(np.float32)[:, None, None]
    return np.stack([y0, x0], axis=1), np.sqrt(u * u + v * v)


def render_vesicles(shape, ves: dict, psf_sigma: float):
    """Draw the vesicles, each in its own small window (windows of one size are computed together).

    Returns (in_focus density, out_of_focus density, labels int32, rank): vesicle i is painted into
    labels as rank[i] (1..n by rising footprint size; out-of-focus ones are never painted), and each
    pixel goes to the vesicle whose footprint it lies deepest in.
    """
    h, w = shape
    n = len(ves["y"])
    a, b = np.maximum(ves["a"], 0.05), np.maximum(ves["b"], 0.05)
    # Mask footprint: the half-maximum contour, about sqrt(r^2 + (1.18 sigma)^2) along each axis.
    ma = np.maximum(np.sqrt(a * a + (HALF_MAX * psf_sigma) ** 2), 0.75)
    mb = np.maximum(np.sqrt(b * b + (HALF_MAX * psf_sigma) ** 2), 0.75)
    labelled = ves.get("labelled", ves["in_focus"])
    order = np.argsort(ma * mb, kind="stable")  # small footprints get low labels and win at contacts
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(1, n + 1)
    extent = np.ceil(np.maximum(ma, a)).astype(int) + 1
    pad = int(extent.max()) + 2 if n else 2
    hp, wp = h + 2 * pad, w + 2 * pad
    flat_px, flat_val, flat_focus = [], [], []
    lab_px, lab_q, lab_rank = [], [], []
    for half_w in np.unique(extent):  # batch the vesicles that share a window size
        idx = np.flatnonzero(extent == half_w)
        ys, xs = (ves["y"][idx] + _CORNER) + pad, (ves["x"][idx] + _CORNER) + pad  # corner-based (_CORNER)
        corner, q = _local_grids(ys, xs, a[idx], b[idx], ves["angle"][idx], int(half_w))
        # Anti-aliased sharp ellipse: coverage from the signed distance to the rim (in px),
        # rescaled to the exact area so that sub-pixel vesicles keep their mass.
        r_local = np.sqrt(a[idx] * b[idx]).astype(np.float32)[:, None, None]
        cover = np.clip(0.5 - (q - 1.0) * r_local, 0.0, 1.0)
        total = cover.sum(axis=(1, 2))
        mass = (np.pi * a[idx] * b[idx] * ves["density"][idx]).astype(np.float32)
        cover *= (mass / np.maximum(total, 1e-6))[:, None, None]
        width = 2 * int(half_w) + 1
        offs = (np.arange(width)[:, None] * wp + np.arange(width)[None, :]).ravel()
        pix = (corner[:, 0] * wp + corner[:, 1])[:, None] + offs[None, :]  # (K, W*W) flat indices
        flat_px.append(pix.ravel())
        flat_val.append(cover.reshape(len(idx), -1).ravel())
        flat_focus.append(np.repeat(ves["in_focus"][idx], width * width))
        # Mask depth: normalised radius against the footprint axes, in-focus vesicles only.
        _, qm = _local_grids(ys, xs, ma[idx], mb[idx], ves["angle"][idx], int(half_w))
        qm = qm.reshape(len(idx), -1)
        sel = (qm <= 1.0) & labelled[idx][:, None]
        lab_px.append(pix[sel])
        lab_q.append(qm[sel])
        lab_rank.append(np.broadcast_to(rank[idx][:, None], sel.shape)[sel])
    canvases = []
    for focus in (True, False):
        if n:
            px_all, val_all = np.concatenate(flat_px), np.concatenate(flat_val)
            pick = np.concatenate(flat_focus) == focus
            canvas = np.bincount(px_all[pick], weights=val_all[pick], minlength=hp * wp)
        else:
            canvas = np.zeros(hp * wp)
        canvases.append(canvas.astype(np.float32).reshape(hp, wp)[pad:pad + h, pad:pad + w])
    labels = np.zeros(hp * wp, np.int32)
    if n:
        px_all, q_all, r_all = np.concatenate(lab_px), np.concatenate(lab_q), np.concatenate(lab_rank)
        srt = np.lexsort((r_all, q_all, px_all))  # per pixel: smallest depth first (ties: smaller label)
        px_sorted = px_all[srt]
        first = np.ones(len(srt), bool)
        first[1:] = px_sorted[1:] != px_sorted[:-1]
        labels[px_sorted[first]] = r_all[srt][first]
    labels = labels.reshape(hp, wp)[pad:pad + h, pad:pad + w]
    return canvases[0], canvases[1], np.ascontiguousarray(labels), rank


def render(rng: np.random.Generator, shape, params: Vesicles, context: synth.Context) -> synth.Rendered:
    """One image's vesicles: in-focus and out-of-focus densities, the mask and one row per labelled vesicle.

    The mask has one 8-connected component per row (metrics.separate_touching keeps touching vesicles
    apart: the smaller one keeps its pixels); rows (COLUMNS) are sorted by y, then x.
    """
    ves = draw_vesicles(rng, shape, params, context)
    in_focus, out_of_focus, labels, rank = render_vesicles(shape, ves, context.psf_sigma)
    mask = metrics.separate_touching(labels)
    # One row per vesicle that kept mask pixels inside the frame (these are the connected components).
    present = np.zeros(len(ves["y"]) + 1, bool)
    present[labels[mask > 0]] = True
    shown = np.flatnonzero(present[rank]) if len(rank) else np.zeros(0, int)
    shown = shown[np.lexsort((ves["x"][shown], ves["y"][shown]))]
    radius = np.sqrt(ves["a"][shown] * ves["b"][shown])
    rows = [{"y": y, "x": x, "radius": r, "brightness": v} for y, x, r, v in
            zip(ves["y"][shown].tolist(), ves["x"][shown].tolist(), radius.tolist(),
                ves["brightness"][shown].tolist())]
    # debris brightness follows the in-focus targets
    focus = ves["in_focus"]
    typical = float(np.median(ves["brightness"][focus])) if focus.any() else 1.0
    return synth.Rendered(in_focus, out_of_focus, mask, rows, typical)
