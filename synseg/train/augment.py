"""Training augmentation: the two presets (blobs, filaments) and the crops, flips and warps they use.

A preset has intensity(image, rng) (raw image -> float32 before normalisation) and spatial(image, mask, rng)
(applied to a normalised crop and its mask together). Each task names its preset in tasks.py. NumPy and
OpenCV only: no torch here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CV2 = None


def serial_cv2():
    """OpenCV, switched to serial execution before its first use.

    Loader workers already run in parallel, and an OpenCV thread pool created in the parent
    before the DataLoader forks its workers deadlocks them.
    """
    global _CV2
    if _CV2 is None:
        import cv2

        cv2.setNumThreads(0)
        _CV2 = cv2
    return _CV2


def random_crop(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator):
    """A size x size window at a random place; images smaller than that are mirror-padded first."""
    if size <= 0:
        return image, mask
    h, w = image.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        image, mask = np.pad(image, pad, mode="symmetric"), np.pad(mask, pad, mode="symmetric")
        h, w = image.shape
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[y:y + size, x:x + size], mask[y:y + size, x:x + size]


def random_dihedral(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """One of the 8 flips/90-degree rotations, the same for image and mask."""
    k = int(rng.integers(4))
    image, mask = np.rot90(image, k), np.rot90(mask, k)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return image, mask


def elastic_warp(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 shift_px: float, smooth_px: float):
    """Warp image (bilinear) and mask (nearest, so it stays 0/1) by one smooth random field.

    The field is white noise blurred with a Gaussian of `smooth_px` and scaled to an RMS shift
    of `shift_px` pixels, so the two numbers read directly as "how far" and "how wiggly".
    """
    cv2 = serial_cv2()
    h, w = image.shape
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    maps = []
    for grid in (grid_x, grid_y):
        noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), smooth_px,
                                 borderType=cv2.BORDER_REFLECT_101)
        maps.append(grid + noise * (shift_px / (float(noise.std()) + 1e-8)))
    image = cv2.remap(np.ascontiguousarray(image, dtype=np.float32), maps[0], maps[1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT_101)
    mask = cv2.remap(np.ascontiguousarray(mask, dtype=np.uint8), maps[0], maps[1], cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_REFLECT_101)
    return image, mask


@dataclass(frozen=True)
class BlobAugmentation:
    """Blobs: brightness over four orders of magnitude, sometimes squared, plus flips/rotations.

    The task's normalisation (local contrast or a percentile stretch, normalization.normalize_image) maps a*x
    to the same values as x, so the model is insensitive to global brightness by construction and the x0.01
    to x100 scaling is exactly undone. What exposure does change is the recording: half of the
    samples are therefore re-digitised, scaled so that their bright level (99.8th percentile)
    lands anywhere from `exposure_counts[0]` counts (coarse steps, faint vesicles a few counts
    above background) to `exposure_counts[1]` (the brightest vesicles clipped flat at 65535),
    then rounded and clipped to 16 bits.
    """

    scale_decades: tuple = (-2.0, 2.0)  # factor 10**U(-2, 2): x0.01 .. x100
    p_square: float = 0.15
    p_redigitize: float = 0.5
    exposure_counts: tuple = (50.0, 150000.0)  # bright level after re-digitisation, log-uniform

    def intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Raw image (any dtype) -> float32 in raw units, before normalisation."""
        x = image.astype(np.float32)
        if rng.random() < self.p_square:
            top = float(x.max())
            x = x * x / top if top > 0 else x  # squared, same maximum: dims the dim, keeps the bright
        x *= np.float32(10.0 ** rng.uniform(*self.scale_decades))
        if rng.random() < self.p_redigitize:
            bright = float(np.percentile(x, 99.8))
            if bright > 0:
                level = np.exp(rng.uniform(*np.log(self.exposure_counts)))
                x = np.clip(np.rint(x * np.float32(level / bright)), 0, 65535)
        return x

    def spatial(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        """Flips and 90-degree rotations of an already cropped, normalised pair."""
        return random_dihedral(image, mask, rng)


@dataclass(frozen=True)
class FilamentAugmentation:
    """Filaments: CLAHE, clipped brightness/contrast and gamma, flips/rotations, elastic warps.

    CLAHE is applied at random (p_clahe), so the network sees images with and without it and
    prediction needs nothing beyond the stored normalisation. A linear brightness change alone
    would be undone by that normalisation; here it works on the
    image's own 0..1 range with clipping (saturation, black level) and a gamma, which it keeps.
    """

    p_clahe: float = 0.5
    clahe_clip: tuple = (1.0, 3.0)
    clahe_tiles: int = 8
    p_contrast: float = 0.8
    gain: tuple = (0.7, 1.3)
    offset: tuple = (-0.15, 0.15)
    gamma: tuple = (0.7, 1.5)
    p_elastic: float = 0.5
    elastic_shift_px: tuple = (1.0, 3.0)
    elastic_smooth_px: float = 8.0

    def intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Raw image -> float32 in 0..1 with CLAHE and contrast changes, before normalisation."""
        x = image.astype(np.float32)
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        if rng.random() < self.p_clahe:
            cv2 = serial_cv2()
            clahe = cv2.createCLAHE(clipLimit=float(rng.uniform(*self.clahe_clip)),
                                    tileGridSize=(self.clahe_tiles, self.clahe_tiles))
            x = clahe.apply(np.rint(x * 65535).astype(np.uint16)).astype(np.float32) / 65535
        if rng.random() < self.p_contrast:
            x = np.clip(x * rng.uniform(*self.gain) + rng.uniform(*self.offset), 0.0, 1.0)
            x = x ** np.float32(rng.uniform(*self.gamma))
        return x

    def spatial(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        """Flips, 90-degree rotations and (p_elastic) an elastic warp of a cropped pair."""
        image, mask = random_dihedral(image, mask, rng)
        if rng.random() < self.p_elastic:
            image, mask = elastic_warp(image, mask, rng, rng.uniform(*self.elastic_shift_px),
                                       self.elastic_smooth_px)
        return image, mask

