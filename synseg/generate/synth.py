"""What every structure is drawn with: flags and parameters, randomness, cells, optics and camera.

Both generators (`Vesicle_generator.py`, `Cytoskeleton_generator.py`) chain the same steps in `render_one`:
draw this image's PSF and brightness levels, draw cells (`cell_layer`), let the structure module
(`vesicles.py`, `filaments.py`) draw its targets as a sharp density map in relative brightness units
(1.0 = a typical structure) with their exact mask, then `finish_image`: optics (Gaussian PSF), cell
context (cytoplasm, nuclei, haze, debris, uneven illumination) and a camera (photon shot noise, offset,
gain, read noise, saturation, bit depth). Writing datasets (workers, resume, previews): dataset.py.

Pixel convention, for every renderer and every table: the centre of pixel (i, j) is the point
(y, x) = (i, j), so pixel (i, j) covers [i - 0.5, i + 0.5) x [j - 0.5, j + 0.5); the centroid of a mask
component (metrics.component_centroids) is in the same frame.

Every nuisance is a range flag (MIN MAX) drawn per image from `image_rng(seed, index)`, so image k depends
only on (seed, k). Parameters are frozen dataclasses whose fields are the flags (`option`, `span`): `Scene`
(image size, bit depth, and the `Optics`, `Camera`, `Background` and structure parameters). Each is built
from parsed arguments with `from_args`, which validates it; rendering never sees the Namespace.

A structure's parameter class has NEEDS_LEVELS (whether it sets its brightness from the noise levels,
which are then drawn before the cells), COLUMNS (its CSV columns, or None for no table), MOTION (how
video.py moves it over a time-lapse) and render(rng, shape, context) -> Rendered. A generator script uses
it like this:

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    dataset.add_common_args(parser)                  # output, optics, camera, background groups
    vesicles.add_args(parser)                        # the structure's group
    sys.exit(dataset.generate(parser.parse_args(), vesicles.Vesicles, kind="vesicle", bit_depth=16))
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cv2
import numpy as np

from synseg import cli

MAX_IMAGE_SIZE = 8192  # px per side; drawing keeps several float32 planes (each 40 GB at 100000^2)

# --------------------------------------------------------------------------- parameters and flags

def _allowed(low=None, high=None, above=None, below=None) -> str:
    """The allowed interval as text, e.g. "[0, 1)" or "(0, inf)"."""
    left = f"({above}" if above is not None else (f"[{low}" if low is not None else "(-inf")
    right = f"{below})" if below is not None else (f"{high}]" if high is not None else "inf)")
    return f"{left}, {right}"


def check_value(flag: str, value, low=None, high=None, above=None, below=None) -> None:
    """ValueError naming `flag` and the allowed interval if value is outside it (low/high inclusive), or not finite."""
    if isinstance(value, (int, float)) and not math.isfinite(value):
        raise ValueError(f"{flag}: {value} is not a finite number")
    bad = ((low is not None and value < low) or (high is not None and value > high)
           or (above is not None and value <= above) or (below is not None and value >= below))
    if bad:
        raise ValueError(f"{flag}: {value} is outside the allowed range {_allowed(low, high, above, below)}")


def check_range(flag: str, values, low=None, high=None, above=None) -> None:
    """ValueError naming `flag` unless values is MIN MAX with MIN <= MAX, both in the allowed interval."""
    if values is None or len(values) != 2:
        raise ValueError(f"{flag}: needs two values MIN MAX, got {values}")
    lo, hi = values
    for v in (lo, hi):
        if isinstance(v, (int, float)) and not math.isfinite(v):
            raise ValueError(f"{flag}: {v} is not a finite number")
    if lo > hi:
        raise ValueError(f"{flag}: MIN {lo} is above MAX {hi}")
    for v in (lo, hi):
        check_value(flag, v, low=low, high=high, above=above)


class RangeAction(argparse.Action):
    """argparse action for a `MIN MAX` flag; rejects MIN > MAX and values outside the bounds at parse time."""

    def __init__(self, option_strings, dest, nargs=2, low=None, high=None, above=None, integer=False, **kwargs):
        if nargs != 2:
            raise ValueError("RangeAction takes exactly two values")
        kwargs.setdefault("metavar", ("MIN", "MAX"))
        kwargs.setdefault("type", cli.number(int if integer else float))  # nan and inf refused while parsing
        super().__init__(option_strings, dest, nargs=2, **kwargs)
        self.low, self.high, self.above, self.integer = low, high, above, integer

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            check_range(option_string or self.option_strings[0], values, self.low, self.high, self.above)
        except ValueError as err:
            parser.error(str(err))
        setattr(namespace, self.dest, [values[0], values[1]])


def add_range(group, *flags, default, help, low=None, high=None, above=None, integer=False, dest=None):
    """Add a `MIN MAX` range flag (drawn per image) to an argparse group; returns the action."""
    extra = {"dest": dest} if dest else {}
    return group.add_argument(*flags, action=RangeAction, default=list(default), help=help,
                              low=low, high=high, above=above, integer=integer, **extra)


def option(*flags, default=dataclasses.MISSING, help, low=None, high=None, above=None, below=None, **argparse_kw):
    """A dataclass field that is also a flag: spellings (the first one is named in errors), help, allowed
    interval (low/high inclusive, above/below exclusive; None values are not checked) and any other
    add_argument keywords (type, action, choices, required)."""
    meta = {"flags": flags, "help": help, "bounds": (low, high, above, below), "argparse": argparse_kw}
    return field(default=default, metadata=meta)


def span(*flags, default, help, low=None, high=None, above=None, integer=False):
    """A dataclass field that is a `MIN MAX` range flag, drawn per image: default range and allowed values."""
    meta = {"flags": flags, "help": help, "bounds": (low, high, above, None), "range": True, "integer": integer}
    return field(default=tuple(default), metadata=meta)


def _flag_fields(cls):
    return [f for f in dataclasses.fields(cls) if "flags" in f.metadata]


def flag_values(params) -> dict:
    """{field name: value} of a parameter dataclass's flag fields."""
    return {f.name: getattr(params, f.name) for f in _flag_fields(params)}


class Flags:
    """Base of the frozen parameter dataclasses whose fields are flags (`option`, `span`).

    add_to(group) adds the flags, from_args(args) builds the dataclass from parsed arguments, and the
    constructor checks every flag field against its allowed values (ValueError naming the flag).
    """

    @classmethod
    def add_to(cls, group) -> None:
        """Add this class's flags to an argparse parser or group, in field order."""
        for f in _flag_fields(cls):
            m = f.metadata
            if m.get("range"):
                low, high, above, _ = m["bounds"]
                add_range(group, *m["flags"], default=f.default, help=m["help"], low=low, high=high,
                          above=above, integer=m["integer"], dest=f.name)
            else:
                default = None if f.default is dataclasses.MISSING else f.default
                kw = dict(m["argparse"])
                if kw.get("type") in (int, float):  # nan and inf refused while parsing; the bounds in __post_init__
                    kw["type"] = cli.number(kw["type"])
                group.add_argument(*m["flags"], dest=f.name, default=default, help=m["help"], **kw)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **values):
        """The dataclass from parsed arguments (lists become tuples); keyword values replace those of args."""
        for f in _flag_fields(cls):
            if f.name not in values:
                value = getattr(args, f.name)
                values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def __post_init__(self):
        for f in _flag_fields(self):
            m, value, flag = f.metadata, getattr(self, f.name), f.metadata["flags"][0]
            if m.get("range"):
                check_range(flag, value, *m["bounds"][:3])
            elif value is not None:
                check_value(flag, value, *m["bounds"])
                choices = m["argparse"].get("choices")
                if choices is not None and value not in choices:
                    raise ValueError(f"{flag}: {value!r} is not one of {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class Optics(Flags):
    """Pixel size and PSF: sigma from --psf-sigma or from NA and wavelength, times a per-image --psf-scale."""

    pixel_size: float = option("--pixel-size", "--pixel_size", default=0.1, type=float, above=0.0,
                               help="pixel size in um/px, written into the TIFF tags")
    psf_sigma: float | None = option("--psf-sigma", "--psf_sigma", default=None, type=float, above=0.0,
                                     help="Gaussian PSF sigma in um; when not given, 0.21 * wavelength / NA")
    na: float = option("--na", default=1.4, type=float, above=0.0,
                       help="numerical aperture (for the default PSF)")
    wavelength: float = option("--wavelength", default=0.52, type=float, above=0.0,
                               help="emission wavelength in um (for the default PSF)")
    psf_scale: tuple = span("--psf-scale", default=(1.0, 2.5), low=0.1,
                            help="per-image factor on the PSF sigma (defocus, aberrations, other microscopes)")
    defocus_blur: tuple = span("--defocus-blur", default=(3.0, 8.0), low=1.0,
                               help="blur of out-of-focus objects, in units of the in-focus PSF sigma")

    @property
    def psf_sigma_px(self) -> float:
        """Gaussian PSF sigma in pixels before --psf-scale: --psf-sigma (um) or 0.21 * wavelength / NA."""
        sigma_um = self.psf_sigma if self.psf_sigma is not None else 0.21 * self.wavelength / self.na
        return float(sigma_um / self.pixel_size)


@dataclass(frozen=True)
class Camera(Flags):
    """Photons, camera offset and gain, and the noise added on the way to pixel values."""

    signal_photons: tuple = span("--signal-photons", default=(15.0, 3000.0), low=0.0,
                                 help="photons at the peak of a brightness-1 structure (log-uniform)")
    background_photons: tuple = span("--background-photons", default=(0.5, 150.0), low=0.0,
                                     help="uniform background photons per pixel, e.g. autofluorescence "
                                          "(log-uniform)")
    offset: tuple = span("--offset", default=(0.0, 600.0), low=0.0, help="camera offset in ADU (16-bit scale)")
    gain: tuple = span("--gain", default=(0.5, 5.0), low=0.0, help="ADU per photon (log-uniform)")
    read_noise: tuple = span("--read-noise", default=(0.5, 8.0), low=0.0,
                             help="Gaussian read noise in photo-electrons rms")
    noise_correlation: tuple = span(
        "--noise-correlation", default=(0.0, 0.9), low=0.0,
        help="spatial correlation of the noise: Gaussian sigma in px applied to the noise only, its variance "
             "kept (real cameras, binning, interpolation and processing leave grainy noise whose specks look "
             "like faint spots)")
    column_noise: tuple = span("--column-noise", default=(0.0, 1.0), low=0.0,
                               help="s.d. of a fixed offset per camera column (sCMOS stripes), in units of the "
                                    "read noise")
    hot_pixels: tuple = span("--hot-pixels", default=(0, 20), low=0, integer=True,
                             help="single bright pixels (camera defects, cosmic rays) per image; never targets")
    saturation_prob: tuple = span("--saturation-prob", default=(0.05, 0.05), low=0.0, high=1.0,
                                  help="probability that an image saturates (top 0.1-1%% of pixels clipped)")


@dataclass(frozen=True)
class Background(Flags):
    """What surrounds the targets: cells, cytoplasm, nuclei, uneven illumination, haze and debris."""

    cells: tuple = span("--cells", default=(1, 4), low=0, integer=True,
                        help="cells per image (may leave the frame)")
    cell_radius: tuple = span("--cell-radius", default=(8.0, 20.0), low=0.1, help="cell radius in um")
    cytoplasm: tuple = span("--cytoplasm", default=(0.0, 0.35), low=0.0,
                            help="diffuse cytoplasm brightness relative to a brightness-1 structure")
    nucleus_darkness: tuple = span("--nucleus-darkness", default=(0.2, 0.9), low=0.0, high=1.0,
                                   help="fraction of the cytoplasm signal missing over nuclei")
    illumination: tuple = span("--illumination", default=(0.0, 0.5), low=0.0, high=0.95,
                               help="uneven illumination: brightness falls by up to this fraction across the field")
    haze: tuple = span("--haze", default=(0.0, 0.3), low=0.0,
                       help="smooth out-of-focus haze relative to a brightness-1 structure")
    debris: tuple = span("--debris", default=(0, 6), low=0, integer=True,
                         help="non-target bright or dark blobs (dust, vacuoles, out-of-focus aggregates) per image")
    autofluorescence_prob: float = option("--autofluorescence-prob", default=0.0, type=float, low=0.0, high=1.0,
                                          help="probability that an image has tissue autofluorescence: mottled "
                                               "patches (cell bodies, 2-12 um) with irregular granules, never "
                                               "in the mask")
    autofluorescence: tuple = span("--autofluorescence", default=(0.1, 1.5), low=0.0,
                                   help="brightness of the autofluorescent patches relative to a typical target")
    subtracted_prob: float = option("--background-subtracted-prob", default=0.0, type=float, low=0.0, high=1.0,
                                    help="probability that an image is background-subtracted, as processing "
                                         "pipelines export it: a smooth background removed and the result "
                                         "clipped at 0, so that a large share of the pixels is exactly 0")
    subtracted_zero: tuple = span("--background-subtracted-zero", default=(0.3, 0.7), low=0.0, high=0.99,
                                  help="share of the pixels that background subtraction leaves at exactly 0")
    bright_region_prob: float = option("--bright-region-prob", default=0.0, type=float, low=0.0, high=1.0,
                                       help="probability that an image has large bright regions beside its "
                                            "targets (a bright cell body, a saturated perinuclear patch, a "
                                            "steep haze ramp), never in the mask: faint targets next to them "
                                            "must still be found")
    bright_region: tuple = span("--bright-region", default=(2.0, 40.0), low=0.0,
                                help="peak brightness of a bright region relative to a brightness-1 structure "
                                     "(log-uniform)")
    bright_saturate_prob: float = option("--bright-saturate-prob", default=0.5, type=float, low=0.0, high=1.0,
                                         help="probability that an image with bright regions is clipped flat "
                                              "inside them (a saturated camera)")


@dataclass(frozen=True)
class Scene(Flags):
    """Everything one image is drawn from: the structure's parameters, size, bit depth, optics, camera, background.

    structure: a parameter dataclass with NEEDS_LEVELS, COLUMNS and render(rng, shape, context) (module
    docstring), e.g. vesicles.Vesicles or filaments.Filaments.
    """

    structure: Any
    image_size: int = option("--image-size", "--image_size", default=512, type=int, low=8, high=MAX_IMAGE_SIZE,
                             help="height and width of each image in pixels")
    bit_depth: int = 16
    optics: Optics = field(default_factory=Optics)
    camera: Camera = field(default_factory=Camera)
    background: Background = field(default_factory=Background)

    def __post_init__(self):
        super().__post_init__()
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")


def scene_from_args(args: argparse.Namespace, structure, bit_depth: int) -> Scene:
    """The Scene of parsed arguments; `structure` is the structure's parameter class (e.g. vesicles.Vesicles).

    Raises ValueError naming the flag when a value is outside what it allows.
    """
    return Scene.from_args(args, structure=structure.from_args(args), bit_depth=bit_depth,
                           optics=Optics.from_args(args), camera=Camera.from_args(args),
                           background=Background.from_args(args))


# --------------------------------------------------------------------------- randomness

def image_rng(seed: int, index: int) -> np.random.Generator:
    """Generator for image `index`: depends only on (seed, index), never on workers or order."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def draw(rng: np.random.Generator, bounds, log: bool = False) -> float:
    """One value from a [MIN, MAX] range, uniform or log-uniform (log needs MIN > 0, else uniform)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if hi <= lo:
        return lo
    if log and lo > 0:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def draw_int(rng: np.random.Generator, bounds) -> int:
    """One integer from an inclusive [MIN, MAX] range."""
    return int(rng.integers(int(bounds[0]), int(bounds[1]) + 1))


@dataclass(frozen=True)
class Levels:
    """One image's optical and brightness levels, drawn from the range flags by draw_levels."""

    psf_sigma: float  # px
    defocus: float  # out-of-focus blur, in units of psf_sigma
    signal: float  # photons per unit density
    background: float  # uniform background photons
    cytoplasm: float  # density units
    haze: float  # density units
    illumination: float  # fall-off fraction across the field
    read_noise: float  # electrons rms
    structure: float = 1.0  # typical target density; debris brightness scales with it

    def noise_sd(self, density) -> np.ndarray | float:
        """Expected noise s.d. in photons where the mean density is `density` (shot noise plus read noise)."""
        return np.sqrt(np.asarray(density) * self.signal + self.background + self.read_noise ** 2)


def draw_levels(rng: np.random.Generator, scene: Scene, psf_sigma: float) -> Levels:
    """Draw this image's levels (psf_sigma, in px, already drawn: `draw_psf_sigma`)."""
    cam, bg = scene.camera, scene.background
    return Levels(psf_sigma=float(psf_sigma),
                  defocus=draw(rng, scene.optics.defocus_blur),
                  signal=draw(rng, cam.signal_photons, log=True),
                  background=draw(rng, cam.background_photons, log=True),
                  cytoplasm=draw(rng, bg.cytoplasm),
                  haze=draw(rng, bg.haze),
                  illumination=draw(rng, bg.illumination),
                  read_noise=draw(rng, cam.read_noise))


def draw_psf_sigma(rng: np.random.Generator, optics: Optics) -> float:
    """This image's PSF sigma in pixels: optics.psf_sigma_px times a --psf-scale draw."""
    return optics.psf_sigma_px * draw(rng, optics.psf_scale)


# --------------------------------------------------------------------------- drawing helpers

def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (float32, reflected borders); large sigmas are done on a downsampled copy for speed."""
    image = np.asarray(image, dtype=np.float32)
    if sigma <= 0.05:
        return image.copy()
    h, w = image.shape
    factor = int(sigma // 3) if sigma >= 6 else 1
    factor = max(1, min(factor, h // 8, w // 8))
    if factor == 1:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    small = cv2.resize(image, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def smooth_noise(rng: np.random.Generator, shape, scale_px: float) -> np.ndarray:
    """Smooth random field (float32, in (0, 1), mean about 0.5) with features about `scale_px` pixels wide.

    A coarse Gaussian grid is interpolated (cubic) to at most 1/4 of the final resolution, squashed
    by a logistic (no flat plateaus where clipping would cut it), then enlarged linearly.
    """
    h, w = shape
    f = max(1, min(4, int(scale_px // 4)))
    sh, sw = -(-h // f), -(-w // f)
    step = scale_px / f
    off = int(math.ceil(step))
    gh, gw = int(math.ceil(sh / step)) + 3, int(math.ceil(sw / step)) + 3
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    size = (int(round(gw * step)), int(round(gh * step)))
    field = cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)[off:off + sh, off:off + sw]
    field = 1.0 / (1.0 + np.exp(-1.5 * field))
    if f > 1:
        field = cv2.resize(field, (sw * f, sh * f), interpolation=cv2.INTER_LINEAR)[:h, :w]
    return np.ascontiguousarray(field, dtype=np.float32)


def blob_polygon(rng: np.random.Generator, cy: float, cx: float, radius: float, roughness: float = 0.15,
                 aspect: float = 1.0, n: int = 48) -> np.ndarray:
    """Irregular closed outline (n x 2 int32 x,y points for cv2.fillPoly) around (cy, cx)."""
    multiples, cos_t, sin_t = _polygon_angles(n)
    log_r = np.zeros(n)
    for k, k_theta in zip(range(2, 7), multiples):
        log_r += rng.normal(0, roughness / k) * np.cos(k_theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.exp(log_r)
    angle = rng.uniform(0, np.pi)
    ex, ey = r * cos_t * aspect, r * sin_t
    x = cx + ex * np.cos(angle) - ey * np.sin(angle)
    y = cy + ex * np.sin(angle) + ey * np.cos(angle)
    return np.round(np.stack([x, y], axis=1) * 4).astype(np.int32)  # 2 fractional bits for cv2 shift=2


@functools.lru_cache(maxsize=8)
def _polygon_angles(n: int) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """(k theta for k = 2..6, cos theta, sin theta) of blob_polygon's n angles: the same arrays every call
    (thousands of granules per autofluorescent image), computed once."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return tuple(k * theta for k in range(2, 7)), np.cos(theta), np.sin(theta)


# --------------------------------------------------------------------------- cell context

def cell_layer(rng: np.random.Generator, shape, background: Background, pixel_size: float) -> dict:
    """Draw cells for one image.

    Returns {"cells": bool HxW (irregular outlines, --cells of them, may leave the frame),
             "cytoplasm": float32 HxW density 0..1 (thin and dim at the edge, thicker towards the
                          middle, mottled, darker over nuclei),
             "nuclei": bool HxW}.
    The smooth cytoplasm is computed at reduced resolution (it has no detail finer than ~0.3 um).
    """
    h, w = shape
    f = max(1, min(4, int(0.3 / pixel_size), h // 32, w // 32))  # work at 1/f resolution
    sh, sw = -(-h // f), -(-w // f)
    n_cells = draw_int(rng, background.cells)
    cells = np.zeros((h, w), np.uint8)
    nuclei = np.zeros((h, w), np.uint8)
    cells_small = np.zeros((sh, sw), np.uint8)
    dark_small = np.zeros((sh, sw), np.float32)
    px = pixel_size
    radius_mean = 0.0
    for _ in range(n_cells):
        radius = draw(rng, background.cell_radius) / px
        radius_mean += radius / n_cells
        cy, cx = rng.uniform(-0.15, 1.15) * h, rng.uniform(-0.15, 1.15) * w
        poly = blob_polygon(rng, cy, cx, radius, 0.25, rng.uniform(1.0, 1.6))
        cv2.fillPoly(cells, [poly], 1, shift=2)
        cv2.fillPoly(cells_small, [poly // f], 1, shift=2)
        if rng.random() < 0.85:
            nr = radius * rng.uniform(0.3, 0.5)
            ny, nx = cy + rng.normal(0, 0.15 * radius), cx + rng.normal(0, 0.15 * radius)
            poly = blob_polygon(rng, ny, nx, nr, 0.08, rng.uniform(1.0, 1.4))
            cv2.fillPoly(nuclei, [poly], 1, shift=2)
            cv2.fillPoly(dark_small, [poly // f], float(draw(rng, background.nucleus_darkness)), shift=2)
    nuclei &= cells
    if n_cells == 0:
        zero = np.zeros((h, w), np.float32)
        return {"cells": cells.astype(bool), "cytoplasm": zero, "nuclei": nuclei.astype(bool)}
    # Density follows thickness: thin at the edge, thick around the nucleus (distance inside the cell).
    dist = cv2.distanceTransform(cells_small, cv2.DIST_L2, 3)
    thickness = 1.0 - np.exp(dist * np.float32(-f / (0.3 * radius_mean)))
    scale = max(2.0, rng.uniform(0.5, 3.0) / px / f)  # mottling 0.5-3 um across
    amp = rng.uniform(0.1, 0.6)
    texture = (1.0 - amp) + 2.0 * amp * smooth_noise(rng, (sh, sw), scale)
    dark = blur(dark_small, max(0.7, 0.3 / px / f))
    small = blur(thickness * texture * (1.0 - dark), max(0.5, 0.2 / px / f))
    cytoplasm = cv2.resize(small, (sw * f, sh * f), interpolation=cv2.INTER_LINEAR)[:h, :w]
    cytoplasm *= cells  # a sharp cell edge, as in the real images
    return {"cells": cells.astype(bool), "cytoplasm": np.clip(cytoplasm, 0, 1).astype(np.float32),
            "nuclei": nuclei.astype(bool)}


def illumination_field(rng: np.random.Generator, shape, strength: float) -> np.ndarray:
    """Multiplicative field in [1 - strength, 1]: a smooth quadratic fall-off from a random brightest point."""
    h, w = shape
    if strength <= 0:
        return np.ones(shape, np.float32)
    cy, cx = rng.uniform(-0.3, 1.3) * h, rng.uniform(-0.3, 1.3) * w
    yy = (np.arange(h, dtype=np.float32) - np.float32(cy)) ** 2
    xx = (np.arange(w, dtype=np.float32) - np.float32(cx)) ** 2
    r2 = np.add.outer(yy, xx)
    r2 *= np.float32(-strength / max(float(yy.max() + xx.max()), 1e-6))
    r2 += np.float32(1.0)
    return r2


def debris_layer(rng: np.random.Generator, shape, background: Background, pixel_size: float, psf_px: float,
                 structure: float = 1.0):
    """Non-target blobs: (additive bright density, multiplicative dark factor), float32 HxW, or (None, None).

    Bright debris is larger than the targets or out of focus, 0.05-1.5 times as bright as `structure`
    (a typical target's density); dark blobs (vacuoles, dirt shadows) dim whatever lies beneath them.
    """
    h, w = shape
    count = draw_int(rng, background.debris)
    if count == 0:
        return None, None
    bright = np.zeros(shape, np.float32)
    dark = np.ones(shape, np.float32)
    for _ in range(count):
        radius = draw(rng, (0.8, 4.0), log=True) / pixel_size
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        poly = blob_polygon(rng, cy, cx, radius, 0.3, rng.uniform(1.0, 2.5))
        pad = int(3 * radius) + 4
        y0, y1 = max(0, int(cy) - pad), min(h, int(cy) + pad)
        x0, x1 = max(0, int(cx) - pad), min(w, int(cx) + pad)
        if y1 <= y0 or x1 <= x0:
            continue
        win = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(win, [poly - np.array([x0 * 4, y0 * 4], np.int32)], 1.0, shift=2)
        win *= 0.3 + 1.4 * smooth_noise(rng, win.shape, max(2.0, radius / 3))  # lumpy, not a flat pill
        win = blur(win, psf_px * rng.uniform(1.5, 6.0))
        if rng.random() < 0.6:
            bright[y0:y1, x0:x1] += win * (structure * draw(rng, (0.05, 1.5), log=True))
        else:
            dark[y0:y1, x0:x1] *= 1.0 - win * rng.uniform(0.2, 0.7)
    return bright, dark


def autofluorescence_layer(rng: np.random.Generator, shape, background: Background, pixel_size: float,
                           psf_px: float, structure: float = 1.0) -> np.ndarray:
    """Tissue autofluorescence (float32 HxW density, never a target): cell-body patches and granules.

    3-30 irregular patches 2-12 um across, mottled at 0.3-1.5 um, `--autofluorescence` times a typical
    target's brightness; inside them 0-40 irregular granules 0.4-1.2 um across (lipofuscin-like), dimmer
    than the patch peaks are bright. Drawn only when the image is chosen (--autofluorescence-prob).
    """
    h, w = shape
    layer = np.zeros(shape, np.float32)
    level = structure * draw(rng, background.autofluorescence, log=True)
    for _ in range(int(rng.integers(3, 31))):
        radius = draw(rng, (1.0, 6.0), log=True) / pixel_size
        cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
        pad = int(2 * radius) + 4
        y0, y1 = max(0, int(cy) - pad), min(h, int(cy) + pad)
        x0, x1 = max(0, int(cx) - pad), min(w, int(cx) + pad)
        if y1 - y0 < 4 or x1 - x0 < 4:
            continue
        poly = blob_polygon(rng, cy - y0, cx - x0, radius, 0.35, rng.uniform(1.0, 2.0))
        win = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(win, [poly], 1.0, shift=2)
        texture = smooth_noise(rng, win.shape, max(2.0, draw(rng, (0.3, 1.5), log=True) / pixel_size))
        win *= (0.2 + 1.6 * texture) * rng.uniform(0.3, 1.0)
        inside = np.flatnonzero(win > 0)
        for _ in range(int(rng.integers(0, 41)) if inside.size else 0):
            k = inside[rng.integers(0, inside.size)]
            gy, gx = k // win.shape[1], k % win.shape[1]
            gpoly = blob_polygon(rng, gy, gx, draw(rng, (0.2, 0.6), log=True) / pixel_size, 0.35,
                                 rng.uniform(1.0, 1.8))
            cv2.fillPoly(win, [gpoly], float(rng.uniform(0.5, 1.5)), shift=2)
        layer[y0:y1, x0:x1] += blur(win, psf_px * rng.uniform(1.0, 3.0))
    return layer * np.float32(level)


def bright_region_layer(rng: np.random.Generator, shape, background: Background, pixel_size: float,
                        cells: np.ndarray | None) -> np.ndarray:
    """Large bright regions that are never targets (float32 HxW density): 1-3 smooth bodies 4-25 um across,
    mostly over cells, edges from sharp to soft, `--bright-region` times a brightness-1 structure at their
    peak; in a third of the images also a steep ramp of haze across the field. Drawn only when the image is
    chosen (--bright-region-prob).
    """
    h, w = shape
    layer = np.zeros(shape, np.float32)
    inside = np.flatnonzero(cells.ravel()) if cells is not None and cells.any() else np.zeros(0, np.int64)
    for _ in range(int(rng.integers(1, 4))):
        radius = draw(rng, (2.0, 12.5), log=True) / pixel_size
        if inside.size and rng.random() < 0.8:
            k = inside[rng.integers(0, inside.size)]
            cy, cx = float(k // w), float(k % w)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        body = np.zeros(shape, np.float32)
        cv2.fillPoly(body, [blob_polygon(rng, cy, cx, radius, 0.3, rng.uniform(1.0, 2.0))], 1.0, shift=2)
        edge = radius * draw(rng, (0.02, 0.4), log=True)  # px: a sharp rim to a soft, rounded body
        body = blur(body, max(0.7, edge))
        # mottled only on scales well above a target's, so no bump on it looks like a punctum
        texture = smooth_noise(rng, shape, max(1.5 / pixel_size, radius / 2))
        body *= (0.75 + 0.5 * texture) * np.float32(draw(rng, background.bright_region, log=True))
        layer += body
    if rng.random() < 1.0 / 3.0:
        ramp = 1.0 - illumination_field(rng, shape, 1.0)  # 0 at a random point, rising across the field
        layer += ramp * np.float32(draw(rng, background.bright_region, log=True) * rng.uniform(0.1, 0.5))
    return layer


def disc_filter(a: np.ndarray, size: int, op) -> np.ndarray:
    """op(a, ellipse kernel size x size) for op cv2.erode or cv2.dilate, float32, the same values bit for bit.

    OpenCV runs a large elliptical kernel point by point (size^2 work per pixel: 0.56 s for a 101 px opening of
    a 512^2 image); here each kernel row is a horizontal run, so the runs of growing half-width come from
    repeated 1 x 3 steps and are combined row offset by row offset: about 3 x size passes over the image (5-8x
    faster at 101 px). Min and max are exact, and pixels beyond the border are ignored as OpenCV ignores them.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    a = np.asarray(a, np.float32)
    if size < 15:
        return op(a, kernel)
    c = size // 2
    rows: dict[int, list[int]] = {}  # half-width of a kernel row -> its row offsets
    for i, row in enumerate(kernel):
        cols = np.flatnonzero(row)
        if cols.size:
            rows.setdefault(int(c - cols[0]), []).append(i - c)
    extreme = np.minimum if op is cv2.erode else np.maximum
    h, w = a.shape
    out = np.full((h + 2 * c, w), np.inf if op is cv2.erode else -np.inf, np.float32)
    line = np.ones((1, 3), np.uint8)
    run = a  # extreme over a horizontal run of half-width r
    for r in range(max(rows) + 1):
        if r:
            run = op(run, line)
        for d in rows.get(r, ()):
            band = out[c - d:c - d + h]  # out row c + y collects run row y + d
            extreme(band, run, out=band)
    return out[c:c + h]


def subtract_background(rng: np.random.Generator, image: np.ndarray, background: Background,
                        pixel_size: float) -> np.ndarray:
    """A pipeline's background subtraction: the image minus its smooth floor, clipped at 0, same dtype.

    The floor is a grey opening (minimum then maximum filter, 3-10 um wide) smoothed by a Gaussian,
    raised by the level that leaves a `--background-subtracted-zero` share of the pixels at 0.
    """
    a = image.astype(np.float32)
    size = max(3, int(round(draw(rng, (3.0, 10.0)) / pixel_size)) | 1)
    floor = blur(disc_filter(disc_filter(a, size, cv2.erode), size, cv2.dilate), size / 3.0)
    rest = a - floor
    zero = draw(rng, background.subtracted_zero)
    rest -= float(np.percentile(rest[::2, ::2], 100.0 * zero))
    top = 255 if image.dtype == np.uint8 else 65535
    return np.clip(np.rint(rest), 0, top).astype(image.dtype)


# --------------------------------------------------------------------------- camera

def gaussian(rng: np.random.Generator, n: int) -> np.ndarray:
    """n standard normal float32 values, seeded from rng.

    OpenCV's generator (seeded with a draw from rng, so still a function of (seed, index)) is about 4x
    faster than numpy's for the one normal per pixel that the camera needs.
    """
    cv2.setRNGSeed(int(rng.integers(1, 2 ** 31)))
    out = np.empty((n, 1), np.float32)
    cv2.randn(out, 0.0, 1.0)
    return out.ravel()


def shot_and_read_noise(rng: np.random.Generator, photons: np.ndarray, read_noise: float) -> np.ndarray:
    """Photo-electrons = Poisson(photons) + Normal(0, read_noise), float32.

    Pixels below 4 expected photons get exact Poisson counts; brighter ones a one-normal
    approximation with Poisson's mean, variance (within 0.06 photons^2) and third cumulant
    (x = mu + s z + g (z^2 - 1)), several times faster than numpy's Poisson on whole images.
    """
    lam = np.maximum(photons, 0, dtype=np.float32).ravel()
    rn2 = np.float32(read_noise * read_noise)

    def approx(mu):
        # x = mu + s z + g (z^2 - 1): mean mu, variance s^2 + 2 g^2 (2 g^2 < 0.06 is left out),
        # third cumulant 6 g s^2 = mu as for Poisson (read noise adds none)
        var = mu + rn2
        s = np.sqrt(var)
        g = mu / var
        g *= np.float32(1.0 / 6.0)
        z = gaussian(rng, mu.size)
        out = g * z
        out += s
        out *= z
        out += mu
        out -= g
        return out

    low = lam < 4.0
    n_low = int(np.count_nonzero(low))
    if n_low == 0:
        return approx(lam).reshape(photons.shape)
    out = np.empty_like(lam)
    out[low] = rng.poisson(lam[low]).astype(np.float32) + np.float32(read_noise) * gaussian(rng, n_low)
    if n_low < lam.size:
        out[~low] = approx(lam[~low])
    return out.reshape(photons.shape)


def correlate_noise(electrons: np.ndarray, photons: np.ndarray, sigma: float) -> np.ndarray:
    """Blur only the noise (electrons - photons) by a Gaussian of `sigma` px, keeping its local variance.

    White noise blurred by a kernel k keeps sum(k^2) of its variance, so the blurred noise is divided
    by sqrt(sum(k^2)); the expected image and the noise level stay as they were, only the grain grows.
    """
    size = 2 * int(math.ceil(3.0 * sigma)) + 1
    k1 = cv2.getGaussianKernel(size, sigma).astype(np.float64).ravel()
    gain = np.float32(1.0 / float(np.sum(k1 * k1)))  # 2D kernel: sum(k^2) = (sum(k1^2))^2, sqrt -> sum(k1^2)
    expected = photons.astype(np.float32, copy=False)
    noise = cv2.GaussianBlur(electrons - expected, (size, size), sigma, borderType=cv2.BORDER_REFLECT) * gain
    return expected + noise


def camera(rng: np.random.Generator, photons: np.ndarray, cam: Camera, bit_depth: int,
           read_noise: float | None = None, noise_rng: np.random.Generator | None = None,
           ceiling: float | None = None) -> np.ndarray:
    """Expected photons per pixel -> camera image of `bit_depth` (8 or 16) bits.

    16-bit: ADU = offset + gain * (Poisson photons + read noise + column offsets + hot pixels),
    optionally saturated, rounded, clipped.
    8-bit: the same camera, then a display-style export that maps a high percentile to near 255.
    read_noise (electrons) is drawn from cam.read_noise when None. noise_rng, when given, draws the shot
    and read noise alone, and rng the camera's settings: a video passes a fresh noise_rng per frame and
    the same settings generator (video.py) so that offset, gain and fixed patterns stay put. ceiling:
    electrons above it are clipped (a saturated bright region).
    """
    if read_noise is None:
        read_noise = draw(rng, cam.read_noise)
    electrons = shot_and_read_noise(rng if noise_rng is None else noise_rng, photons, read_noise)
    grain = draw(rng, cam.noise_correlation)
    if grain > 0.05:
        electrons = correlate_noise(electrons, photons, grain)
    h, w = electrons.shape
    columns = draw(rng, cam.column_noise) * read_noise
    if columns > 0:
        electrons += (columns * rng.standard_normal(w)).astype(np.float32)[None, :]
    n_hot = draw_int(rng, cam.hot_pixels)
    if n_hot:
        level = float(np.median(photons[::8, ::8])) + read_noise ** 2 + 1.0
        hot = rng.integers(0, h * w, n_hot)
        electrons.ravel()[hot] += (np.sqrt(level) * np.exp(rng.uniform(np.log(5), np.log(200), n_hot))
                                   ).astype(np.float32)
    if ceiling is not None:  # a full well or a saturated digitiser: flat at the ceiling (in electrons)
        np.minimum(electrons, np.float32(ceiling), out=electrons)
    adu = draw(rng, cam.offset) + draw(rng, cam.gain, log=True) * electrons
    saturate = rng.random() < draw(rng, cam.saturation_prob)
    clip_q = rng.uniform(99.0, 99.9)
    if bit_depth == 8:
        black = float(np.percentile(adu[::4, ::4], rng.uniform(0.0, 5.0)))
        top = float(np.percentile(adu[::2, ::2], clip_q if saturate else 99.99))
        scale = (255.0 if saturate else rng.uniform(180.0, 255.0)) / max(top - black, 1e-3)
        adu = (adu - black) * scale
        return np.clip(np.rint(adu), 0, 255).astype(np.uint8)
    if bit_depth != 16:
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if saturate:
        adu = np.minimum(adu, np.percentile(adu[::2, ::2], clip_q))
    return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)


def finish_image(rng: np.random.Generator, in_focus: np.ndarray, out_of_focus: np.ndarray | None, cells: dict,
                 levels: Levels, scene: Scene, noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """Optics, cell context and camera for one image; returns uint8 or uint16 HxW (scene.bit_depth).

    in_focus: float32 HxW sharp structure density (1.0 = typical brightness), blurred by levels.psf_sigma.
    out_of_focus: float32 HxW density (or None) blurred levels.defocus times more; never in the mask.
    cells: dict from cell_layer. Adds cytoplasm, haze, debris, uneven illumination and uniform
    background, then `camera` (noise_rng: see there).
    """
    shape = in_focus.shape
    psf = levels.psf_sigma
    density = blur(in_focus, psf)
    if out_of_focus is not None and np.any(out_of_focus):
        density += blur(out_of_focus, psf * levels.defocus)
    if levels.cytoplasm > 0:
        density += levels.cytoplasm * cells["cytoplasm"]
    pixel_size = scene.optics.pixel_size
    if levels.haze > 0:
        # out-of-focus light comes mostly from the cells (their cytoplasm far out of focus), partly from
        # cells above or below the field: a broad blur of the cytoplasm plus a broad random field
        from_cells = blur(cells["cytoplasm"], max(8.0, 3.0 / pixel_size))
        broad = smooth_noise(rng, shape, max(16.0, 12.0 / pixel_size))
        mix = rng.uniform(0.3, 0.9)
        density += levels.haze * (mix * 2.0 * from_cells + (1.0 - mix) * broad)
    bright, dark = debris_layer(rng, shape, scene.background, pixel_size, psf, levels.structure)
    # Optional layers draw from rng only when they are on, so an image without them keeps every other draw.
    if scene.background.autofluorescence_prob > 0 and rng.random() < scene.background.autofluorescence_prob:
        density += autofluorescence_layer(rng, shape, scene.background, pixel_size, psf, levels.structure)
    if bright is not None:
        density = (density + bright) * dark
    if cells.get("bright") is not None:
        density += cells["bright"]
    photons = density * levels.signal + levels.background
    if levels.illumination > 0:
        photons *= illumination_field(rng, shape, levels.illumination)
    ceiling = None
    if cells.get("bright_saturate"):  # the camera clips inside the bright regions, not at the targets' level
        top = float(np.max(cells["bright"]))
        ceiling = (top * rng.uniform(0.3, 0.8) + float(np.median(density))) * levels.signal + levels.background
    return camera(rng, photons, scene.camera, scene.bit_depth, read_noise=levels.read_noise, noise_rng=noise_rng,
                  ceiling=ceiling)


# --------------------------------------------------------------------------- one image

@dataclass(frozen=True)
class Context:
    """What a structure renderer may use of its image, in pixels (see the pixel convention above)."""

    pixel_size: float  # um/px
    psf_sigma: float  # this image's in-focus PSF sigma, px
    cells: np.ndarray | None = None  # bool HxW: inside a cell (cell_layer); None: no cells
    cytoplasm: np.ndarray | None = None  # float32 HxW cytoplasm density 0..1; None: none
    levels: Levels | None = None  # drawn before the structure when it NEEDS_LEVELS, else None
    bright: np.ndarray | None = None  # float32 HxW bright-region density (bright_region_layer); None: none


class Rendered(NamedTuple):
    """A structure renderer's result for one image."""

    in_focus: np.ndarray  # float32 HxW sharp density, blurred by the PSF later
    out_of_focus: np.ndarray | None  # float32 HxW density blurred much more; never in the mask
    mask: np.ndarray  # uint8 0/1 HxW
    rows: list[dict] | None  # one row per object in the mask (structure's COLUMNS), None: no table
    brightness: float = 1.0  # typical in-focus target density; debris brightness follows it


def render_one(rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, np.ndarray, list[dict] | None]:
    """One image: (uint8/uint16 HxW image, uint8 0/1 HxW mask, per-object rows or None).

    The draws, in order: PSF sigma; the brightness levels when the structure NEEDS_LEVELS (it sets its
    brightness from the noise); cells; the structure; otherwise the levels now; then finish_image.
    """
    shape = (scene.image_size, scene.image_size)
    psf = draw_psf_sigma(rng, scene.optics)
    levels = draw_levels(rng, scene, psf) if scene.structure.NEEDS_LEVELS else None
    cells = cell_layer(rng, shape, scene.background, scene.optics.pixel_size)
    bg = scene.background
    # Optional layers draw from rng only when they are on, so an image without them keeps every other draw.
    bright = None
    if bg.bright_region_prob > 0 and rng.random() < bg.bright_region_prob:
        bright = bright_region_layer(rng, shape, bg, scene.optics.pixel_size, cells["cells"])
        cells["bright"] = bright
        cells["bright_saturate"] = bool(rng.random() < bg.bright_saturate_prob)
    context = Context(scene.optics.pixel_size, psf, cells["cells"], cells["cytoplasm"], levels, bright)
    out = scene.structure.render(rng, shape, context)
    if levels is None:
        levels = draw_levels(rng, scene, psf)
    levels = dataclasses.replace(levels, structure=out.brightness)
    relabel = getattr(scene.structure, "relabel", None)  # a rule on what is visible, once the noise is known
    if relabel is not None:
        out = out._replace(mask=relabel(out, levels, context))
    image = finish_image(rng, out.in_focus, out.out_of_focus, cells, levels, scene)
    if scene.background.subtracted_prob > 0 and rng.random() < scene.background.subtracted_prob:
        image = subtract_background(rng, image, scene.background, scene.optics.pixel_size)
    return image, out.mask, out.rows
