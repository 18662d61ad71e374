"""Real-data benchmark: SynSeg's default models beside classical baselines on ../shared/realdata.

Example:
    .venv/bin/python bench/realdata_benchmark.py --output-dir /tmp/synseg_bench

What runs, all with fixed settings (nothing is tuned on the answers):
  SynSeg     `python SynSeg_Vesicle.py -i ... -o ...` and `python SynSeg_Cytoskeleton.py ...` with their
             defaults (models/vesicle.pth, models/cytoskeleton.pth); a missing model gives n/a
  LoG        skimage blob_log on the image scaled 0..1 (1st..99.8th percentile), skimage's default
             threshold 0.2, each blob drawn as a disk of radius sqrt(2) sigma
  Otsu       Otsu threshold of the scaled image after a Gaussian blur of 1 px
  Sato+Otsu  Sato ridge filter (bright ridges, sigmas 1-3 px), then Otsu on the ridge response
What is scored:
  spots/     vesicle model, LoG, Otsu against the expert points: metrics.spot_scores (components,
             centroids, one-to-one within 3 px), as ../shared/realdata/README.md prescribes
  nuclei/    vesicle model, LoG (nucleus-sized sigmas), Otsu: Dice, IoU, HD95 (px), object F1 vs mask2d.tif
  examples/  no ground truth: overlays, foreground fraction and object count (filaments: skeleton length)
Prints one markdown table; writes benchmark.md, results.json, overlays/*.png and every method's masks
(masks/METHOD/NAME_mask.tif, ready for evaluate.py) to --output-dir. Not part of `make test`.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import evaluate  # noqa: E402
import metrics  # noqa: E402
import tiffio  # noqa: E402

SCRIPTS = {"vesicle": ("SynSeg_Vesicle.py", "models/vesicle.pth"),
           "cytoskeleton": ("SynSeg_Cytoskeleton.py", "models/cytoskeleton.pth")}
FILAMENT_EXAMPLES = ("Celegans_epithelia", "actin")  # every other example image is spot-like
LOG_SPOTS = dict(min_sigma=1.0, max_sigma=4.0, num_sigma=7, threshold=0.2)  # diffraction-limited spots
LOG_NUCLEI = dict(min_sigma=4.0, max_sigma=16.0, num_sigma=7, threshold=0.2)  # nuclei 10-45 px across
RIDGE_SIGMAS = (1.0, 2.0, 3.0)
SPOT_TOL_PX = 3.0
# Classical LoG with its threshold tuned per image on the answers (../shared/realdata/README.md)
REFERENCE_F1 = {"smfish_293T_TFRC": 0.63, "beads_300px": 0.58}
METHODS = ("SynSeg", "LoG", "Otsu", "Sato+Otsu")
COLOURS = {"SynSeg": (1.0, 0.25, 0.1), "LoG": (0.75, 0.3, 1.0), "Otsu": (1.0, 0.85, 0.0),
           "Sato+Otsu": (0.2, 0.9, 0.3)}


# ---------------------------------------------------------------- classical baselines

def scale01(image) -> np.ndarray:
    """2D float32 image mapped to 0..1 between its 1st and 99.8th percentiles (clipped)."""
    a = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(a, (1, 99.8))
    return np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)


def log_mask(image, min_sigma, max_sigma, num_sigma, threshold) -> np.ndarray:
    """Laplacian-of-Gaussian blobs, each drawn as a filled disk of radius sqrt(2) * sigma."""
    from skimage.draw import disk
    from skimage.feature import blob_log

    a = scale01(image)
    mask = np.zeros(a.shape, bool)
    for y, x, sigma in blob_log(a, min_sigma=min_sigma, max_sigma=max_sigma, num_sigma=num_sigma,
                                threshold=threshold):
        rr, cc = disk((y, x), max(1.0, math.sqrt(2) * sigma), shape=a.shape)
        mask[rr, cc] = True
    return mask


def otsu_mask(image, blur_px: float = 1.0) -> np.ndarray:
    """Otsu's threshold on the scaled, lightly blurred image."""
    from skimage.filters import gaussian, threshold_otsu

    a = gaussian(scale01(image), sigma=blur_px)
    return a > threshold_otsu(a) if np.ptp(a) > 0 else np.zeros(a.shape, bool)


def ridge_mask(image, sigmas=RIDGE_SIGMAS) -> np.ndarray:
    """Sato tubeness filter for bright ridges, thresholded with Otsu."""
    from skimage.filters import sato, threshold_otsu

    r = sato(scale01(image), sigmas=sigmas, black_ridges=False)
    return r > threshold_otsu(r) if np.ptp(r) > 0 else np.zeros(r.shape, bool)


# ---------------------------------------------------------------- SynSeg through its scripts

def run_synseg(task: str, images: list, out_dir: Path, repo: Path, timeout: float) -> tuple[dict, str | None, bool]:
    """Run one segmentation script with default settings on `images`.

    Returns ({image stem: mask path}, None or the table's n/a text, whether the script failed).
    The inputs are staged as symlinks in one folder so the script sees exactly these files.
    """
    script, model = SCRIPTS[task]
    if not (repo / model).is_file():
        return {}, f"n/a ({model} missing)", False
    if not (repo / script).is_file():
        return {}, f"n/a ({script} missing)", False
    stage, out = out_dir / "inputs" / task, out_dir / "synseg" / task
    for folder in (stage, out):  # our own subfolders: a re-run must not reuse stale masks
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for path in images:
        try:
            (stage / path.name).symlink_to(path.resolve())
        except OSError:
            shutil.copy2(path, stage / path.name)
    cmd = [sys.executable, str(repo / script), "-i", str(stage), "-o", str(out)]
    log = out_dir / f"synseg_{task}.log"
    print(f"$ {' '.join(cmd)}   (log: {log})", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {}, f"n/a ({script} ran past {timeout:.0f} s)", True
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    print(f"  {script}: exit {proc.returncode} in {time.perf_counter() - t0:.1f} s", flush=True)
    masks = {p.name[: -len("_mask.tif")]: p for p in out.glob("*_mask.tif")}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"  {script} failed: {last}", file=sys.stderr)
        if not masks:
            return {}, f"n/a ({script} failed: {last[:80]})", True
    return masks, None, proc.returncode != 0


def read_binary(path: Path) -> np.ndarray:
    """A mask file as a 2D bool array."""
    data, _ = tiffio.read_image(path)
    data = np.squeeze(data)
    if data.ndim != 2:
        raise ValueError(f"{path}: expected a 2D mask, got shape {data.shape}")
    return data != 0


# ---------------------------------------------------------------- pictures and table

def overlay_png(path: Path, image, masks: dict, points=None) -> None:
    """One panel per method: the scaled image with its mask tinted in the method's colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grey = scale01(image)
    panels = [("image", None)] + list(masks.items())
    side = min(8.0, max(4.0, grey.shape[1] / 100))
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels), side * grey.shape[0] / grey.shape[1] + 0.4),
                             squeeze=False)
    for ax, (name, mask) in zip(axes[0], panels):
        rgb = np.repeat(grey[..., None], 3, axis=2)
        if isinstance(mask, np.ndarray):
            rgb[mask] = 0.45 * rgb[mask] + 0.55 * np.array(COLOURS.get(name, (1, 0, 0)))
            ax.set_title(f"{name}: {100 * mask.mean():.1f}% foreground", fontsize=10)
        else:
            ax.set_title(name if mask is None else f"{name}: {mask}", fontsize=10)
        ax.imshow(rgb, interpolation="nearest")
        ax.autoscale(False)
        if points is not None:
            ax.plot(points[:, 1], points[:, 0], "+", color="cyan", ms=4, mew=0.6)  # expert points
        ax.set_axis_off()
    fig.tight_layout()
    with tiffio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def markdown_table(header: list, rows: list) -> str:
    """A GitHub-markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def f2(value) -> str:
    """Two decimals, 'inf' for inf, 'n/a' for nan."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.2f}"


# ---------------------------------------------------------------- the benchmark

def find_inputs(data: Path) -> dict:
    """The images of each section that exist under `data`."""
    spots = [(p, p.with_name(p.name.replace("_img.tif", "_points_yx.csv")))
             for p in sorted((data / "spots").glob("*_img.tif"))]
    nuclei = [(data / "nuclei" / "img2d.tif", data / "nuclei" / "mask2d.tif")]
    examples = sorted((data / "examples").glob("*.tif"))
    return {"spots": [s for s in spots if s[1].is_file()],
            "nuclei": [n for n in nuclei if n[0].is_file() and n[1].is_file()],
            "examples": examples}


def method_masks(image, kind: str, synseg_mask) -> dict:
    """{method: mask or n/a text} for one image of kind 'spots', 'nuclei' or 'filaments'."""
    out = {"SynSeg": synseg_mask}
    if kind == "filaments":
        out["Sato+Otsu"] = ridge_mask(image)
    else:
        out["LoG"] = log_mask(image, **(LOG_NUCLEI if kind == "nuclei" else LOG_SPOTS))
        out["Otsu"] = otsu_mask(image)
    return out


def synseg_mask_for(stem: str, task: str, synseg: dict):
    """SynSeg's mask for an image stem as a bool array, or the n/a text saying why there is none."""
    masks, reason, _ = synseg[task]
    if reason:
        return reason
    if stem not in masks:
        return "n/a (no mask written)"
    try:
        return read_binary(masks[stem])
    except (ValueError, OSError) as err:
        return f"n/a ({err})"


def table_cells(masks: dict, measure) -> tuple[dict, dict]:
    """Apply `measure(mask) -> ({metric: text}, scores)` to each method's mask.

    Returns ({metric: [one cell per METHODS entry]}, {method: scores}); a method without a mask
    shows its n/a text in the first metric's cell, an absent method an empty cell.
    """
    texts, scores = {}, {}
    for method in METHODS:
        mask = masks.get(method)
        if isinstance(mask, np.ndarray):
            texts[method], scores[method] = measure(mask)
    metric_names = next(iter(texts.values())).keys() if texts else ["result"]
    table = {}
    for i, metric in enumerate(metric_names):
        table[metric] = [texts[m][metric] if m in texts
                         else (masks[m] if isinstance(masks.get(m), str) and i == 0 else "") for m in METHODS]
    return table, scores


def annotation_offset(image, points, radius: int = 5) -> np.ndarray:
    """Median (dy, dx) in px from each spot's brightest point to its annotated point, from the image alone.

    Per point: the brightest pixel within `radius` px (window median subtracted), refined by the
    intensity-weighted centre of its 3 x 3 neighbourhood. The shared spot annotations sit about (+2, +2) px
    from the spots (a coordinate convention of their source), most of the 3 px matching tolerance.
    """
    img = np.asarray(image, np.float64)
    h, w = img.shape
    offsets = []
    for y, x in np.asarray(points, np.float64):
        yi, xi = int(round(y)), int(round(x))
        y0, y1, x0, x1 = max(yi - radius, 0), min(yi + radius + 1, h), max(xi - radius, 0), min(xi + radius + 1, w)
        if y1 - y0 < 3 or x1 - x0 < 3:
            continue
        win = img[y0:y1, x0:x1] - np.median(img[y0:y1, x0:x1])
        my, mx = np.unravel_index(np.argmax(win), win.shape)
        sy = slice(max(my - 1, 0), min(my + 2, win.shape[0]))
        sx = slice(max(mx - 1, 0), min(mx + 2, win.shape[1]))
        wts = np.clip(win[sy, sx], 0, None)
        if wts.sum() <= 0:
            continue
        gy, gx = np.mgrid[sy, sx]
        offsets.append((y - (y0 + (wts * gy).sum() / wts.sum()), x - (x0 + (wts * gx).sum() / wts.sum())))
    return np.median(np.array(offsets), axis=0) if offsets else np.zeros(2)


def score_spots(masks: dict, points, shift=None) -> tuple[dict, dict]:
    """Spot F1 / precision / recall and counts of each method against the expert points.

    With `shift` (annotation_offset of the image), one more row, a diagnostic only: F1 against the points
    moved back by that offset, which separates detection errors from the annotations' convention.
    """
    def measure(mask):
        s = metrics.spot_scores(mask, points, tol=SPOT_TOL_PX)
        cells = {"F1 (precision / recall)": f"{f2(s['f1'])} ({f2(s['precision'])} / {f2(s['recall'])})",
                 "spots found / annotated": f"{s['n_pred']} / {s['n_gt']}"}
        if shift is not None:
            moved = metrics.spot_scores(mask, np.asarray(points, np.float64) - shift, tol=SPOT_TOL_PX)
            cells["diagnostic: F1 with points moved onto the spots"] = (
                f"{f2(moved['f1'])} ({f2(moved['precision'])} / {f2(moved['recall'])})")
            s = dict(s, f1_points_moved=moved["f1"], annotation_offset_px=[float(v) for v in shift])
        return cells, s
    return table_cells(masks, measure)


def score_nuclei(masks: dict, labels) -> tuple[dict, dict]:
    """Dice, IoU, HD95 (px) against the binarised labels; object F1 against the instances."""
    def measure(mask):
        px = metrics.pixel_scores(mask, labels > 0)
        hd = metrics.hd95(mask, labels > 0)
        ob = metrics.object_scores(mask, labels)
        return {"Dice": f2(px["dice"]), "IoU": f2(px["iou"]), "HD95 (px)": f2(hd),
                "object F1 (found / true)": f"{f2(ob['f1'])} ({ob['n_pred']} / {ob['n_gt']})"}, \
            {**px, "hd95_px": hd, "object": ob}
    return table_cells(masks, measure)


def describe(masks: dict, kind: str) -> tuple[dict, dict]:
    """No ground truth: foreground fraction and object count (filaments: skeleton length in px)."""
    def measure(mask):
        fg = 100 * float(mask.mean())
        if kind == "filaments":
            length = int(np.count_nonzero(metrics.skeleton(mask)))
            return {"overlay only": f"{fg:.1f}% fg, skeleton {length} px"}, \
                {"foreground_pct": fg, "skeleton_px": length}
        n = metrics.label_objects(mask)[1]
        return {"overlay only": f"{fg:.1f}% fg, {n} objects"}, {"foreground_pct": fg, "objects": n}
    return table_cells(masks, measure)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=evaluate.HelpFormatter)
    parser.add_argument("--data-dir", "--data_dir", type=Path, default=ROOT.parent / "shared" / "realdata",
                        help="the shared real data (spots/, nuclei/, examples/)")
    parser.add_argument("--output-dir", "--output_dir", type=Path, default=Path("/tmp/synseg_bench"),
                        help="where overlays, masks, benchmark.md and results.json go")
    parser.add_argument("--repo", type=Path, default=ROOT,
                        help="checkout whose SynSeg_*.py scripts and models/*.pth are run")
    parser.add_argument("--no-synseg", action="store_true", help="baselines only (skip the SynSeg scripts)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per SynSeg script run")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run every method, score what has answers, print and write the table."""
    from tqdm import tqdm

    data = args.data_dir
    if not data.is_dir():
        print(f"realdata_benchmark.py: {data}: shared real data not found (expected spots/, nuclei/, "
              "examples/ there; see --data-dir)", file=sys.stderr)
        return 1
    inputs = find_inputs(data)
    if not any(inputs.values()):
        print(f"realdata_benchmark.py: {data}: none of spots/*_img.tif, nuclei/img2d.tif, examples/*.tif found",
              file=sys.stderr)
        return 1
    out = args.output_dir
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"data {data} -> {out}; load average {load:.2f} at start", flush=True)

    examples_by_task = {"vesicle": [p for p in inputs["examples"] if p.stem not in FILAMENT_EXAMPLES],
                        "cytoskeleton": [p for p in inputs["examples"] if p.stem in FILAMENT_EXAMPLES]}
    synseg = {}
    for task in SCRIPTS:
        images = examples_by_task[task]
        if task == "vesicle":
            images = [s[0] for s in inputs["spots"]] + [n[0] for n in inputs["nuclei"]] + images
        synseg[task] = ({}, "n/a (--no-synseg)", False) if args.no_synseg else run_synseg(
            task, images, out, args.repo, args.timeout)
    script_failed = any(failed for _, _, failed in synseg.values())

    work = ([("spots", p, extra, "vesicle") for p, extra in inputs["spots"]]
            + [("nuclei", p, extra, "vesicle") for p, extra in inputs["nuclei"]]
            + [("examples", p, None, "cytoskeleton" if p.stem in FILAMENT_EXAMPLES else "vesicle")
               for p in inputs["examples"]])
    rows, results = [], []
    for section, path, truth, task in tqdm(work, desc="benchmark", unit="image"):
        image = np.squeeze(tiffio.read_image(path)[0])
        kind = "filaments" if task == "cytoskeleton" else ("nuclei" if section == "nuclei" else "spots")
        masks = method_masks(image, kind, synseg_mask_for(path.stem, task, synseg))
        for method, mask in masks.items():
            if isinstance(mask, np.ndarray):
                tiffio.write_tiff(out / "masks" / method / f"{path.stem}_mask.tif", mask.astype(np.uint8) * 255)
        name = path.stem.replace("_img", "")
        points = evaluate.read_points(truth) if section == "spots" else None
        overlay = out / "overlays" / f"{section}_{name}.png"
        overlay_png(overlay, image, masks, points)
        if section == "spots":
            shift = annotation_offset(image, points)
            table, scores = score_spots(masks, points, shift)
            notes = {"F1 (precision / recall)": f"LoG tuned on the answers: F1 {REFERENCE_F1[name]}"
                     if name in REFERENCE_F1 else "",
                     "diagnostic: F1 with points moved onto the spots":
                     f"annotations sit ({shift[0]:+.2f}, {shift[1]:+.2f}) px (y, x) from the spots' centres"}
        elif section == "nuclei":
            table, scores = score_nuclei(masks, np.squeeze(tiffio.read_image(truth)[0]))
            notes = {"object F1 (found / true)": "objects: instance labels of mask2d.tif"}
        else:
            table, scores = describe(masks, kind)
            notes = {"overlay only": f"overlays/{overlay.name}"}
        for metric, cells in table.items():
            rows.append([section, name, metric, *cells, notes.get(metric, "")])
        results.append({"section": section, "image": path.name, "task": task, "overlay": str(overlay),
                        "methods": scores})

    header = ["data", "image", "metric", "SynSeg (default model)", "LoG", "Otsu", "Sato+Otsu", "note"]
    table = markdown_table(header, rows)
    elapsed = time.perf_counter() - t_start
    footer = (f"\nSpots scored as ../shared/realdata/README.md says (8-connected components, centroids, "
              f"one-to-one within {SPOT_TOL_PX:g} px). LoG threshold {LOG_SPOTS['threshold']} fixed, not tuned. "
              f"{elapsed:.0f} s, load average {load:.2f} at start.")
    print("\n" + table + "\n" + footer)
    with tiffio.atomic_path(out / "benchmark.md") as tmp:
        tmp.write_text(table + "\n" + footer + "\n")
    with tiffio.atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(evaluate.json_safe({"data_dir": str(data), "synseg": {
            t: r or f"{len(m)} masks" for t, (m, r, _) in synseg.items()}, "images": results,
            "elapsed_s": elapsed, "load_average": load}), indent=2) + "\n")
    print(f"-> {out}/benchmark.md, results.json, overlays/, masks/")
    if script_failed:
        print("realdata_benchmark.py: a SynSeg script failed; see the synseg_*.log files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
