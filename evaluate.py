"""Score predicted masks against ground truth: pixel, boundary, skeleton, object and spot metrics.

Example:
    python evaluate.py --pred masks/ --gt DATA/val/mask -o report/ --gt-points DATA/val/mask --grid

Files are paired by name, after dropping a role suffix (_mask, _prob, _pred, _gt, _labels, _img,
_image, _points, _points_yx): masks/00000_mask.tif pairs with DATA/val/mask/00000.npy, 00000.tif or
00000_mask.tif, and with the points file 00000.csv. Where raw images and masks share a folder
(cell.tif, cell_mask.tif), the _mask file is the mask and the other the image. Files without a
partner are listed, never dropped silently. Masks: TIFF/PNG (0/255 or 0/1; an integer label image
keeps its objects) or .npy.

Stacks (TYX time-lapses, ZYX) are scored plane by plane against a truth stack of the same shape: each
plane gets every metric a 2D image gets, exactly as if it were scored alone; a stack's points table needs
a `frame` column (the generator's video tables have one). With --tracks, the tracks of
SynSeg_Vesicle.py --track are scored against the tables' `track_id` (tracking.link_scores).

Writes to the report folder:
    metrics.csv   one row per image (per frame of a stack, with its `frame`), then a mean and a std row
    metrics.json  the same, plus settings, per-stack and track scores, unpaired files and failures
    stacks.csv    (stacks) one row per stack: each metric's mean and std over its frames
    frames.png    (stacks) Dice and spot F1 against frame
    tracks_metrics.csv  (--tracks) link recall and precision per stack
    grid.png      (--grid) image | ground truth | prediction | disagreement, for a few images (a stack's
                  middle frame)

    python evaluate.py --pred masks/ --gt VIDEO/val/mask --gt-points VIDEO/val/mask --tracks masks/tracks.csv -o rep/
"""
import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from synseg import metrics
from synseg import tiffio
from synseg.cli import HelpFormatter, finite_float, finite_int
from synseg.tiffio import IMAGE_SUFFIXES

ROLE_SUFFIXES = ("_mask", "_prob", "_pred", "_gt", "_labels", "_points_yx", "_points", "_img", "_image")
MASK_SUFFIXES = (".tif", ".tiff", ".npy", ".png")
NOT_MASKS = ("_prob", "_overlay")  # files a segmentation run writes beside its masks
MASK_ROLES = ("_mask", "_labels", "_gt")  # names that say "mask" where raw images sit in the same folder
FP_COLOUR, FN_COLOUR, TP_GREY = (1.0, 0.0, 1.0), (0.0, 0.8, 0.0), 0.6  # magenta, green: colour-blind safe


def pair_key(path) -> str:
    """The name two files must share to be paired: the stem without trailing role suffixes."""
    stem = Path(path).name
    for ext in (".tiff", ".tif", ".npy", ".png", ".jpeg", ".jpg", ".csv"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    changed = True
    while changed:
        changed = False
        for suffix in ROLE_SUFFIXES:
            if stem.lower().endswith(suffix) and len(stem) > len(suffix):
                stem, changed = stem[: -len(suffix)], True
    return stem


def _has_role(path: Path, roles) -> bool:
    """True when the file's stem ends with one of `roles`."""
    return any(path.stem.lower().endswith(role) for role in roles)


def index_folder(folder: Path, suffixes, skip_roles=(), prefer_roles=()) -> dict:
    """{pair key: path} for the files in `folder` with one of `suffixes`.

    Files whose stem ends with one of `skip_roles` are ignored. When two files share a key and
    exactly one of them ends with one of `prefer_roles` and the other is an image file (cell.tif
    beside cell_mask.tif), the first is kept; any other clash is an error naming both files.
    """
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    found = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes or _has_role(path, skip_roles):
            continue
        key = pair_key(path)
        if key in found:
            old_pref, new_pref = _has_role(found[key], prefer_roles), _has_role(path, prefer_roles)
            other = path if old_pref else found[key]
            if old_pref != new_pref and other.suffix.lower() != ".npy":  # an .npy is never a raw image
                found[key] = path if new_pref else found[key]
                continue
            raise ValueError(f"{folder}: {found[key].name} and {path.name} both pair as '{key}'; "
                             "keep one of them")
        found[key] = path
    return found


def read_mask(path: Path):
    """(array, pixel size in um or None) from a .npy, TIFF or PNG mask: 2D, or a stack of planes (TYX, ZYX).

    Axes of length 1 are dropped; anything with more than three axes left is refused.
    """
    if path.suffix.lower() == ".npy":
        try:
            data, pixel = np.load(path, allow_pickle=False), None
        except (ValueError, OSError) as err:
            raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    else:
        data, meta = tiffio.read_image(path)
        pixel = meta["pixel_size_um"]
    data = np.squeeze(np.asarray(data))
    if data.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2D mask or a stack of 2D planes (TYX, ZYX), got shape {data.shape}")
    return data, pixel


def read_points(path: Path):
    """(n, 2) float array of y, x from a CSV; header optional (y,x columns by name, else the first two)."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    cols = (0, 1)
    if rows:
        try:
            [float(c) for c in rows[0][:2]]
        except ValueError:  # a header row
            names = [c.strip().lower() for c in rows[0]]
            for y, x in (("y", "x"), ("axis-0", "axis-1"), ("row", "col")):
                if y in names and x in names:
                    cols = (names.index(y), names.index(x))
                    break
            rows = rows[1:]
    try:
        pts = np.array([[float(r[cols[0]]), float(r[cols[1]])] for r in rows], dtype=float)
    except (ValueError, IndexError):
        raise ValueError(f"{path}: expected numeric y,x columns (header optional)") from None
    return pts.reshape(-1, 2)


def read_frame_points(path: Path, n_frames: int) -> list:
    """Points of a stack, one (n, 2) y, x array per frame, from a CSV with y, x and frame columns.

    The generator's video tables (mask/NNNNN.csv with --frames N) carry a `frame` column (0-based);
    a table without one cannot say which plane a point belongs to and is refused for a stack.
    """
    rows = tiffio.read_csv(path)
    if rows and "frame" not in rows[0]:
        raise ValueError(f"{path}: a stack needs a 'frame' column beside y, x (0-based plane index)")
    per_frame = [[] for _ in range(n_frames)]
    for i, r in enumerate(rows):
        try:
            f, y, x = int(float(r["frame"])), float(r["y"]), float(r["x"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: row {i + 1}: frame, y, x must be numbers: {r}") from None
        if not 0 <= f < n_frames:
            raise ValueError(f"{path}: row {i + 1}: frame {f} outside the stack's 0..{n_frames - 1}")
        per_frame[f].append((y, x))
    return [np.array(p, dtype=float).reshape(-1, 2) for p in per_frame]


def evaluate_stack(pred, gt=None, points=None, prob=None, pixel_size_um=None, tol=2.0, tol_px=3.0,
                   iou_threshold=0.5) -> list:
    """evaluate_pair on each plane of a stack (T or Z first): one row per plane, with its `frame` index.

    points: None or one (n, 2) array per plane (read_frame_points); gt and prob: stacks of pred's shape.
    """
    rows = []
    for t in range(len(pred)):
        row = evaluate_pair(pred[t], None if gt is None else gt[t], None if points is None else points[t],
                            None if prob is None else prob[t], pixel_size_um, tol, tol_px, iou_threshold)
        rows.append({"frame": t, **row})
    return rows


def evaluate_pair(pred, gt=None, points=None, prob=None, pixel_size_um=None, tol=2.0, tol_px=3.0,
                  iou_threshold=0.5) -> dict:
    """All metrics of one prediction against a ground-truth mask and/or points, as a flat dict."""
    pred = np.asarray(pred) != 0
    row = {}
    if gt is not None:
        gt_bin = np.asarray(gt) != 0
        row.update(metrics.pixel_scores(pred, gt_bin))
        if prob is not None:
            row["auc"] = metrics.auc(prob, gt_bin)
        row["hd95_px"] = metrics.hd95(pred, gt_bin)
        if pixel_size_um:
            row["hd95_um"] = metrics.hd95(pred, gt_bin, spacing=pixel_size_um)
        row["cldice"] = metrics.cldice(pred, gt_bin)
        sk = metrics.skeleton_scores(pred, gt_bin, tol=tol)
        row.update({f"skel_{k}": v for k, v in sk.items()})
        ob = metrics.object_scores(pred, gt, iou_threshold=iou_threshold)  # labels kept if gt has them
        row.update({"obj_precision": ob["precision"], "obj_recall": ob["recall"], "obj_f1": ob["f1"],
                    "n_pred_objects": ob["n_pred"], "n_gt_objects": ob["n_gt"]})
    if points is not None:
        sp = metrics.spot_scores(pred, points, tol=tol_px)
        row.update({"spot_precision": sp["precision"], "spot_recall": sp["recall"], "spot_f1": sp["f1"],
                    "n_pred_spots": sp["n_pred"], "n_points": sp["n_gt"]})
    return row


def summarize(rows: list, columns: list) -> dict:
    """{column: {mean, std, n, n_excluded}} over the finite values of each metric column.

    std is the sample standard deviation (n - 1); nan below two values. Infinite values (HD95
    when one mask is empty) and nan (undefined AUC, unknown pixel size) are left out and counted.
    """
    out = {}
    for col in columns:
        values = np.array([r.get(col, float("nan")) for r in rows], dtype=float)
        finite = values[np.isfinite(values)]
        out[col] = {"mean": float(finite.mean()) if finite.size else float("nan"),
                    "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
                    "n": int(finite.size), "n_excluded": int(values.size - finite.size)}
    return out


def stack_summaries(rows: list, columns: list) -> list:
    """One row per stack (rows with a `frame`): n_frames and each metric's mean and std over its frames."""
    by_stack = {}
    for r in rows:
        if r.get("frame", "") != "":
            by_stack.setdefault(r["image"], []).append(r)
    out = []
    for key, frames in by_stack.items():
        stats = summarize(frames, columns)
        row = {"image": key, "n_frames": len(frames)}
        for c in columns:
            row[f"{c}_mean"], row[f"{c}_std"] = stats[c]["mean"], stats[c]["std"]
        out.append(row)
    return out


def score_tracks(tracks_csv: Path, points: dict, tol_px: float) -> list:
    """tracking.link_scores per stack: predicted tracks (tracks.csv, grouped by its `file` column, paired by
    name) against the generator's tables (frame, track_id, y, x); one row per paired stack."""
    from synseg.segment import tracking

    rows = tiffio.read_csv(tracks_csv)
    if rows and "file" not in rows[0]:
        raise ValueError(f"{tracks_csv}: needs a 'file' column naming the segmented stack of each row")
    by_key = {}
    for r in rows:
        by_key.setdefault(pair_key(r["file"]), []).append(r)
    out = []
    for key in sorted(by_key):
        if key not in points:
            print(f"evaluate.py: tracks of {key}: no points table to score them against", file=sys.stderr)
            continue
        truth = tiffio.read_csv(points[key])
        if truth and "track_id" not in truth[0]:
            raise ValueError(f"{points[key]}: no track_id column; generate the video with --frames N")
        out.append({"image": key, **tracking.link_scores(by_key[key], truth, tol_px=tol_px)})
    return out


def write_frame_plot(path: Path, rows: list, max_stacks: int = 12) -> None:
    """frames.png: Dice and spot F1 against frame, one line per stack (at most `max_stacks`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [c for c in ("dice", "spot_f1") if any(c in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    stacks = list(dict.fromkeys(r["image"] for r in rows if r.get("frame", "") != ""))[:max_stacks]
    for ax, col in zip(axes[0], panels):
        for key in stacks:
            mine = [r for r in rows if r["image"] == key and r.get("frame", "") != ""]
            ax.plot([r["frame"] for r in mine], [r.get(col, float("nan")) for r in mine], ".-", ms=3, lw=1, label=key)
        ax.set_xlabel("frame")
        ax.set_ylabel({"dice": "Dice", "spot_f1": "spot F1"}[col])
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    if len(stacks) > 1:
        axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with tiffio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _cell(value) -> str:
    """CSV text of one value: 4 decimals for floats, empty for nan, 'inf' for inf."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def write_metrics_csv(path: Path, rows: list, info_cols: list, metric_cols: list, summary: dict) -> None:
    """metrics.csv: per-image rows, then 'mean' and 'std' rows (named in the first column), written atomically."""
    cols = info_cols + metric_cols
    table = [{c: _cell(r.get(c, "")) for c in cols} for r in rows]
    table += [{info_cols[0]: stat, **{c: _cell(summary[c][stat]) for c in metric_cols}} for stat in ("mean", "std")]
    tiffio.write_csv(path, table, cols)


def json_safe(value):
    """nan -> None and inf -> 'inf', recursively, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, report: dict) -> None:
    """metrics.json, written atomically."""
    with tiffio.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(report), indent=2) + "\n")


def display_image(image):
    """Any raw image to 0..1 for the grid: RGB scaled by its maximum; else the first plane, tiffio.stretch."""
    a = np.squeeze(np.asarray(image, dtype=np.float32))
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        return np.clip(a[..., :3] / max(float(a.max()), 1e-9), 0, 1)
    if a.ndim != 2:
        a = a.reshape(-1, *a.shape[-2:])[0]
    return tiffio.stretch(a)


def disagreement_rgb(pred, gt):
    """RGB picture of agreement: true positives grey, false positives magenta, false negatives green."""
    p, g = np.asarray(pred) != 0, np.asarray(gt) != 0
    rgb = np.zeros(p.shape + (3,), np.float32)
    rgb[p & g] = TP_GREY
    rgb[p & ~g] = FP_COLOUR
    rgb[~p & g] = FN_COLOUR
    return rgb


def write_grid(path: Path, items: list) -> None:
    """grid.png: one row per item (name, image or None, gt or None, points or None, pred)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    titles = ("image", "ground truth", "prediction", "FP magenta / FN green / agree grey")
    fig, axes = plt.subplots(len(items), 4, figsize=(16, 4.4 * len(items)), squeeze=False)
    for ax_row, (name, image, gt, points, pred) in zip(axes, items):
        panels = [display_image(image) if image is not None else None,
                  (np.asarray(gt) != 0) if gt is not None else np.zeros(pred.shape, bool),
                  np.asarray(pred) != 0,
                  disagreement_rgb(pred, gt) if gt is not None else None]
        for col, (ax, panel) in enumerate(zip(ax_row, panels)):
            if panel is None:
                ax.text(0.5, 0.5, "no image" if col == 0 else "no mask", ha="center", va="center")
            else:
                ax.imshow(panel, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
                ax.autoscale(False)  # points beyond the edge must not resize the panel
            if points is not None and len(points) and col == 1:  # hollow, so small masks stay visible
                ax.plot(points[:, 1], points[:, 0], "o", mfc="none", mec="cyan", ms=3.5, mew=0.5)
            title = titles[col] + (" (points: cyan rings)" if col == 1 and points is not None and len(points) else "")
            ax.set_title(f"{name}: {title}" if col == 0 else title, fontsize=9)
            ax.set_axis_off()
    fig.tight_layout()
    with tiffio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--pred", type=Path, required=True, help="folder of predicted masks (NAME_mask.tif, .npy)")
    io.add_argument("--gt", type=Path, default=None,
                    help="folder of ground-truth masks (NAME.npy, NAME.tif or NAME_mask.tif; label images ok)")
    io.add_argument("--gt-points", "--gt_points", type=Path, default=None,
                    help="folder of point CSVs (NAME.csv, columns y,x, header optional) for spot scores")
    io.add_argument("--prob", type=Path, nargs="?", const=True, default=None,  # True: beside --pred
                    help="folder of probability maps NAME_prob.tif for AUC; without a folder, look in --pred")
    io.add_argument("-o", "--output-dir", "--output_dir", type=Path, required=True,
                    help="report folder for metrics.csv, metrics.json, grid.png")
    sc = parser.add_argument_group("scoring")
    sc.add_argument("--tol", type=finite_float(low=0.0), default=2.0,
                    help="skeleton precision/recall tolerance (px)")
    sc.add_argument("--tol-px", "--tol_px", type=finite_float(low=0.0), default=3.0,
                    help="spot matching distance: a component centroid within this many px of a point")
    sc.add_argument("--iou-threshold", "--iou_threshold", type=finite_float(above=0.0, high=1.0), default=0.5,
                    help="object matching: minimum IoU of a predicted and a true object")
    sc.add_argument("--pixel-size", "--pixel_size", type=finite_float(above=0.0), default=None,
                    help="um per px for HD95 in um; unset: the prediction's TIFF tags, then the gt's")
    sc.add_argument("--tracks", type=Path, default=None,
                    help="tracks.csv of SynSeg_Vesicle.py --track (file, track_id, frame, y, x): link recall and "
                         "precision against the track_id of the --gt-points tables")
    pic = parser.add_argument_group("pictures")
    pic.add_argument("--grid", action="store_true", help="write grid.png for a person to look at")
    pic.add_argument("--grid-n", "--grid_n", type=finite_int(low=1), default=4, help="how many images in grid.png")
    pic.add_argument("--images", type=Path, default=None,
                     help="folder of raw images for grid.png; unset: GT/../img when --gt is DATA/*/mask")
    return parser


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, or None."""
    if args.gt is None and args.gt_points is None:
        return "give --gt (masks) or --gt-points (point CSVs), or both"
    for flag, value in (("--tol", args.tol), ("--tol-px", args.tol_px)):
        if value < 0:
            return f"{flag} must be >= 0, got {value}"
    if not 0 < args.iou_threshold <= 1:
        return f"--iou-threshold must be in (0, 1], got {args.iou_threshold}"
    if args.pixel_size is not None and args.pixel_size <= 0:
        return f"--pixel-size must be > 0, got {args.pixel_size}"
    if args.tracks is not None and args.gt_points is None:
        return "--tracks needs --gt-points (the generator's tables with frame and track_id columns)"
    if args.tracks is not None and not args.tracks.is_file():
        return f"--tracks {args.tracks}: no such file"
    if args.grid_n < 1:
        return f"--grid-n must be >= 1, got {args.grid_n}"
    return None


def main(args: argparse.Namespace) -> int:
    """Pair, score, summarise, write the report; non-zero exit if nothing paired or a file failed."""
    tiffio.readable_output()  # a name that is not UTF-8 is spelled one way, tiffio.shown's
    problem = check_args(args)
    if problem:
        print(f"evaluate.py: {problem}", file=sys.stderr)
        return 2
    out = args.output_dir
    if out.exists() and not out.is_dir():
        print(f"evaluate.py: -o {out}: is a file; give a folder for metrics.csv, metrics.json and grid.png",
              file=sys.stderr)
        return 2
    base = next(p for p in [out, *out.absolute().parents] if p.exists())  # made once there is a report
    try:
        if not base.is_dir():
            raise NotADirectoryError(f"{base} is a file")
        tiffio.check_writable(base)
    except OSError as err:
        print(f"evaluate.py: -o {out}: cannot write there ({err.strerror or err})", file=sys.stderr)
        return 2
    from tqdm import tqdm

    try:
        preds = index_folder(args.pred, MASK_SUFFIXES, skip_roles=NOT_MASKS, prefer_roles=MASK_ROLES)
        gts = index_folder(args.gt, MASK_SUFFIXES, skip_roles=NOT_MASKS, prefer_roles=MASK_ROLES) if args.gt else None
        pts = index_folder(args.gt_points, (".csv",)) if args.gt_points else None
        probs = None
        if args.prob is not None:
            if args.prob is True:  # --prob without a folder: the maps sit beside the masks
                args.prob = args.pred
            if not args.prob.is_dir():
                raise ValueError(f"{args.prob}: not a folder")
            probs = {pair_key(p): p for p in sorted(args.prob.iterdir())
                     if p.is_file() and p.stem.lower().endswith("_prob") and p.suffix.lower() in (".tif", ".tiff")}
        images = None
        image_dir = args.images
        if image_dir is None and args.gt is not None and args.gt.name == "mask" and (args.gt.parent / "img").is_dir():
            image_dir = args.gt.parent / "img"
        if args.grid and image_dir is not None:
            images = index_folder(image_dir, IMAGE_SUFFIXES, skip_roles=NOT_MASKS + MASK_ROLES)
    except ValueError as err:
        print(f"evaluate.py: {err}", file=sys.stderr)
        return 1

    truth = gts if gts is not None else pts
    keys = sorted(set(preds) & set(truth))
    unpaired = {"pred_without_gt": sorted(preds[k].name for k in set(preds) - set(truth)),
                "gt_without_pred": sorted(truth[k].name for k in set(truth) - set(preds))}
    if gts is not None and pts is not None:
        unpaired["pred_without_points"] = sorted(preds[k].name for k in keys if k not in pts)
    if probs is not None:
        unpaired["pred_without_prob"] = sorted(preds[k].name for k in keys if k not in probs)
    for what, names in unpaired.items():
        if names:
            shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
            print(f"evaluate.py: unpaired ({what.replace('_', ' ')}): {shown}", file=sys.stderr)
    if not keys:
        print(f"evaluate.py: no prediction in {args.pred} pairs with a file in {args.gt or args.gt_points} "
              f"({len(preds)} predictions, {len(truth)} ground-truth files); names must match after "
              f"dropping {', '.join(ROLE_SUFFIXES)}", file=sys.stderr)
        return 1

    rows, failed, grid_items = [], [], []
    for key in tqdm(keys, desc="evaluate", unit="image", disable=len(keys) < 5):
        try:
            pred, pixel = read_mask(preds[key])
            gt = gt_pixel = None
            if gts is not None:
                gt, gt_pixel = read_mask(gts[key])
                if gt.shape != pred.shape:
                    raise ValueError(f"{preds[key]}: shape {pred.shape} differs from ground truth "
                                     f"{gts[key].name} {gt.shape}")
            stack = pred.ndim == 3
            points = None
            if pts is not None and key in pts:
                points = read_frame_points(pts[key], len(pred)) if stack else read_points(pts[key])
            prob = None
            if probs is not None and key in probs and gt is not None:
                prob = read_mask(probs[key])[0]
                if prob.shape != pred.shape:
                    raise ValueError(f"{probs[key]}: shape {prob.shape} differs from the mask {pred.shape}")
                bad = int(np.size(prob) - np.count_nonzero(np.isfinite(prob)))
                if bad:
                    raise ValueError(f"{probs[key]}: {bad} NaN or infinite value(s) in the probability map; AUC "
                                     "needs finite values (rewrite the map, or leave out --prob)")
            pixel_size = args.pixel_size or pixel or gt_pixel
            settings = (pixel_size, args.tol, args.tol_px, args.iou_threshold)
            if stack:
                scored = evaluate_stack(pred, gt, points, prob, *settings)
            else:
                scored = [evaluate_pair(pred, gt, points, prob, *settings)]
        except (ValueError, OSError) as err:  # one line naming the file: the pair's prediction where err does not
            named = any(str(p) in str(err) or p.name in str(err) for p in (preds[key], gts and gts.get(key),
                                                                           probs and probs.get(key)) if p)
            line = str(err) if named else f"{preds[key]}: {err}"
            print(f"evaluate.py: {line}", file=sys.stderr)
            failed.append(line)
            continue
        for scores in scored:
            if probs is not None and gt is not None and "auc" not in scores:
                scores["auc"] = float("nan")
            rows.append({"image": key, "pred_file": preds[key].name,
                         "gt_file": gts[key].name if gts is not None else pts[key].name,
                         "pixel_size_um": pixel_size if pixel_size else float("nan"), **scores})
        if args.grid and len(grid_items) < args.grid_n:
            image = None
            if images is not None and key in images:
                try:
                    image = tiffio.read_image(images[key])[0]
                except (ValueError, OSError) as err:
                    print(f"evaluate.py: grid picture without image: {err}", file=sys.stderr)
            if stack:  # the stack's middle plane stands for it
                mid = len(pred) // 2
                image = image[mid] if image is not None and np.ndim(image) == 3 else image
                gt, pred = (None if gt is None else gt[mid]), pred[mid]
                points = None if points is None else points[mid]
                key = f"{key} (frame {mid})"
            grid_items.append((key, image, gt, points, pred))

    if not rows:
        print("evaluate.py: every pair failed; no report written", file=sys.stderr)
        return 1
    info_cols = ["image", "pred_file", "gt_file", "pixel_size_um"]
    if any("frame" in r for r in rows):  # stacks: one row per frame
        info_cols.insert(1, "frame")
    metric_cols = [c for c in rows[0] if c not in info_cols]
    for r in rows[1:]:
        metric_cols += [c for c in r if c not in info_cols and c not in metric_cols]
    summary = summarize(rows, metric_cols)
    try:  # a failed write (read-only, disk full) is one line; the files written before are whole
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_metrics_csv(args.output_dir / "metrics.csv", rows, info_cols, metric_cols, summary)
        stacks = stack_summaries(rows, metric_cols)
        written = ["metrics.csv", "metrics.json"]
        if stacks:
            tiffio.write_csv(args.output_dir / "stacks.csv", [{k: _cell(v) for k, v in r.items()} for r in stacks],
                             list(stacks[0]))
            write_frame_plot(args.output_dir / "frames.png", rows)
            written += ["stacks.csv", "frames.png"]
        track_rows = []
        if args.tracks is not None:
            try:
                track_rows = score_tracks(args.tracks, pts, args.tol_px)
            except ValueError as err:
                print(f"evaluate.py: {err}", file=sys.stderr)
                failed.append(str(err))
            if track_rows:
                tiffio.write_csv(args.output_dir / "tracks_metrics.csv",
                                 [{k: _cell(v) for k, v in r.items()} for r in track_rows], list(track_rows[0]))
                written.append("tracks_metrics.csv")
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        write_json(args.output_dir / "metrics.json",
                   {"settings": settings, "n_images": len(rows), "summary": summary, "images": rows,
                    "stacks": stacks, "tracks": track_rows, "unpaired": unpaired, "failed": failed})
        if grid_items:
            write_grid(args.output_dir / "grid.png", grid_items)
            written.append("grid.png")
    except OSError as err:
        print(f"evaluate.py: {tiffio.write_error_line(err)}", file=sys.stderr)
        return 1

    width = max(len(c) for c in metric_cols)
    what = f"{len(rows)} frame(s) of {len(stacks)} stack(s)" if stacks else f"{len(rows)} image(s)"
    print(f"{what} scored; mean (std) over {'frames' if stacks else 'images'}:")
    for c in metric_cols:
        s = summary[c]
        note = f"  [{s['n_excluded']} left out: inf/undefined]" if s["n_excluded"] else ""
        print(f"  {c:<{width}}  {_cell(s['mean']) or 'n/a':>8}  ({_cell(s['std']) or '-'}){note}")
    for r in track_rows:
        print(f"  tracks {r['image']}: link recall {r['link_recall']:.3f}, link precision {r['link_precision']:.3f} "
              f"({r['n_true_links']} true, {r['n_pred_links']} predicted links)")
    print(f"{args.pred} vs {args.gt or args.gt_points} -> {args.output_dir}/{{{','.join(written)}}}")
    if failed:
        print(f"evaluate.py: {len(failed)} pair(s) failed (listed above and in metrics.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
