"""The inputs of a segmentation batch and the mask each one writes: files from a file, folder or glob; never
this script's own earlier outputs; each file known by one key however its path is spelled.

    pairs, notes = plan(cfg)      # cfg: a batch.Config; [(input, mask path)], lines about inputs left out
"""
from __future__ import annotations

import csv
import functools
import glob
import json
import os
from pathlib import Path

from synseg.segment import chunked
from synseg.segment import predict
from synseg import tiffio

RECORDS = ".synseg-rows"  # folder beside summary.csv: each finished file's rows, until the tables hold them


def broken_link(path: Path) -> bool:
    """A symlink whose target does not exist."""
    return path.is_symlink() and not path.exists()


def find_inputs(spec: Path, pattern: str, recursive: bool) -> list[Path]:
    """Input files from a file, a folder (pattern, optionally recursive) or a glob; broken links among them are
    kept (run() reports each), never passed over silently."""
    text = str(spec)
    if spec.is_file() or chunked.is_zarr(spec):
        return [spec]
    if spec.is_dir():
        found = spec.rglob(pattern) if recursive else spec.glob(pattern)
        # hidden names are never inputs: partial files of an interrupted write, the batch records (RECORDS)
        return sorted(p for p in found if (p.is_file() or broken_link(p))
                      and not any(part.startswith(".") for part in p.relative_to(spec).parts))
    if any(ch in text for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file() or broken_link(Path(p)))
    return []


@functools.lru_cache(maxsize=2 ** 16)
def file_key(name: str) -> str:
    """One spelling of a file however it was given (relative or absolute, through a symlinked folder, from
    another working folder): its real absolute path, as tiffio.shown writes it into tables. Keys table rows,
    records and inputs; relative names resolve against the current folder (run() clears the cache)."""
    return tiffio.shown(os.path.realpath(name)) if name else ""


def known_outputs(folders) -> set[str]:
    """file_key of every file a batch wrote into these folders, as its tables and records name them: each
    mask of summary.csv and of the pending records, and the NAME_prob.tif and NAME_overlay.png beside it."""
    masks = []
    for folder in dict.fromkeys(Path(f) for f in folders):
        try:
            masks += [r.get("mask") for r in tiffio.read_csv(folder / "summary.csv")]
        except (OSError, csv.Error):
            pass
        root = folder / RECORDS
        for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
            try:
                masks.append(json.loads(path.read_text()).get("mask"))
            except (OSError, ValueError, AttributeError):
                continue
    known = set()
    for mask in filter(None, masks):
        mask = Path(mask)
        known.update(file_key(str(p)) for p in (mask, predict.sibling(mask, "prob", ".tif"),
                                                predict.sibling(mask, "overlay", ".png")))
    return known


def output_paths(inputs: list[Path], spec: Path, out: Path) -> list[Path]:
    """Mask path for each input: OUT/<relative folder>/NAME_mask.tif; -o may name the file for one input."""
    if len(inputs) == 1 and spec.is_file() and out.suffix.lower() in (".tif", ".tiff"):
        return [out]
    base = spec if spec.is_dir() and not chunked.is_zarr(spec) else None
    paths = []
    for p in inputs:
        rel = p.parent.relative_to(base) if base is not None else Path()
        stem = p.name.split(".")[0] if p.name.lower().endswith((".ome.tif", ".ome.tiff", ".ome.zarr")) else p.stem
        paths.append(out / rel / f"{stem}_mask.tif")
    return paths


def plan(cfg) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input, mask path) pairs of a batch.Config's inputs to consider, and notes about inputs left out.

    A folder or glob never yields this script's own outputs: files inside a separate output folder below the
    input folder, and every mask, probability map and overlay that a summary.csv or pending record beside the
    inputs or in -o names (known_outputs). A user's own NAME_mask.tif that no table names is an input like any
    other (and run() refuses to write a mask onto it).
    """
    inputs = find_inputs(cfg.input, cfg.pattern, cfg.recursive)
    notes = []
    if not cfg.input.is_file():
        in_root = cfg.input.resolve() if cfg.input.is_dir() else None
        out_root = cfg.output.resolve()
        folders = [cfg.output, cfg.output.parent, *(p.parent for p in inputs)]
        if in_root is not None:
            folders += [a for p in inputs for a in p.parent.parents if a == cfg.input or cfg.input in a.parents]
        known = known_outputs(folders)
        kept, ours = [], []
        for p in inputs:
            inside = in_root is not None and out_root != in_root and out_root in p.resolve().parents
            if inside:
                notes.append(f"{p}: inside the output folder {cfg.output}; left out")
            elif file_key(str(p)) in known:
                ours.append(p)
            else:
                kept.append(p)
        if ours:
            names = ", ".join(p.name for p in ours[:3]) + (", ..." if len(ours) > 3 else "")
            notes.append(f"{len(ours)} file(s) written by an earlier run of this script ({names}, named in its "
                         "summary.csv) left out")
        inputs = kept
    pairs = [(src, chunked.mask_path(dst) if chunked.wanted(src, cfg.chunk_size) else dst)
             for src, dst in zip(inputs, output_paths(inputs, cfg.input, cfg.output))]
    return pairs, notes


def shown(path) -> str:
    """A path as printable text: the bytes of a name that is not UTF-8 (x\\xff.tif) as escapes (tiffio.shown)."""
    return tiffio.shown(path)


def name_clashes(pairs: list[tuple[Path, Path]]) -> list[str]:
    """One line for each output written by more than one input (a.tif, a.tiff and a.ome.tif -> a_mask.tif)."""
    by_output = {}
    for src, dst in pairs:
        by_output.setdefault(dst.resolve(), []).append(src)
    return [f"{' and '.join(map(str, srcs))} would all write {dst}; rename one, or give them their own folders"
            for dst, srcs in by_output.items() if len(srcs) > 1]
