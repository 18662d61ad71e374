"""Real-data benchmark: SynSeg's default models beside classical baselines on ../shared/realdata.

Example:
    .venv/bin/python bench/realdata_benchmark.py --output-dir /tmp/synseg_bench

What runs, all with fixed settings (nothing is tuned on the answers):
  SynSeg     `python SynSeg_Vesicle.py -i ... -o ...` and `python SynSeg_Cytoskeleton.py ...` with their
             defaults (models/vesicle.pth, models/cytoskeleton.pth); a missing model gives n/a
  LoG        skimage blob_log (sigma 1-4 px) on the image scaled 0..1 (1st..99.9th percentile), at
             skimage's default threshold 0.2 and at 0.1; spots are scored by the blob centres
  Big-FISH   bigfish.detection.detect_spots with its automatic (elbow) threshold, spot sigma 1.5 px
             (package big-fish-reloaded, installed by `make bench`; n/a when it is missing)
  Otsu       Otsu threshold of the scaled image after a Gaussian blur of 1 px
  Sato+Otsu  Sato ridge filter (bright ridges, sigmas 1-3 px), then Otsu on the ridge response
What is scored:
  spots/     vesicle model, LoG (0.2 and 0.1), Big-FISH against the expert points, one-to-one matching
             within 3 px (as ../shared/realdata/README.md prescribes; SynSeg by its mask's component
             centroids) and within 1.5 px (are the centres right, not just near?)
  nuclei/    vesicle model, LoG (nucleus-sized sigmas), Otsu: Dice, IoU, HD95 (px), object F1 vs mask2d.tif
  examples/  no ground truth: overlays, foreground fraction and object count; filament images
             (image | SynSeg | Sato+Otsu) also get the share of the skeleton within 3 px of the cell
             outline (Otsu on a 5 px Gaussian blur; a cell-edge artefact measure) and the mean branch
             length of the skeleton in px (fragmentation: longer is better)
Prints two markdown tables (spots first); writes benchmark.md, results.json, overlays/*.png and masks
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

from synseg import cli  # noqa: E402
import evaluate  # noqa: E402
from synseg import metrics  # noqa: E402
from synseg import tiffio  # noqa: E402
from synseg.tasks import TASKS  # noqa: E402

SCRIPTS = {t.name: (t.script, t.model) for t in TASKS.values()}  # task -> (segmentation script, shipped model)
FILAMENT_EXAMPLES = ("Celegans_epithelia", "actin")  # every other example image is spot-like
LOG_SPOTS = dict(min_sigma=1.0, max_sigma=4.0, num_sigma=7, threshold=0.2)  # diffraction-limited spots
SPOT_PEERS = ("LoG 0.2", "LoG 0.1", "Big-FISH")
BIGFISH = dict(voxel_size=(100, 100), spot_radius=(150, 150))  # nm: a 1.5 px spot sigma on any image
LOG_NUCLEI = dict(min_sigma=4.0, max_sigma=16.0, num_sigma=7, threshold=0.2)  # nuclei 10-45 px across
RIDGE_SIGMAS = (1.0, 2.0, 3.0)
SPOT_TOL_PX = 3.0
SPOT_TOL_TIGHT_PX = 1.5
EDGE_PX = 3.0  # skeleton within this distance of the cell outline counts as on the edge
# LoG with its threshold tuned per image on the answers (../shared/realdata/README.md; optimistic)
REFERENCE_F1 = {"beads_300px": 0.974, "smfish_293T_TFRC": 0.936, "iss_tissue_rnd0_ch3_z0": 0.905}
METHODS = ("SynSeg", "LoG", "Otsu", "Sato+Otsu")
COLOURS = {"SynSeg": (1.0, 0.25, 0.1), "LoG": (0.75, 0.3, 1.0), "Otsu": (1.0, 0.85, 0.0),
           "Sato+Otsu": (0.2, 0.9, 0.3)}


# ---------------------------------------------------------------- classical baselines

def scale01(image) -> np.ndarray:
    """The image scaled 0..1 between its 1st and 99.8th percentiles (display and the mask baselines)."""
    return tiffio.stretch(image, 1.0, 99.8)


def log_points(image, threshold: float) -> np.ndarray:
    """(n, 2) y, x of LoG blobs (sigma 1-4 px) on the 1st..99.9th percentile stretch, as the shared README."""
    from skimage.feature import blob_log

    a = tiffio.stretch(image, 1.0, 99.9)
    opts = dict(LOG_SPOTS, threshold=threshold)
    return blob_log(a, **opts)[:, :2].astype(np.float64).reshape(-1, 2)


def bigfish_points(image):
    """(n, 2) y, x from Big-FISH detect_spots with its automatic threshold, or None when not installed."""
    try:
        import bigfish.detection as bfd
    except ImportError:
        return None
    import warnings

    with warnings.catch_warnings():  # it warns about float conversion and threshold choice on every image
        warnings.simplefilter("ignore")
        found = bfd.detect_spots(np.asarray(image), return_threshold=False, **BIGFISH)
    return np.asarray(found, np.float64)[:, :2].reshape(-1, 2)


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


def spot_calls(masks: dict, image) -> dict:
    """{method: (n, 2) y, x calls or an n/a text}: SynSeg's mask component centroids and the peers' points."""
    synseg = masks.get("SynSeg")
    calls = {"SynSeg": metrics.component_centroids(synseg, connectivity=2) if isinstance(synseg, np.ndarray)
             else synseg}
    calls["LoG 0.2"] = log_points(image, 0.2)
    calls["LoG 0.1"] = log_points(image, 0.1)
    found = bigfish_points(image)
    calls["Big-FISH"] = found if found is not None else "n/a (big-fish-reloaded not installed: make bench)"
    return calls


def score_spots(calls: dict, points) -> dict:
    """{method: scores} at 3 px (f1, precision, recall, n_pred, n_gt) plus f1_tight at 1.5 px."""
    out = {}
    for method, yx in calls.items():
        if isinstance(yx, str):
            out[method] = {"na": yx}
            continue
        s = metrics.point_scores(yx, points, tol=SPOT_TOL_PX)
        s["f1_tight"] = metrics.point_scores(yx, points, tol=SPOT_TOL_TIGHT_PX)["f1"]
        out[method] = s
    return out


def spot_rows(name: str, scores: dict) -> list:
    """Markdown rows of one spot image: one per method."""
    rows = []
    for method, s in scores.items():
        if "na" in s:
            rows.append([name, method, s["na"], "", ""])
            continue
        rows.append([name, method, f"{s['f1']:.3f} ({f2(s['precision'])} / {f2(s['recall'])})",
                     f"{s['f1_tight']:.3f}", f"{s['n_pred']} / {s['n_gt']}"])
    if name in REFERENCE_F1:
        rows.append([name, "LoG tuned on the answers (README, optimistic)", f"{REFERENCE_F1[name]:.3f}", "", ""])
    return rows


def spot_overlay_png(path: Path, image, points, calls: dict, scores: dict) -> None:
    """Image | the same with expert points (cyan rings), SynSeg's calls (red +), the best peer's (yellow x)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [m for m in SPOT_PEERS if "f1" in scores.get(m, {})]
    best = max(peers, key=lambda m: scores[m]["f1"]) if peers else None
    grey = tiffio.stretch(image, 1.0, 99.9)
    side = min(10.0, max(5.0, grey.shape[1] / 100))
    fig, axes = plt.subplots(1, 2, figsize=(2 * side, side * grey.shape[0] / grey.shape[1] + 0.5), squeeze=False)
    for ax in axes[0]:
        ax.imshow(grey, cmap="gray", interpolation="nearest")
        ax.autoscale(False)
        ax.set_axis_off()
    axes[0][0].set_title(path.stem, fontsize=10)
    ax = axes[0][1]
    ax.plot(points[:, 1], points[:, 0], "o", mfc="none", mec="cyan", ms=7, mew=0.7, label="expert")
    title = []
    for method, style in (("SynSeg", dict(marker="+", color="red")), (best, dict(marker="x", color="yellow"))):
        if method and isinstance(calls.get(method), np.ndarray):
            yx = calls[method]
            ax.plot(yx[:, 1], yx[:, 0], ls="none", ms=4, mew=0.7, label=method, **style)
            title.append(f"{method} F1 {scores[method]['f1']:.3f}")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    ax.set_title(" | ".join(title), fontsize=10)
    fig.tight_layout()
    with tiffio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ---------------------------------------------------------------- filament measures without annotation

def cell_outline(image, blur_px: float = 5.0) -> np.ndarray:
    """Boundary pixels of the cell region: Otsu on a Gaussian blur of the scaled image."""
    from skimage.filters import gaussian, threshold_otsu
    from scipy import ndimage

    a = gaussian(scale01(image), sigma=blur_px)
    if np.ptp(a) <= 0:
        return np.zeros(a.shape, bool)
    cells = a > threshold_otsu(a)
    return cells & ~ndimage.binary_erosion(cells, border_value=1)


def edge_share(mask, outline, tol: float = EDGE_PX) -> float:
    """Fraction of the mask's skeleton within `tol` px of the cell outline (nan for an empty skeleton)."""
    from scipy import ndimage

    sk = metrics.skeleton(mask)
    if not sk.any():
        return float("nan")
    if not outline.any():
        return 0.0
    dist = ndimage.distance_transform_edt(~outline)
    return float(np.mean(dist[sk] <= tol))


def mean_branch_length(mask) -> float:
    """Mean length in px of the skeleton's branches: skeleton pixels, junction pixels removed, per piece."""
    from scipy import ndimage

    sk = metrics.skeleton(mask)
    if not sk.any():
        return float("nan")
    neighbours = ndimage.convolve(sk.astype(np.uint8), np.ones((3, 3), np.uint8), mode="constant") - 1
    branches = sk & ~(neighbours >= 3)
    labels, n = ndimage.label(branches, structure=np.ones((3, 3)))
    return float(np.count_nonzero(branches) / n) if n else float(np.count_nonzero(sk))


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


def describe(masks: dict, kind: str, image=None) -> tuple[dict, dict]:
    """No ground truth: foreground fraction and object count; filaments: skeleton length, the share of
    the skeleton on the cell outline and the mean branch length (needs `image` for the outline)."""
    outline = cell_outline(image) if kind == "filaments" and image is not None else None

    def measure(mask):
        fg = 100 * float(mask.mean())
        if kind == "filaments":
            length = int(np.count_nonzero(metrics.skeleton(mask)))
            share = edge_share(mask, outline) if outline is not None else float("nan")
            branch = mean_branch_length(mask)
            return {"overlay only": f"{fg:.1f}% fg, skeleton {length} px",
                    f"skeleton share within {EDGE_PX:g} px of the cell outline": f2(share),
                    "mean branch length (px)": f"{branch:.1f}"}, \
                {"foreground_pct": fg, "skeleton_px": length, "edge_share": share, "mean_branch_px": branch}
        n = metrics.label_objects(mask)[1]
        return {"overlay only": f"{fg:.1f}% fg, {n} objects"}, {"foreground_pct": fg, "objects": n}
    return table_cells(masks, measure)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
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
    rows, spot_table, results = [], [], []
    for section, path, truth, task in tqdm(work, desc="benchmark", unit="image"):
        image = np.squeeze(tiffio.read_image(path)[0])
        kind = "filaments" if task == "cytoskeleton" else ("nuclei" if section == "nuclei" else "spots")
        masks = method_masks(image, kind, synseg_mask_for(path.stem, task, synseg))
        for method, mask in masks.items():
            if isinstance(mask, np.ndarray):
                tiffio.write_tiff(out / "masks" / method / f"{path.stem}_mask.tif", mask.astype(np.uint8) * 255)
        name = path.stem.replace("_img", "")
        overlay = out / "overlays" / f"{section}_{name}.png"
        if section == "spots":
            points = evaluate.read_points(truth)
            calls = spot_calls(masks, image)
            scores = score_spots(calls, points)
            spot_table += spot_rows(name, scores)
            spot_overlay_png(overlay, image, points, calls, scores)
            results.append({"section": section, "image": path.name, "task": task, "overlay": str(overlay),
                            "methods": scores})
            continue
        overlay_png(overlay, image, masks)
        if section == "nuclei":
            table, scores = score_nuclei(masks, np.squeeze(tiffio.read_image(truth)[0]))
            notes = {"object F1 (found / true)": "objects: instance labels of mask2d.tif"}
        else:
            table, scores = describe(masks, kind, image)
            notes = {"overlay only": f"overlays/{overlay.name}"}
        for metric, cells in table.items():
            rows.append([section, name, metric, *cells, notes.get(metric, "")])
        results.append({"section": section, "image": path.name, "task": task, "overlay": str(overlay),
                        "methods": scores})

    spot_md = markdown_table(["image", "method", f"F1 at {SPOT_TOL_PX:g} px (precision / recall)",
                              f"F1 at {SPOT_TOL_TIGHT_PX:g} px", "found / annotated"], spot_table)
    header = ["data", "image", "metric", "SynSeg (default model)", "LoG", "Otsu", "Sato+Otsu", "note"]
    table = spot_md + "\n\n" + markdown_table(header, rows)
    elapsed = time.perf_counter() - t_start
    footer = (f"\nSpots scored as ../shared/realdata/README.md says (one-to-one within {SPOT_TOL_PX:g} px; SynSeg "
              f"by its mask's 8-connected component centroids). Peers at fixed settings, not tuned. "
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
