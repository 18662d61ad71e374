"""Sample data for napari's File > Open Sample: images made by SynSeg's own generators, nothing downloaded.

The images are those the training data were drawn from (generate/*_generator.py render_one, a fixed seed),
with the generator's pixel size as the layer's scale (um), so the widget reads it as the pixel size.
"""
from __future__ import annotations

import importlib

import numpy as np

from synseg.tasks import TASKS

SIZE = 384
SEED = 20261207


def synthetic(task: str, size: int = SIZE, seed: int = SEED, frames: int = 1) -> tuple[np.ndarray, float, float]:
    """(image, pixel size in um, frame interval in s) from the task's generator: (Y, X), or (T, Y, X)."""
    from synseg.generate import synth, video

    generator = importlib.import_module(TASKS[task].generator_module)
    args = generator.get_args_parser().parse_args(
        ["--output-dir", "unused", "--image-size", str(size), "--frames", str(frames)])  # nothing is written
    rng = synth.image_rng(seed, 0)
    if frames > 1:
        from synseg.generate import filaments, vesicles

        structure = vesicles.Vesicles if task == "vesicle" else filaments.Filaments
        scene = synth.scene_from_args(args, structure, generator.BIT_DEPTH)
        image, _, _ = video.render_video(rng, scene, video.Video.from_args(args))
    else:
        image, _, _ = generator.render_one(rng, args)
    return image, float(args.pixel_size), float(args.frame_interval)


def _layer(image: np.ndarray, px: float, name: str, interval: float | None = None) -> list[tuple]:
    """One napari image-layer tuple with the pixel size as scale (and the frame interval on T)."""
    scale = (px, px) if image.ndim == 2 else (interval or 1.0, px, px)
    meta = {"pixel_size_um": px}
    if interval:
        meta["frame_interval_s"] = interval
    return [(image, {"name": name, "scale": scale, "metadata": meta,
                     "contrast_limits": [float(image.min()), float(np.percentile(image, 99.8)) or 1.0]}, "image")]


def vesicles() -> list[tuple]:
    """A synthetic vesicle / puncta image (Vesicle_generator.py's render_one)."""
    image, px, _ = synthetic("vesicle")
    return _layer(image, px, "synthetic vesicles")


def filaments() -> list[tuple]:
    """A synthetic filament image (Cytoskeleton_generator.py's render_one)."""
    image, px, _ = synthetic("cytoskeleton")
    return _layer(image, px, "synthetic filaments")


def vesicle_movie() -> list[tuple]:
    """A short synthetic vesicle time-lapse (T, Y, X; video.py) for tracking."""
    image, px, interval = synthetic("vesicle", size=192, frames=12)
    return _layer(image, px, "synthetic vesicle movie", interval)
