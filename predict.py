"""Tiled U-Net prediction, masks and measurements: the engine behind SynSeg_Vesicle.py and SynSeg_Cytoskeleton.py.

Both segmentation scripts are thin wrappers over `run(args, task)`; what differs between them is one
`TaskPreset` each (PRESETS): default model, measurements, overlay style, whether touching objects are split.

    python SynSeg_Vesicle.py -i images/ -o masks/ --save-prob --overlay --object-csv

How one image becomes a mask:
  1. Read (tiffio.read_image), pick a channel if the image has several (--channel), and treat every
     other axis (T, Z, ...) as a list of 2D planes.
  2. Physical scale: if the input's pixel size is known (tags or --pixel-size) and the model records
     the pixel size it was trained at, the plane is resized to the model's scale (area averaging when
     shrinking, linear when enlarging); the probability map is resized back to the input grid.
  3. Normalise the plane exactly as in training (normalization.normalize_image with the checkpoint's spec).
  4. Tiled prediction (`predict_probability`): the plane is cut into a grid of equal tiles (at most
     --tile-size; by default as large as about 1.2 GB of network memory allows on the CPU), shrunk so
     that they cover it evenly, whose neighbours overlap by at least --overlap px. Tiles start on
     multiples of 2**depth, so each sees the same pooling grid as the whole image. Each tile's sigmoid
     output is weighted by a separable window: 1 in the core and at the image border; across an overlap
     with a neighbour, a halo next to the tile edge (weight 1e-6: those pixels see the edge), then a
     16-px sin^2 hand-over to the neighbour, whose window mirrors it, so the weights add up to one and
     leave no seam. The sum is divided by the summed windows. The default overlap is twice the
     network's exact receptive radius plus the hand-over, so every pixel that counts saw only real image:
     tiled and whole-image predictions are the same up to float rounding (tests/test_predict.py).
     Tiles go through in batches (--batch-size; on the CPU only small tiles are batched, where it pays)
     under autocast (unet.autocast_dtype: bf16 on CPUs with AVX512-BF16/AMX, in channels_last), with batch
     norm folded into the convolutions. Each tile is normalised on its own with the whole plane's statistics,
     and the blend is summed one tile row at a time, so the only full-size array is the probability map
     (float16 above 8192^2 px): a 20000^2 uint8 plane segments in under 3 GB.
  5. Threshold: a number, or 'otsu' on the probability map.
  6. Vesicles only (on by default, --no-split turns it off): touching vesicles are split so that each
     connected component of the written mask is one vesicle. Inside every connected component that is
     large enough to hold two vesicles, seeds are the local maxima of the smoothed image intensity at
     least `min_distance` px apart (default: the median vesicle radius in the image); a watershed on the
     inverted intensity grows them back to the mask, and where two regions meet (8-connected) the one
     with the larger label gives up a 1-px line (metrics.separate_touching). The generator draws the
     gaps between touching vesicles in its training masks with the same function, so the network
     already learns most of this separation.
  7. Vesicles only (on by default, --no-contrast-cut turns it off): the image-level decision of which
     puncta an expert would mark. Each object's contrast (peak minus the median of a ring 4-9 px
     around it) is measured; when the log-contrasts form two clearly separated groups (two-component
     Gaussian mixture, Ashman's D >= 2 and a valley between them), the dim group is dropped. Logged per
     image; see spots.py.
  8. Measurements: vesicles - number of connected objects (8-connectivity) and their mean area;
     cytoskeleton - total skeleton length (skimage skeletonize; steps between 8-neighbours counted 1 or
     sqrt 2) and the number of junctions (clusters of skeleton pixels with three or more skeleton
     neighbours). In um / um^2 when the pixel size is known, else in px.
     Steps 6-8 label a big plane window by window (spots.label_windows), with the same result.

A batch is safe to interrupt (Ctrl-C, kill -9, a crash) and to run again: outputs, tables already in the
output folder and its writability are checked before any work; each file's table rows are recorded
(OUT/.synseg-rows/) before its mask is written, and the mask, written last, marks the file done; the
tables are rebuilt from the earlier tables and the records at the end (class Tables), so a rerun of the
same command skips the finished files and leaves summary.csv and objects.csv as an uninterrupted run
would. Every file is written under a temporary name and renamed, never half-written.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import cli
import tiffio

ROOT = Path(__file__).resolve().parent
RESCALE_TOLERANCE = 0.02  # pixel sizes within 2% count as equal: no resampling
MAX_SCALE = 8.0  # rescale factors beyond 1/8..8 are a wrong pixel size (nm read as um, a screen dpi), not optics
MAX_SCALED_PIXELS = 2 ** 30  # a plane resized for prediction may hold at most this many pixels (32768^2)
OUTPUT_SUFFIXES = ("_mask", "_prob", "_overlay")


def log(*parts) -> None:
    """Progress and notes go to stderr; stdout carries the input -> output list."""
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tiling

def tile_layout(length: int, tile: int, overlap: int, align: int) -> tuple[int, list[int]]:
    """Tile length and start offsets that cover `length` px with overlaps of at least `overlap` px.

    `length` must be a multiple of `align`. Tiles are shrunk (never grown beyond `tile`, except to keep
    the overlap) so that n equal tiles cover the axis evenly; starts and length are multiples of align.
    """
    if length % align:
        raise ValueError(f"length {length} is not a multiple of {align}")
    t = min(-(-tile // align) * align, length)
    if t >= length:
        return length, [0]
    if t <= overlap:
        raise ValueError(f"tile size {tile} must be larger than the overlap {overlap}")
    n = math.ceil((length - overlap) / (t - overlap))
    t = min(length, -(-(math.ceil((length - overlap) / n) + overlap) // align) * align)
    while True:
        starts = [int(round((length - t) * i / (n - 1) / align)) * align for i in range(n)]
        if t >= length or t - max(np.diff(starts)) >= overlap:
            return t, starts
        t += align


BLEND = 16  # px over which two neighbouring tiles hand over to each other
MAX_TILE = 1024  # px; larger tiles save little overlap and cost memory
CPU_TILE_BUDGET = 1.6e9  # bytes of network activations per tile on the CPU (host memory)
ACTIVATION_BYTES = 32  # measured peak bytes per pixel per base channel in a float32 forward pass (bf16: 16)
HALF_PROB_PIXELS = 2 ** 26  # planes above 8192^2 px keep their probability map in float16 (memory)
FLOOR = 1e-6  # weight of the halo pixels: tiny, never zero, so every sum of weights is positive


def default_overlap(model_args: dict) -> int:
    """Overlap that makes tiled prediction equal whole-image prediction: two radii plus the blend."""
    from unet import receptive_radius  # torch: imported only once a model is in use

    align = 2 ** int(model_args.get("depth", 3))
    return -(-(2 * receptive_radius(model_args) + BLEND) // align) * align


def auto_tile_size(model_args: dict, device_type: str, half: bool = False) -> int:
    """Largest tile edge whose forward pass stays within CPU_TILE_BUDGET on the CPU; MAX_TILE elsewhere.

    Measured: the base-64 network needs about 2 KB per tile pixel in float32 (1.48 GB for 856 x 856), half that
    under bf16 autocast (`half`), so 880 px for base 64 in fp32 and the 1024 px cap otherwise.
    """
    align = 2 ** int(model_args.get("depth", 3))
    if device_type != "cpu":
        return MAX_TILE
    base = int(model_args.get("base_channels", 64))
    edge = math.sqrt(CPU_TILE_BUDGET / (ACTIVATION_BYTES * base / (2 if half else 1)))
    return int(min(MAX_TILE, edge) // align * align)


def auto_batch_size(model_args: dict, device_type: str, tile: int, half: bool = False) -> int:
    """Tiles per forward pass: 4 on accelerators; on the CPU as many (at most 4) as fit the tile budget.

    On the CPU a batch pays only for small tiles (bf16, base 64: 512 px tiles run 30% faster four at a time,
    800 px tiles 5% faster two at a time), so the full-size auto tile goes alone.
    """
    if device_type != "cpu":
        return 4
    edge = auto_tile_size(model_args, "cpu", half)
    return max(1, min(4, (edge * edge) // max(1, tile * tile)))


def ramp(n: int) -> np.ndarray:
    """Rising sin^2 ramp of n samples, strictly between 0 and 1; ramp(n) + ramp(n)[::-1] == 1."""
    k = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (np.sin(0.5 * np.pi * k) ** 2).astype(np.float32)


def edge_profile(overlap: int) -> np.ndarray:
    """Window values across an overlap of `overlap` px, rising from the tile edge inwards.

    The outer half minus the blend is a halo of weight FLOOR (those pixels see the tile edge); a
    sin^2 ramp of about BLEND px hands over in the middle. Two neighbours' profiles sum to 1 + FLOOR.
    """
    blend = min(BLEND, overlap)
    halo = (overlap - blend) // 2
    blend = overlap - 2 * halo
    return np.concatenate([np.full(halo, FLOOR, np.float32), np.maximum(ramp(blend), FLOOR),
                           np.ones(halo, np.float32)])


def tile_windows(tile: int, starts: list[int]) -> list[np.ndarray]:
    """1D blending window for each tile along one axis: 1 in the core and at the image border,
    `edge_profile` across every overlap with a neighbour."""
    windows = []
    for i, s in enumerate(starts):
        w = np.ones(tile, np.float32)
        if i > 0:  # overlap with the previous tile
            lead = starts[i - 1] + tile - s
            w[:lead] = np.minimum(w[:lead], edge_profile(lead))
        if i < len(starts) - 1:  # overlap with the next tile
            trail = s + tile - starts[i + 1]
            w[tile - trail:] = np.minimum(w[tile - trail:], edge_profile(trail)[::-1])
        windows.append(w)
    return windows


def fold_batchnorm(model):
    """A copy of `model` with every eval-mode BatchNorm folded into the convolution before it.

    Same function up to float rounding, about 10% less work on the CPU.
    """
    import copy

    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for i in range(len(block) - 1):
            if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                block[i + 1] = nn.Identity()
    return folded


def prepare_model(model, device, channels_last: bool | None = None):
    """Eval-mode, BN-folded copy on `device`, in channels_last memory format where that is faster.

    channels_last None: on CUDA only. Segmenter also asks for it under bf16 autocast on the CPU, where oneDNN's
    bf16 convolutions run about 2.5x faster in it (base-64 5x5 U-Net, 768 px tile: 2.46 s NCHW, 0.94 s).
    """
    import torch

    net = fold_batchnorm(model).to(device)
    net.channels_last = device.type == "cuda" if channels_last is None else bool(channels_last)
    if net.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.depth = model.depth
    return net


def read_tile(image: np.ndarray, y: int, x: int, th: int, tw: int, mode: str) -> np.ndarray:
    """image[y:y+th, x:x+tw] as if the image had been padded at the bottom and right with np.pad(mode).

    Only the tile is copied, never the whole plane.
    """
    h, w = image.shape
    ey, ex = max(0, y + th - h), max(0, x + tw - w)  # rows / columns past the image edge
    if not (ey or ex):
        return image[y:y + th, x:x + tw]
    # start early enough that the slice holds every row / column the padding mirrors
    y0, x0 = max(0, min(y, h - 1 - ey)), max(0, min(x, w - 1 - ex))
    part = np.pad(image[y0:y + th, x0:x + tw], ((0, ey), (0, ex)), mode=mode)
    return part[y - y0:, x - x0:]


def predict_probability(model, image: np.ndarray, *, tile_size: int = 512, overlap: int = 64,
                        batch_size: int = 4, device=None, amp_dtype=None, tta: bool = False,
                        progress: bool = False, normalize=None, out_dtype=np.float32) -> np.ndarray:
    """Foreground probability (out_dtype, same shape) of one 2D image, predicted tile by tile.

    `model` returns logits. `image` is float32 (H, W) already normalised, or any 2D array together with
    `normalize`, a function that maps a crop of it to the normalised float32 crop (the whole image's
    statistics, normalization.apply_normalization), so no normalised copy of the plane is ever made. An image no larger
    than a tile is predicted whole. With tta the four flips of every tile are averaged. Tiles go row by row;
    the blend is summed in a buffer one tile row high, and finished rows are divided by their summed window
    and written to the output, so the only full-size array is the output itself.
    """
    import torch
    from tqdm import tqdm

    device = device or next(model.parameters()).device
    normalize = normalize or (lambda t: np.asarray(t, np.float32))
    h, w = image.shape
    align = 2 ** model.depth
    ph, pw = (-h) % align, (-w) % align
    # the same bottom/right padding the network applies to a whole image
    mode = "reflect" if (ph < h and pw < w) else "edge"
    H, W = h + ph, w + pw
    ty, ys = tile_layout(H, tile_size, overlap, align)
    tx, xs = tile_layout(W, tile_size, overlap, align)
    wy, wx = tile_windows(ty, ys), tile_windows(tx, xs)
    # The summed window is separable, so two 1D sums replace a full-size weight buffer.
    wsum_y, wsum_x = np.zeros(H, np.float32), np.zeros(W, np.float32)
    for i, y in enumerate(ys):
        wsum_y[y:y + ty] += wy[i]
    for j, x in enumerate(xs):
        wsum_x[x:x + tx] += wx[j]
    out = np.empty((h, w), out_dtype)
    band = np.zeros((ty, W), np.float32)  # rows band_y .. band_y + ty of the blended sum
    state = {"row": 0, "band_y": 0}

    def flush(upto: int) -> None:
        """Rows band_y .. upto are complete: normalise them by the window sums, store, shift the band up."""
        y0 = state["band_y"]
        n = upto - y0
        if n <= 0:
            return
        stop = min(upto, h)
        if stop > y0:
            done = band[:stop - y0, :w] / wsum_y[y0:stop, None]
            done /= wsum_x[None, :w]
            out[y0:stop] = done
        band[:ty - n] = band[n:]
        band[ty - n:] = 0.0
        state["band_y"] = upto

    jobs = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    channels_last = getattr(model, "channels_last", False)
    bar = tqdm(total=len(jobs), desc="tiles", unit="tile", leave=False, disable=not progress, mininterval=1.0)
    with torch.inference_mode():
        for k in range(0, len(jobs), batch_size):
            batch = jobs[k:k + batch_size]
            tiles = np.stack([normalize(read_tile(image, ys[i], xs[j], ty, tx, mode)) for i, j in batch])
            x = torch.from_numpy(tiles)[:, None].to(device)  # (B, 1, ty, tx)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            prob = None
            for dims in flips:
                xin = torch.flip(x, dims) if dims else x
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(xin)
                p = torch.sigmoid(logits.float())
                p = torch.flip(p, dims) if dims else p
                prob = p if prob is None else prob + p
            prob = (prob[:, 0] / len(flips)).cpu().numpy()  # (B, ty, tx)
            for (i, j), p in zip(batch, prob):
                if i != state["row"]:  # first tile of a new tile row: the rows above its start are final
                    flush(ys[i])
                    state["row"] = i
                r = ys[i] - state["band_y"]
                band[r:r + ty, xs[j]:xs[j] + tx] += p * wy[i][:, None] * wx[j][None, :]
            bar.update(len(batch))
    bar.close()
    flush(H)
    return out


# --------------------------------------------------------------------------- scale

def rescale_factor(input_px: float | None, model_px: float | None) -> float:
    """Factor to resize an input plane by so that its pixels match the model's (1.0: leave as is)."""
    if not input_px or not model_px:
        return 1.0
    f = float(input_px) / float(model_px)
    return 1.0 if abs(f - 1.0) <= RESCALE_TOLERANCE else f


def resize_plane(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a float32 2D array to (h, w): area averaging when shrinking, bilinear when enlarging."""
    import cv2

    h, w = shape
    if (h, w) == plane.shape:
        return plane
    shrink = h * w < plane.shape[0] * plane.shape[1]
    try:
        out = cv2.resize(np.ascontiguousarray(plane, dtype=np.float32), (w, h),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    except cv2.error as err:  # e.g. out of memory; a one-line message, not OpenCV's traceback
        raise MemoryError(f"could not resize a {plane.shape[0]}x{plane.shape[1]} plane to {h}x{w}: "
                          f"{str(err).strip().splitlines()[-1]}") from None
    return out.reshape(h, w)


# --------------------------------------------------------------------------- thresholds and objects

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
    import spots

    mask = np.asarray(mask, bool)
    if min_distance is None:
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
                  md: int, sigma: float, pad: int, min_area: float) -> None:
    """split_touching for the components first..last of one window, written into `out` (the window's rows)."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    from metrics import separate_touching

    areas = np.bincount(labels.ravel(), minlength=last + 1)
    h, w = labels.shape
    for idx, sl in enumerate(ndimage.find_objects(labels, max_label=last)[first - 1:], start=first):
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


def object_table(labels: np.ndarray, intensity: np.ndarray, band: int | None = None, row0: int = 0) -> list[dict]:
    """Per-object rows: label, centroid y/x (px), area (px) and mean intensity of the raw image.

    Sums are gathered in bands of rows (default: 1024, fewer beyond 2048 px width: ~2 Mpx per band), so a big
    plane needs no full-size float64 copies. `row0`: the plane row where labels and intensity start when they
    are a window of a bigger plane (centroid_y in plane rows).
    """
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


def skeleton_stats(mask: np.ndarray, band: int = 2048) -> tuple[float, int]:
    """(total skeleton length in px, number of junctions) of a 2D binary mask.

    Length adds 1 for every pair of 4-neighbours and sqrt(2) for every pair of diagonal neighbours on
    the skeleton; a junction is a cluster of skeleton pixels with three or more skeleton neighbours.
    Counted in bands of `band` rows (and junction clusters window by window), so a big plane needs
    no full-size temporaries beyond the skeleton and the junction pixels.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    import spots

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
        neighbours = ndimage.convolve(s, kernel, mode="constant")
        hub[y0:y1] = sk[y0:y1] & (neighbours[top:top + y1 - y0] >= 3)
    del sk
    junctions = sum(last - first + 1 for _, _, first, last in spots.label_windows(hub))
    return float(straight + math.sqrt(2.0) * diagonal), int(junctions)


# --------------------------------------------------------------------------- image layout

def as_planes(data: np.ndarray, axes: str, channel: int | None, path) -> tuple[np.ndarray, str]:
    """Select the channel and return (planes (N, Y, X), axes of the output mask).

    A channel axis (C or S) of size > 1 needs `channel`; one of size 1 is dropped.
    """
    axes = axes.upper()
    if len(axes) != data.ndim or "Y" not in axes or "X" not in axes:
        raise ValueError(f"{path}: cannot tell the image axes (shape {data.shape}, axes {axes!r})")
    for letter in ("S", "C"):
        if letter not in axes:
            continue
        ax = axes.index(letter)
        size = data.shape[ax]
        if size == 1:
            data, axes = np.take(data, 0, axis=ax), axes.replace(letter, "")
        elif channel is None:
            raise ValueError(f"{path}: image has {size} channels (shape {data.shape}, axes {axes}); "
                             f"choose one with --channel 0..{size - 1}")
        elif not 0 <= channel < size:
            raise ValueError(f"{path}: --channel {channel} out of range; this image has channels 0..{size - 1}")
        else:
            data, axes = np.take(data, channel, axis=ax), axes.replace(letter, "")
            channel = None  # used up; a second channel axis would need its own choice
    order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
    out_axes = "".join(axes[i] for i in order)
    data = np.transpose(data, order)
    return data.reshape((-1,) + data.shape[-2:]), out_axes


def check_values(data: np.ndarray, path) -> np.ndarray:
    """Refuse NaN/inf and non-numeric data; bool becomes uint8."""
    if data.dtype == bool:
        return data.astype(np.uint8)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ValueError(f"{path}: unsupported pixel type {data.dtype}")
    if np.issubdtype(data.dtype, np.floating):
        bad = data.size - int(np.count_nonzero(np.isfinite(data)))
        if bad:
            raise ValueError(f"{path}: {bad} NaN or infinite pixel(s) in a float image; fix or mask them first")
    return data


# --------------------------------------------------------------------------- files

def find_inputs(spec: Path, pattern: str, recursive: bool) -> list[Path]:
    """Input files from a file, a folder (pattern, optionally recursive) or a glob."""
    text = str(spec)
    if spec.is_file():
        return [spec]
    if spec.is_dir():
        found = spec.rglob(pattern) if recursive else spec.glob(pattern)
        # hidden names are never inputs: partial files of an interrupted write, the batch records (RECORDS)
        return sorted(p for p in found if p.is_file() and not any(part.startswith(".")
                                                                   for part in p.relative_to(spec).parts))
    if any(ch in text for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    return []


def output_paths(inputs: list[Path], spec: Path, out: Path) -> list[Path]:
    """Mask path for each input: OUT/<relative folder>/NAME_mask.tif; -o may name the file for one input."""
    if len(inputs) == 1 and spec.is_file() and out.suffix.lower() in (".tif", ".tiff"):
        return [out]
    base = spec if spec.is_dir() else None
    paths = []
    for p in inputs:
        rel = p.parent.relative_to(base) if base is not None else Path()
        stem = p.name.split(".")[0] if p.name.lower().endswith((".ome.tif", ".ome.tiff")) else p.stem
        paths.append(out / rel / f"{stem}_mask.tif")
    return paths


def sibling(mask_path: Path, kind: str, suffix: str) -> Path:
    """NAME_prob.tif / NAME_overlay.png beside NAME_mask.tif (or beside a user-named mask file)."""
    stem = mask_path.stem[:-5] if mask_path.stem.endswith("_mask") else mask_path.stem
    return mask_path.with_name(f"{stem}_{kind}{suffix}")


def write_overlay(path: Path, plane: np.ndarray, mask: np.ndarray, style: str = "outline") -> None:
    """PNG for a person to check a mask: the contrast-stretched plane (tiffio.stretch) on the left,
    the same with the mask on the right.

    style "outline": a yellow ring just outside each object, so small spots stay visible inside it;
    "fill": the mask tinted magenta at half strength, clearer for dense filaments.
    """
    import cv2
    from scipy import ndimage

    grey = (tiffio.stretch(plane) * 255.0).astype(np.uint8)
    left = np.repeat(grey[..., None], 3, axis=2)  # (H, W, 3) BGR
    right = left.copy()
    m = mask.astype(bool)
    if style == "fill":
        right[m] = (right[m] // 2 + np.array([127, 0, 127], np.uint8)).astype(np.uint8)
    else:
        right[ndimage.binary_dilation(m, structure=np.ones((3, 3), bool)) & ~m] = (0, 255, 255)
    gap = np.full((grey.shape[0], 4, 3), 128, np.uint8)
    with tiffio.atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.concatenate([left, gap, right], axis=1)):
            raise OSError(f"{path}: could not write PNG")


# --------------------------------------------------------------------------- measurements and task presets

SUMMARY_COLUMNS = ("file", "mask", "shape", "axes", "pixel_size_um", "scale", "threshold", "foreground_fraction")
OVERLAY_WORDS = {"outline": "outlined", "fill": "tinted"}  # for the --overlay help
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
        import spots

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


@dataclass(frozen=True)
class TaskPreset:
    """What one segmentation script does differently; the engine reads these fields, never the task name."""

    task: str
    script: str  # the script's name, for messages
    train_script: str  # what writes a model for this task, named when the model is missing
    model: str  # default checkpoint, relative to the repository
    measure: type  # ObjectMeasure or SkeletonMeasure
    overlay_style: str  # write_overlay style: "outline" keeps small spots visible, "fill" suits dense filaments
    split: bool  # split touching objects with the seeded watershed (--no-split, --min-distance)
    threshold: str = "0.5"
    contrast_cut: bool = False  # spots.filter_spots: drop the image's dim group of objects (--no-contrast-cut)
    track: bool = False  # --track: link the objects of a time-lapse's frames into tracks (tracking.py)

    @property
    def summary_fields(self) -> tuple[str, ...]:
        """Columns of summary.csv."""
        return SUMMARY_COLUMNS + self.measure.columns

    @property
    def object_table(self) -> bool:
        """Whether --object-csv (one row per object) is offered."""
        return self.measure is ObjectMeasure


PRESETS = {
    "vesicle": TaskPreset("vesicle", "SynSeg_Vesicle.py", "train_vesicle_seg.py", "models/vesicle.pth",
                          ObjectMeasure, overlay_style="outline", split=True, contrast_cut=True, track=True),
    "cytoskeleton": TaskPreset("cytoskeleton", "SynSeg_Cytoskeleton.py", "train_cytoskeleton_seg.py",
                               "models/cytoskeleton.pth", SkeletonMeasure, overlay_style="fill", split=False),
}


@dataclass(frozen=True)
class Options:
    """Prediction settings of a run; `from_args` fills them in from the command line."""

    threshold: str = "0.5"  # a number in (0, 1) as text, or "otsu"
    channel: int | None = None  # channel to segment in multi-channel images
    pixel_size: float | None = None  # um per input pixel, overriding the file's tags
    rescale: bool = True  # resize planes to the model's pixel size when both are known
    resize_size: int | None = None  # old --resize_size: longer side in px for prediction; overrides rescale
    tile_size: int = 0  # largest tile edge in px; 0: auto_tile_size
    overlap: int | None = None  # least tile overlap in px; None: default_overlap
    batch_size: int = 0  # tiles per forward pass; 0: 1 on the CPU, 4 elsewhere
    precision: str = "auto"  # unet.autocast_dtype
    tta: bool = False  # average the four flips
    split: bool = False  # split touching objects (split_touching)
    min_distance: float | None = None  # for split_touching; None: estimated per plane
    save_prob: bool = False  # also write NAME_prob.tif
    overlay: bool = False  # also write NAME_overlay.png
    contrast_cut: bool = False  # apply spots.filter_spots per plane (presets that offer it)
    min_snr: float = 0.0  # spots.filter_spots: also drop objects whose local SNR is below this (0: none)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        """Options from the parsed command line of get_args_parser."""
        return cls(threshold=args.threshold, channel=args.channel, pixel_size=args.pixel_size,
                   rescale=not args.no_rescale, resize_size=args.resize_size, tile_size=args.tile_size,
                   overlap=args.overlap, batch_size=args.batch_size, precision=args.precision, tta=args.tta,
                   split=not args.no_split, min_distance=args.min_distance, save_prob=args.save_prob,
                   overlay=args.overlay, contrast_cut=not args.no_contrast_cut, min_snr=args.min_snr)


# --------------------------------------------------------------------------- one image

class Segmenter:
    """A loaded model plus the prediction settings; `segment(src, dst)` does one file end to end."""

    def __init__(self, model, info: dict, preset: TaskPreset, options: Options, device):
        from unet import autocast_dtype

        self.preset, self.options, self.info, self.device = preset, options, info, device
        self.amp = autocast_dtype(device, options.precision)
        cpu_bf16 = device.type == "cpu" and self.amp is not None
        # channels_last: on CUDA, and under CPU bf16 autocast, where oneDNN is ~2.5x faster in it
        self.net = prepare_model(model, device, channels_last=device.type == "cuda" or cpu_bf16)
        self.overlap = default_overlap(info["model_args"]) if options.overlap is None else options.overlap
        self.tile_size = options.tile_size or auto_tile_size(info["model_args"], device.type, half=cpu_bf16)
        self.batch_size = options.batch_size or auto_batch_size(info["model_args"], device.type, self.tile_size,
                                                                half=cpu_bf16)
        self.norm = info["normalization"]
        self.model_px = info.get("pixel_size_um")

    def scale_for(self, shape: tuple[int, int], input_px: float | None, source: str = "") -> tuple[float, str]:
        """Resize factor for a plane and a sentence saying why.

        Raises ValueError when the factor lies outside 1/MAX_SCALE..MAX_SCALE or the resized plane would exceed
        MAX_SCALED_PIXELS: such a pixel size is a mistake, and the resize alone could need terabytes.
        """
        o = self.options
        if o.resize_size:
            f = o.resize_size / max(shape)
            note = f"resized x{f:.3f} so the longer side is {o.resize_size} px (--resize_size)"
        elif not o.rescale:
            return 1.0, "no rescaling (--no-rescale)"
        elif not self.model_px:
            return 1.0, "no rescaling (the model records no pixel size)"
        elif not input_px:
            return 1.0, "no rescaling (pixel size unknown; pass --pixel-size to rescale)"
        else:
            f = rescale_factor(input_px, self.model_px)
            if f == 1.0:
                return 1.0, f"no rescaling needed ({input_px:.4g} um/px matches the model's {self.model_px:.4g})"
            if not 1.0 / MAX_SCALE <= f <= MAX_SCALE:
                raise ValueError(f"pixel size {input_px:.4g} um/px{source} is {f:.3g}x the model's {self.model_px:.4g} "
                                 f"um/px, outside the 1/{MAX_SCALE:g}..{MAX_SCALE:g}x this script rescales by; pass "
                                 f"the right --pixel-size in um, or --no-rescale to segment at the image's own scale")
            note = (f"rescaled x{f:.3f} ({input_px:.4g} um/px -> model {self.model_px:.4g} um/px), "
                    "mask on the input grid")
        size = (max(1, round(shape[0] * f)), max(1, round(shape[1] * f)))
        if size[0] * size[1] > MAX_SCALED_PIXELS:
            raise ValueError(f"a plane of {shape[0]}x{shape[1]} resized x{f:.3g} for prediction would be "
                             f"{size[0]}x{size[1]} px, more than {MAX_SCALED_PIXELS / 1e9:.2g} Gpx; pass a smaller "
                             f"--resize_size, the right --pixel-size in um, or --no-rescale")
        return f, note

    def probability(self, plane: np.ndarray, factor: float, progress: bool) -> np.ndarray:
        """Probability map of one raw 2D plane on its own grid (float16 above HALF_PROB_PIXELS, else float32).

        Tiles are normalised one at a time with the whole plane's statistics (normalization.normalization_stats), so an
        unscaled plane is never copied to float32 in full.
        """
        from normalization import apply_normalization, normalization_stats

        h, w = plane.shape
        x = plane
        if factor != 1.0:
            x = resize_plane(plane.astype(np.float32), (max(1, round(h * factor)), max(1, round(w * factor))))
        stats = normalization_stats(x, self.norm)
        half = h * w > HALF_PROB_PIXELS
        prob = predict_probability(self.net, x, tile_size=self.tile_size, overlap=self.overlap,
                                   batch_size=self.batch_size, device=self.device, amp_dtype=self.amp,
                                   tta=self.options.tta, progress=progress,
                                   normalize=lambda tile: apply_normalization(tile, self.norm, stats),
                                   out_dtype=np.float16 if half and factor == 1.0 else np.float32)
        del x
        if prob.shape != (h, w):
            prob = resize_plane(prob, (h, w))
            np.clip(prob, 0.0, 1.0, out=prob)
            if half:
                prob = prob.astype(np.float16)
        return prob

    def segment(self, src: Path, dst: Path, before_mask=None) -> tuple[dict, list[dict]]:
        """Segment one file, write its outputs; returns (summary row, object rows).

        The mask is written last, so that its presence means the file is done: `before_mask(row, objects)`,
        when given, runs just before it (run() records the file's table rows there).
        """
        o = self.options
        data, meta = tiffio.read_image(src)
        data = check_values(data, src)
        planes, axes = as_planes(data, meta["axes"], o.channel, src)
        px = o.pixel_size or meta.get("pixel_size_um")
        source = " (--pixel-size)" if o.pixel_size else " (from the file's tags)"
        factor, note = self.scale_for(planes.shape[1:], px, source)
        log(f"{src}: {len(planes)} plane(s) of {planes.shape[1]}x{planes.shape[2]} ({meta['dtype']}, "
            f"axes {axes}); {note}")

        masks = np.zeros(planes.shape, np.uint8)
        probs = np.zeros(planes.shape, np.float32) if o.save_prob else None
        measure = self.preset.measure(src)
        thresholds = []
        big = planes.shape[1] * planes.shape[2] > 4 * self.tile_size ** 2
        for k, plane in enumerate(planes):
            if plane.min() == plane.max():  # constant plane: nothing to find, and nothing to normalise
                if len(planes) == 1:
                    log(f"{src}: constant image (all {plane.flat[0]}); writing an empty mask")
                thresholds.append(float("nan"))
                continue
            prob = self.probability(plane, factor, progress=big)
            t = resolve_threshold(prob, o.threshold)
            thresholds.append(t)
            mask = prob > t
            if probs is not None:
                probs[k] = prob
            if o.split:
                mask = split_touching(mask, plane, o.min_distance, in_place=True)
            if o.contrast_cut or o.min_snr > 0:
                import spots

                mask, cut = spots.filter_spots(mask, plane, in_place=True, cut=o.contrast_cut, min_snr=o.min_snr)
                log(f"{src}: {'plane ' + str(k) + ': ' if len(planes) > 1 else ''}{spots.describe_cut(cut)}")
            if not measure.uses_prob:
                del prob  # a big plane's map is the largest array here; free it before measuring
                prob = None
            masks[k] = mask
            del mask
            measure.add(k, masks[k].view(bool), plane, prob)  # 0/1 until the end: a bool view, no copy
            del prob
        masks *= 255

        full_shape = self._output_shape(data.shape, meta["axes"], axes)
        fg = float(np.count_nonzero(masks)) / masks.size
        used = [t for t in thresholds if t == t]
        row = {"file": str(src), "mask": str(dst), "shape": "x".join(map(str, full_shape)), "axes": axes,
               "pixel_size_um": f"{px:.6g}" if px else "", "scale": f"{factor:.4g}",
               "threshold": f"{np.mean(used):.4g}" if used else "", "foreground_fraction": f"{fg:.6f}",
               **measure.summary(px), "frame_interval_s": meta.get("frame_interval_s")}
        if probs is not None:
            tiffio.write_tiff(sibling(dst, "prob", ".tif"), probs.reshape(full_shape), pixel_size_um=px, axes=axes)
        if o.overlay:
            mid = len(planes) // 2
            write_overlay(sibling(dst, "overlay", ".png"), planes[mid], masks[mid], style=self.preset.overlay_style)
        if before_mask is not None:
            before_mask(row, measure.objects)
        tiffio.write_tiff(dst, masks.reshape(full_shape), pixel_size_um=px, axes=axes)
        return row, measure.objects

    @staticmethod
    def _output_shape(data_shape, in_axes: str, out_axes: str) -> tuple[int, ...]:
        """Shape of the mask: the input's shape with the channel axis removed, Y and X last."""
        sizes = dict(zip(in_axes.upper(), data_shape))
        return tuple(sizes[a] for a in out_axes)


TRACK_FIELDS = ("file", "track_id", "frame", "y", "x", "area", "intensity")


def track_objects(row: dict, objects: list[dict], args) -> tuple[list[dict], list[dict]]:
    """(tracks.csv rows, track_summary.csv rows) of one segmented file: its objects linked frame to frame.

    A detection is an object's sub-pixel centre (spots.measure_spots; the plain centroid where that is
    missing), area (px) and background-subtracted integrated intensity. Only a time-lapse (axes T, Y, X)
    is linked; anything else is logged and gives no tracks.
    """
    import tracking

    if row["axes"] != "TYX":
        log(f"{row['file']}: --track needs a TYX time-lapse, this is {row['axes']}; no tracks")
        return [], []
    px = float(row["pixel_size_um"]) if row["pixel_size_um"] else None
    interval = args.frame_interval or row.get("frame_interval_s")
    search = args.search_range or tracking.default_search_range(px, interval)
    detections = [{"frame": o["plane"], "y": o["y"] if o.get("y") != "" else o["centroid_y"],
                   "x": o["x"] if o.get("x") != "" else o["centroid_x"], "area": o["area_px"],
                   "intensity": o.get("integrated_intensity", "")} for o in objects]
    linked = tracking.link(detections, search, memory=args.track_memory)
    table = tracking.track_summary(linked, px, interval)
    for r in linked + table:
        r["file"] = row["file"]
    log(f"{row['file']}: {len(table)} track(s) from {len(linked)} detection(s), search range {search:.3g} px"
        f"{'' if interval else ' (frame interval unknown: speeds in px/frame only)'}")
    return linked, table


# --------------------------------------------------------------------------- batch tables

RECORDS = ".synseg-rows"  # folder beside summary.csv: each finished file's rows, until the tables hold them
RECORD_FORMAT = "synseg-rows/1"


def _json_value(value):
    """json.dumps fallback for numpy scalars in table rows."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a table value")


def _cell(value, fmt: str | None) -> str:
    """A value as tiffio.write_csv writes it."""
    if value is None:
        return ""
    if fmt and isinstance(value, float):
        return fmt.format(value)
    return str(value)


class Tables:
    """The CSV tables of a batch (summary.csv; objects.csv, tracks.csv, track_summary.csv when asked for), exact
    whatever interrupts the run.

    Every file's rows go to a record of their own, RECORDS/<mask path>.json, written atomically just before its
    mask: a mask that exists has its rows recorded. `finish` rebuilds each table from the earlier table and the
    records (files outside this batch first, in their earlier order, then the batch in input order), writes the
    tables atomically and only then removes the records. So a batch killed at any moment and run again leaves
    the same tables as one that was never interrupted, and no table or mask is ever half-written.
    """

    def __init__(self, folder: Path, columns: dict[str, tuple], formats: dict[str, str | None], preset):
        self.folder, self.columns, self.formats, self.preset = Path(folder), columns, formats, preset

    def record_path(self, mask: Path) -> Path:
        """Where the rows of the file whose mask is `mask` are recorded."""
        try:
            rel = Path(mask).resolve().relative_to(self.folder.resolve())
        except ValueError:
            rel = Path(Path(mask).name)
        return self.folder / RECORDS / rel.with_name(rel.name + ".json")

    def write_record(self, src: Path, mask: Path, rows: dict[str, list[dict]]) -> None:
        """Record one file's rows of every table (only the table's columns are kept)."""
        record = {"format": RECORD_FORMAT, "task": self.preset.task, "file": str(src), "mask": str(mask),
                  "tables": {name: [{c: r.get(c) for c in self.columns[name]} for r in table]
                             for name, table in rows.items() if name in self.columns}}
        path = self.record_path(mask)
        with tiffio.atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, default=_json_value))

    def records(self) -> dict[Path, dict]:
        """{record path: record} of every readable record whose mask still exists."""
        root = self.folder / RECORDS
        found = {}
        for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
            if path.name.startswith("."):  # a partial write
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("format") == RECORD_FORMAT and Path(record["mask"]).exists():
                found[path] = record
        return found

    def problems(self) -> list[str]:
        """What in the output folder this run must not touch: tables of another shape or task, records of another
        task. Checked before any work."""
        others = {t: p for t, p in PRESETS.items() if t != self.preset.task}
        out = []
        for name, columns in self.columns.items():
            path = self.folder / name
            if path.is_dir():
                out.append(f"{path}: is a folder, where this script writes a table; choose another -o")
            if not path.is_file():
                continue
            try:
                with open(path, newline="") as fh:
                    header = next(csv.reader(fh), None)
            except (OSError, UnicodeDecodeError, csv.Error) as err:
                out.append(f"{path}: not a readable CSV table ({type(err).__name__}); move it away or choose "
                           "another -o")
                continue
            if header is None:  # an empty file holds nothing to keep
                continue
            extra = [c for c in header if c not in columns]
            if "file" not in header or extra:
                task = next((t for t, o in others.items() if set(o.measure.columns) <= set(header)), None)
                what = (f"holds {task} results ({others[task].script})" if task else
                        f"has columns this script does not write ({', '.join((extra or header)[:5])})")
                out.append(f"{path}: {what}; {self.preset.script} will not mix its rows in - choose another -o, "
                           "or move the file away")
        for record in self.records().values():
            if record.get("task") != self.preset.task:
                out.append(f"{record['mask']}: holds {record.get('task')} results; {self.preset.script} will not "
                           "mix its rows in - choose another -o")
                break
        return out

    def finish(self, pairs: list[tuple[Path, Path]]) -> tuple[list[Path], list[tuple[Path, str]]]:
        """Rebuild the tables from the earlier tables and the records; write those that change.

        Returns (tables written, [(input, problem)] for masks that exist but whose rows are recorded nowhere).
        """
        records = self.records()
        old = {name: tiffio.read_csv(self.folder / name) for name in self.columns}
        old_rows = {name: {} for name in self.columns}  # table -> file -> its earlier rows
        for name, rows in old.items():
            for r in rows:
                old_rows[name].setdefault(r.get("file"), []).append(r)
        batch = {str(src): dst for src, dst in pairs}
        mine = {str(src): records.pop(self.record_path(dst), None) for src, dst in pairs}
        others = {r["file"]: r for r in records.values()}  # records of an earlier, interrupted batch
        earlier = [r.get("file") for r in old["summary.csv"]] + list(others)
        order = list(dict.fromkeys(f for f in earlier if f not in batch)) + list(batch)
        new = {name: [] for name in self.columns}
        missing = []
        for f in order:
            record = mine[f] if f in batch else others.get(f)
            mask = batch.get(f, f)
            if record is not None:
                tables = record["tables"]
            elif f in old_rows["summary.csv"]:
                tables = {name: old_rows[name].get(f, []) for name in self.columns}
            else:
                if f in batch and batch[f].exists():
                    missing.append((Path(f), f"{mask}: exists, but its measurements are in no summary.csv "
                                             "(written by an older version or another tool?); --overwrite redoes it"))
                continue
            for name in self.columns:
                new[name] += tables.get(name, [])
            count = (tables.get("summary.csv") or [{}])[0].get("count")
            if ("objects.csv" in self.columns and f in batch and not tables.get("objects.csv")
                    and str(count or 0) != "0"):
                missing.append((Path(f), f"{mask}: exists, but its objects are not in objects.csv (segmented "
                                         "without --object-csv?); --overwrite redoes it"))
        written = []
        for name, columns in self.columns.items():
            fmt = self.formats.get(name)
            cells = [[_cell(r.get(c), fmt) for c in columns] for r in new[name]]
            before = [[r.get(c) or "" for c in columns] for r in old[name]]
            path = self.folder / name
            if cells != before or (not path.is_file() and new["summary.csv"]):
                tiffio.write_csv(path, new[name], columns, float_format=fmt)
                written.append(path)
        for src, dst in pairs:  # the tables hold these rows now
            if mine[str(src)] is not None:
                self.record_path(dst).unlink(missing_ok=True)
        for path in records:
            path.unlink(missing_ok=True)
        self._prune()
        return written, missing

    def _prune(self) -> None:
        """Remove the emptied record folders."""
        root = self.folder / RECORDS
        if not root.is_dir():
            return
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        if not any(root.iterdir()):
            root.rmdir()


# --------------------------------------------------------------------------- command line

def get_args_parser(task: str, description: str | None = None) -> argparse.ArgumentParser:
    """Arguments shared by both segmentation scripts; the preset of `task` sets the defaults and task flags."""
    preset = PRESETS[task]
    p = argparse.ArgumentParser(description=description, formatter_class=cli.QuietHelpFormatter)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("-i", "--input", "--input_path", dest="input", type=Path, required=True,
                    help="a TIFF file, a folder of TIFFs or a quoted glob such as 'data/*/cell*.tif'")
    io.add_argument("-o", "--output-dir", "--output_path", dest="output", type=Path, required=True,
                    help="output folder (NAME_mask.tif per input, summary.csv); a .tif file path when -i is one file")
    io.add_argument("--pattern", default="*.tif*", help="file pattern when -i is a folder")
    io.add_argument("--recursive", action="store_true", help="also search the subfolders of a folder input")
    io.add_argument("--channel", type=int, default=None, help="channel to segment in multi-channel images (0-based)")
    io.add_argument("--pixel-size", type=float, default=None,
                    help="input pixel size in um, overriding the file's tags")
    io.add_argument("--save-prob", action="store_true", help="also write NAME_prob.tif (float32 probability, 0..1)")
    io.add_argument("--overlay", action="store_true",
                    help="also write NAME_overlay.png: the contrast-stretched image beside the same with the mask "
                         + OVERLAY_WORDS[preset.overlay_style] + " (middle plane of a stack)")
    if preset.object_table:
        io.add_argument("--object-csv", action="store_true",
                        help="also write objects.csv: one row per vesicle (centroid, sub-pixel y, x, area, mean and "
                             "background-subtracted integrated intensity, local background, contrast, SNR, "
                             "peak probability)")
    io.add_argument("--overwrite", action="store_true", help="redo inputs whose mask already exists")
    io.add_argument("--dry-run", action="store_true", help="list input -> output and stop")

    m = p.add_argument_group("model and device")
    m.add_argument("-m", "--model", "--model_path", dest="model", type=Path, default=ROOT / preset.model,
                   help="checkpoint (.pth); bare original SynSeg weights load too")
    m.add_argument("--any-task", action="store_true",
                   help=f"run a checkpoint that records another task than {preset.task} (refused otherwise)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    m.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast dtype; auto: bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32")
    m.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")

    t = p.add_argument_group("tiling and scale")
    t.add_argument("--tile-size", "--tile_size", dest="tile_size", type=int, default=0,
                   help="largest tile edge in px; tiles are shrunk to cover the image evenly. 0: on the CPU the "
                        "largest tile whose network memory stays near 1.6 GB (1024 px for the shipped base-32 "
                        "models, and for base 64 under bf16; 880 px for base 64 in fp32), 1024 px on a GPU")
    t.add_argument("--overlap", type=int, default=None,
                   help="least overlap between tiles in px (default: twice the network's receptive radius "
                        "plus 16, which makes tiled and whole-image predictions identical)")
    t.add_argument("--batch-size", type=int, default=0,
                   help="tiles per forward pass; 0: 4 on a GPU; on the CPU as many small tiles as fit the "
                        "tile memory (at most 4), one full-size tile")
    t.add_argument("--tta", action="store_true", help="average the predictions of the four flips (4x slower)")
    t.add_argument("--no-rescale", action="store_true",
                   help="predict at the input's own pixel size even if it differs from the model's")
    t.add_argument("--use_tiling", action="store_true",
                   help="accepted for old commands; tiling is always on (small images are one tile)")
    t.add_argument("--resize_size", type=int, default=None,
                   help="old option, still honoured: resize each plane so its longer side is N px for "
                        "prediction (aspect ratio kept, mask back on the input grid); overrides the physical rescale")

    post = p.add_argument_group("mask")
    post.add_argument("--threshold", type=parse_threshold, default=preset.threshold,
                      help="probability threshold (0..1) or 'otsu'")
    if preset.split:
        post.add_argument("--no-split", action="store_true",
                          help="do not split touching vesicles with the seeded watershed")
        post.add_argument("--min-distance", type=float, default=None,
                          help="least distance in px between two vesicle centres for the split "
                               "(default: median vesicle radius in the image)")
    if preset.contrast_cut:
        post.add_argument("--no-contrast-cut", action="store_true",
                          help="keep every object; by default, when an image's spot contrasts (peak minus the "
                               "local background) form two clearly separated groups, the dim group is dropped "
                               "(spots.py; the decision is logged per image)")
        post.add_argument("--min-snr", type=cli.finite_float(low=0.0), default=0.0, metavar="SNR",
                          help="also drop spots whose local SNR (the snr column of objects.csv: peak minus the "
                               "local background over the local noise) is below SNR, for counting only bright "
                               "spots; 0 keeps every spot the network and the contrast cut report")
    if preset.track:
        tr = p.add_argument_group("time-lapse tracking")
        tr.add_argument("--track", action="store_true",
                        help="link the vesicles of consecutive frames of a TYX stack into tracks (laptrack): "
                             "tracks.csv (file, track_id, frame, y, x, area, intensity) and track_summary.csv "
                             "(duration, mean speed; in s and um/s when pixel size and frame interval are known)")
        tr.add_argument("--search-range", type=float, default=None,
                        help="largest step in px between frames; default: 2 um/s times the frame interval, "
                             "or 5 px when pixel size or frame interval is unknown")
        tr.add_argument("--track-memory", type=int, default=1,
                        help="frames in a row a vesicle may go undetected and keep its track")
        tr.add_argument("--frame-interval", type=float, default=None,
                        help="seconds between frames, overriding the file's ImageJ tags")
    p.set_defaults(task=preset.task, object_csv=False, no_split=not preset.split, min_distance=None,
                   no_contrast_cut=not preset.contrast_cut, min_snr=0.0, track=False, search_range=None, track_memory=1,
                   frame_interval=None)
    return p


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, or None."""
    if args.tile_size and args.tile_size < 16:
        return f"--tile-size {args.tile_size} is too small; use 0 (auto) or 64 or more"
    if args.overlap is not None and args.overlap < 0:
        return f"--overlap {args.overlap} must be 0 or more"
    if args.batch_size < 0:
        return f"--batch-size {args.batch_size} must be 0 (auto) or more"
    if args.pixel_size is not None and args.pixel_size <= 0:
        return f"--pixel-size {args.pixel_size} must be positive (um per pixel)"
    if args.resize_size is not None and args.resize_size < 16:
        return f"--resize_size {args.resize_size} must be at least 16"
    if args.channel is not None and args.channel < 0:
        return f"--channel {args.channel} must be 0 or more"
    if args.search_range is not None and not args.search_range > 0:
        return f"--search-range {args.search_range} must be positive (px)"
    if args.track_memory < 0:
        return f"--track-memory {args.track_memory} must be 0 or more"
    if args.frame_interval is not None and not args.frame_interval > 0:
        return f"--frame-interval {args.frame_interval} must be positive (s)"
    return None


def plan(args: argparse.Namespace) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input, mask path) pairs to consider, and notes about inputs left out."""
    inputs = find_inputs(args.input, args.pattern, args.recursive)
    notes = []
    if args.input.is_dir():  # leave out earlier outputs: anything in a separate output subfolder, NAME_mask.tif...
        in_root, out_root = args.input.resolve(), args.output.resolve()
        names = {(p.parent, p.stem) for p in inputs}
        kept = []
        for p in inputs:
            inside = out_root != in_root and out_root in p.resolve().parents
            derived = any(p.stem.endswith(s) and (p.parent, p.stem[:-len(s)]) in names for s in OUTPUT_SUFFIXES)
            if inside or derived:
                notes.append(f"{p}: looks like an output of this script; left out")
            else:
                kept.append(p)
        inputs = kept
    pairs = list(zip(inputs, output_paths(inputs, args.input, args.output)))
    return pairs, notes


def output_problem(args: argparse.Namespace, pairs: list[tuple[Path, Path]]) -> str | None:
    """Why the outputs cannot be written (an existing file where a folder goes, a folder that cannot be
    created or written), or None. Creates the output folder; checked before any image is read."""
    one_file = len(pairs) == 1 and pairs[0][1] == args.output  # -o names the mask of the one input
    if args.output.is_dir() and one_file:
        return f"-o {args.output}: is a folder, not a mask file; give the folder without the .tif name"
    folder = args.output.parent if one_file else args.output
    if args.output.exists() and not one_file and not args.output.is_dir():
        return (f"-o {args.output}: is a file; give a folder for the masks and summary.csv"
                + (" (or, for one input file, a NAME.tif mask path)" if len(pairs) == 1 else ""))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".synseg-probe{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return f"-o {args.output}: cannot write there ({err.strerror or type(err).__name__})"
    return None


def batch_tables(args: argparse.Namespace, preset: TaskPreset, folder: Path) -> Tables:
    """The tables this run keeps in `folder`, with their columns and float formats."""
    columns, formats = {"summary.csv": preset.summary_fields}, {}
    if args.object_csv:
        columns["objects.csv"] = tuple(OBJECT_FIELDS)
    if args.track:
        import tracking

        columns["tracks.csv"] = TRACK_FIELDS
        columns["track_summary.csv"] = ("file", *tracking.SUMMARY_COLUMNS)
        formats = {"tracks.csv": "{:.4f}", "track_summary.csv": "{:.4f}"}
    return Tables(folder, columns, formats, preset)


def run(args: argparse.Namespace, task: str) -> int:
    """Segment every input; one line per failed file; exit code 1 if any failed, 2 on bad usage."""
    preset = PRESETS[task]
    name = preset.script
    problem = check_args(args)
    if problem:
        log(f"{name}: {problem}")
        return 2
    pairs, notes = plan(args)
    for n in notes:
        log(n)
    if not pairs:
        where = f" with pattern {args.pattern!r}" if args.input.is_dir() else ""
        log(f"{name}: no input matches {args.input}{where}")
        return 2
    if args.dry_run:
        for src, dst in pairs:
            state = "exists, skip" if dst.exists() and not args.overwrite else "new"
            print(f"{src} -> {dst} ({state})")
        return 0
    if not args.model.is_file():
        shipped = args.model.resolve() == (ROOT / preset.model).resolve()
        log(f"{name}: model {args.model} not found; " + (
            f"the shipped {task} model is missing from this checkout - pass a checkpoint with -m PATH (e.g. one "
            f"written by {preset.train_script})" if shipped else "check the path given with -m PATH"))
        return 2

    import torch
    from tqdm import tqdm

    import unet

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = unet.get_device(args.device)
        model, info = unet.load_model(args.model, device)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        log(f"{name}: {err}")
        return 2
    if info.get("task") != preset.task:
        recorded = info.get("format") == unet.CHECKPOINT_FORMAT
        if recorded and not args.any_task:
            other = PRESETS.get(info.get("task"))
            log(f"{name}: {args.model} is a {info.get('task')} model (its checkpoint records task "
                f"{info.get('task')!r}), not a {preset.task} model; use "
                f"{other.script if other else 'the matching script'} or a {preset.task} checkpoint "
                f"(--any-task runs it anyway)")
            return 2
        log(f"{name}: warning: {args.model} was {'trained' if recorded else 'guessed to be'} for "
            f"{info.get('task')!r}, not {preset.task!r}")
    seg = Segmenter(model, info, preset, Options.from_args(args), device)
    if seg.tile_size <= seg.overlap:
        log(f"{name}: --tile-size {seg.tile_size} must be larger than the overlap ({seg.overlap} px for this "
            f"model); use --tile-size {4 * seg.overlap} or more, or a smaller --overlap (then tiling is approximate)")
        return 2
    if args.pixel_size and seg.model_px and not args.no_rescale and not args.resize_size:
        f = rescale_factor(args.pixel_size, seg.model_px)
        if not 1.0 / MAX_SCALE <= f <= MAX_SCALE:
            log(f"{name}: --pixel-size {args.pixel_size:g} um/px is {f:.3g}x the model's {seg.model_px:.4g} um/px, "
                f"outside the 1/{MAX_SCALE:g}..{MAX_SCALE:g}x this script rescales by; give the input's pixel "
                f"size in um (e.g. 0.1, not 100 nm), or --no-rescale to segment at the image's own scale")
            return 2

    one_file = len(pairs) == 1 and pairs[0][1] == args.output  # -o names the mask of the one input
    problem = output_problem(args, pairs)
    tables = batch_tables(args, preset, args.output.parent if one_file else args.output)
    problems = [problem] if problem else tables.problems()
    if problems:
        for line in problems:
            log(f"{name}: {line}")
        return 2
    log(f"{name}: model {args.model} ({info.get('format', 'checkpoint')}, normalisation {seg.norm}, "
        f"model pixel size {seg.model_px or 'unknown'} um), device {device}, "
        f"precision {seg.amp or 'fp32'}{' channels_last' if seg.net.channels_last else ''}, tiles up to "
        f"{seg.tile_size} px, overlap {seg.overlap} px, batch {seg.batch_size}")

    failed, done, skipped = [], [], []
    t0, megapixels = time.perf_counter(), 0.0
    inputs = {p.resolve() for p, _ in pairs}
    interrupted = False
    files = iter(tqdm(pairs, desc=preset.task, unit="file", disable=None if len(pairs) > 1 else True))
    while True:
        try:
            src, dst = next(files)
        except StopIteration:
            break
        except KeyboardInterrupt:  # between files: the tables below still get the finished ones
            interrupted = True
            break
        if dst.resolve() in inputs:
            failed.append(src)
            log(f"{src}: refusing to write {dst}: it is an input file")
            continue
        if dst.exists() and not args.overwrite:
            skipped.append(src)
            continue

        def record(row, objs, src=src, dst=dst):
            """The file's rows of every table, recorded before its mask is written."""
            rows = {"summary.csv": [row], "objects.csv": objs}
            if args.track:
                rows["tracks.csv"], rows["track_summary.csv"] = track_objects(row, objs, args)
            tables.write_record(src, dst, rows)

        try:
            row, _ = seg.segment(src, dst, before_mask=record)
        except KeyboardInterrupt:
            interrupted = True
            break
        except (ValueError, OSError, MemoryError, RuntimeError) as err:
            failed.append(src)
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            log(msg if str(src) in msg else f"{src}: {msg}")
            continue
        done.append((src, dst))
        megapixels += math.prod(int(v) for v in row["shape"].split("x")) / 1e6

    if interrupted:
        log(f"{name}: interrupted; writing the tables of the {len(done)} file(s) done (the same command "
            "continues the batch)")
        pairs = [(src, dst) for src, dst in pairs if dst.exists()]
    try:
        written, missing = tables.finish(pairs)
    except OSError as err:
        log(f"{name}: could not write the tables in {tables.folder} ({err}); the masks and their rows "
            f"(in {tables.folder / RECORDS}) are kept: run again to write them")
        return 1
    for src, line in missing:
        log(line)
    for src, dst in done:
        print(f"{src} -> {dst}")
    seconds = time.perf_counter() - t0
    summary = tables.folder / "summary.csv"
    where = (f"; summary: {summary}" if summary in written else
             f"; summary: {summary} (unchanged)" if summary.is_file() else "; no summary written")
    skip_note = " (mask exists; --overwrite to redo)" if skipped else ""
    log(f"{name}: {len(done)} segmented, {len(skipped) - len(missing)} skipped{skip_note}, "
        f"{len(failed) + len(missing)} failed, {megapixels:.1f} MP in {seconds:.1f} s{where}")
    return 130 if interrupted else 1 if failed or missing else 0
