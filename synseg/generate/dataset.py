"""Writing a generated dataset: the output flags, workers, resume, generator.json and the preview sheet.

    DATA/train/img/00000.tif    single-channel TIFF, pixel size in the ImageJ tags (TYX stack with --frames N)
    DATA/train/mask/00000.npy   uint8 0/1, same height and width (TYX for a time-lapse)
    DATA/train/mask/00000.csv   per-object table (when the structure has one), header always
    DATA/val/...                the same for the validation images
    DATA/generator.json         every parameter, the seed, kind, "pixel_size_um"
    DATA/preview.png            with --preview: images with their mask outlines

Image k is synth.render_one(synth.image_rng(seed, k), scene) (video.render_video with --frames N > 1), so
the same seed gives byte-identical files whatever the number of workers; --resume finishes a dataset that
was interrupted, and refuses one written with other settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from synseg.generate import synth
from synseg import tiffio
from synseg.generate import video as video_module
from synseg.generate.synth import Flags, Scene, flag_values, image_rng, option, render_one

FORMAT_VERSION = 1
# Flags that steer a run but not the images; they may differ between a run and its --resume.
RUN_CONTROL = ("output_dir", "workers", "resume", "overwrite", "preview", "num_images")


@dataclass(frozen=True)
class Run(Flags):
    """Where and how a dataset is written (output flags); none of it changes an image but --seed."""

    output_dir: Path = option("--output-dir", "--output_dir", type=Path, required=True,
                              help="dataset folder to write (train/, val/, generator.json)")
    num_images: int = option("--num-images", "--num_images", default=1000, type=int, low=1,
                             help="number of images (train + val)")
    val_fraction: float = option("--val-fraction", "--val_fraction", default=0.1, type=float, low=0.0, below=1.0,
                                 help="fraction of images written under val/ (spread evenly over the indices)")
    seed: int = option("--seed", default=0, type=int, help="image k depends only on (seed, k)")
    workers: int = option("--workers", default=1, type=int, low=1,
                          help="worker processes (same files for any number); at most one per usable CPU core "
                               "and per image to write")
    resume: bool = option("--resume", default=False, action="store_true",
                          help="keep existing images, write only the missing ones")
    overwrite: bool = option("--overwrite", default=False, action="store_true",
                             help="delete an existing dataset in --output-dir first")
    preview: bool = option("--preview", default=False, action="store_true",
                           help="also write DATA/preview.png (images + mask outlines)")

    def __post_init__(self):
        super().__post_init__()
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")


def add_common_args(parser) -> dict:
    """Add the flags every generator shares; returns the {"output", "optics", "camera", "background"} groups.

    Output (Run and --image-size), optics (Optics), camera (Camera), background and cells (Background);
    the underscore spellings of the original scripts are accepted too.
    """
    groups = {"output": parser.add_argument_group("output"),
              "optics": parser.add_argument_group("optics"),
              "camera": parser.add_argument_group("camera and noise (MIN MAX, drawn per image)"),
              "background": parser.add_argument_group("background and cells (MIN MAX, drawn per image)")}
    Run.add_to(groups["output"])
    Scene.add_to(groups["output"])
    synth.Optics.add_to(groups["optics"])
    synth.Camera.add_to(groups["camera"])
    synth.Background.add_to(groups["background"])
    return groups


# --------------------------------------------------------------------------- dataset writing

def is_val(index: int, val_fraction: float) -> bool:
    """True if image `index` belongs to the validation split (evenly spread, independent of num_images)."""
    return math.floor((index + 1) * val_fraction + 1e-9) > math.floor(index * val_fraction + 1e-9)


def image_name(index: int, num_images: int) -> str:
    """File stem for image `index`: zero-padded to at least 5 digits."""
    return f"{index:0{max(5, len(str(num_images - 1)))}d}"


def image_paths(out_dir: Path, index: int, num_images: int, val_fraction: float) -> dict:
    """{"img", "mask", "csv"} paths of image `index`."""
    split = "val" if is_val(index, val_fraction) else "train"
    stem = image_name(index, num_images)
    base = Path(out_dir) / split
    return {"img": base / "img" / f"{stem}.tif", "mask": base / "mask" / f"{stem}.npy",
            "csv": base / "mask" / f"{stem}.csv"}


def parameters_of(params) -> dict:
    """Flag values of one parameter dataclass, JSON-friendly (paths as text, ranges as lists)."""
    return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in flag_values(params).items()}


def parameters(run: Run, scene: Scene) -> dict:
    """Every flag value of a run, flat and JSON-friendly, sorted by name (generator.json "parameters")."""
    flat = {}
    for params in (run, scene, scene.optics, scene.camera, scene.background, scene.structure):
        if dataclasses.is_dataclass(params):
            flat.update(flag_values(params))
    out = {}
    for key, value in sorted(flat.items()):
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


_JOB: dict = {}


def _init_worker(job: dict) -> None:
    """Pool initializer: keep the job description and use one OpenCV thread per process."""
    _JOB.clear()
    _JOB.update(job)
    cv2.setNumThreads(1)


def _write_one(index: int) -> int:
    """Render image `index` and write its files (mask and table first, the image last)."""
    run, scene, video = _JOB["run"], _JOB["scene"], _JOB.get("video")
    if video is not None and video.frames > 1:
        return _write_video(index, run, scene, video)
    image, mask, rows = render_one(image_rng(run.seed, index), scene)
    expected = np.uint8 if scene.bit_depth == 8 else np.uint16
    if image.dtype != expected or image.shape != mask.shape:
        raise ValueError(f"render_one returned image {image.dtype} {image.shape}, mask {mask.shape}; "
                         f"expected {np.dtype(expected)} of the mask's shape")
    paths = image_paths(run.output_dir, index, run.num_images, run.val_fraction)
    with tiffio.atomic_path(paths["mask"]) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, (np.asarray(mask) > 0).astype(np.uint8))
    columns = scene.structure.COLUMNS
    if columns is not None:
        tiffio.write_csv(paths["csv"], rows or [], fields=columns, float_format="{:.4f}")
    tiffio.write_tiff(paths["img"], image, pixel_size_um=scene.optics.pixel_size, axes="YX")
    return index


def _write_video(index: int, run: Run, scene: Scene, video) -> int:
    """Render video `index` (video.render_video) and write its TYX stack, TYX mask and frame/track table."""
    image, mask, rows = video_module.render_video(image_rng(run.seed, index), scene, video)
    paths = image_paths(run.output_dir, index, run.num_images, run.val_fraction)
    with tiffio.atomic_path(paths["mask"]) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, (mask > 0).astype(np.uint8))
    if scene.structure.COLUMNS is not None:
        tiffio.write_csv(paths["csv"], rows or [], fields=("frame", "track_id", *scene.structure.COLUMNS),
                         float_format="{:.4f}")
    tiffio.write_tiff(paths["img"], image, pixel_size_um=scene.optics.pixel_size, axes="TYX",
                      frame_interval_s=video.frame_interval)
    return index


def _is_done(run: Run, index: int) -> bool:
    """An image is complete when its image file exists (it is written last) and its mask too."""
    paths = image_paths(run.output_dir, index, run.num_images, run.val_fraction)
    return paths["img"].is_file() and paths["mask"].is_file()


def _settings(meta: dict) -> dict:
    """The parameters that decide the images (unset flags, None, left out)."""
    return {k: v for k, v in meta.get("parameters", {}).items() if k not in RUN_CONTROL and v is not None}


def _prepare_output(run: Run, meta: dict) -> str | None:
    """Check or clear the output folder; returns an error message or None."""
    out = Path(run.output_dir)
    if out.exists() and not out.is_dir():
        return f"{out}: exists and is not a folder"
    meta_path = out / "generator.json"
    if out.is_dir() and any(out.iterdir()):
        if run.overwrite and not meta_path.is_file():  # what --overwrite deletes must be a dataset of ours
            return (f"{out}: not empty and holds no generator.json, so it is not a dataset this tool wrote; "
                    "--overwrite only replaces such a dataset - choose a new or empty --output-dir")
        if run.overwrite:
            for name in ("train", "val"):
                if (out / name).is_dir():
                    shutil.rmtree(out / name)
            for name in ("generator.json", "preview.png"):
                (out / name).unlink(missing_ok=True)
        elif run.resume:
            if not meta_path.is_file():
                return f"{meta_path}: missing, so {out} is not a dataset this tool can resume"
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, ValueError) as err:
                return f"{meta_path}: unreadable ({err})"
            # only what this version renders from counts: an older spelling folded into another
            # parameter (--num_curves into --filaments) is compared there
            b = _settings(meta)
            a = {k: v for k, v in _settings(old).items() if k in meta["parameters"]}
            if old.get("kind") != meta["kind"] or a != b:
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                return (f"{meta_path}: written with other settings ({', '.join(diff) or 'kind'}); "
                        "resume with the same flags or use --overwrite")
        else:
            return f"{out}: not empty; use --resume to finish it or --overwrite to replace it"
    return None


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def worker_count(requested: int, jobs: int) -> int:
    """Worker processes to start: --workers, but never more than the usable cores or the images to write."""
    return max(1, min(requested, usable_cpus(), jobs))


def generate_dataset(run: Run, scene: Scene, *, kind: str, video=None) -> int:
    """Write run.num_images images of `scene` into run.output_dir; returns an exit code (0 = success).

    Image k is render_one(image_rng(run.seed, k), scene). The scene (with its structure's parameters)
    goes to the worker processes by pickling, so the structure class must be importable by name.
    Layout, resume and determinism: see the module docstring. video: a video.Video; with frames > 1
    every sample is a time-lapse (video.render_video), written as TYX stacks.
    """
    from tqdm import tqdm

    n = run.num_images
    n_val = sum(is_val(i, run.val_fraction) for i in range(n))
    meta = {"kind": kind, "format_version": FORMAT_VERSION, "seed": run.seed,
            "pixel_size_um": float(scene.optics.pixel_size), "psf_sigma_px": scene.optics.psf_sigma_px,
            "bit_depth": scene.bit_depth, "image_size": scene.image_size, "num_images": n,
            "num_train": n - n_val, "num_val": n_val,
            "layout": "{split}/img/NNNNN.tif + {split}/mask/NNNNN.npy (uint8 0/1)",
            "parameters": parameters(run, scene)}
    if video is not None and video.frames > 1:  # a time-lapse adds its frames and flags
        meta.update(frames=video.frames, frame_interval_s=video.frame_interval,
                    layout="{split}/img/NNNNN.tif (TYX) + {split}/mask/NNNNN.npy (TYX uint8 0/1) + NNNNN.csv "
                           "(frame, track_id, ...)")
        meta["parameters"] = dict(sorted({**meta["parameters"], **parameters_of(video)}.items()))
    error = _prepare_output(run, meta)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if n_val == 0 and run.val_fraction > 0:  # training needs a validation image; say so now, not at training
        print(f"warning: --num-images {n} with --val-fraction {run.val_fraction:g} gives no validation image "
              f"(val/ stays empty and training will refuse it); use --num-images {math.ceil(1 / run.val_fraction)} "
              "or more, or a larger --val-fraction", file=sys.stderr)
    out = Path(run.output_dir)
    try:  # a read-only or full place is one line before any image is drawn
        for split in ("train", "val"):
            for sub in ("img", "mask"):
                (out / split / sub).mkdir(parents=True, exist_ok=True)
        tiffio.check_writable(out / "train" / "img")
        with tiffio.atomic_path(out / "generator.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as err:
        print(f"error: {tiffio.write_error_line(err)}", file=sys.stderr)
        return 2
    tiffio.remove_stale_parts(out, recursive=True)  # what a killed run was writing

    todo = [i for i in range(n) if not (run.resume and _is_done(run, i))]
    if run.resume:
        print(f"resume: {n - len(todo)} of {n} images already written, {len(todo)} to go")
    job = {"run": run, "scene": scene, "video": video}
    workers = worker_count(run.workers, len(todo))
    if workers < run.workers:  # a process per core is the most that helps; more only costs memory and start-up
        print(f"--workers {run.workers}: using {workers} worker{'s' if workers > 1 else ''} ({usable_cpus()} usable "
              f"CPU core(s), {len(todo)} image(s) to write)", file=sys.stderr)
    bar = tqdm(total=len(todo), desc=f"{kind} images", unit="img")
    if workers == 1:
        _init_worker(job)
        for i in todo:
            _write_one(i)
            bar.update()
    else:
        # forkserver, not fork: a fork of a process whose OpenCV thread pool already ran can hang;
        # the server imports the heavy modules once, so each worker starts in a fraction of a second.
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["numpy", "cv2", "tifffile", "synth", "dataset"])
        else:  # Windows
            ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, _init_worker, (job,)) as pool:
            for _ in pool.imap_unordered(_write_one, todo, chunksize=2):
                bar.update()
    bar.close()
    if run.preview:
        write_preview(out, n, run.val_fraction)
        print(f"preview: {out / 'preview.png'}")
    print(f"wrote {n - n_val} train + {n_val} val {kind} images to {out}")
    return 0


def generate(args: argparse.Namespace, structure, *, kind: str, bit_depth: int) -> int:
    """A generator script's main: build Run and Scene from parsed arguments, write the dataset; exit code.

    structure: the structure's parameter class (e.g. vesicles.Vesicles). A value outside what its flag
    allows is reported on stderr, naming the flag, with exit code 2 before anything is written.
    """
    tiffio.readable_output()  # a name that is not UTF-8 is spelled one way, tiffio.shown's
    try:
        run = Run.from_args(args)
        scene = synth.scene_from_args(args, structure, bit_depth)
        video = None
        if getattr(args, "frames", None) is not None:  # the script offers video.add_args
            video = video_module.Video.from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return generate_dataset(run, scene, kind=kind, video=video)
    except OSError as err:  # a write that failed mid-run (disk full): the images written so far are whole
        print(f"error: {tiffio.write_error_line(err)}; the images written so far are complete - free space and "
              "run again with --resume", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- preview

def write_preview(out_dir: Path, num_images: int, val_fraction: float, count: int = 12, tile: int = 256,
                  columns: int = 4) -> Path:
    """Contact sheet DATA/preview.png: each image stretched, mask outlines in yellow, index in the corner."""
    tiles = []
    for index in range(min(count, num_images)):
        paths = image_paths(out_dir, index, num_images, val_fraction)
        image, _ = tiffio.read_image(paths["img"])
        mask = np.load(paths["mask"])
        if mask.ndim == 3:  # a video: its first frame
            image, mask = image[0], mask[0]
        gray = (tiffio.stretch(image, 0.5, 99.8) * 255).astype(np.uint8)
        gray = cv2.resize(gray, (tile, tile), interpolation=cv2.INTER_AREA)
        small = cv2.resize(mask.astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
        edge = small - cv2.erode(small, np.ones((3, 3), np.uint8))
        rgb = np.repeat(gray[..., None], 3, axis=2)
        # side by side: plain image left, outlined copy right, so the outline hides nothing
        over = rgb.copy()
        over[edge > 0] = (0, 255, 255)  # BGR yellow
        pair = np.concatenate([rgb, np.full((tile, 4, 3), 64, np.uint8), over], axis=1)
        cv2.putText(pair, paths["img"].parent.parent.name + "/" + paths["img"].stem, (4, 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1, cv2.LINE_AA)
        tiles.append(pair)
    columns = max(1, min(columns // 2, len(tiles)))
    rows = []
    blank = np.zeros_like(tiles[0])
    for r in range(0, len(tiles), columns):
        row = tiles[r:r + columns] + [blank] * (columns - len(tiles[r:r + columns]))
        rows.append(np.concatenate([np.pad(t, ((4, 4), (4, 4), (0, 0))) for t in row], axis=1))
    sheet = np.concatenate(rows, axis=0)
    ok, data = cv2.imencode(".png", sheet)
    if not ok:
        raise ValueError(f"{out_dir / 'preview.png'}: PNG encoding failed")
    path = Path(out_dir) / "preview.png"
    with tiffio.atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return path
