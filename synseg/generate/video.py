"""Synthetic time-lapses: one scene filmed for N frames, with an exact mask per frame and vesicle tracks.

    video = Video(frames=50)                      # or Video.from_args(args) after add_args(parser)
    stack, masks, rows = render_video(synth.image_rng(0, 0), scene, video)   # (T, H, W) each; rows: frame, track_id

What stays and what changes from frame to frame. The optics, cells, cytoplasm, haze, debris, uneven
illumination and the camera's settings (offset, gain, column pattern, hot pixels) are drawn once per video,
as in synth.render_one; the photon shot noise and read noise are drawn anew for every frame. The signal
bleaches as exp(-rate * t) (rate drawn per video from --bleach, per frame; the camera background does not
bleach), and the targets' contrast against their surroundings fades linearly by a drawn --contrast-fade
over the video. Vesicles (vesicles.draw_vesicles once, then moved) diffuse (--diffusion, um^2/s, per
vesicle around the video's value), a drawn fraction make directed runs (--directed-fraction, --speed in
um/s, runs that stop and restart) and a drawn fraction appear or vanish during the video (--turnover);
each frame is rendered by vesicles.render_vesicles with the usual mask rule, and each row of the table
carries `frame` and the vesicle's `track_id`. Filaments (the structure's render once) drift (--drift, um/s),
bend (a smooth displacement field that grows to --bend um by the last frame) and grow or shrink (a drawn
share --growth of the structure is revealed or hidden in patches over the video); the density and the
mask are moved and cut by the same map, so the mask stays the mask of what is drawn.

Every nuisance is a MIN MAX range drawn per video from the video's own generator, so video k depends only
on (seed, k). With --frames 1 (the default) dataset.py writes single images through synth.render_one: the
video flags draw nothing and change no byte.

How a structure moves is its parameter class's MOTION: "particles" (vesicle_frames: separate objects that
diffuse, run, appear and vanish, tracked by id) or "continuum" (filament_frames: one structure that drifts,
bends, grows and shrinks).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from synseg import metrics
from synseg.generate import synth
from synseg.generate.synth import option, span


@dataclass(frozen=True)
class Video(synth.Flags):
    """Time-lapse parameters: frame count and interval, bleaching, and the motion of vesicles and filaments."""

    frames: int = option("--frames", default=1, type=int, low=1,
                         help="frames per sample; above 1 each sample is a TYX stack with a TYX mask")
    frame_interval: float = option("--frame-interval", default=0.5, type=float, above=0.0,
                                   help="seconds between frames (ImageJ 'finterval' tag)")
    # Together the two default ranges leave at worst about 40% of the first frame's contrast after 50 frames
    # (exp(-0.015 * 49) * 0.85 = 0.41), the hard case a live acquisition is planned to stay within.
    bleach: tuple = span("--bleach", default=(0.0, 0.015), low=0.0,
                         help="photobleaching rate per frame: the signal falls as exp(-rate * frame)")
    contrast_fade: tuple = span("--contrast-fade", default=(0.0, 0.15), low=0.0, high=1.0,
                                help="share of the targets' contrast lost by the last frame (linear)")
    diffusion: tuple = span("--diffusion", default=(0.0005, 0.01), low=0.0,
                            help="vesicle diffusion coefficient in um^2/s (log-uniform per video; "
                                 "each vesicle varies around it)")
    directed_fraction: tuple = span("--directed-fraction", default=(0.0, 0.3), low=0.0, high=1.0,
                                    help="share of the vesicles that make directed runs")
    speed: tuple = span("--speed", default=(0.2, 0.8), low=0.0, help="speed of a directed run in um/s")
    turnover: tuple = span("--turnover", default=(0.0, 0.15), low=0.0, high=1.0,
                           help="share of the vesicles that appear or vanish during the video")
    drift: tuple = span("--drift", default=(0.0, 0.02), low=0.0, help="filament drift in um/s")
    bend: tuple = span("--bend", default=(0.0, 0.3), low=0.0,
                       help="filament bending: largest smooth displacement in um reached by the last frame")
    growth: tuple = span("--growth", default=(0.0, 0.08), low=0.0, high=0.9,
                         help="share of the filament structure that grows in or shrinks away over the video")


def add_args(parser: argparse.ArgumentParser) -> None:
    """Add the time-lapse flags to a generator's parser."""
    Video.add_to(parser.add_argument_group("time-lapse (--frames N > 1; MIN MAX drawn per video)"))


# --------------------------------------------------------------------------- vesicles

def _vesicle_paths(rng: np.random.Generator, ves: dict, video: Video, pixel_size: float, shape) -> tuple:
    """(T, n) y and x of every vesicle, and (T, n) bool 'present', from frame 0's positions."""
    n, frames, dt = len(ves["y"]), video.frames, video.frame_interval
    d = synth.draw(rng, video.diffusion, log=True)
    step_sd = np.sqrt(2.0 * d * np.exp(rng.normal(0.0, 0.5, n)) * dt) / pixel_size  # px per axis per frame
    directed = rng.random(n) < synth.draw(rng, video.directed_fraction)
    speed = rng.uniform(*video.speed, n) * dt / pixel_size  # px per frame while running
    heading = rng.uniform(0, 2 * np.pi, n)
    running = directed & (rng.random(n) < 0.7)
    yx = np.zeros((frames, n, 2))
    yx[0] = np.stack([ves["y"], ves["x"]], axis=1)
    for t in range(1, frames):
        heading += rng.normal(0.0, 0.15, n)  # runs follow gently curving tracks
        switch = directed & (rng.random(n) < 0.08)  # a run stops, a pause ends
        running ^= switch
        move = rng.normal(0.0, 1.0, (n, 2)) * step_sd[:, None]
        move += (running * speed)[:, None] * np.stack([np.sin(heading), np.cos(heading)], axis=1)
        yx[t] = yx[t - 1] + move
    present = np.ones((frames, n), bool)
    turn = np.flatnonzero(rng.random(n) < synth.draw(rng, video.turnover))
    for i in turn:  # half appear, half vanish, at a random frame
        cut = int(rng.integers(1, max(2, frames)))
        if rng.random() < 0.5:
            present[:cut, i] = False
        else:
            present[cut:, i] = False
    return yx[..., 0], yx[..., 1], present


def vesicle_frames(rng: np.random.Generator, shape, params, context: synth.Context, video: Video) -> tuple:
    """([(in_focus, out_of_focus, mask, rows) per frame], typical brightness); rows carry frame and track_id.

    The vesicles of frame 0 come from vesicles.draw_vesicles with the same draws as a still image; a
    vesicle keeps its shape, brightness and label decision over the video, only its place changes.
    """
    from synseg.generate import vesicles

    ves = vesicles.draw_vesicles(rng, shape, params, context)
    ys, xs, present = _vesicle_paths(rng, ves, video, context.pixel_size, shape)
    radius = np.sqrt(ves["a"] * ves["b"])
    out = []
    # as for a still image, centres more than a pixel beyond the frame are not drawn (they left the view)
    h, w = shape
    present &= (ys > -1) & (ys < h) & (xs > -1) & (xs < w)
    for t in range(video.frames):
        idx = np.flatnonzero(present[t])
        part = {k: (v[idx] if isinstance(v, np.ndarray) and v.shape[:1] == (len(ves["y"]),) else v)
                for k, v in ves.items()}
        part["y"], part["x"] = ys[t, idx], xs[t, idx]
        in_focus, out_focus, labels, rank = vesicles.render_vesicles(shape, part, context.psf_sigma)
        mask = metrics.separate_touching(labels)
        shown = np.zeros(len(idx) + 1, bool)
        shown[labels[mask > 0]] = True
        keep = np.flatnonzero(shown[rank]) if len(rank) else np.zeros(0, int)
        keep = keep[np.lexsort((part["x"][keep], part["y"][keep]))]
        rows = [{"frame": t, "track_id": int(idx[k]), "y": float(part["y"][k]), "x": float(part["x"][k]),
                 "radius": float(radius[idx[k]]), "brightness": float(ves["brightness"][idx[k]])} for k in keep]
        out.append((in_focus, out_focus, mask, rows))
    focus = ves["in_focus"]
    return out, float(np.median(ves["brightness"][focus])) if focus.any() else 1.0


def renumber_tracks(rows: list[dict]) -> list[dict]:
    """track_id 1..n in the order of each track's first row (rows already sorted by frame)."""
    ids = {}
    for r in rows:
        r["track_id"] = ids.setdefault(r["track_id"], len(ids) + 1)
    return rows


# --------------------------------------------------------------------------- filaments

def _motion_field(rng: np.random.Generator, shape, pixel_size: float, video: Video):
    """(drift (dy, dx) in px per frame, bend field (2, H, W) in px reached by the last frame)."""
    drift = synth.draw(rng, video.drift) * video.frame_interval / pixel_size
    theta = rng.uniform(0, 2 * np.pi)
    scale = max(8.0, 3.0 / pixel_size)  # bends a few um long
    bend = np.stack([synth.smooth_noise(rng, shape, scale) - 0.5 for _ in range(2)])
    bend *= synth.draw(rng, video.bend) / pixel_size / max(float(np.abs(bend).max()), 1e-6)
    return (drift * math.sin(theta), drift * math.cos(theta)), bend


def _warp(image: np.ndarray, dy: np.ndarray, dx: np.ndarray, nearest: bool) -> np.ndarray:
    """image moved by (dy, dx): out(p) = image(p - d), linear for densities, nearest for masks."""
    h, w = image.shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    src = image.astype(np.uint8 if nearest else np.float32)
    return cv2.remap(src, (gx - dx).astype(np.float32), (gy - dy).astype(np.float32), interp,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def filament_frames(rng: np.random.Generator, shape, params, context: synth.Context, video: Video) -> tuple:
    """([(in_focus, out_of_focus, mask, None) per frame], brightness): a structure drawn once, then moved and cut."""
    first = params.render(rng, shape, context)
    (vy, vx), bend = _motion_field(rng, shape, context.pixel_size, video)
    patches = synth.smooth_noise(rng, shape, max(8.0, 2.0 / context.pixel_size))
    share = synth.draw(rng, video.growth)
    grows = rng.random() < 0.5
    on = first.mask > 0
    ranks = np.sort(patches[on]) if on.any() else np.zeros(1, np.float32)
    out = []
    last = max(1, video.frames - 1)
    for t in range(video.frames):
        s = t / last
        hidden = share * (1.0 - s) if grows else share * s  # share of the structure not (yet, any more) there
        cut = patches >= ranks[min(len(ranks) - 1, int(hidden * len(ranks)))] if hidden > 0 else None
        dy, dx = vy * t + bend[0] * s, vx * t + bend[1] * s
        in_focus = first.in_focus if cut is None else first.in_focus * cut
        mask = first.mask if cut is None else first.mask * cut
        oof = first.out_of_focus
        if t:
            in_focus, mask = _warp(in_focus, dy, dx, False), _warp(mask, dy, dx, True)
            oof = None if oof is None else _warp(oof, dy, dx, False)
        out.append((in_focus.astype(np.float32), oof, mask.astype(np.uint8), None))
    return out, first.brightness


MOTIONS = {"particles": vesicle_frames, "continuum": filament_frames}  # a structure's MOTION -> its frames


# --------------------------------------------------------------------------- one video

def render_video(rng: np.random.Generator, scene: synth.Scene, video: Video):
    """One video: (image (T, H, W) uint8/uint16, mask (T, H, W) uint8 0/1, rows with frame, track_id or None).

    The draws follow synth.render_one (PSF, levels when the structure needs them, cells, the structure),
    then the motion, the bleaching and fading, and one seed each for the static background and the camera
    settings, which are re-created for every frame so that only the noise changes (module docstring).
    """
    shape = (scene.image_size, scene.image_size)
    psf = synth.draw_psf_sigma(rng, scene.optics)
    levels = synth.draw_levels(rng, scene, psf) if scene.structure.NEEDS_LEVELS else None
    cells = synth.cell_layer(rng, shape, scene.background, scene.optics.pixel_size)
    context = synth.Context(scene.optics.pixel_size, psf, cells["cells"], cells["cytoplasm"], levels)
    frames, brightness = MOTIONS[scene.structure.MOTION](rng, shape, scene.structure, context, video)
    if levels is None:
        levels = synth.draw_levels(rng, scene, psf)
    levels = dataclasses.replace(levels, structure=brightness)
    rate = synth.draw(rng, video.bleach)
    fade = synth.draw(rng, video.contrast_fade)
    static_seed = int(rng.integers(2 ** 63))
    subtracted = scene.background.subtracted_prob > 0 and rng.random() < scene.background.subtracted_prob
    last = max(1, video.frames - 1)
    images, masks, table = [], [], []
    for t, (in_focus, out_focus, mask, rows) in enumerate(frames):
        bleached = dataclasses.replace(levels, signal=levels.signal * math.exp(-rate * t))
        contrast = 1.0 - fade * t / last
        static = np.random.default_rng(static_seed)
        image = synth.finish_image(static, in_focus * np.float32(contrast), out_focus, cells, bleached, scene,
                                   noise_rng=rng)
        if subtracted:
            image = synth.subtract_background(static, image, scene.background, scene.optics.pixel_size)
        images.append(image)
        masks.append(mask)
        if rows is not None:
            factor = math.exp(-rate * t) * contrast
            table += [dict(r, brightness=r["brightness"] * factor) for r in rows]
    rows = renumber_tracks(table) if scene.structure.COLUMNS is not None else None
    return np.stack(images), np.stack(masks), rows
