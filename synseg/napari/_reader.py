"""Open earlier batch results in napari: objects.csv as Points, tracks.csv as Tracks (drag the file in).

objects.csv (SynSeg_Vesicle.py --object-csv) gives one Points layer per segmented file, at the sub-pixel
centres (y, x; the plane index first for a stack), with every column as a feature; tracks.csv (--track)
one Tracks layer per file. Coordinates are in the image's pixels, so the layers sit on the image when it is
opened at its pixel grid (scale 1); a CSV of other columns is left to other readers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

OBJECT_COLUMNS = ("file", "plane", "label", "y", "x")
TRACK_COLUMNS = ("file", "track_id", "frame", "y", "x")


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return f.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        return []


def get_reader(path):
    """npe2 reader hook: a function for a SynSeg objects.csv / tracks.csv, else None."""
    if isinstance(path, list):
        return None if len(path) != 1 else get_reader(path[0])
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return None
    header = _header(path)
    if all(c in header for c in TRACK_COLUMNS):
        return read_tracks
    if all(c in header for c in OBJECT_COLUMNS):
        return read_objects
    return None


def _by_file(path) -> dict[str, list[dict]]:
    from synseg import tiffio

    path = Path(path[0] if isinstance(path, list) else path)
    groups: dict[str, list[dict]] = {}
    for row in tiffio.read_csv(path):
        groups.setdefault(row.get("file", ""), []).append(row)
    return groups


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def read_objects(path) -> list[tuple]:
    """Points layers (one per segmented file) from an objects.csv."""
    import pandas as pd

    layers = []
    for name, rows in _by_file(path).items():
        stack = any(int(_number(r["plane"]) or 0) > 0 for r in rows)
        coords = np.array([([_number(r["plane"])] if stack else []) + [_number(r["y"]), _number(r["x"])]
                           for r in rows], np.float64).reshape(len(rows), 3 if stack else 2)
        features = pd.DataFrame({c: [r.get(c, "") for r in rows] for c in rows[0] if c != "file"})
        for c in features.columns:
            converted = pd.to_numeric(features[c], errors="coerce")
            if converted.notna().sum() == features[c].astype(bool).sum():  # every filled cell is a number
                features[c] = converted
        layers.append((coords, {"name": f"{Path(name).stem or 'objects'} spots", "features": features,
                                "face_color": "transparent", "border_color": "yellow", "size": 6}, "points"))
    return layers


def read_tracks(path) -> list[tuple]:
    """Tracks layers (one per file) from a tracks.csv."""
    layers = []
    for name, rows in _by_file(path).items():
        data = np.array([[_number(r["track_id"]), _number(r["frame"]), _number(r["y"]), _number(r["x"])]
                         for r in rows], np.float64).reshape(-1, 4)
        layers.append((data, {"name": f"{Path(name).stem or 'objects'} tracks"}, "tracks"))
    return layers
