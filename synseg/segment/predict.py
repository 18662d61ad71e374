"""The segmentation engine: one file in, its mask, probability map, overlay and measurements out.

batch.py runs it over many files (SynSeg_Vesicle.py and SynSeg_Cytoskeleton.py are thin wrappers over
batch.run); what differs between the tasks is their record in tasks.py (measurements, overlay style,
whether touching objects are split, the contrast cut).

    seg = Segmenter(model, info, tasks.TASKS["vesicle"], Options(save_prob=True), device)
    row, objects = seg.segment(Path("cell.tif"), Path("out/cell_mask.tif"))

How one image becomes a mask:
  1. Read (tiffio.read_image), pick a channel if the image has several (--channel), and treat every
     other axis (T, Z, ...) as a list of 2D planes.
  2. Physical scale: if the input's pixel size is known (tags or --pixel-size) and the model records
     the pixel size it was trained at, the plane is resized to the model's scale (area averaging when
     shrinking, linear when enlarging); the probability map is resized back to the input grid.
  3. Normalise the plane exactly as in training (normalization.normalize_image with the checkpoint's spec).
  4. Tiled prediction (tiling.py): tiles of at most --tile-size (by default as large as about 1.6 GB of
     network memory allows on the CPU) that overlap by --overlap px, blended so that tiled and whole-image
     predictions agree; batched (--batch-size) under autocast (unet.autocast_dtype: bf16 on CPUs with
     AVX512-BF16/AMX, in channels_last), batch norm folded into the convolutions. Only the probability map
     is full-size (float16 above 8192^2 px): a 20000^2 uint8 plane segments in under 3 GB.
  5. Threshold: a number, or 'otsu' on the probability map (postprocess.resolve_threshold).
  6. Tasks with `split` (on by default, --no-split turns it off): touching objects are split by a seeded
     watershed so that each connected component of the written mask is one object (postprocess.split_touching).
  7. Tasks with `contrast_cut` (on by default, --no-contrast-cut turns it off): the image-level decision of
     which puncta an expert would mark. Each object's contrast (peak minus the median of a ring 4-9 px
     around it) is measured; when the log-contrasts form two clearly separated groups (two-component
     Gaussian mixture, Ashman's D >= 2 and a valley between them), the dim group is dropped. Logged per
     image; see spots.py.
  8. Measurements (the task's `measure`, postprocess.py): object count, mean area and per-object rows, or
     skeleton length and junctions; in um / um^2 when the pixel size is known, else in px.
Every file is written under a temporary name and renamed, the mask last, so its presence means done.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synseg.segment import postprocess
from synseg.segment import qc
from synseg import tiffio
from synseg.segment import tiling

RESCALE_TOLERANCE = 0.02  # pixel sizes within 2% count as equal: no resampling
MAX_SCALE = 8.0  # rescale factors beyond 1/8..8 are a wrong pixel size (nm read as um, a screen dpi), not optics
MAX_SCALED_PIXELS = 2 ** 30  # a plane resized for prediction may hold at most this many pixels (32768^2)
OUTPUT_SUFFIXES = ("_mask", "_prob", "_overlay")


def log(*parts) -> None:
    """Progress and notes go to stderr; stdout carries the input -> output list."""
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- scale

def rescale_factor(input_px: float | None, model_px: float | None) -> float:
    """Factor to resize an input plane by so that its pixels match the model's (1.0: leave as is)."""
    if not input_px or not model_px:
        return 1.0
    f = float(input_px) / float(model_px)
    return 1.0 if abs(f - 1.0) <= RESCALE_TOLERANCE else f


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


# --------------------------------------------------------------------------- outputs

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


def onnx_cache_dir() -> Path | None:
    """Where exported ONNX graphs are kept between runs: $SYNSEG_CACHE_DIR, else $XDG_CACHE_HOME/synseg, else
    ~/.cache/synseg; SYNSEG_CACHE_DIR set to an empty string turns the cache off (None)."""
    import os

    if "SYNSEG_CACHE_DIR" in os.environ:
        return Path(os.environ["SYNSEG_CACHE_DIR"]) if os.environ["SYNSEG_CACHE_DIR"] else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synseg"


def onnx_network(net, threads: int) -> tiling.OnnxNet:
    """`net` (tiling.prepare_model on the CPU) exported to ONNX and loaded into ONNX Runtime.

    The export (about 1 s) is kept in onnx_cache_dir() under a hash of the folded weights, the torch version and
    the ONNX opset, so later runs of the same model load it directly; a cache that cannot be read or written is
    passed over (the graph is then exported to a temporary folder, as without a cache).
    """
    import hashlib
    import tempfile

    import torch

    from synseg import export as export_model

    digest = hashlib.sha256(f"{torch.__version__} {export_model.ONNX_OPSET} {net.depth}".encode())
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    folder = onnx_cache_dir()
    cached = folder / f"{digest.hexdigest()[:32]}.onnx" if folder else None
    try:
        if cached is not None and cached.is_file():
            return tiling.OnnxNet(cached.read_bytes(), net.depth, threads)
    except Exception:  # a damaged or foreign file: export afresh below (onnxruntime raises its own types)
        pass
    with tempfile.TemporaryDirectory(prefix="synseg_onnx_") as tmp:
        path = Path(tmp) / "net.onnx"
        export_model.export_onnx(net, torch.zeros(1, 1, 17, 19), path)  # odd example: any input size runs
        data = path.read_bytes()
    if cached is not None:
        try:
            with tiffio.atomic_path(cached) as tmp:  # a reader never sees half a file
                tmp.write_bytes(data)
        except (OSError, tiffio.WriteError):
            pass  # no cache this time: a read-only home costs the export again, nothing else
    return tiling.OnnxNet(data, net.depth, threads)



# --------------------------------------------------------------------------- settings and one file

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
    batch_size: int = 0  # tiles per forward pass; 0: tiling.auto_batch_size
    precision: str = "auto"  # unet.autocast_dtype
    tta: bool = False  # average the four flips
    split: bool = False  # split touching objects (split_touching)
    min_distance: float | None = None  # for split_touching; None: estimated per plane
    save_prob: bool = False  # also write NAME_prob.tif
    overlay: bool = False  # also write NAME_overlay.png
    contrast_cut: bool = False  # apply spots.filter_spots per plane (presets that offer it)
    min_snr: float = 0.0  # spots.filter_spots: also drop objects whose local SNR is below this (0: none)
    spot_core: float = 0.0  # spots.filter_spots: trim each object to its pixels above this share of its contrast
    backend: str = "auto"  # fp32 on the CPU: "onnx" (ONNX Runtime), "torch", or "auto" (ONNX Runtime when installed)
    stack_planes: bool = True  # small planes of a stack share forward passes (False: one plane per pass)
    max_pixels: int = tiffio.MAX_PIXELS  # refuse inputs whose header declares more pixels (tiffio.check_size)
    qc_calibration: str | None = None  # qc.py expected-score calibration; None: qc_<task>.json by the shipped model

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        """Options from the parsed command line of get_args_parser."""
        return cls(threshold=args.threshold, channel=args.channel, pixel_size=args.pixel_size,
                   rescale=not args.no_rescale, resize_size=args.resize_size, tile_size=args.tile_size,
                   overlap=args.overlap, batch_size=args.batch_size, precision=args.precision, tta=args.tta,
                   split=not args.no_split, min_distance=args.min_distance, save_prob=args.save_prob,
                   overlay=args.overlay, contrast_cut=not args.no_contrast_cut, min_snr=args.min_snr,
                   spot_core=getattr(args, "spot_core", 0.0), backend=getattr(args, "backend", "auto"),
                   max_pixels=getattr(args, "max_pixels", tiffio.MAX_PIXELS),
                   qc_calibration=getattr(args, "qc_calibration", None))


class Segmenter:
    """A loaded model plus the prediction settings; `segment(src, dst)` does one file end to end."""

    def __init__(self, model, info: dict, task, options: Options, device):
        """task: a tasks.Task; options: the prediction settings."""
        from unet import autocast_dtype

        self.task, self.options, self.info, self.device = task, options, info, device
        self.amp = autocast_dtype(device, options.precision)
        cpu_bf16 = device.type == "cpu" and self.amp is not None
        self.net, self.path = self._network(model, device, options.backend)
        self.overlap = tiling.default_overlap(info["model_args"]) if options.overlap is None else options.overlap
        self.tile_size = options.tile_size or tiling.auto_tile_size(info["model_args"], device.type, half=cpu_bf16)
        self.batch_size = options.batch_size or tiling.auto_batch_size(info["model_args"], device.type, self.tile_size,
                                                                half=cpu_bf16)
        self.norm = info["normalization"]
        self.model_px = info.get("pixel_size_um")
        # the quality check (qc.py): its expected score only from a calibration made for these very weights
        self.calibration, self.calibration_note = qc.load_calibration(
            Path(options.qc_calibration) if options.qc_calibration else qc.default_calibration_path(task),
            task.name, qc.weights_hash(model))
        self.qc_seconds = 0.0  # time spent in the quality check (bench/qc_validation.py reports its share)

    def _network(self, model, device, backend: str):
        """(network, one line naming the path) for this machine: the fastest we measured (bench/bench_predict.py).

        fp32 on the CPU (no native bf16): ONNX Runtime when installed (auto, or --backend onnx), else PyTorch in
        channels_last (1.4-1.8x NCHW there). CPU bf16 autocast and CUDA: PyTorch in channels_last; MPS: NCHW.
        """
        import torch

        if backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend {backend!r} not understood; use auto, torch or onnx")
        fp32_cpu = device.type == "cpu" and self.amp is None
        if backend == "onnx" and not fp32_cpu:
            raise ValueError(f"--backend onnx runs fp32 on the CPU only (here: device {device}, precision "
                             f"{self.amp}); use --device cpu --precision fp32, or --backend auto")
        if backend == "onnx" and not tiling.onnx_available():
            raise ValueError("--backend onnx needs onnx and onnxruntime: pip install -r requirements-export.txt")
        if fp32_cpu and backend != "torch" and tiling.onnx_available():
            net = onnx_network(tiling.prepare_model(model, device, channels_last=False), torch.get_num_threads())
            return net, f"ONNX Runtime fp32 on the CPU, {net.threads} thread(s)"
        channels_last = device.type in ("cpu", "cuda")
        net = tiling.prepare_model(model, device, channels_last=channels_last)
        return net, (f"PyTorch {device.type} {str(self.amp).removeprefix('torch.') if self.amp else 'fp32'}"
                     f"{', channels_last' if channels_last else ''}")

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

    def probability(self, plane: np.ndarray, factor: float, progress: bool, stats: dict | None = None,
                    contrast: dict | None = None) -> np.ndarray:
        """Probability map of one raw 2D plane on its own grid (tiling.plane_probability with this run's settings)."""
        return tiling.plane_probability(self.net, plane, factor, self.norm, tile_size=self.tile_size,
                                        overlap=self.overlap, batch_size=self.batch_size, device=self.device,
                                        amp_dtype=self.amp, tta=self.options.tta, progress=progress, stats=stats,
                                        contrast=contrast)

    def qc_models(self, planes: np.ndarray, live: list[int], factor: float) -> dict:
        """{plane index: noise model} of the live planes the quality check measures, where the network's
        normalisation uses the very same model (qc.noise_model_at_scale): fitted once, handed to both."""
        out = {}
        for k in qc.planes_to_measure(len(planes)):
            if k in live and (model := qc.noise_model_at_scale(planes[k], factor, self.norm)) is not None:
                out[k] = model
        return out

    def probabilities(self, planes: np.ndarray, live: list[int], factor: float, progress: bool,
                      stats: dict | None = None, contrast: dict | None = None):
        """Yield the probability map of each plane listed in `live`, in order.

        Planes that fit one tile go through the network several at a time (tiling.stack_probability; a
        60-frame 256 px movie is 4 forward passes with 1024 px tiles), each normalised on its own; larger
        planes one at a time, tiled. `stats`: {plane index: normalisation statistics} already known (qc_models);
        `contrast`: {plane index: a dict for the plane's local contrast} (tiling.plane_probability's contrast).
        """
        stats, contrast = stats or {}, contrast or {}

        def one(k: int) -> np.ndarray:
            return self.probability(planes[k], factor, progress, stats=stats.get(k), contrast=contrast.get(k))

        per_pass = tiling.planes_per_pass(planes.shape[1:], factor, self.tile_size, self.batch_size,
                                          self.net.depth) if self.options.stack_planes else 0
        if per_pass <= 1 or len(live) <= 1:
            for k in live:
                yield one(k)
            return
        for i in range(0, len(live), per_pass):
            group = live[i:i + per_pass]
            if len(group) == 1:
                yield one(group[0])
                continue
            yield from tiling.stack_probability(self.net, [planes[k] for k in group], factor, self.norm,
                                                device=self.device, amp_dtype=self.amp, tta=self.options.tta,
                                                stats=[stats.get(k) for k in group],
                                                contrast=[contrast.get(k) for k in group])

    def segment(self, src: Path, dst: Path, before_mask=None) -> tuple[dict, list[dict]]:
        """Segment one file, write its outputs; returns (summary row, object rows).

        The mask is written last, so that its presence means the file is done: `before_mask(row, objects)`,
        when given, runs just before it (run() records the file's table rows there).
        """
        o = self.options
        data, meta = tiffio.read_image(src, max_pixels=o.max_pixels)
        data = check_values(data, src)
        planes, axes = as_planes(data, meta["axes"], o.channel, src)
        px = o.pixel_size or meta.get("pixel_size_um")
        source = " (--pixel-size)" if o.pixel_size else " (from the file's tags)"
        factor, note = self.scale_for(planes.shape[1:], px, source)
        log(f"{src}: {len(planes)} plane(s) of {planes.shape[1]}x{planes.shape[2]} ({meta['dtype']}, "
            f"axes {axes}); {note}")

        masks = np.zeros(planes.shape, np.uint8)
        probs = np.zeros(planes.shape, np.float32) if o.save_prob else None
        measure = self.task.measure(src)
        checked, figures = set(qc.planes_to_measure(len(planes))), []
        thresholds = []
        big = planes.shape[1] * planes.shape[2] > 4 * self.tile_size ** 2
        live = [k for k, plane in enumerate(planes) if plane.min() != plane.max()]
        known = self.qc_models(planes, live, factor)  # the measured planes' noise model: network and check
        contrast = {k: {} for k in known}  # and their local contrast, where the network computes it whole
        maps = self.probabilities(planes, live, factor, progress=big, stats=known, contrast=contrast)
        for k, plane in enumerate(planes):
            if plane.min() == plane.max():  # constant plane: nothing to find, and nothing to normalise
                if len(planes) == 1:
                    log(f"{src}: constant image (all {plane.flat[0]}); writing an empty mask")
                if k in checked:
                    figures.append({"qc_saturated": 1.0, "qc_zero": 1.0})
                thresholds.append(float("nan"))
                continue
            prob = next(maps)
            if not np.isfinite(prob.max()):  # max propagates NaN: one pass, no copy
                where = f" (plane {k})" if len(planes) > 1 else ""
                raise ValueError(f"{src}: the model's output holds NaN{where} (damaged weights, or an overflow at "
                                 "this precision: try --precision fp32); no mask written")
            t = postprocess.resolve_threshold(prob, o.threshold)
            thresholds.append(t)
            mask = prob > t
            if probs is not None:
                probs[k] = prob
            if o.split:
                mask = postprocess.split_touching(mask, plane, o.min_distance, in_place=True)
            candidates = mask
            if o.contrast_cut or o.min_snr > 0 or o.spot_core > 0:
                candidates = mask.copy() if k in checked else None
                from synseg.segment import spots

                mask, cut = spots.filter_spots(mask, plane, in_place=True, cut=o.contrast_cut, min_snr=o.min_snr,
                                               core=o.spot_core)
                log(f"{src}: {'plane ' + str(k) + ': ' if len(planes) > 1 else ''}{spots.describe_cut(cut)}")
            if k in checked:
                t0 = time.perf_counter()
                figures.append(qc.plane_figures(plane, prob, candidates, mask, factor, self.norm, self.task.name,
                                                model=known.get(k), z=contrast.get(k, {}).pop("z", None)))
                self.qc_seconds += time.perf_counter() - t0
            del candidates
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
        t0 = time.perf_counter()
        row.update(qc.summary(figures, self.task.name, self.calibration, row))
        self.qc_seconds += time.perf_counter() - t0
        if row["qc"] != "ok":
            log(f"{src}: qc: {row['qc']} (expected score {row['expected_score'] or 'n/a'}): "
                f"{qc.describe(row['qc'].split('+'))}")
        if probs is not None:
            tiffio.write_tiff(sibling(dst, "prob", ".tif"), probs.reshape(full_shape), pixel_size_um=px, axes=axes)
        if o.overlay:
            mid = len(planes) // 2
            write_overlay(sibling(dst, "overlay", ".png"), planes[mid], masks[mid], style=self.task.overlay_style)
        if before_mask is not None:
            before_mask(row, measure.objects)
        tiffio.write_tiff(dst, masks.reshape(full_shape), pixel_size_um=px, axes=axes)
        return row, measure.objects

    @staticmethod
    def _output_shape(data_shape, in_axes: str, out_axes: str) -> tuple[int, ...]:
        """Shape of the mask: the input's shape with the channel axis removed, Y and X last."""
        sizes = dict(zip(in_axes.upper(), data_shape))
        return tuple(sizes[a] for a in out_axes)

