"""Batches: the command line of both segmentation scripts, the plan of inputs and outputs, the tables, the loop.

    python SynSeg_Vesicle.py -i images/ -o masks/ --save-prob --overlay --object-csv

SynSeg_Vesicle.py and SynSeg_Cytoskeleton.py are `run(args, TASK)`; the task's record (tasks.py) sets the
defaults and which flags exist, and predict.Segmenter does each file.

A batch is safe to interrupt (Ctrl-C, kill -9, a crash) and to run again: outputs, tables already in the
output folder and its writability are checked before any work; each file's table rows are recorded
(OUT/.synseg-rows/) before its mask is written, and the mask, written last, marks the file done; the
tables are rebuilt from the earlier tables and the records at the end (class Tables), so a rerun of the
same command skips the finished files and leaves summary.csv and objects.csv as an uninterrupted run
would. Every file is written under a temporary name and renamed, never half-written.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from synseg import cli
from synseg.segment import chunked
from synseg.segment import distributed
from synseg.segment.inputs import RECORDS, broken_link, file_key, name_clashes, plan, shown
from synseg.segment import postprocess
from synseg.segment import predict
from synseg import tasks
from synseg import tiffio
from synseg.segment.predict import log

ROOT = Path(__file__).resolve().parent
OVERLAY_WORDS = {"outline": "outlined", "fill": "tinted"}  # for the --overlay help


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Tracking:
    """--track settings: how far and how long a track may jump (tracking.link)."""

    search_range: float | None = None  # px; None: tracking.default_search_range
    memory: int = 1  # frames in a row an object may go undetected and keep its track
    frame_interval: float | None = None  # s, overriding the file's tags


@dataclass(frozen=True)
class Config:
    """One batch: inputs, outputs, model and device, the tables asked for, and the per-file Options."""

    input: Path
    output: Path
    model: Path
    options: predict.Options = field(default_factory=predict.Options)
    pattern: str = "*.tif*"
    recursive: bool = False
    overwrite: bool = False
    dry_run: bool = False
    any_task: bool = False
    device: str = "auto"
    threads: int | None = None
    object_csv: bool = False
    tracking: Tracking | None = None  # None: no tracking
    cluster: str | None = None  # --cluster: every file a task on a Dask cluster (distributed.py); None: this process
    chunk_size: int = 0  # --chunk-size: every input segmented chunk by chunk (chunked.py); 0: zarr inputs only

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        """The batch from the parsed command line of get_args_parser (checked by check_args)."""
        tracking = Tracking(args.search_range, args.track_memory, args.frame_interval) if args.track else None
        return cls(input=args.input, output=args.output, model=args.model, options=predict.Options.from_args(args),
                   pattern=args.pattern, recursive=args.recursive, overwrite=args.overwrite, dry_run=args.dry_run,
                   any_task=args.any_task, device=args.device, threads=args.threads, object_csv=args.object_csv,
                   tracking=tracking, cluster=getattr(args, "cluster", None),
                   chunk_size=getattr(args, "chunk_size", 0))


# --------------------------------------------------------------------------- files (finding inputs: inputs.py)

LONG_RUN_PIXELS = 2 ** 27  # a batch declaring more pixels than this (about 11600^2) states its predicted time


def check_sizes(pairs: list[tuple[Path, Path]], max_pixels: int) -> tuple[list[tuple[Path, str]], list[str], int]:
    """From the headers alone: ([(input, why)] over max_pixels, notes (only the first of several series is
    segmented), total pixels declared by the rest)."""
    refused, notes, total = [], [], 0
    for src, _ in pairs:
        declared = tiffio.declared_image(src)
        if declared is None:  # unreadable or JPEG: reading says why (OpenCV refuses over 2^30 px itself)
            continue
        try:
            tiffio.check_size(src, declared["shape"], declared["dtype"], max_pixels)
        except tiffio.SizeError as err:
            refused.append((src, str(err)))
            continue
        total += math.prod(declared["shape"])
        if declared["series"] > 1:
            notes.append(f"{src}: holds {declared['series']} image series; only the first "
                         f"({'x'.join(map(str, declared['shape']))}) is segmented - export the others as their "
                         "own files to segment them")
    return refused, notes, total


def predicted_time(seg, pixels: int) -> tuple[float, float]:
    """(predicted seconds for `pixels` input pixels at the input scale, seconds of the one tile timed)."""
    side = max(seg.tile_size, 2 * seg.overlap + 16)
    plane = np.random.default_rng(0).random((side, side)).astype(np.float32)
    t0 = time.perf_counter()
    seg.probability(plane, 1.0, progress=False)
    took = time.perf_counter() - t0
    step = max(side - seg.overlap, 1)  # tiles overlap: each pixel costs (side / step)^2 network pixels
    return pixels * took / step ** 2, took


def _duration(seconds: float) -> str:
    return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200
            else f"{seconds / 3600:.1f} h")


def output_problem(cfg: Config, pairs: list[tuple[Path, Path]]) -> str | None:
    """Why the outputs cannot be written (an existing file where a folder goes, a folder that cannot be
    created or written), or None. Creates the output folder; checked before any image is read."""
    one_file = len(pairs) == 1 and pairs[0][1] == cfg.output  # -o names the mask of the one input
    if cfg.output.is_dir() and one_file:
        return f"-o {cfg.output}: is a folder, not a mask file; give the folder without the .tif name"
    folder = cfg.output.parent if one_file else cfg.output
    if cfg.output.exists() and not one_file and not cfg.output.is_dir():
        return (f"-o {cfg.output}: is a file; give a folder for the masks and summary.csv"
                + (" (or, for one input file, a NAME.tif mask path)" if len(pairs) == 1 else ""))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tiffio.check_writable(folder)
    except OSError as err:
        return f"-o {cfg.output}: cannot write there ({err.strerror or type(err).__name__})"
    return None


# --------------------------------------------------------------------------- tracks

TRACK_FIELDS = ("file", "track_id", "frame", "y", "x", "area", "intensity")


def track_objects(row: dict, objects: list[dict], settings: Tracking) -> tuple[list[dict], list[dict]]:
    """(tracks.csv rows, track_summary.csv rows) of one segmented file: its objects linked frame to frame.

    A detection is an object's sub-pixel centre (spots.measure_spots; the plain centroid where that is
    missing), area (px) and background-subtracted integrated intensity. Only a time-lapse (axes T, Y, X)
    is linked; anything else is logged and gives no tracks.
    """
    from synseg.segment import tracking

    if row["axes"] != "TYX":
        log(f"{row['file']}: --track needs a TYX time-lapse, this is {row['axes']}; no tracks")
        return [], []
    px = float(row["pixel_size_um"]) if row["pixel_size_um"] else None
    interval = settings.frame_interval or row.get("frame_interval_s")
    search = settings.search_range or tracking.default_search_range(px, interval)
    detections = [{"frame": o["plane"], "y": o["y"] if o.get("y") != "" else o["centroid_y"],
                   "x": o["x"] if o.get("x") != "" else o["centroid_x"], "area": o["area_px"],
                   "intensity": o.get("integrated_intensity", "")} for o in objects]
    linked = tracking.link(detections, search, memory=settings.memory)
    table = tracking.track_summary(linked, px, interval)
    for r in linked + table:
        r["file"] = row["file"]
    log(f"{row['file']}: {len(table)} track(s) from {len(linked)} detection(s), search range {search:.3g} px"
        f"{'' if interval else ' (frame interval unknown: speeds in px/frame only)'}")
    return linked, table


# --------------------------------------------------------------------------- batch tables

RECORD_FORMAT = "synseg-rows/1"


def _json_value(value):
    """json.dumps fallback for numpy scalars in table rows."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a table value")


# every other table column is a number
TEXT_COLUMNS = {"file", "mask", "shape", "axes", "area_unit", "length_unit", "qc"}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cell(value, fmt: str | None) -> str:
    """A value as tiffio.write_csv writes it."""
    if value is None:
        return ""
    if fmt and isinstance(value, float):
        return fmt.format(value)
    return str(value)


class Tables:
    """The CSV tables of a batch (summary.csv; objects.csv, tracks.csv, track_summary.csv when asked for), exact
    whatever interrupts the run.

    Every file's rows go to a record of their own, RECORDS/<mask path>.json, written atomically just before its
    mask: a mask that exists has its rows recorded. `finish` rebuilds each table from the earlier table and the
    records (files outside this batch first, in their earlier order, then the batch in input order), writes the
    tables atomically and only then removes the records. So a batch killed at any moment and run again leaves
    the same tables as one that was never interrupted, and no table or mask is ever half-written.
    """

    def __init__(self, folder: Path, columns: dict[str, tuple], formats: dict[str, str | None], task):
        """task: the tasks.Task whose results these tables hold."""
        self.folder, self.columns, self.formats, self.task = Path(folder), columns, formats, task
        self.redo: set[str] = set()  # files of this batch whose earlier rows are damaged: segmented again
        self.bad_rows: set[tuple[str, int]] = set()  # (table, row index) of damaged rows left out when rebuilding

    def record_path(self, mask: Path) -> Path:
        """Where the rows of the file whose mask is `mask` are recorded."""
        try:
            rel = Path(mask).resolve().relative_to(self.folder.resolve())
        except ValueError:
            rel = Path(Path(mask).name)
        return self.folder / RECORDS / rel.with_name(rel.name + ".json")

    def write_record(self, src: Path, mask: Path, rows: dict[str, list[dict]]) -> None:
        """Record one file's rows of every table (only the table's columns are kept). The tables name the file
        and its mask by absolute path: the same whatever folder a later run starts from (file_key)."""
        names = {"file": os.path.abspath(src), "mask": os.path.abspath(mask)}
        record = {"format": RECORD_FORMAT, "task": self.task.name, **names,
                  "tables": {name: [{c: names[c] if c in names and c in r else r.get(c) for c in self.columns[name]}
                                    for r in table] for name, table in rows.items() if name in self.columns}}
        path = self.record_path(mask)
        with tiffio.atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, default=_json_value))

    def records(self) -> dict[Path, dict]:
        """{record path: record} of every readable record whose mask still exists."""
        root = self.folder / RECORDS
        found = {}
        for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
            if path.name.startswith("."):  # a partial write
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("format") == RECORD_FORMAT and Path(record["mask"]).exists():
                found[path] = record
        return found

    def problems(self) -> list[str]:
        """What in the output folder this run must not touch: tables of another shape or task, records of another
        task. Checked before any work."""
        others = {t: p for t, p in tasks.TASKS.items() if t != self.task.name}
        out = []
        for name, columns in self.columns.items():
            path = self.folder / name
            if path.is_dir():
                out.append(f"{path}: is a folder, where this script writes a table; choose another -o")
            if not path.is_file():
                continue
            try:
                with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
                    header = next(csv.reader(fh), None)
            except (OSError, UnicodeDecodeError, csv.Error) as err:
                out.append(f"{path}: not a readable CSV table ({type(err).__name__}); move it away or choose "
                           "another -o")
                continue
            if header is None:  # an empty file holds nothing to keep
                continue
            extra = [c for c in header if c not in columns]
            if "file" not in header or extra:
                task = next((t for t, o in others.items() if set(o.measure.columns) <= set(header)), None)
                what = (f"holds {task} results ({others[task].script})" if task else
                        f"has columns this script does not write ({', '.join((extra or header)[:5])})")
                out.append(f"{path}: {what}; {self.task.script} will not mix its rows in - choose another -o, "
                           "or move the file away")
        for record in self.records().values():
            if record.get("task") != self.task.name:
                out.append(f"{record['mask']}: holds {record.get('task')} results; {self.task.script} will not "
                           "mix its rows in - choose another -o")
                break
        return out

    def check_rows(self, pairs: list[tuple[Path, Path]]) -> tuple[list[str], list[str]]:
        """Validate the earlier tables row by row (cell count, numbers, one summary row per file, as many object
        rows as its count, a last line that ends); returns (notes, problems).

        A damaged row of a file in this batch makes that file one to segment again (`redo`); a cut last row is
        left out; a damaged row of a file outside the batch is a problem: this run cannot rebuild it.
        Call after `problems` (which checks the headers).
        """
        batch = {file_key(str(src)): dst for src, dst in pairs}
        notes, problems, counts, objects = [], [], {}, {}

        def damaged(path, n, f, why, last):
            where = f"row {n + 1} " if n >= 0 else ""
            if file_key(f) in batch:
                if file_key(f) not in self.redo:
                    notes.append(f"{path}: {where}({f}) is damaged ({why}); segmenting {Path(f).name} again")
                self.redo.add(file_key(f))
            elif last:
                notes.append(f"{path}: the last row is cut ({why}); left out")
            else:
                problems.append(f"{path}: {where}({f or 'no file name'}) is damaged ({why}) and is not an "
                                "input of this run; run again with that file among the inputs, or move the table away")
            self.bad_rows.add((path.name, n))

        for name, columns in self.columns.items():
            path = self.folder / name
            if not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8", errors="surrogateescape")
            except OSError as err:
                problems.append(f"{path}: cannot be read ({err.strerror or err})")
                continue
            reader = csv.DictReader(io.StringIO(text, newline=""))
            rows = list(reader)
            header = reader.fieldnames or []
            for n, row in enumerate(rows):
                f, last = row.get("file") or "", n == len(rows) - 1
                cells = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
                if cells != len(header):
                    why = f"{cells} of {len(header)} cells"
                else:
                    bad = next((c for c in header if c not in TEXT_COLUMNS and row[c] and not _is_number(row[c])), None)
                    why = (f"{bad} {row[bad]!r} is not a number" if bad else
                           "the line is cut (no line end)" if last and not text.endswith("\n") else
                           "a second row for this file" if name == "summary.csv" and f in counts else
                           "no file name" if not f else None)
                if why:
                    damaged(path, n, f, why, last)
                elif name == "summary.csv":
                    counts[file_key(f)] = (f, row.get("count"))
                elif name == "objects.csv":
                    objects[file_key(f)] = objects.get(file_key(f), 0) + 1
        if "objects.csv" in self.columns:
            path = self.folder / "objects.csv"
            for k, (f, count) in counts.items():  # a file's object rows: all of its count
                found = objects.get(k, 0)
                if found and count not in (None, "") and str(found) != count:
                    damaged(path, -1, f, f"{found} object rows, its count is {count}", False)
                elif not found and count not in (None, "", "0") and k in batch and batch[k].exists() \
                        and not self.record_path(batch[k]).is_file():  # all lost (or segmented without them)
                    damaged(path, -1, f, f"no object rows{'' if path.is_file() else ' (no table)'}, its count is "
                            f"{count}", False)
        if self.redo or self.bad_rows:  # rows were lost: a batch file with a mask but no summary row is redone too
            for k in sorted(set(batch) - set(counts) - self.redo):
                dst = batch[k]
                if dst.exists() and not self.record_path(dst).is_file():
                    notes.append(f"{self.folder / 'summary.csv'}: no row for {k}; segmenting {Path(k).name} again")
                    self.redo.add(k)
        return notes, problems

    def finish(self, pairs: list[tuple[Path, Path]]) -> tuple[list[Path], list[tuple[Path, str]]]:
        """Rebuild the tables from the earlier tables and the records; write those that change.

        Returns (tables written, [(input, problem)] for masks that exist but whose rows are recorded nowhere).
        """
        records = self.records()
        old = {name: tiffio.read_csv(self.folder / name) for name in self.columns}
        old_rows = {name: {} for name in self.columns}  # table -> file -> its earlier rows (damaged ones left out)
        for name, rows in old.items():  # keyed by file_key: a row matches its file however either is spelled
            for n, r in enumerate(rows):
                if (name, n) not in self.bad_rows and file_key(r.get("file") or "") not in self.redo:
                    old_rows[name].setdefault(file_key(r.get("file") or ""), []).append(r)
        batch = {file_key(str(src)): dst for src, dst in pairs}
        mine = {file_key(str(src)): records.pop(self.record_path(dst), None) for src, dst in pairs}
        others = {file_key(r["file"]): r for r in records.values()}  # records of an earlier, interrupted batch
        earlier = [file_key(r.get("file") or "") for n, r in enumerate(old["summary.csv"])
                   if ("summary.csv", n) not in self.bad_rows] + list(others)
        order = list(dict.fromkeys(f for f in earlier if f not in batch)) + list(batch)
        new = {name: [] for name in self.columns}
        missing = []
        for f in order:
            record = mine[f] if f in batch else others.get(f)
            mask = batch.get(f, f)
            if record is not None:
                tables = record["tables"]
            elif f in old_rows["summary.csv"] and f not in self.redo:
                tables = {name: old_rows[name].get(f, []) for name in self.columns}
            else:
                if f in batch and batch[f].exists():
                    missing.append((Path(f), f"{mask}: exists, but its measurements are in no summary.csv "
                                             "(written by an older version or another tool?); --overwrite redoes it"))
                continue
            for name in self.columns:
                new[name] += tables.get(name, [])
            count = (tables.get("summary.csv") or [{}])[0].get("count")
            if ("objects.csv" in self.columns and f in batch and not tables.get("objects.csv")
                    and str(count or 0) != "0"):
                missing.append((Path(f), f"{mask}: exists, but its objects are not in objects.csv (segmented "
                                         "without --object-csv?); --overwrite redoes it"))
        written = []
        for name, columns in self.columns.items():
            fmt = self.formats.get(name)
            cells = [[_cell(r.get(c), fmt) for c in columns] for r in new[name]]
            before = [[r.get(c) or "" for c in columns] for r in old[name]]
            path = self.folder / name
            damaged = any(t == name for t, _ in self.bad_rows)
            if cells != before or damaged or (not path.is_file() and new["summary.csv"]):
                tiffio.write_csv(path, new[name], columns, float_format=fmt)
                written.append(path)
        for src, dst in pairs:  # the tables hold these rows now
            if mine[file_key(str(src))] is not None:
                self.record_path(dst).unlink(missing_ok=True)
        for path in records:
            path.unlink(missing_ok=True)
        self._prune()
        return written, missing

    def _prune(self) -> None:
        """Remove the emptied record folders."""
        root = self.folder / RECORDS
        if not root.is_dir():
            return
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        if not any(root.iterdir()):
            root.rmdir()


# --------------------------------------------------------------------------- command line and the loop

def get_args_parser(task: str, description: str | None = None) -> argparse.ArgumentParser:
    """Arguments shared by both segmentation scripts; the record of `task` (tasks.py) sets the defaults and
    task flags."""
    record = tasks.TASKS[task]
    p = argparse.ArgumentParser(description=description, formatter_class=cli.QuietHelpFormatter)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("-i", "--input", "--input_path", dest="input", type=Path, required=True,
                    help="a TIFF file, a folder of TIFFs or a quoted glob such as 'data/*/cell*.tif'")
    io.add_argument("-o", "--output-dir", "--output_path", dest="output", type=Path, required=True,
                    help="output folder (NAME_mask.tif per input, summary.csv); a .tif file path when -i is one file")
    io.add_argument("--pattern", default="*.tif*", help="file pattern when -i is a folder")
    io.add_argument("--recursive", action="store_true", help="also search the subfolders of a folder input")
    io.add_argument("--channel", type=cli.finite_int(low=0), default=None,
                    help="channel to segment in multi-channel images (0-based)")
    io.add_argument("--pixel-size", type=cli.finite_float(above=0.0), default=None,
                    help="input pixel size in um, overriding the file's tags")
    io.add_argument("--save-prob", action="store_true", help="also write NAME_prob.tif (float32 probability, 0..1)")
    io.add_argument("--overlay", action="store_true",
                    help="also write NAME_overlay.png: the contrast-stretched image beside the same with the mask "
                         + OVERLAY_WORDS[record.overlay_style] + " (middle plane of a stack)")
    if record.object_table:
        io.add_argument("--object-csv", action="store_true",
                        help="also write objects.csv: one row per vesicle (centroid, sub-pixel y, x, area, mean and "
                             "background-subtracted integrated intensity, local background, contrast, SNR, "
                             "peak probability)")
    io.add_argument("--overwrite", action="store_true", help="redo inputs whose mask already exists")
    io.add_argument("--dry-run", action="store_true", help="list input -> output and stop")
    io.add_argument("--max-pixels", type=cli.finite_int(low=1), default=tiffio.MAX_PIXELS,
                    help="refuse an input whose header declares more pixels (all planes together) than this, "
                         "before reading it: a small compressed file can declare terabytes")

    m = p.add_argument_group("model and device")
    m.add_argument("-m", "--model", "--model_path", dest="model", type=Path, default=record.model_path,
                   help="checkpoint (.pth); bare original SynSeg weights load too")
    m.add_argument("--any-task", action="store_true",
                   help=f"run a checkpoint that records another task than {record.name} (refused otherwise)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    m.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast dtype; auto: bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32")
    m.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="fp32 on the CPU: auto runs ONNX Runtime when installed (requirements-export.txt; ~2x "
                        "PyTorch on AVX2 CPUs), else PyTorch channels_last; CPU bf16 and GPUs always use PyTorch")
    m.add_argument("--qc-calibration", type=Path, default=None, metavar="JSON",
                   help="expected-score calibration of the quality check (bench/qc_calibrate.py); default: "
                        "qc_TASK.json beside the shipped model, used only when made for these very weights")
    m.add_argument("--threads", type=cli.finite_int(low=1), default=None,
                   help="CPU threads for torch (default: torch's choice; a --cluster worker: its share of the cores)")
    m.add_argument("--cluster", type=distributed.parse_cluster, default=None, metavar="local:N|tcp://HOST:PORT",
                   help="each file a task on a Dask cluster, the model loaded once per worker: local:N worker "
                        "processes here, or a running scheduler's address or scheduler file (dask-jobqueue on SLURM: "
                        "README); the same masks and tables as without it")
    m.add_argument("--chunk-size", type=cli.finite_int(low=0), default=0, metavar="PX",
                   help="segment every input chunk by chunk (images larger than memory; a TIFF read as zarr), the "
                        "mask written as NAME_mask.zarr (OME-Zarr); zarr inputs always are (default chunk "
                        f"{chunked.DEFAULT_CHUNK} px)")

    t = p.add_argument_group("tiling and scale")
    t.add_argument("--tile-size", "--tile_size", dest="tile_size", type=cli.finite_int(low=0), default=0,
                   help="largest tile edge in px; tiles are shrunk to cover the image evenly. default 0: on the "
                        "CPU the largest tile whose network memory stays near 1.6 GB, at most 2560 px (fp32: 1248 "
                        "px for the base-32 vesicle model, 2032 px for the base-12 filament model), 1024 px on a GPU")
    t.add_argument("--overlap", type=cli.finite_int(low=0), default=None,
                   help="least overlap between tiles in px (default: twice the network's receptive radius "
                        "plus 16, which makes tiled and whole-image predictions identical)")
    t.add_argument("--batch-size", type=cli.finite_int(low=0), default=0,
                   help="tiles per forward pass; 0: 4 on a GPU; on the CPU as many small tiles as fit the "
                        "tile memory (at most 4), one full-size tile")
    t.add_argument("--tta", action="store_true", help="average the predictions of the four flips (4x slower)")
    t.add_argument("--no-rescale", action="store_true",
                   help="predict at the input's own pixel size even if it differs from the model's")
    t.add_argument("--use_tiling", action="store_true",
                   help="accepted for old commands; tiling is always on (small images are one tile)")
    t.add_argument("--resize_size", type=cli.finite_int(low=16), default=None,
                   help="old option, still honoured: resize each plane so its longer side is N px for "
                        "prediction (aspect ratio kept, mask back on the input grid); overrides the physical rescale")

    post = p.add_argument_group("mask")
    post.add_argument("--threshold", type=postprocess.parse_threshold, default=record.threshold,
                      help="probability threshold (0..1) or 'otsu'")
    if record.split:
        post.add_argument("--no-split", action="store_true",
                          help="do not split touching vesicles with the seeded watershed")
        post.add_argument("--min-distance", type=cli.finite_float(above=0.0), default=None,
                          help="least distance in px between two vesicle centres for the split "
                               "(default: median vesicle radius in the image)")
    if record.contrast_cut:
        post.add_argument("--no-contrast-cut", action="store_true",
                          help="keep every object; by default, when an image's spot contrasts (peak minus the "
                               "local background) form two clearly separated groups, the dim group is dropped "
                               "(spots.py; the decision is logged per image)")
        post.add_argument("--min-snr", type=cli.finite_float(low=0.0), default=0.0, metavar="SNR",
                          help="also drop spots whose local SNR (the snr column of objects.csv: peak minus the "
                               "local background over the local noise) is below SNR, for counting only bright "
                               "spots; 0 keeps every spot the network and the contrast cut report")
    if record.spot_core:
        post.add_argument("--spot-core", type=cli.finite_float(low=0.0, high=0.95), default=record.spot_core,
                          metavar="FRACTION",
                          help="trim each spot's mask to the pixels at least its local background + FRACTION x "
                               "its contrast, connected to its peak (0.5: the half-maximum area), so a bright "
                               "spot's mask and centre follow its signal, not its blur; 0 keeps the network's "
                               "mask")
    if record.track:
        tr = p.add_argument_group("time-lapse tracking")
        tr.add_argument("--track", action="store_true",
                        help="link the vesicles of consecutive frames of a TYX stack into tracks (laptrack's linking): "
                             "tracks.csv (file, track_id, frame, y, x, area, intensity) and track_summary.csv "
                             "(duration, mean speed; in s and um/s when pixel size and frame interval are known)")
        tr.add_argument("--search-range", type=cli.finite_float(above=0.0), default=None,
                        help="largest step in px between frames; default: 2 um/s times the frame interval, "
                             "or 5 px when pixel size or frame interval is unknown")
        tr.add_argument("--track-memory", type=cli.finite_int(low=0), default=1,
                        help="frames in a row a vesicle may go undetected and keep its track")
        tr.add_argument("--frame-interval", type=cli.finite_float(above=0.0), default=None,
                        help="seconds between frames, overriding the file's ImageJ tags")
    p.set_defaults(task=record.name, object_csv=False, no_split=not record.split, min_distance=None,
                   no_contrast_cut=not record.contrast_cut, min_snr=0.0, spot_core=record.spot_core, track=False,
                   search_range=None, track_memory=1, frame_interval=None)
    return p


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, or None."""
    if args.tile_size and args.tile_size < 16:
        return f"--tile-size {args.tile_size} is too small; use 0 (auto) or 16 or more"
    if args.overlap is not None and args.overlap < 0:
        return f"--overlap {args.overlap} must be 0 or more"
    if args.batch_size < 0:
        return f"--batch-size {args.batch_size} must be 0 (auto) or more"
    if args.pixel_size is not None and args.pixel_size <= 0:
        return f"--pixel-size {args.pixel_size} must be positive (um per pixel)"
    if args.resize_size is not None and args.resize_size < 16:
        return f"--resize_size {args.resize_size} must be at least 16"
    if args.channel is not None and args.channel < 0:
        return f"--channel {args.channel} must be 0 or more"
    if args.search_range is not None and not args.search_range > 0:
        return f"--search-range {args.search_range} must be positive (px)"
    if args.track_memory < 0:
        return f"--track-memory {args.track_memory} must be 0 or more"
    if args.frame_interval is not None and not args.frame_interval > 0:
        return f"--frame-interval {args.frame_interval} must be positive (s)"
    return None


def batch_tables(cfg: Config, task, folder: Path) -> Tables:
    """The tables this run keeps in `folder`, with their columns and float formats."""
    columns, formats = {"summary.csv": task.summary_fields}, {}
    if cfg.object_csv:
        columns["objects.csv"] = tuple(postprocess.OBJECT_FIELDS)
    if cfg.tracking is not None:
        from synseg.segment import tracking

        columns["tracks.csv"] = TRACK_FIELDS
        columns["track_summary.csv"] = ("file", *tracking.SUMMARY_COLUMNS)
        formats = {"tracks.csv": "{:.4f}", "track_summary.csv": "{:.4f}"}
    return Tables(folder, columns, formats, task)


def segment_one(seg, cfg: Config, tables: Tables, src: Path, dst: Path) -> tuple[dict | None, str | None]:
    """One file of the batch: its table rows recorded (Tables.write_record), then its mask written; returns
    (summary row, None), or (None, the one line saying why it failed). Workers of a --cluster run it too."""

    def record_rows(row, objs):
        """The file's rows of every table, recorded before its mask is written."""
        rows = {"summary.csv": [row], "objects.csv": objs}
        if cfg.tracking is not None:
            rows["tracks.csv"], rows["track_summary.csv"] = track_objects(row, objs, cfg.tracking)
        tables.write_record(src, dst, rows)

    try:
        segment = partial(chunked.segment, seg, cfg) if chunked.wanted(src, cfg.chunk_size) else seg.segment
        row, _ = segment(src, dst, before_mask=record_rows)
    except (ValueError, OSError, MemoryError, RuntimeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, msg if str(src) in msg else f"{src}: {msg}"
    return row, None


def run(args: argparse.Namespace, task: str) -> int:
    """Segment every input; one line per failed file; exit code 1 if any failed, 2 on bad usage."""
    record = tasks.TASKS[task]
    name = record.script
    tiffio.readable_output()  # a name that is not UTF-8 is spelled one way, tiffio.shown's, in every line
    file_key.cache_clear()  # relative names resolve against this run's folder
    problem = check_args(args)
    if problem:
        log(f"{name}: {problem}")
        return 2
    cfg = Config.from_args(args)
    opts = cfg.options
    pairs, notes = plan(cfg)
    for n in notes:
        log(n)
    if not pairs:
        where = f" with pattern {cfg.pattern!r}" if cfg.input.is_dir() else ""
        log(f"{name}: no input matches {cfg.input}{where}")
        return 2
    clashes = name_clashes(pairs)
    if clashes:
        for line in clashes:
            log(f"{name}: {line}")
        return 2
    if cfg.dry_run:
        for src, dst in pairs:
            state = "exists, skip" if dst.exists() and not cfg.overwrite else "new"
            print(f"{shown(src)} -> {shown(dst)} ({state})")
        return 0
    if not cfg.model.is_file():
        shipped = cfg.model.resolve() == record.model_path.resolve()
        log(f"{name}: model {cfg.model} not found; " + (
            f"the shipped {task} model is missing from this checkout - pass a checkpoint with -m PATH (e.g. one "
            f"written by {record.train_script})" if shipped else "check the path given with -m PATH"))
        return 2

    import torch
    from tqdm import tqdm

    import unet

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        device = unet.get_device(cfg.device)
        model, info = unet.load_model(cfg.model, device)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        log(f"{name}: {err}")
        return 2
    broken = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        log(f"{name}: {cfg.model}: {len(broken)} weight tensor(s) hold NaN or inf (first: {broken[0]}); the "
            "checkpoint is damaged - use another one, e.g. the best_*.pth of the training run")
        return 2
    if info.get("task") != record.name:
        recorded = info.get("format") == unet.CHECKPOINT_FORMAT
        if recorded and not cfg.any_task:
            other = tasks.TASKS.get(info.get("task"))
            log(f"{name}: {cfg.model} is a {info.get('task')} model (its checkpoint records task "
                f"{info.get('task')!r}), not a {record.name} model; use "
                f"{other.script if other else 'the matching script'} or a {record.name} checkpoint "
                f"(--any-task runs it anyway)")
            return 2
        log(f"{name}: warning: {cfg.model} was {'trained' if recorded else 'guessed to be'} for "
            f"{info.get('task')!r}, not {record.name!r}")
    try:
        seg = predict.Segmenter(model, info, record, opts, device)
    except ValueError as err:  # e.g. --backend onnx on a GPU
        log(f"{name}: {err}")
        return 2
    if seg.tile_size <= seg.overlap:
        log(f"{name}: --tile-size {seg.tile_size} must be larger than the overlap ({seg.overlap} px for this "
            f"model); use --tile-size {4 * seg.overlap} or more, or a smaller --overlap (then tiling is approximate)")
        return 2
    if opts.pixel_size and seg.model_px and opts.rescale and not opts.resize_size:
        f = predict.rescale_factor(opts.pixel_size, seg.model_px)
        if not 1.0 / predict.MAX_SCALE <= f <= predict.MAX_SCALE:
            top = predict.MAX_SCALE
            log(f"{name}: --pixel-size {opts.pixel_size:g} um/px is {f:.3g}x the model's {seg.model_px:.4g} um/px, "
                f"outside the 1/{top:g}..{top:g}x this script rescales by; give the input's pixel "
                f"size in um (e.g. 0.1, not 100 nm), or --no-rescale to segment at the image's own scale")
            return 2

    one_file = len(pairs) == 1 and pairs[0][1] == cfg.output  # -o names the mask of the one input
    problem = output_problem(cfg, pairs)
    tables = batch_tables(cfg, record, cfg.output.parent if one_file else cfg.output)
    problems = [problem] if problem else tables.problems()
    notes = []
    if not problems:
        notes, problems = tables.check_rows(pairs)
    if problems:
        for line in problems:
            log(f"{name}: {line}")
        return 2
    for line in notes:
        log(line)
    stale = tiffio.remove_stale_parts(tables.folder, recursive=True)
    if stale:
        log(f"{name}: removed {len(stale)} partial file(s) that a killed run left in {tables.folder}")
    todo = [(src, dst) for src, dst in pairs if cfg.overwrite or not dst.exists() or file_key(str(src)) in tables.redo]
    too_big, notes, pixels = check_sizes([p for p in todo if not chunked.wanted(p[0], cfg.chunk_size)], opts.max_pixels)
    for line in notes:
        log(line)
    log(f"{name}: model {cfg.model} ({info.get('format', 'checkpoint')}, normalisation {seg.norm}, "
        f"model pixel size {seg.model_px or 'unknown'} um), device {device}, "
        f"{seg.path}, tiles up to "
        f"{seg.tile_size} px, overlap {seg.overlap} px, batch {seg.batch_size}")
    log(f"{name}: quality check (qc column): expected score from {seg.calibration_note}")
    if pixels > LONG_RUN_PIXELS:
        seconds, took = predicted_time(seg, pixels)
        log(f"{name}: {len(todo) - len(too_big)} file(s) of {pixels / 1e6:.0f} Mpx to segment; predicted time about "
            f"{_duration(seconds)} on {device} (one {max(seg.tile_size, 2 * seg.overlap + 16)} px tile took "
            f"{took:.2f} s; rescaling to the model's pixel size changes it)")

    failed, done, skipped = [], [], []
    flagged = []  # files the quality check flagged (qc.py): segmented and written all the same
    t0, megapixels = time.perf_counter(), 0.0
    inputs = {p.resolve() for p, _ in pairs}
    interrupted = False
    refused = dict(too_big)
    cluster = None
    if cfg.cluster:  # each file a task on a Dask cluster; the checks, records and tables stay here
        try:
            cluster = distributed.Batch(cfg, record, tables, segment_one, len(todo))
        except (OSError, ValueError, TimeoutError) as err:
            log(f"{name}: --cluster {cfg.cluster}: {err}")
            return 2

    def tally(src, dst, row, error):
        """One file's outcome: failed (its line logged) or done."""
        nonlocal megapixels
        if error is not None:
            failed.append(src)
            log(error)
            return
        done.append((src, dst))
        if row.get("qc", "ok") != "ok":
            flagged.append(src)
        megapixels += math.prod(int(v) for v in row["shape"].split("x")) / 1e6

    try:  # the whole loop: Ctrl-C anywhere in it still writes the tables of the files done
        for src, dst in tqdm(pairs, desc=record.name, unit="file",
                             disable=None if len(pairs) > 1 and cluster is None else True):
            if dst.resolve() in inputs:
                failed.append(src)
                log(f"{src}: refusing to write {dst}: it is an input file")
                continue
            if dst.exists() and not cfg.overwrite and file_key(str(src)) not in tables.redo:
                skipped.append(src)
                continue
            if broken_link(src):
                failed.append(src)
                log(f"{src}: a broken link (to {os.readlink(src)}, which does not exist); skipped")
                continue
            if src in refused:
                failed.append(src)
                log(refused[src])
                continue
            if cluster is not None:  # its outcome comes back below, as the workers finish
                cluster.submit(src, dst)
                continue
            tally(src, dst, *segment_one(seg, cfg, tables, src, dst))
        for src, dst, row, error in cluster.results() if cluster is not None else ():
            tally(src, dst, row, error)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if cluster is not None:
            cluster.close()

    if interrupted:
        log(f"{name}: interrupted; writing the tables of the {len(done)} file(s) done (the same command "
            "continues the batch)")
        pairs = [(src, dst) for src, dst in pairs if dst.exists()]
    try:
        written, missing = tables.finish(pairs)
    except OSError as err:
        log(f"{name}: could not write the tables in {tables.folder} ({err}); the masks and their rows "
            f"(in {tables.folder / RECORDS}) are kept: run again to write them")
        return 1
    for src, line in missing:
        log(line)
    for src, dst in done:
        print(f"{shown(src)} -> {shown(dst)}")
    seconds = time.perf_counter() - t0
    summary = tables.folder / "summary.csv"
    where = (f"; summary: {summary}" if summary in written else
             f"; summary: {summary} (unchanged)" if summary.is_file() else "; no summary written")
    skip_note = " (mask exists; --overwrite to redo)" if skipped else ""
    log(f"{name}: {len(done)} segmented, {len(skipped) - len(missing)} skipped{skip_note}, "
        f"{len(failed) + len(missing)} failed, {len(flagged)} flagged by the quality check (qc column), "
        f"{megapixels:.1f} MP in {seconds:.1f} s{where}")
    return 130 if interrupted else 1 if failed or missing else 0
