"""Images larger than memory: a zarr / OME-Zarr array, or a huge TIFF read as zarr through tifffile, segmented
chunk by chunk; the mask written as an OME-Zarr (NAME_mask.zarr) with the input's pixel size.

    python SynSeg_Vesicle.py -i mosaic.ome.zarr -o out/ --object-csv --cluster local:2
    python SynSeg_Vesicle.py -i huge.tif -o out/ --chunk-size 4096 --cluster tcp://head:8786

The plane is cut into chunks of --chunk-size px (a multiple of the network's pooling grid, 2**depth), and
each chunk is segmented from a window that adds a margin of the predictor's overlap on every side (twice
the network's receptive radius plus the blend, tiling.default_overlap): every pixel of the chunk sees only real
image, exactly as in the whole-image prediction, and windows start on the pooling grid, so the chunk's
probabilities are the whole image's up to float rounding (tests/test_distributed.py). What needs the whole
plane is computed first from a pass over the chunks: the normalisation statistics (the local-contrast noise
model on the same strided view the whole-image path fits it on; percentiles from summed per-chunk
histograms), so they are the whole image's too. Each chunk then runs the per-plane steps that are local:
threshold (a number; 'otsu' needs the whole map and is refused), the split of touching objects, the spot
core and --min-snr (spots.filter_spots without the image-level contrast cut, which is skipped and said so),
and its measurements. An object is counted by the chunk that holds its centroid only, so objects on chunk
borders count once; a cytoskeleton's skeleton length and junctions are summed over the chunks (each chunk's
skeleton drawn on its window: about one px short for every filament crossing a chunk border).

Memory per task is one window (chunk + 2 margins), never the image. On a --cluster the file's task hands its
chunks to the cluster (worker_client: they spread over every worker); without one they run one after the
other in this process. Each chunk writes its own output chunk (the mask's zarr chunks are the chunks), into a
hidden folder renamed to NAME_mask.zarr at the end, after the file's table rows are recorded: as for a TIFF
mask, its presence means done. Why not dask.array.map_overlap: a chunk returns its object rows as well as its
mask, and writes its mask itself, so nothing the size of the image passes through one process.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from synseg.segment.predict import log

DEFAULT_CHUNK = 2048  # px: zarr inputs without --chunk-size
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
UNITS_UM = {"micrometer": 1.0, "um": 1.0, "µm": 1.0, "nanometer": 1e-3, "nm": 1e-3, "millimeter": 1e3, "mm": 1e3}
SAMPLE_PIXELS = 2 ** 24  # a float image's percentile statistics come from a strided view of about this many px


def is_zarr(path) -> bool:
    """True for a zarr store (a folder holding zarr metadata)."""
    path = Path(path)
    return path.is_dir() and any((path / m).exists() for m in ZARR_MARKERS)


def wanted(src, chunk_size: int) -> bool:
    """Whether `src` is segmented chunk by chunk: every zarr input, and every input when --chunk-size is given."""
    return chunk_size > 0 or is_zarr(src)


def mask_path(dst: Path) -> Path:
    """The zarr mask beside where the TIFF mask would go: NAME_mask.tif -> NAME_mask.zarr."""
    return dst.with_suffix(".zarr")


# --------------------------------------------------------------------------- reading

def _ome_axes(ms: dict) -> tuple[str, float | None, str]:
    """(axes letters, pixel size in um of X, path of the full-resolution level) of an OME-Zarr multiscales entry."""
    axes = [a if isinstance(a, str) else a.get("name", "?") for a in ms.get("axes", [])]
    ds = ms["datasets"][0]
    px = None
    scale = next((t.get("scale") for t in ds.get("coordinateTransformations", []) if t.get("type") == "scale"), None)
    if scale and "x" in [a.lower() for a in axes]:
        i = [a.lower() for a in axes].index("x")
        unit = ms["axes"][i].get("unit", "") if isinstance(ms["axes"][i], dict) else ""
        px = float(scale[i]) * UNITS_UM.get(str(unit).lower(), 1.0) if unit in UNITS_UM or not unit else None
    return "".join(a[0].upper() for a in axes), px, ds["path"]


def open_source(path):
    """(array with zarr-style slicing, axes letters, pixel size in um or None, something to close or None)."""
    import zarr

    path = Path(path)
    closer = None
    if is_zarr(path):
        z = zarr.open(str(path), mode="r")
    else:
        import tifffile

        from synseg import tiffio

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes.upper()
            px = (tiffio._ome_pixel_size(tif.ome_metadata) if tif.is_ome and tif.ome_metadata else None) \
                or tiffio._resolution_um(tif.pages[0])
            unit = str((tif.imagej_metadata or {}).get("unit", "")).lower()
            if px and unit in ("pixel", "pixels", "px"):
                px = None
        closer = tifffile.imread(path, aszarr=True)
        z = zarr.open(closer, mode="r")
        if isinstance(z, zarr.Group):  # a pyramid: level 0 is the full resolution
            z = z["0"]
        return z, axes.replace("I", "Q"), px, closer
    px, axes = None, None
    attrs = dict(z.attrs)
    ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if isinstance(z, zarr.Group):
        if ms:
            axes, px, level = _ome_axes(ms[0])
            z = z[level]
        else:
            names = sorted(k for k, _ in z.arrays())
            if not names:
                raise ValueError("a zarr group without arrays")
            z = z[names[0]]
            attrs = dict(z.attrs)
    axes = axes or attrs.get("axes") or "Q" * (z.ndim - 2) + "YX"
    px = px or attrs.get("pixel_size_um")
    return z, "".join(axes).upper(), (float(px) if px else None), closer


def plane_layout(shape: tuple[int, ...], axes: str, channel: int | None, path) -> tuple[list[tuple], str, tuple]:
    """([index of each plane's leading axes, with the chosen channel], axes of the mask, shape of the mask)."""
    if len(axes) != len(shape) or axes[-2:] != "YX":
        raise ValueError(f"{path}: chunked images need Y and X as the last two axes (shape {shape}, axes {axes!r})")
    lead = []
    for i, a in enumerate(axes[:-2]):
        if a in "CS":
            if shape[i] == 1:
                lead.append([0])
            elif channel is None:
                raise ValueError(f"{path}: image has {shape[i]} channels (axes {axes}); choose one with --channel")
            elif not 0 <= channel < shape[i]:
                raise ValueError(f"{path}: --channel {channel} out of range; this image has 0..{shape[i] - 1}")
            else:
                lead.append([channel])
        else:
            lead.append(range(shape[i]))
    keep = [i for i, a in enumerate(axes[:-2]) if a not in "CS"] + [len(axes) - 2, len(axes) - 1]
    planes = [tuple(ix) for ix in np.ndindex(*[len(r) for r in lead])]
    planes = [tuple(lead[d][j] for d, j in enumerate(ix)) for ix in planes]
    return planes, "".join(axes[i] for i in keep), tuple(shape[i] for i in keep)


# --------------------------------------------------------------------------- chunks

def windows(h: int, w: int, chunk: int, margin: int) -> list[tuple[int, int, int, int, int, int, int, int]]:
    """(chunk y0, y1, x0, x1, window y0, y1, x0, x1) for every chunk of an h x w plane, row by row."""
    out = []
    for y0 in range(0, h, chunk):
        for x0 in range(0, w, chunk):
            y1, x1 = min(h, y0 + chunk), min(w, x0 + chunk)
            out.append((y0, y1, x0, x1, max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin),
                        min(w, x1 + margin)))
    return out


def _read(path, plane: tuple, ys: slice, xs: slice) -> np.ndarray:
    """One window of one plane, read from the file (every task opens the source itself)."""
    z, _, _, closer = open_source(path)
    try:
        return np.asarray(z[(*plane, ys, xs)])
    finally:
        if closer is not None:
            closer.close()


def sample_task(path, plane: tuple, box: tuple, step: int, histogram: bool):
    """A chunk's share of the plane-wide statistics: its pixels on the global stride grid (every step-th row and
    column, counted from 0) and, for integer images, its histogram (values, counts)."""
    from synseg import normalization

    y0, y1, x0, x1 = box
    block = _read(path, plane, slice(y0, y1), slice(x0, x1))
    sy, sx = -y0 % step, -x0 % step
    hist = normalization._histogram(block) if histogram and block.size else None
    return block[sy::step, sx::step], hist


def plane_stats(path, plane: tuple, shape: tuple[int, int], dtype, chunk: int, spec: dict, run) -> dict:
    """normalization.normalization_stats of the whole plane, from a pass over its chunks (`run` maps a task over
    argument tuples): the local-contrast model on the same strided view the whole-image path fits it on;
    integer images of up to 16 bits from their summed histograms; float images from a strided view."""
    from synseg import normalization

    h, w = shape
    mode = spec.get("mode", "standardize")
    integer = np.issubdtype(dtype, np.integer) and np.dtype(dtype).itemsize <= 2
    if mode == "local":
        step = max(1, int(math.ceil(math.sqrt(h * w / normalization.FIT_PIXELS))))
    else:
        step = max(1, int(math.ceil(math.sqrt(h * w / SAMPLE_PIXELS))))
    boxes = [b[:4] for b in windows(h, w, chunk, 0)]
    parts = run(sample_task, [(path, plane, box, step, mode != "local" and integer) for box in boxes])
    rows = {}
    for (y0, _, x0, _), (sample, _) in zip(boxes, parts):
        rows.setdefault(y0, []).append((x0, sample))
    view = np.concatenate([np.concatenate([s for _, s in sorted(r, key=lambda t: t[0])], axis=1)
                           for _, r in sorted(rows.items())], axis=0)
    if mode == "local":
        # the strided view with the windows shrunk by the stride: what noise_model fits on a whole plane
        scaled = dict(spec, radius=float(spec.get("radius", normalization.LOCAL_RADIUS)) / step,
                      sigma=float(spec.get("sigma", normalization.LOCAL_SIGMA)) / step)
        return normalization.noise_model(view, scaled)
    if not integer:
        return normalization.normalization_stats(view, spec)
    lo = min(int(v[0]) for _, (v, _) in parts if v is not None and len(v))
    hi = max(int(v[-1]) for _, (v, _) in parts if v is not None and len(v))
    counts = np.zeros(hi - lo + 1, np.int64)
    for _, (values, c) in parts:
        counts[values.astype(np.int64) - lo] += c
    keep = counts > 0
    return stats_from_histogram(np.arange(lo, hi + 1, dtype=np.float64)[keep], counts[keep], spec)


def stats_from_histogram(values: np.ndarray, counts: np.ndarray, spec: dict) -> dict:
    """normalization_stats of an integer image given its histogram: the same numbers as on the whole image."""
    from synseg import normalization

    mode = spec.get("mode", "standardize")
    if mode == "standardize":
        n = counts.sum()
        mean = float((values * counts).sum() / n)
        return {"mean": mean, "std": float(math.sqrt((counts * (values - mean) ** 2).sum() / n))}
    if mode == "percentile":
        lo, hi = normalization._percentiles(values, counts, (spec.get("low", 1.0), spec.get("high", 99.8)))
        return {"lo": lo, "hi": hi if hi > lo else float(values[-1])}
    if mode == "median":
        pos = values > 0
        return {"median": normalization._percentiles(values[pos], counts[pos], (50.0,))[0] if pos.any() else 0.0}
    return {"min": float(values[0]), "max": float(values[-1])}


def chunk_probability(seg, window: np.ndarray, stats: dict) -> np.ndarray:
    """Probability map (float32) of one window, normalised with the whole plane's statistics `stats`."""
    from synseg import normalization
    from synseg.segment import tiling

    if window.min() == window.max():  # as for a constant plane: nothing to find
        return np.zeros(window.shape, np.float32)
    return tiling.predict_probability(seg.net, window, tile_size=seg.tile_size, overlap=seg.overlap,
                                      batch_size=seg.batch_size, device=seg.device, amp_dtype=seg.amp,
                                      tta=seg.options.tta,
                                      normalize=lambda t: normalization.apply_normalization(t, seg.norm, stats))


def chunk_skeleton(mask: np.ndarray, core: tuple[slice, slice]) -> tuple[float, int]:
    """(skeleton length in px, junctions) of a chunk: the skeleton of its window's mask, cut to the chunk, so
    centrelines do not bend towards the chunk's edge (a skeleton of the cut mask would). Summed over the chunks
    this is the whole plane's figure for filaments narrower than the margin, less about one px for every
    filament that crosses a chunk border (tests/test_distributed.py)."""
    from skimage.morphology import skeletonize

    from synseg.segment import postprocess

    return postprocess.skeleton_stats(skeletonize(mask)[core])  # a one-pixel skeleton is left as it is


def chunk_task(seg, path, plane: tuple, out_plane: tuple, box: tuple, stats: dict, out_path, src_name: str) -> dict:
    """Segment one chunk from its window (`seg`: a Segmenter, or a function giving this worker's), write its mask
    into the output zarr, return its measurements: foreground pixels, owned object rows or skeleton figures."""
    from synseg.segment import postprocess, spots

    seg = seg() if callable(seg) else seg
    o = seg.options
    y0, y1, x0, x1, wy0, wy1, wx0, wx1 = box
    window = _read(path, plane, slice(wy0, wy1), slice(wx0, wx1))
    if window.dtype == bool:
        window = window.astype(np.uint8)
    core = (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0))
    prob = chunk_probability(seg, window, stats)
    if not np.isfinite(prob.max()):
        raise ValueError(f"{src_name}: the model's output holds NaN in the chunk at y {y0}, x {x0}; no mask written")
    mask = prob > float(o.threshold)
    if o.split and mask.any():
        mask = postprocess.split_touching(mask, window, o.min_distance, in_place=True)
    if (o.min_snr > 0 or o.spot_core > 0) and mask.any():
        mask, _ = spots.filter_spots(mask, window, in_place=True, cut=False, min_snr=o.min_snr, core=o.spot_core)
    out = {"foreground": int(np.count_nonzero(mask[core])), "objects": [], "length": 0.0, "junctions": 0}
    measure = seg.task.measure(src_name)
    if measure.columns == postprocess.ObjectMeasure.columns:
        measure.add(0, mask, window, prob)
        for row in measure.objects:  # the chunk that holds an object's centroid owns it
            cy, cx = row["centroid_y"] + wy0, row["centroid_x"] + wx0
            if y0 - 0.5 <= cy < y1 - 0.5 and x0 - 0.5 <= cx < x1 - 0.5:
                row.update(centroid_y=cy, centroid_x=cx)
                for key, shift in (("y", wy0), ("x", wx0)):
                    if row.get(key) not in (None, ""):
                        row[key] = row[key] + shift
                out["objects"].append(row)
    else:
        out["length"], out["junctions"] = chunk_skeleton(mask, core)
    import zarr

    target = zarr.open_array(str(out_path), mode="r+")
    target[(*out_plane, slice(y0, y1), slice(x0, x1))] = mask[core].astype(np.uint8) * np.uint8(255)
    return out


# --------------------------------------------------------------------------- one file

def runner(cfg, task: str):
    """(run(function, [argument tuples]) -> results in order, the Segmenter argument of chunk_task).

    Inside a --cluster worker the chunks become tasks of the whole cluster (worker_client: this task gives up its
    slot while it waits) and each worker uses its own cached Segmenter; elsewhere they run here, one by one.
    """
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):
        return None
    import functools

    import torch

    from synseg.segment import distributed

    def run(function, arguments):
        with worker_client() as client:
            futures = [client.submit(function, *a, pure=False) for a in arguments]
            return client.gather(futures)

    return run, functools.partial(distributed.loaded_segmenter, cfg, task, torch.get_num_threads())


def write_ome_zarr(path: Path, shape: tuple, axes: str, chunk: int, px: float | None, name: str) -> Path:
    """An empty uint8 OME-Zarr (0.4, zarr format 2) image of `shape`; returns the path of its full-resolution array.

    Its chunks are the segmentation chunks (one plane each), so every chunk task writes chunks of its own."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    kinds = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
    ome_axes = []
    for a in axes:
        entry = {"name": a.lower() if a in kinds else f"dim_{a.lower()}"}
        if a in kinds:
            entry["type"] = kinds[a]
        if px and a in "YX":
            entry["unit"] = "micrometer"
        ome_axes.append(entry)
    scale = [px if (px and a in "YX") else 1.0 for a in axes]
    root.attrs["multiscales"] = [{"version": "0.4", "name": name, "axes": ome_axes,
                                  "datasets": [{"path": "0", "coordinateTransformations": [
                                      {"type": "scale", "scale": scale}]}]}]
    if px:
        root.attrs["pixel_size_um"] = px
    root.create_array("0", shape=shape, chunks=(1,) * (len(shape) - 2) + (chunk, chunk), dtype="uint8",
                      fill_value=0)
    return path / "0"


def segment(seg, cfg, src: Path, dst: Path, before_mask=None) -> tuple[dict, list[dict]]:
    """Segment one image chunk by chunk into the OME-Zarr mask `dst`; returns (summary row, object rows) as
    predict.Segmenter.segment does (cfg: batch.Config, for --chunk-size and, on a cluster, the workers' model)."""
    o = seg.options
    if str(o.threshold).lower() == "otsu":
        raise ValueError(f"{src}: --threshold otsu needs the whole probability map; chunked images take a number "
                         "(e.g. 0.5)")
    try:
        z, axes, px_file, closer = open_source(src)
    except (KeyError, TypeError, ValueError, OSError, IndexError) as err:  # zarr's and tifffile's many kinds
        text = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"{src}: cannot be read as a chunked image ({type(err).__name__}{': ' + text if text else ''})"
                         ) from None
    shape, dtype = tuple(z.shape), z.dtype
    if closer is not None:
        closer.close()
    planes, out_axes, out_shape = plane_layout(shape, axes, o.channel, src)
    px = o.pixel_size or px_file
    factor, note = seg.scale_for(out_shape[-2:], px, " (--pixel-size)" if o.pixel_size else "")
    if factor != 1.0:
        raise ValueError(f"{src}: chunked images are segmented at their own pixel size, and this one would be "
                         f"{note}; pass --no-rescale, or resample it to the model's pixel size first")
    align = 2 ** seg.net.depth
    margin = -(-seg.overlap // align) * align
    chunk = -(-(cfg.chunk_size or DEFAULT_CHUNK) // align) * align
    chunk = max(chunk, margin)
    h, w = out_shape[-2:]
    boxes = windows(h, w, chunk, margin)
    found = runner(cfg, seg.task.name)
    run, seg_ref = found if found else ((lambda f, args: [f(*a) for a in args]), seg)
    log(f"{src}: {len(planes)} plane(s) of {h}x{w} ({dtype}, axes {out_axes}) in {len(boxes)} chunk(s) of {chunk} "
        f"px, margin {margin} px{', on the cluster' if found else ''}; {note}"
        + ("; the image-level spot contrast cut is skipped for chunked images" if o.contrast_cut else "")
        + ("; --save-prob and --overlay are not written for chunked images" if o.save_prob or o.overlay else ""))
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.stem}.part{os.getpid()}.zarr")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        target = write_ome_zarr(tmp, out_shape, out_axes, chunk, px, src.name)
        measure = seg.task.measure(src)
        foreground = 0
        lead = [i for i, a in enumerate(axes[:-2]) if a not in "CS"]
        for k, plane in enumerate(planes):
            out_plane = tuple(plane[i] for i in lead)
            where = Path(src).resolve()  # tasks may run on workers in another folder
            stats = plane_stats(where, plane, (h, w), dtype, chunk, seg.norm, run)
            parts = run(chunk_task, [(seg_ref, where, plane, out_plane, box, stats, target.resolve(), str(src))
                                     for box in boxes])
            for part in parts:
                foreground += part["foreground"]
                for row in part["objects"]:
                    row.update(plane=k, label=len(measure.objects) + 1)
                    measure.objects.append(row)
                if hasattr(measure, "length_px"):
                    measure.length_px += part["length"]
                    measure.junctions += part["junctions"]
        threshold = float(o.threshold)
        row = {"file": str(src), "mask": str(dst), "shape": "x".join(map(str, out_shape)), "axes": out_axes,
               "pixel_size_um": f"{px:.6g}" if px else "", "scale": f"{1.0:.4g}",
               "threshold": f"{threshold:.4g}", "foreground_fraction": f"{foreground / math.prod(out_shape):.6f}",
               **measure.summary(px), "frame_interval_s": None}
        log(f"{src}: {len(planes) * len(boxes)} chunk(s) in {time.perf_counter() - t0:.1f} s")
        if before_mask is not None:
            before_mask(row, measure.objects)
        if dst.exists():  # --overwrite: the old mask goes only once the new one is complete
            old = dst.with_name(f".{dst.stem}.old{os.getpid()}.zarr")
            os.replace(dst, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return row, measure.objects
