"""Reading and writing microscopy images with tifffile, keeping pixel size and axes; CSV tables; display stretch.

    img, meta = read_image("cell.tif")        # meta: {"pixel_size_um": 0.156, "axes": "YX", ...}
    write_tiff("cell_mask.tif", mask, pixel_size_um=meta["pixel_size_um"], axes=meta["axes"])

Every file the project writes goes through `atomic_path`, so an interrupted run never leaves a
half-written file under the final name, and a failed write is one WriteError line naming the path and
the reason (read-only, disk full, name not encodable); `remove_stale_parts` clears what a killed run left.
Inputs are checked against `MAX_PIXELS` from their header before a pixel is read.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import logging
import math
import os
import struct
import sys
from pathlib import Path

import numpy as np
import tifffile

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


MAX_PIXELS = 2 ** 31  # pixels an input may declare (all planes) before it is read: about 46000^2 px
READ_ERRORS = (tifffile.TiffFileError, ValueError, IndexError, OSError, KeyError, struct.error)  # a damaged TIFF


# --------------------------------------------------------------------------- names that are not UTF-8

def _escape_undecodable(err):
    """Codec error handler: a byte that was not UTF-8 (a lone surrogate from os.fsdecode) as \\xNN."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    bad = err.object[err.start:err.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}"
                   for c in bad), err.end


codecs.register_error("synseg-escape", _escape_undecodable)


def shown(name) -> str:
    """A path or name as readable text: each byte of a name that is not UTF-8 (x\\xff.tif on Linux) as the
    escape \\xNN. The one spelling of such names in every table and log line (a literal backslash is kept)."""
    return os.fsencode(str(name)).decode("utf-8", "backslashreplace")


def readable_output() -> None:
    """Make stdout and stderr print names that are not UTF-8 as shown() does (not as \\udcNN escapes)."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and str(getattr(stream, "encoding", "")).lower().replace("-", "") == "utf8":
            stream.reconfigure(errors="synseg-escape")


@contextlib.contextmanager
def _tifffile_notes():
    """Collect what tifffile logs while a file is read (a damaged file makes it log before it fails), so the
    caller can say it in its own one line instead of the library printing it around that line."""
    notes = []

    class Keep(logging.Filter):
        def filter(self, record):
            notes.append(record.getMessage().split("> ", 1)[-1])  # without the '<tifffile.TiffFile ...>' prefix
            return False

    logger, keep = logging.getLogger("tifffile"), Keep()
    logger.addFilter(keep)
    try:
        yield notes
    finally:
        logger.removeFilter(keep)


class WriteError(OSError):
    """A file could not be written; str() is one line naming the path and the reason (also its strerror)."""

    def __init__(self, path, reason: str):
        super().__init__(None, reason, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: cannot write ({self.strerror})"

    def __reduce__(self):  # from a worker process back to the parent
        return WriteError, (self.filename, self.strerror)


def write_reason(err: BaseException, folder=None) -> str:
    """Why a write failed, in words: read-only, disk full, name not encodable, ... (from errno or the message)."""
    import errno
    import re
    import shutil

    if isinstance(err, UnicodeError):
        return "the name or text cannot be encoded for this file system"
    code = getattr(err, "errno", None)
    words = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
             errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EISDIR: "is a folder",
             errno.ENOTDIR: "a part of the path is a file, not a folder", errno.ENAMETOOLONG: "name too long",
             errno.EILSEQ: "the name cannot be encoded for this file system", errno.EFBIG: "file too large"}
    if code in words:
        return words[code]
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    short = re.search(r"(\d+) requested and (\d+) written", text)  # numpy's tofile on a full disk
    full = False
    if folder is not None:
        try:
            full = shutil.disk_usage(folder).free < 2 ** 20
        except OSError:
            pass
    if full or short:
        return "disk full" + (f": {short.group(2)} of {short.group(1)} bytes written" if short else "")
    return getattr(err, "strerror", None) or text


def write_error_line(err: OSError) -> str:
    """One line for a failed write: a WriteError as it is, any other OSError as "PATH: cannot write (reason)"."""
    if isinstance(err, WriteError):
        return str(err)
    where = err.filename if getattr(err, "filename", None) else None
    return f"{where}: cannot write ({write_reason(err)})" if where else f"cannot write ({write_reason(err)})"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Any OSError (or a name or text that cannot be encoded) becomes one WriteError naming `path` and the reason;
    the temporary file is removed whatever happens, and an earlier file at `path` is kept until the rename.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.part{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except WriteError:
        raise
    except (OSError, UnicodeError) as err:
        raise WriteError(path, write_reason(err, path.parent)) from None
    finally:
        with contextlib.suppress(OSError, ValueError):
            tmp.unlink(missing_ok=True)


def remove_stale_parts(folder, recursive: bool = False) -> list[Path]:
    """Remove the temporary files (.NAME.partPID.EXT, .NAME.tmpPID) that killed processes left in `folder`.

    A file whose process still runs is kept: it may be writing it now. Returns the paths removed.
    """
    import re

    pattern = re.compile(r"^\..+\.(?:part|tmp)(\d+)(?:\.[^.]*)?$")
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in (folder.rglob(".*") if recursive else folder.glob(".*")):
        found = pattern.match(path.name)
        if not found or not path.is_file() or _process_alive(int(found.group(1))):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    """True if a process with this id runs (or may: one we cannot signal)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True
    return True


def check_writable(folder) -> None:
    """Raise WriteError naming `folder` and the reason unless a file can be created in it (a probe, removed again)."""
    probe = Path(folder) / f".synseg-probe{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise WriteError(folder, write_reason(err)) from None


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


def read_image(path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """Read a TIFF (or PNG/JPEG) and return (array, meta).

    meta: pixel_size_um (float or None), axes (str, e.g. "YX", "TYX", "ZCYX"), frame_interval_s (ImageJ
    'finterval' in seconds, or None), dtype, source, series (how many image series the file holds; only the
    first is read).
    Raises ValueError naming the file when it cannot be read as an image, or when the size its header declares
    is over `max_pixels` (checked before any pixel is read: a small compressed file can declare terabytes).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unsupported extension {suffix or '(none)'}; use one of {' '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if suffix in TIFF_SUFFIXES:
        try:
            with _tifffile_notes() as notes, tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                check_size(path, series.shape, series.dtype, max_pixels)
                data = series.asarray()
                axes = series.axes
                n_series = len(tif.series)
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
                declared = int(ij["images"]) if str(ij.get("images", "")).isdigit() else 0
                planes = data.size // max(math.prod(tif.pages[0].shape), 1)
                if notes and declared > planes:  # tifffile falls back to the pages it can read: say so, stop
                    raise ValueError(f"its ImageJ header declares {declared} images, only {planes} can be read "
                                     "(a cut file?)")
        except SizeError:
            raise
        except READ_ERRORS as err:
            raise ValueError(f"{path}: not a readable TIFF ({type(err).__name__}: {err})") from None
        if notes:  # read, but tifffile found something odd: one line naming the file, not the library's lines
            print(f"{shown(path)}: warning: {'; '.join(dict.fromkeys(notes))}", file=sys.stderr)
    else:
        import cv2  # PNG/JPEG only; heavy import kept out of the TIFF path

        declared = declared_image(path)
        if declared:
            check_size(path, declared["shape"], declared["dtype"], max_pixels)
        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if data is None:
            raise ValueError(f"{path}: not a readable image")
        if data.ndim == 3:
            data = data[..., ::-1].copy() if data.shape[-1] in (3, 4) else data  # BGR -> RGB
        axes, pixel, interval, n_series = ("YXS" if data.ndim == 3 else "YX"), None, None, 1
    if data.size == 0:
        raise ValueError(f"{path}: image is empty (shape {data.shape})")
    axes = str(axes).replace("Q", "Z") if len(axes) == data.ndim else _guess_axes(data)
    return data, {"pixel_size_um": pixel, "axes": axes, "frame_interval_s": interval, "dtype": str(data.dtype),
                  "source": str(path), "series": n_series}


class SizeError(ValueError):
    """An image declares more pixels than the limit; raised before its pixels are read."""


def check_size(path, shape, dtype, max_pixels: int = MAX_PIXELS) -> None:
    """SizeError naming the file, its declared size and the limit if the shape holds more than max_pixels."""
    pixels = math.prod(int(v) for v in shape)
    if max_pixels and pixels > max_pixels:
        nbytes = pixels * np.dtype(dtype).itemsize
        raise SizeError(f"{path}: declares {'x'.join(map(str, shape))} {np.dtype(dtype)} ({pixels / 1e9:.3g} Gpx, "
                        f"{nbytes / 1e9:.3g} GB to read), over the limit of {max_pixels / 1e9:.3g} Gpx; "
                        f"--max-pixels {pixels} raises it if this machine has the memory")


def declared_image(path) -> dict | None:
    """{shape, dtype, series} from a TIFF's or PNG's header alone (no pixel read), or None when unknown."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            with _tifffile_notes(), tifffile.TiffFile(path) as tif:  # reading the file says what is wrong
                series = tif.series[0]
                return {"shape": tuple(series.shape), "dtype": np.dtype(series.dtype), "series": len(tif.series)}
        if suffix == ".png":
            with open(path, "rb") as fh:
                head = fh.read(26)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
                channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(head[25], 1)
                return {"shape": (height, width, channels) if channels > 1 else (height, width),
                        "dtype": np.dtype(np.uint16 if head[24] == 16 else np.uint8), "series": 1}
    except (*READ_ERRORS, TypeError):
        return None
    return None


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
    # a file name that is not UTF-8 (x\xff.tif on Linux) is written as shown() spells it, so the table stays UTF-8
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="synseg-escape") as fh:
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
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
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
