"""Tiled prediction: the tile layout, the blending windows, and the probability map of one 2D plane.

    prob = predict_probability(prepare_model(model, device), image, tile_size=512, overlap=default_overlap(args))

The plane is cut into a grid of equal tiles (at most `tile_size`; predict.py by default picks the largest
that about 1.6 GB of network memory allows on the CPU, auto_tile_size), shrunk so that they cover it evenly,
whose neighbours overlap by at least `overlap` px. Tiles start on multiples of 2**depth, so each sees the
same pooling grid as the whole image. Each tile's sigmoid output is weighted by a separable window: 1 in the
core and at the image border; across an overlap with a neighbour, a halo next to the tile edge (weight 1e-6:
those pixels see the edge), then a 16-px sin^2 hand-over to the neighbour, whose window mirrors it, so the
weights add up to one and leave no seam. The sum is divided by the summed windows. The default overlap is
twice the network's exact receptive radius plus the hand-over, so every pixel that counts saw only real
image: tiled and whole-image predictions are the same up to float rounding (tests/test_predict.py).
Tiles go through in batches (on the CPU only small tiles are batched, where it pays; auto_batch_size) under
autocast, with batch norm folded into the convolutions (prepare_model). Each tile is normalised on its own
with the whole plane's statistics, and the blend is summed one tile row at a time, so the only full-size
array is the probability map (float16 above HALF_PROB_PIXELS).
"""
from __future__ import annotations

import math

import numpy as np


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
MAX_TILE = 1024  # px on accelerators; larger tiles save little overlap and cost memory there
# px on the CPU, where the tile is as large as CPU_TILE_BUDGET allows: a compact network's overlap (two receptive
# radii, 230-330 px at depth 4) would otherwise be most of a 1024 px tile (2.2x the pixels for a 2048^2 image)
MAX_CPU_TILE = 2560
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
    """Largest tile edge whose forward pass stays within CPU_TILE_BUDGET on the CPU (at most MAX_CPU_TILE);
    MAX_TILE elsewhere.

    Measured: the base-64 network needs about 2 KB per tile pixel in float32 (1.48 GB for 856 x 856), half that
    under bf16 autocast (`half`), so 880 px for base 64 in fp32, 1248 px for base 32 and 2496 px for base 8.
    """
    align = 2 ** int(model_args.get("depth", 3))
    if device_type != "cpu":
        return MAX_TILE
    base = int(model_args.get("base_channels", 64))
    edge = math.sqrt(CPU_TILE_BUDGET / (ACTIVATION_BYTES * base / (2 if half else 1)))
    return int(min(MAX_CPU_TILE, edge) // align * align)


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


def forward_tiles(model, tiles: np.ndarray, device, amp_dtype=None, tta: bool = False) -> np.ndarray:
    """Sigmoid of the network on a stack of normalised tiles (B, th, tw) float32 -> (B, th, tw) float32.

    Under autocast when amp_dtype is set; with tta the four flips are averaged. The one forward pass that
    tiled planes and stacked small planes share, so both compute the same numbers.
    """
    import torch

    x = torch.from_numpy(tiles)[:, None].to(device)  # (B, 1, th, tw)
    if getattr(model, "channels_last", False):
        x = x.contiguous(memory_format=torch.channels_last)
    prob = None
    with torch.inference_mode():
        for dims in [(), (-1,), (-2,), (-2, -1)] if tta else [()]:
            xin = torch.flip(x, dims) if dims else x
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(xin)
            p = torch.sigmoid(logits.float())
            p = torch.flip(p, dims) if dims else p
            prob = p if prob is None else prob + p
        return (prob[:, 0] / (4 if tta else 1)).cpu().numpy()


def onnx_available() -> bool:
    """True when ONNX Runtime and onnx (for the export) are installed (requirements-export.txt).

    Looked up without importing them: importing onnx costs about 1 s, and a graph already in the cache
    (predict.onnx_network) needs only onnxruntime.
    """
    from importlib.util import find_spec

    return find_spec("onnx") is not None and find_spec("onnxruntime") is not None


class OnnxNet:
    """A prepared (BN-folded) network run by ONNX Runtime's CPU provider in fp32; called like the torch module.

    On CPUs without native bf16 it is the fastest fp32 path we measured (bench/bench_predict.py --filters).
    Built from the exported ONNX bytes (predict.onnx_network exports them once per model and keeps them in
    predict.onnx_cache_dir()).
    """

    channels_last = False

    def __init__(self, onnx_bytes: bytes, depth: int, threads: int):
        """onnx_bytes: the network with input "input" (B, 1, H, W); depth: its pooling steps; threads: intra-op."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        # spinning threads would keep the cores busy between tiles, when NumPy does the blending
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.depth, self.threads = depth, options.intra_op_num_threads

    def __call__(self, x):
        """Logits (B, 1, H, W) of a float32 CPU tensor (B, 1, H, W)."""
        import torch

        return torch.from_numpy(self.session.run(None, {"input": x.numpy()})[0])

    def parameters(self):
        """A CPU tensor, so that `next(net.parameters()).device` works as for a torch module."""
        import torch

        yield torch.zeros(0)


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
                        progress: bool = False, normalize=None, normalize_at=None,
                        out_dtype=np.float32) -> np.ndarray:
    """Foreground probability (out_dtype, same shape) of one 2D image, predicted tile by tile.

    `model` returns logits. `image` is float32 (H, W) already normalised, or any 2D array together with
    `normalize`, a function that maps a crop of it to the normalised float32 crop (the whole image's
    statistics, normalization.apply_normalization), so no normalised copy of the plane is ever made. An image no larger
    than a tile is predicted whole; `normalize_at(crop, y, x)`, when given, is told the crop's top-left corner
    too. With tta the four flips of every tile are averaged. Tiles go row by row;
    the blend is summed in a buffer one tile row high, and finished rows are divided by their summed window
    and written to the output, so the only full-size array is the output itself.
    """
    from tqdm import tqdm

    device = device or next(model.parameters()).device
    normalize = normalize or (lambda t: np.asarray(t, np.float32))
    normalize_at = normalize_at or (lambda t, y, x: normalize(t))
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
    bar = tqdm(total=len(jobs), desc="tiles", unit="tile", leave=False, disable=not progress, mininterval=1.0)
    for k in range(0, len(jobs), batch_size):
        batch = jobs[k:k + batch_size]
        tiles = np.stack([normalize_at(read_tile(image, ys[i], xs[j], ty, tx, mode), ys[i], xs[j])
                          for i, j in batch])
        prob = forward_tiles(model, tiles, device, amp_dtype, tta)  # (B, ty, tx)
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


def planes_per_pass(shape: tuple[int, int], factor: float, tile_size: int, batch_size: int, depth: int) -> int:
    """How many planes of `shape` stack_probability may send through the network together; 0: one at a time.

    A plane qualifies when, resized by `factor` and padded to the pooling grid, it fits one tile (then
    predict_probability too would predict it whole); a pass holds as many as fit batch_size full tiles of pixels.
    """
    align = 2 ** depth
    h, w = (max(1, round(n * factor)) for n in shape) if factor != 1.0 else shape
    hp, wp = -(-h // align) * align, -(-w // align) * align
    edge = -(-tile_size // align) * align
    if hp > edge or wp > edge:
        return 0
    return max(1, (max(1, batch_size) * tile_size * tile_size) // (hp * wp))


def stack_probability(net, planes, factor: float, normalization: dict, *, device, amp_dtype=None,
                      tta: bool = False, stats: list | None = None, contrast: list | None = None) -> list[np.ndarray]:
    """Probability maps (float32, each on its plane's grid) of raw 2D planes of one shape, in one forward pass.

    For planes that fit one tile (planes_per_pass > 0): each is resized, normalised with its own statistics and
    padded exactly as plane_probability does it, so the maps equal plane_probability's up to float rounding
    (a batch may sum the convolutions in another order; tests/test_predict.py). `stats`: per plane, its
    normalization_stats when already known (None entries are computed here). `contrast`: per plane, a dict or
    None, as in plane_probability.
    """
    from synseg.normalization import apply_normalization, normalization_stats

    align = 2 ** net.depth
    tiles, shape = [], None
    for i, plane in enumerate(planes):
        h, w = plane.shape
        x = plane
        if factor != 1.0:
            x = resize_plane(plane.astype(np.float32), (max(1, round(h * factor)), max(1, round(w * factor))))
        hh, ww = x.shape
        ph, pw = (-hh) % align, (-ww) % align
        mode = "reflect" if (ph < hh and pw < ww) else "edge"
        known = stats[i] if stats is not None else None
        known = normalization_stats(x, normalization) if known is None else known
        keep = None
        if contrast is not None and contrast[i] is not None and not (ph or pw):  # the whole plane, unpadded
            keep = lambda z, into=contrast[i]: into.__setitem__("z", z.copy())  # noqa: E731
        tiles.append(apply_normalization(read_tile(x, 0, 0, hh + ph, ww + pw, mode), normalization, known, keep))
        shape = (h, w, hh, ww)
    h, w, hh, ww = shape
    prob = forward_tiles(net, np.stack(tiles), device, amp_dtype, tta)[:, :hh, :ww]  # (N, hh, ww)
    out = []
    for p in prob:
        if (hh, ww) != (h, w):
            p = np.clip(resize_plane(p, (h, w)), 0.0, 1.0)
        out.append(np.ascontiguousarray(p, dtype=np.float32))
    return out


CONTRAST_PIXELS = 2 ** 24  # plane_probability keeps the local contrast of planes up to 4096^2 px (64 MB)


def _contrast_keeper(shape: tuple[int, int], normalization: dict, stats: dict):
    """(normalize_at, done) for predict_probability on an unpadded plane of `shape`: normalize_at normalises each
    tile as apply_normalization does and copies the part of its local contrast (before compression) that
    equals the whole plane's into a plane-sized array; done() returns that array, or None when the tiles'
    parts left a row or column out (overlaps narrower than 2 x local_reach)."""
    from synseg.normalization import apply_normalization, local_reach

    out = np.empty(shape, np.float32)
    rows, cols = np.zeros(shape[0], bool), np.zeros(shape[1], bool)  # the tiles form a grid: rows x columns
    m = local_reach(normalization)

    def normalize_at(tile: np.ndarray, y: int, x: int) -> np.ndarray:
        th, tw = tile.shape
        y0, y1 = y + (m if y > 0 else 0), y + th - (m if y + th < shape[0] else 0)
        x0, x1 = x + (m if x > 0 else 0), x + tw - (m if x + tw < shape[1] else 0)
        keep = None
        if y1 > y0 and x1 > x0:
            rows[y0:y1], cols[x0:x1] = True, True

            def keep(z):
                out[y0:y1, x0:x1] = z[y0 - y:y1 - y, x0 - x:x1 - x]
        return apply_normalization(tile, normalization, stats, keep)

    return normalize_at, lambda: out if rows.all() and cols.all() else None


def plane_probability(net, plane: np.ndarray, factor: float, normalization: dict, *, tile_size: int, overlap: int,
                      batch_size: int, device, amp_dtype=None, tta: bool = False,
                      progress: bool = False, stats: dict | None = None, contrast: dict | None = None) -> np.ndarray:
    """Probability map of one raw 2D plane on its own grid (float16 above HALF_PROB_PIXELS, else float32).

    The plane is resized by `factor` for prediction (resize_plane) and the map resized back. Tiles are
    normalised one at a time with the whole plane's statistics (normalization.normalization_stats), so an
    unscaled plane is never copied to float32 in full. `stats`: those statistics when already known (the
    quality check's noise model of a measured plane, qc.noise_model_at_scale; computed here when None).
    `contrast`: a dict that receives "z", the plane's local contrast at the model's scale before compression
    (normalization.local_contrast's keep) when the network normalises it by local contrast and the plane is
    not padded (a multiple of 2**depth) nor over CONTRAST_PIXELS: what the quality check measures with the
    same noise model (qc.image_figures' z). Each tile gives the part more than local_reach from its edges
    inside the plane, the same numbers as the whole plane's; the overlaps cover the rest.
    """
    from synseg.normalization import apply_normalization, normalization_stats

    h, w = plane.shape
    x = plane
    if factor != 1.0:
        x = resize_plane(plane.astype(np.float32), (max(1, round(h * factor)), max(1, round(w * factor))))
    stats = normalization_stats(x, normalization) if stats is None else stats
    half = h * w > HALF_PROB_PIXELS
    normalize_at = None
    if (contrast is not None and normalization.get("mode") == "local" and x.size <= CONTRAST_PIXELS
            and not (x.shape[0] % 2 ** net.depth or x.shape[1] % 2 ** net.depth)):
        normalize_at, done = _contrast_keeper(x.shape, normalization, stats)
    prob = predict_probability(net, x, tile_size=tile_size, overlap=overlap, batch_size=batch_size, device=device,
                               amp_dtype=amp_dtype, tta=tta, progress=progress,
                               normalize=lambda tile: apply_normalization(tile, normalization, stats),
                               normalize_at=normalize_at,
                               out_dtype=np.float16 if half and factor == 1.0 else np.float32)
    del x
    if normalize_at is not None and (z := done()) is not None:
        contrast["z"] = z
    if prob.shape != (h, w):
        prob = resize_plane(prob, (h, w))
        np.clip(prob, 0.0, 1.0, out=prob)
        if half:
            prob = prob.astype(np.float16)
    return prob
