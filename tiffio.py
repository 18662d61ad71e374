"""Reading and writing microscopy images with tifffile, keeping pixel size and axes; CSV tables; display stretch.

    img, meta = read_image("cell.tif")        # meta: {"pixel_size_um": 0.156, "axes": "YX", ...}
    write_tiff("cell_mask.tif", mask, pixel_size_um=meta["pixel_size_um"], axes=meta["axes"])

Every file the project writes goes through `atomic_path`, so an interrupted run never leaves a
half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

import numpy as np
import tifffile

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(folder) -> None:
    """Raise OSError unless a file can be created in the existing `folder` (a probe file, removed again)."""
    probe = Path(folder) / f".synseg-probe{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def _resolution_um(page) -> float | None:
    """Pixel size in um from a page's XResolution/ResolutionUnit tags, or None."""
    tags = page.tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    if not num or not den:
        return None
    px_per_unit = num / den
    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 1
    unit = int(unit)
    if unit == 3:  # centimetre
        return 1e4 / px_per_unit
    if unit == 2:  # inch: usually a screen default (72 dpi), not a physical size
        return None
    return 1.0 / px_per_unit  # ImageJ writes unit=none with 'unit=micron' in its description


def read_image(path) -> tuple[np.ndarray, dict]:
    """Read a TIFF (or PNG/JPEG) and return (array, meta).

    meta: pixel_size_um (float or None), axes (str, e.g. "YX", "TYX", "ZCYX"), frame_interval_s (ImageJ
    'finterval' in seconds, or None), dtype, source.
    Raises ValueError naming the file when it cannot be read as an image.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unsupported extension {suffix or '(none)'}; use one of {' '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if suffix in TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                data = series.asarray()
                axes = series.axes
                pixel = None
                ij = tif.imagej_metadata or {}
                interval = _frame_interval(ij)
                if tif.is_ome and tif.ome_metadata:
                    pixel = _ome_pixel_size(tif.ome_metadata)
                if pixel is None:
                    pixel = _resolution_um(tif.pages[0])
                    unit = str(ij.get("unit", "")).lower()
                    if pixel is not None and unit in ("nm", "nanometer"):
                        pixel /= 1000.0
                    elif pixel is not None and unit in ("mm", "millimeter"):
                        pixel *= 1000.0
                    elif pixel is not None and (unit in ("pixel", "pixels", "px")
                                                or (not unit and pixel == 1.0)):
                        pixel = None  # uncalibrated: writers default to 1 px per unit
        except (tifffile.TiffFileError, ValueError, IndexError, OSError, KeyError) as err:
            raise ValueError(f"{path}: not a readable TIFF ({type(err).__name__}: {err})") from None
    else:
        import cv2  # PNG/JPEG only; heavy import kept out of the TIFF path

        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if data is None:
            raise ValueError(f"{path}: not a readable image")
        if data.ndim == 3:
            data = data[..., ::-1].copy() if data.shape[-1] in (3, 4) else data  # BGR -> RGB
        axes, pixel, interval = ("YXS" if data.ndim == 3 else "YX"), None, None
    if data.size == 0:
        raise ValueError(f"{path}: image is empty (shape {data.shape})")
    axes = str(axes).replace("Q", "Z") if len(axes) == data.ndim else _guess_axes(data)
    return data, {"pixel_size_um": pixel, "axes": axes, "frame_interval_s": interval, "dtype": str(data.dtype),
                  "source": str(path)}


def _frame_interval(ij: dict) -> float | None:
    """Seconds between frames from ImageJ metadata ('finterval', in 'tunit' when that is ms or min), or None."""
    try:
        value = float(ij.get("finterval", 0) or 0)
    except (TypeError, ValueError):
        return None
    scale = {"ms": 1e-3, "msec": 1e-3, "min": 60.0, "h": 3600.0}.get(str(ij.get("tunit", "s")).lower(), 1.0)
    return value * scale if value > 0 else None


def _guess_axes(data: np.ndarray) -> str:
    """Fallback axes string for an array whose file gave none that fits."""
    return {2: "YX", 3: "ZYX", 4: "TZYX"}.get(data.ndim, "Q" * (data.ndim - 2) + "YX")


def _ome_pixel_size(xml: str) -> float | None:
    """PhysicalSizeX (in um) from OME-XML, or None."""
    import re

    m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', xml)
    if not m:
        return None
    size = float(m.group(1))
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
    unit = unit.group(1) if unit else "µm"
    scale = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3}.get(unit, 1.0)
    return size * scale if size > 0 else None


def write_tiff(path, data: np.ndarray, pixel_size_um: float | None = None, axes: str | None = None,
               compression: str | None = None, frame_interval_s: float | None = None) -> None:
    """Write an ImageJ-compatible TIFF atomically, carrying pixel size (um), axes and, for a time-lapse
    (axes with T), the frame interval in seconds (ImageJ 'finterval').

    ImageJ hyperstacks only know the axes TZCYXS; other letters are mapped (Q->Z) or, failing
    that, the file is written as plain TIFF with the resolution tags still set.
    """
    data = np.asarray(data)
    axes = axes or _guess_axes(data)
    imagej_ok = data.dtype in (np.uint8, np.uint16, np.float32) and set(axes) <= set("TZCYXS")
    kwargs = {}
    if pixel_size_um:
        kwargs["resolution"] = (1.0 / pixel_size_um, 1.0 / pixel_size_um)
    with atomic_path(path) as tmp:
        if imagej_ok:
            meta = {"axes": axes}
            if pixel_size_um:
                meta["unit"] = "um"
            if frame_interval_s:
                meta.update(finterval=float(frame_interval_s), tunit="s")
            tifffile.imwrite(tmp, data, imagej=True, metadata=meta, compression=compression, **kwargs)
        else:
            tifffile.imwrite(tmp, data, metadata={"axes": axes}, compression=compression, **kwargs)


def write_csv(path, rows: list[dict], fields=None, float_format: str | None = None) -> None:
    """Write rows (dicts) as a CSV table atomically, header always present (also for no rows).

    fields: column order (default: the first row's keys); keys outside it are ignored, missing ones left
    empty. float_format (e.g. "{:.4f}") formats float cells; None writes them as Python prints them.
    """
    rows = list(rows)
    fields = list(fields) if fields is not None else (list(rows[0]) if rows else [])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            if float_format:
                row = {k: (float_format.format(v) if isinstance(v, float) else v) for k, v in row.items()}
            writer.writerow(row)


def read_csv(path) -> list[dict]:
    """Rows of a CSV table as dicts of strings, or [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def stretch(image, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Any 2D image -> float32 in [0, 1] between its `low` and `high` percentiles (clipped), for display.

    A constant image gives all zeros. Multiply by 255 and cast for an 8-bit picture.
    """
    a = np.asarray(image, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(a, (low, high)))
    if hi <= lo:
        return np.zeros(a.shape, np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
