"""Generate synthetic 16-bit vesicle / puncta images with exact masks and per-spot tables.

Example:
    python Vesicle_generator.py --output-dir DATA --num-images 1000 --seed 0 --workers 2 --preview

Writes DATA/{train,val}/img/NNNNN.tif (16-bit single-channel TIFF, pixel size in the ImageJ tags),
DATA/{train,val}/mask/NNNNN.npy (uint8 0/1) and DATA/{train,val}/mask/NNNNN.csv (one row per labelled
vesicle: y, x, radius in px, brightness), DATA/generator.json (every parameter and the seed) and, with
--preview, DATA/preview.png.

Vesicles range from below the resolution limit to about 1 um across, round to slightly elliptical,
mostly inside cells and partly in clusters, some touching. Each image draws a window of peak
signal-to-noise ratios and of sizes from the ranges below, so a dataset spans faint and bright, small and
large, sparse and crowded. The mask covers each in-focus vesicle's half-maximum footprint (for a
sub-resolution vesicle, the PSF core: radius ~1.18 PSF sigma); touching vesicles are kept apart by a
one-pixel gap so that connected components count them one by one. Out-of-focus vesicles are only
blurred haze, never in the mask. Optics, cells, background and camera: synth.py.
"""
from __future__ import annotations

import argparse
import math
import sys

import cv2
import numpy as np
from scipy.spatial import cKDTree

import synth

HALF_MAX = math.sqrt(2.0 * math.log(2.0))  # half-width at half-maximum of a Gaussian, in sigmas


# --------------------------------------------------------------------------- vesicle layout

def sub_range(rng: np.random.Generator, bounds, spread) -> tuple[float, float]:
    """A per-image window inside [MIN, MAX] on a log scale, at most `spread` (a ratio) wide."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if hi <= lo or lo <= 0:
        return lo, hi
    width = min(math.log(synth.draw(rng, spread, log=True)), math.log(hi / lo))
    start = rng.uniform(math.log(lo), max(math.log(lo), math.log(hi) - width))
    return math.exp(start), min(hi, math.exp(start + width))


def draw_positions(rng: np.random.Generator, n: int, cells: np.ndarray, cluster_fraction: float,
                   cluster_sd_px: float) -> np.ndarray:
    """(n, 2) float centres (y, x): mostly inside cells, a fraction in tight clusters."""
    h, w = cells.shape
    inside = np.flatnonzero(cells)
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


def labelled_spots(snr: np.ndarray, in_focus: np.ndarray, args) -> np.ndarray:
    """Which vesicles enter the mask: in focus, peak SNR >= --label-snr, and (with --label-relative F > 0)
    at least F times the 90th percentile SNR of the image's in-focus vesicles: as an annotator does, the
    dim puncta are left out where bright ones stand beside them."""
    labelled = in_focus & (snr >= args.label_snr)
    relative = getattr(args, "label_relative", 0.0)
    if relative > 0 and in_focus.any():
        labelled &= snr >= relative * np.percentile(snr[in_focus], 90)
    return labelled


def draw_vesicles(rng: np.random.Generator, shape, cells: dict, levels: dict, args) -> dict:
    """Positions, shapes and brightness of one image's vesicles, as arrays of equal length.

    Keys: y, x, a, b (semi-axes, px), angle (rad), brightness (peak density after the PSF),
    density (flat density of the sharp ellipse), in_focus (bool), labelled (bool, labelled_spots:
    only these enter the mask).
    """
    px = args.pixel_size
    n = int(round(synth.draw(rng, args.num_spots, log=True)))
    r_lo, r_hi = sub_range(rng, args.radius, args.radius_spread)
    radius = np.exp(rng.uniform(math.log(r_lo), math.log(r_hi), n)) / px if n else np.zeros(0)
    aspect = rng.uniform(args.aspect[0], args.aspect[1], n)
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    pos = draw_positions(rng, n, cells["cells"], synth.draw(rng, args.cluster_fraction),
                         synth.draw(rng, args.cluster_size) / px)
    sigma = levels["psf_sigma"]
    half = np.sqrt(np.maximum(a, b) ** 2 + (HALF_MAX * sigma) ** 2)  # footprint radius for spacing
    # Touching pairs: move some vesicles right against another one, footprints just meeting.
    touch = rng.random(n) < synth.draw(rng, args.touching_fraction)
    anchors = np.flatnonzero(~touch)
    if touch.any() and anchors.size:
        t = np.flatnonzero(touch)
        j = anchors[rng.integers(0, anchors.size, t.size)]
        theta = rng.uniform(0, 2 * np.pi, t.size)
        gap = (half[t] + half[j]) * rng.uniform(0.92, 1.1, t.size)
        pos[t] = pos[j] + gap[:, None] * np.stack([np.sin(theta), np.cos(theta)], axis=1)
    in_focus = rng.random(n) >= synth.draw(rng, args.out_of_focus)
    # Vesicles that would merge with another get a fresh place (twice at most), then are dropped.
    for _ in range(2):
        clash = crowded(pos, half, in_focus)
        if not clash.any():
            break
        pos[clash] = draw_positions(rng, int(clash.sum()), cells["cells"], 0.0, 0.0)
    keep = ~crowded(pos, half, in_focus)
    # Centres just outside the frame are kept (their edge shows); farther ones are dropped.
    keep &= (pos[:, 0] > -1) & (pos[:, 0] < shape[0] + 1) & (pos[:, 1] > -1) & (pos[:, 1] < shape[1] + 1)
    pos, a, b, in_focus = pos[keep], a[keep], b[keep], in_focus[keep]
    n = len(pos)
    # Brightness from a target peak SNR against the local noise (shot noise of what lies beneath, read noise).
    s_lo, s_hi = sub_range(rng, args.snr, args.snr_spread)
    snr = np.exp(rng.uniform(math.log(s_lo), math.log(s_hi), n))
    yi = np.clip(pos[:, 0].astype(int), 0, shape[0] - 1)
    xi = np.clip(pos[:, 1].astype(int), 0, shape[1] - 1)
    under = levels["cytoplasm"] * cells["cytoplasm"][yi, xi] + 0.5 * levels["haze"]
    brightness = snr * synth.noise_sd(levels, under) / levels["signal"]
    if in_focus.any():
        levels["structure"] = float(np.median(brightness[in_focus]))  # debris brightness follows the targets
    brightness[~in_focus] *= rng.uniform(0.2, 1.0, int((~in_focus).sum()))  # defocused: dim haze
    # A flat ellipse of density d blurred by a Gaussian peaks at d * (1 - exp(-r^2 / 2 sigma^2)).
    r_eff2 = a * b
    eff_sigma = np.where(in_focus, sigma, sigma * levels["defocus"])
    density = brightness / -np.expm1(-r_eff2 / (2 * eff_sigma ** 2))
    return {"y": pos[:, 0], "x": pos[:, 1], "a": a, "b": b, "angle": rng.uniform(0, np.pi, n),
            "brightness": brightness, "density": density, "in_focus": in_focus,
            # Faint in-focus spots are drawn but not labelled: an annotator would not call them, and
            # seeing them unlabelled teaches the model not to mark every noise-level bump or dim punctum.
            "labelled": labelled_spots(snr, in_focus, args)}


# --------------------------------------------------------------------------- rendering

def _local_grids(ys, xs, a, b, angle, half_w):
    """Pixel-centre offsets of (K, W, W) windows, rotated into each ellipse's frame and scaled by its axes.

    Returns (top-left corners (K, 2) int, normalised radius q = sqrt((u/a)^2 + (v/b)^2), (K, W, W)).
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
        ys, xs = ves["y"][idx] + pad, ves["x"][idx] + pad
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


def separate_touching(labels: np.ndarray) -> np.ndarray:
    """Binary mask from a label image: one 8-connected component per label, a gap wherever labels touch.

    A pixel of label L is cleared if any of its 8 neighbours has a smaller non-zero label, so two
    vesicles never share an 8-connected border; the smaller label (the smaller vesicle) keeps its
    pixels. Where a footprint was cut in two by a neighbour, only its largest piece is kept, so the
    connected components of the mask are exactly the labelled vesicles.
    """
    big = np.float32(2 ** 24)
    lab = np.where(labels > 0, labels.astype(np.float32), big)
    neighbour_min = cv2.erode(lab, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                              borderValue=float(big))
    keep = ((labels > 0) & (neighbour_min >= lab)).astype(np.uint8)
    n_comp, comp = cv2.connectedComponents(keep, connectivity=8, ltype=cv2.CV_32S)
    if n_comp - 1 > len(np.unique(labels[keep > 0])):  # some label fell apart
        on = keep > 0
        pairs, counts = np.unique(labels[on].astype(np.int64) * n_comp + comp[on], return_counts=True)
        owner = pairs // n_comp
        # per label, the piece with the most pixels (sorted by label, then count)
        srt = np.lexsort((-counts, owner))
        best = np.ones(len(srt), bool)
        best[1:] = owner[srt][1:] != owner[srt][:-1]
        good = np.zeros(n_comp, bool)
        good[(pairs % n_comp)[srt][best]] = True
        keep = good[comp].astype(np.uint8)
    return keep


def render_one(rng: np.random.Generator, args):
    """One image: (uint16 HxW image, uint8 0/1 HxW mask, rows of the labelled vesicles)."""
    shape = (args.image_size, args.image_size)
    levels = synth.draw_levels(rng, args)
    cells = synth.cell_layer(rng, shape, args)
    ves = draw_vesicles(rng, shape, cells, levels, args)
    in_focus, out_of_focus, labels, rank = render_vesicles(shape, ves, levels["psf_sigma"])
    mask = separate_touching(labels)
    image = synth.finish_image(rng, in_focus, out_of_focus, cells, args, 16, levels=levels)
    # One row per vesicle that kept mask pixels inside the frame (these are the connected components).
    present = np.zeros(len(ves["y"]) + 1, bool)
    present[labels[mask > 0]] = True
    shown = np.flatnonzero(present[rank]) if len(rank) else np.zeros(0, int)
    shown = shown[np.lexsort((ves["x"][shown], ves["y"][shown]))]
    radius = np.sqrt(ves["a"][shown] * ves["b"][shown])
    rows = [{"y": y, "x": x, "radius": r, "brightness": v} for y, x, r, v in
            zip(ves["y"][shown].tolist(), ves["x"][shown].tolist(), radius.tolist(),
                ves["brightness"][shown].tolist())]
    return image, mask, rows


# --------------------------------------------------------------------------- command line

class _OldBound(argparse.Action):
    """Original SynSeg flags that set one end of a range: --num_spots_min 300 -> num_spots[0] = 300."""

    def __init__(self, option_strings, dest, end=0, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.end = end

    def __call__(self, parser, namespace, value, option_string=None):
        bounds = list(getattr(namespace, self.dest) or (None, None))
        bounds[self.end] = value
        setattr(namespace, self.dest, bounds)


class _Parser(synth.ArgumentParser):
    """synth's parser; converts the original pixel radii (--min_radius/--max_radius) to um first."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = argparse.ArgumentParser.parse_known_args(self, args, namespace)
        old = getattr(ns, "radius_px", None)
        if old is not None:
            ns.radius = [v * ns.pixel_size if v is not None else r for v, r in zip(old, ns.radius)]
        if hasattr(ns, "radius_px"):
            del ns.radius_px
        synth.check_args(self, ns)
        if getattr(ns, "label_snr", 0.0) < 0:
            self.error(f"--label-snr {ns.label_snr}: must be >= 0")
        if not 0.0 <= getattr(ns, "label_relative", 0.0) < 1.0:
            self.error(f"--label-relative {ns.label_relative}: must be in [0, 1)")
        return ns, rest


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments: output, optics, camera, background (synth.py) and vesicles."""
    parser = _Parser(description=__doc__)
    synth.add_common_args(parser, default_image_size=512, default_pixel_size=0.1)
    # Apparent spot sigma in real images: ~1.1-1.2 px (smFISH, beads), up to ~2 px at fine sampling and
    # ~0.5 px at 0.16 um/px; 0.1 um/px with the diffraction-limited 0.78 px times 0.7-2.2 spans that.
    parser.set_defaults(psf_scale=[0.7, 2.2])
    ves = parser.add_argument_group("vesicles (MIN MAX, drawn per image)")
    synth.add_range(ves, "--num-spots", default=(30, 1200), low=0,
                    help="vesicles per image (log-uniform), in focus and out of focus")
    synth.add_range(ves, "--radius", default=(0.02, 0.5), low=0.001,
                    help="vesicle radius in um (log-uniform); 0.5 um = 1 um across")
    synth.add_range(ves, "--radius-spread", default=(1.5, 25.0), low=1.0,
                    help="ratio of the largest to the smallest radius within one image")
    synth.add_range(ves, "--aspect", default=(1.0, 1.35), low=1.0,
                    help="long over short axis (1 = round)")
    synth.add_range(ves, "--snr", default=(1.5, 250.0), low=0.01,
                    help="peak signal-to-noise ratio of an in-focus vesicle (log-uniform)")
    ves.add_argument("--label-snr", type=float, default=10.0,
                     help="in-focus vesicles with a lower peak SNR are drawn but left out of the mask "
                          "(too faint to call); 0 labels all")
    ves.add_argument("--label-relative", type=float, default=0.25,
                     help="in-focus vesicles dimmer than this fraction of the image's bright ones (90th "
                          "percentile SNR) are drawn but left out of the mask; 0 turns it off")
    synth.add_range(ves, "--snr-spread", default=(2.0, 30.0), low=1.0,
                    help="ratio of the brightest to the dimmest vesicle SNR within one image")
    synth.add_range(ves, "--cluster-fraction", default=(0.0, 0.6), low=0.0, high=1.0,
                    help="fraction of vesicles placed in clusters")
    synth.add_range(ves, "--cluster-size", default=(0.3, 1.5), low=0.0,
                    help="cluster spread (s.d.) in um")
    synth.add_range(ves, "--touching-fraction", default=(0.0, 0.25), low=0.0, high=1.0,
                    help="fraction of vesicles placed right against another one")
    synth.add_range(ves, "--out-of-focus", default=(0.0, 0.3), low=0.0, high=1.0,
                    help="fraction of vesicles out of focus (blurred haze, not in the mask)")
    # Original SynSeg spellings: one end of a range each (radius in px there, brightness unused now).
    ves.add_argument("--num_spots_min", dest="num_spots", type=int, action=_OldBound, end=0,
                     help=argparse.SUPPRESS)
    ves.add_argument("--num_spots_max", dest="num_spots", type=int, action=_OldBound, end=1,
                     help=argparse.SUPPRESS)
    ves.add_argument("--min_radius", dest="radius_px", type=float, action=_OldBound, end=0,
                     help=argparse.SUPPRESS)
    ves.add_argument("--max_radius", dest="radius_px", type=float, action=_OldBound, end=1,
                     help=argparse.SUPPRESS)
    parser.set_defaults(radius_px=None)
    return parser


def main(args: argparse.Namespace) -> int:
    """Write the dataset; returns the exit code."""
    return synth.generate_dataset(args, render_one, kind="vesicle", bit_depth=16)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
