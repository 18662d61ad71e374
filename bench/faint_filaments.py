"""Faint filaments beside bright regions: SynSeg_Cytoskeleton.py beside Sato + Otsu, flat and bright fields paired.

Example:
    .venv/bin/python bench/faint_filaments.py --output-dir /tmp/synseg_filaments            # 36 pairs, 6.7 MP
    .venv/bin/python bench/faint_filaments.py --output-dir /tmp/synseg_filaments --quick    # 12 pairs, 1.6 MP
Measured 2026-12-07 on the 2-core build machine shared with two training jobs: full 6.5 min (SynSeg 0.021
MP/s), --quick 3 min.

What is built (seeded; every bright image has a flat twin with the same structures, so recall is paired):
  (a) synthetic  `Cytoskeleton_generator.py --num-images 12 --image-size 384 --seed 4242 --bright-region-prob 0`
                 (8-bit images, exact masks). flat: the image as it is. bright: the same image plus a soft disc
                 (radius 40 px, 3 px Gaussian edge, peak 10 x the image's 99.9th percentile) at a random place
                 and a linear haze ramp (0 to 2 x the 99.9th percentile across the field, random direction),
                 the total saturating at 70% of the disc's peak (the plateau: pixels at that level). Both
                 written as uint16 on one scale per pair (nothing clips but the plateau), pixel size 0.1 um.
                 Truth: the generator mask; plateau pixels are left out of every score in both twins.
  (b) real       256 x 256 crops (the centre and the brightest region) of the shared images that have no
                 filaments (examples/v, img_hybiss_2d, img_terra_2d and nuclei/img2d; never Celegans_epithelia
                 or actin) plus 10 random smooth curves (persistence 50-300 px, 60-160 px long) with a Gaussian
                 profile of sigma 1 px and peak = k x the local noise (1.4826 x the median absolute value of the
                 image minus its 2 px Gaussian blur, in a 31 px window), k = 3, 5, 10; flat, and bright with the
                 same disc (peak 10 x the crop's 99.9th percentile) at the crop centre. Truth: the curves'
                 centre-line pixels. Written as float32 without a pixel size (segmented at their own scale).
Methods: SynSeg_Cytoskeleton.py -m MODEL (one run over all images), skeleton of its mask; Sato + Otsu:
skimage.filters.sato(image, sigmas 1-2, bright ridges), Otsu threshold on the response, skeletonize.
Scores (counts pooled over images): skeleton recall = share of the truth skeleton within 2 px of the predicted
skeleton, skeleton precision = share of the predicted skeleton within 2 px of the truth skeleton, pixel Dice
((a) only); "beside" = truth within 50 px of the plateau (outside it), scored in the bright image and in its
flat twin: the key number is recall(bright) - recall(flat) (target: no worse than -0.03). Prints markdown
tables and writes faint_filaments.md and faint_filaments.json to --output-dir. Not part of `make test`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the synseg package of this checkout

from synseg import cli  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))

from faint_spots import crops_of  # noqa: E402

TOL_PX = 2.0
BESIDE_PX = 50.0
BODY_RADIUS, BODY_EDGE, BODY_PEAK, SATURATE_AT = 40.0, 3.0, 10.0, 0.7
RAMP = 2.0  # haze ramp height in units of the image's 99.9th percentile
PIXEL_UM = 0.1
REAL_SOURCES = ("examples/v.tif", "examples/img_hybiss_2d.tif", "examples/img_terra_2d.tif", "nuclei/img2d.tif")
FILAMENT_IMAGES = ("Celegans_epithelia", "actin")  # never a background: they have filaments of their own
CROP = 256
SNRS = (3.0, 5.0, 10.0)
N_CURVES, CURVE_LENGTH, PERSISTENCE, CURVE_SIGMA = 10, (60.0, 160.0), (50.0, 300.0), 1.0
NOISE_WINDOW = 31
SATO_SIGMAS = (1.0, 1.5, 2.0)


# ---------------------------------------------------------------- scoring (pure)

def skeletonize(mask: np.ndarray) -> np.ndarray:
    """One-pixel centre lines of a mask (bool)."""
    from skimage.morphology import skeletonize as sk

    m = np.asarray(mask) != 0
    return sk(m) if m.any() else m


def near(skel: np.ndarray, tol: float = TOL_PX) -> np.ndarray:
    """Pixels within `tol` px of any pixel of `skel` (all False when it is empty)."""
    from scipy import ndimage

    skel = np.asarray(skel, bool)
    return ndimage.distance_transform_edt(~skel) <= tol if skel.any() else np.zeros(skel.shape, bool)


def skeleton_counts(pred_skel: np.ndarray, truth_skel: np.ndarray, recall_region: np.ndarray,
                    precision_region: np.ndarray, tol: float = TOL_PX) -> dict:
    """Counts for skeleton recall (truth pixels in recall_region within tol of the prediction) and precision
    (predicted pixels in precision_region within tol of the truth)."""
    t = truth_skel & recall_region
    p = pred_skel & precision_region
    return {"truth": int(t.sum()), "truth_hit": int((t & near(pred_skel, tol)).sum()),
            "pred": int(p.sum()), "pred_hit": int((p & near(truth_skel, tol)).sum())}


def dice_counts(pred: np.ndarray, truth: np.ndarray, region: np.ndarray) -> dict:
    """Pixel overlap counts within region (Dice = 2 inter / (pred + truth))."""
    p, t = pred & region, truth & region
    return {"inter": int((p & t).sum()), "pred_px": int(p.sum()), "truth_px": int(t.sum())}


def add_counts(total: dict, counts: dict) -> dict:
    """total += counts, key by key (in place, returned)."""
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v
    return total


def rates(c: dict) -> dict:
    """Recall, precision (and Dice where the counts have it) of pooled counts; nan where nothing was counted."""
    out = {"recall": c["truth_hit"] / c["truth"] if c.get("truth") else float("nan"),
           "precision": c["pred_hit"] / c["pred"] if c.get("pred") else float("nan"), "n_truth_px": c.get("truth", 0)}
    if "inter" in c:
        s = c["pred_px"] + c["truth_px"]
        out["dice"] = 2 * c["inter"] / s if s else float("nan")
    return out


def local_noise(image: np.ndarray, window: int = NOISE_WINDOW) -> np.ndarray:
    """Per-pixel noise: 1.4826 x the median absolute residual (image - its 2 px Gaussian blur) in a window."""
    from scipy import ndimage

    x = image.astype(np.float32)
    resid = np.abs(x - ndimage.gaussian_filter(x, 2.0))
    med = ndimage.median_filter(resid[::3, ::3], size=max(1, window // 3))  # on a 3x-strided grid, for speed
    full = np.kron(med, np.ones((3, 3), np.float32))[: x.shape[0], : x.shape[1]]
    floor = 0.25 * max(float(np.median(resid[resid > 0])) if np.any(resid > 0) else 1.0, 1e-3)
    return 1.4826 * np.maximum(full, floor)


def bright_body(image: np.ndarray, centre: tuple[float, float], ramp_angle: float | None = None) -> np.ndarray:
    """The image (float) plus a soft disc of peak BODY_PEAK x its 99.9th percentile (and a haze ramp when
    ramp_angle is given), the total clipped at SATURATE_AT x the disc's peak (a saturated camera)."""
    from scipy import ndimage

    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    disc = ndimage.gaussian_filter((np.hypot(yy - centre[0], xx - centre[1]) <= BODY_RADIUS).astype(np.float64),
                                   BODY_EDGE)
    top = max(float(np.percentile(image, 99.9)), 1e-6)
    peak = BODY_PEAK * top
    total = image.astype(np.float64) + peak * disc
    if ramp_angle is not None:
        proj = yy * np.sin(ramp_angle) + xx * np.cos(ramp_angle)
        total += RAMP * top * (proj - proj.min()) / max(np.ptp(proj), 1e-9)
    return np.minimum(total, SATURATE_AT * peak)


def plateau_of(bright: np.ndarray) -> np.ndarray:
    """The saturated pixels of a bright image: those at its maximum."""
    return bright >= bright.max()


# ---------------------------------------------------------------- structures

def random_curves(rng: np.random.Generator, shape, n: int = N_CURVES) -> list[np.ndarray]:
    """n smooth curves as (k, 2) y, x samples every 0.5 px: a heading random walk (persistence 50-300 px),
    60-160 px long, stopped 3 px from the border."""
    h, w = shape
    curves = []
    for _ in range(n):
        y, x = rng.uniform(10, h - 10), rng.uniform(10, w - 10)
        heading = rng.uniform(0, 2 * np.pi)
        length, lp = rng.uniform(*CURVE_LENGTH), rng.uniform(*PERSISTENCE)
        pts = []
        for _ in range(int(length / 0.5)):
            if not (3 <= y <= h - 4 and 3 <= x <= w - 4):
                break
            pts.append((y, x))
            heading += rng.normal(0, np.sqrt(0.5 / lp))
            y, x = y + 0.5 * np.sin(heading), x + 0.5 * np.cos(heading)
        if len(pts) > 20:
            curves.append(np.array(pts))
    return curves


def render_curves(shape, curves: list[np.ndarray], amplitude: np.ndarray, sigma: float = CURVE_SIGMA) -> np.ndarray:
    """Curves drawn with a Gaussian cross-section of `sigma` px whose peak (on a straight stretch) is the
    amplitude image at each sample: weights splatted bilinearly, then a Gaussian blur."""
    from scipy import ndimage

    h, w = shape
    acc = np.zeros((h + 1, w + 1), np.float64)
    for c in curves:
        yi, xi = np.floor(c[:, 0]).astype(int), np.floor(c[:, 1]).astype(int)
        fy, fx = c[:, 0] - yi, c[:, 1] - xi
        ij = np.rint(c).astype(int)
        wgt = amplitude[np.clip(ij[:, 0], 0, h - 1), np.clip(ij[:, 1], 0, w - 1)]
        wgt = wgt * 0.5 * np.sqrt(2 * np.pi) * sigma  # 0.5 px per sample; a unit line density peaks at 1/(sqrt(2pi) s)
        for dy, dx, f in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            np.add.at(acc, (yi + dy, xi + dx), wgt * f)
    return ndimage.gaussian_filter(acc[:h, :w], sigma)


def centre_lines(shape, curves: list[np.ndarray]) -> np.ndarray:
    """The curves' centre-line pixels (bool)."""
    out = np.zeros(shape, bool)
    for c in curves:
        ij = np.rint(c).astype(int)
        out[np.clip(ij[:, 0], 0, shape[0] - 1), np.clip(ij[:, 1], 0, shape[1] - 1)] = True
    return out


def beside_region(plateau: np.ndarray, within: float = BESIDE_PX) -> np.ndarray:
    """Pixels outside the plateau within `within` px of it."""
    from scipy import ndimage

    if not plateau.any():
        return np.zeros(plateau.shape, bool)
    d = ndimage.distance_transform_edt(~plateau)
    return (d > 0) & (d <= within)


# ---------------------------------------------------------------- building the sets

def write_tif(path: Path, image: np.ndarray, pixel_um: float | None) -> None:
    """A 2D TIFF, with an ImageJ pixel size when pixel_um is given."""
    import tifffile

    if pixel_um:
        tifffile.imwrite(path, image, imagej=True, resolution=(1 / pixel_um, 1 / pixel_um), metadata={"unit": "um"})
    else:
        tifffile.imwrite(path, image)


def build_synthetic(args, images: Path) -> list[dict]:
    """Run the generator, write the flat/bright pairs; one record per pair."""
    import tifffile

    gen = args.output_dir / "generated"
    cmd = [sys.executable, str(args.repo / "Cytoskeleton_generator.py"), "--output-dir", str(gen), "--num-images",
           str(args.num_images), "--image-size", str(args.image_size), "--seed", str(args.gen_seed),
           "--bright-region-prob", "0", "--val-fraction", "0", "--overwrite"]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=args.repo, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"Cytoskeleton_generator.py failed (exit {proc.returncode}): {proc.stderr[-500:]}")
    rng = np.random.default_rng([args.seed, 1])
    records = []
    for img_path in sorted((gen / "train" / "img").glob("*.tif")):
        flat = np.squeeze(tifffile.imread(img_path)).astype(np.float64)
        truth = np.load(gen / "train" / "mask" / f"{img_path.stem}.npy") != 0
        h, w = flat.shape
        m = BODY_RADIUS + 10
        centre = (rng.uniform(m, h - m), rng.uniform(m, w - m))
        bright = bright_body(flat, centre, ramp_angle=rng.uniform(0, 2 * np.pi))
        plateau = plateau_of(bright)
        scale = 60000.0 / bright.max()  # one scale for the pair: nothing clips but the plateau
        name = f"syn_{img_path.stem}"
        write_tif(images / f"{name}_flat.tif", np.rint(flat * scale).astype(np.uint16), PIXEL_UM)
        write_tif(images / f"{name}_bright.tif", np.rint(bright * scale).astype(np.uint16), PIXEL_UM)
        records.append({"name": name, "part": "synthetic", "truth_mask": truth & ~plateau,
                        "truth_skel": skeletonize(truth) & ~plateau, "plateau": plateau,
                        "beside": beside_region(plateau)})
    return records


def build_real(args, images: Path) -> list[dict]:
    """Curves pasted on real non-filament crops at each SNR, flat and bright; one record per (crop, SNR)."""
    import tifffile

    rng = np.random.default_rng([args.seed, 2])
    records = []
    for rel in REAL_SOURCES:
        path = args.data_dir / rel
        if not path.is_file() or path.stem in FILAMENT_IMAGES:
            print(f"  skipping background {path} ({'missing' if not path.is_file() else 'has filaments'})")
            continue
        image = np.squeeze(tifffile.imread(path)).astype(np.float64)
        if image.ndim != 2:
            print(f"  skipping background {path}: not 2D ({image.shape})")
            continue
        corners = crops_of(image, CROP)[: 1 if args.quick else 2]
        for k, (y0, x0) in enumerate(corners):
            crop = image[y0:y0 + CROP, x0:x0 + CROP]
            noise = local_noise(crop)
            curves = random_curves(rng, crop.shape)
            lines = centre_lines(crop.shape, curves)
            centre = (crop.shape[0] / 2, crop.shape[1] / 2)
            bright_bg = bright_body(crop, centre)
            sat = bright_bg.max()
            for snr in args.snrs:
                fil = render_curves(crop.shape, curves, snr * noise)
                name = f"real_{path.stem}_c{k}_snr{snr:g}"
                bright = np.minimum(bright_bg + fil, sat)
                plateau = bright >= sat
                write_tif(images / f"{name}_flat.tif", (crop + fil).astype(np.float32), None)
                write_tif(images / f"{name}_bright.tif", bright.astype(np.float32), None)
                records.append({"name": name, "part": "real", "source": path.stem, "snr": snr,
                                "truth_mask": lines & ~plateau, "truth_skel": lines & ~plateau, "plateau": plateau,
                                "beside": beside_region(plateau)})
    return records


# ---------------------------------------------------------------- methods

def sato_otsu(image: np.ndarray) -> np.ndarray:
    """Sato ridge filter (bright ridges, sigmas 1-2 px) on the image, Otsu threshold on the response."""
    from skimage.filters import sato, threshold_otsu

    r = sato(image.astype(np.float64), sigmas=SATO_SIGMAS, black_ridges=False)
    return r > threshold_otsu(r) if np.ptp(r) > 0 else np.zeros(r.shape, bool)


def run_synseg(images: Path, out: Path, args) -> float:
    """SynSeg_Cytoskeleton.py over the image folder; its wall seconds."""
    cmd = [sys.executable, str(args.repo / "SynSeg_Cytoskeleton.py"), "-i", str(images), "-o", str(out),
           "--overwrite", "-m", str(args.model), "--device", args.device]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=args.repo, capture_output=True, text=True)
    (args.output_dir / "synseg.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"SynSeg_Cytoskeleton.py failed (exit {proc.returncode}): {last}")
    return time.perf_counter() - t0


def score_pair(rec: dict, masks: dict) -> dict:
    """{(method, condition): counts} of one flat/bright pair; plateau pixels are left out in both twins."""
    keep = ~rec["plateau"]
    out = {}
    for (method, cond), mask in masks.items():
        skel = skeletonize(mask)
        c = {f"all_{k}": v for k, v in skeleton_counts(skel, rec["truth_skel"], keep, keep).items()}
        c.update({f"beside_{k}": v for k, v in skeleton_counts(skel, rec["truth_skel"], rec["beside"],
                                                               rec["beside"]).items()})
        c.update(dice_counts(mask, rec["truth_mask"], keep))
        c["plateau_px"], c["plateau_called"] = int(rec["plateau"].sum()), int((mask & rec["plateau"]).sum())
        out[(method, cond)] = c
    return out


def pooled_rates(c: dict, prefix: str) -> dict:
    """rates() of the counts under one prefix (all_ or beside_)."""
    sub = {k[len(prefix):]: v for k, v in c.items() if k.startswith(prefix)}
    if prefix == "all_":
        sub.update({k: c[k] for k in ("inter", "pred_px", "truth_px")})
    return rates(sub)


def tables(pools: dict, snrs) -> tuple[str, dict]:
    """Markdown and a JSON-ready dict of the pooled counts."""
    f = lambda v: "n/a" if v != v else f"{v:.3f}"  # noqa: E731  (nan -> n/a)
    results = {}
    lines = ["## (a) Generator images, flat vs. bright twin (bright disc + haze ramp), plateau excluded", "",
             "| method | recall beside, flat | recall beside, bright | bright - flat | precision beside flat / bright "
             "| skel R flat / bright | skel P flat / bright | Dice flat / bright | plateau called |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in ("SynSeg", "Sato+Otsu"):
        fl, br = pools.get(("synthetic", None, method, "flat")), pools.get(("synthetic", None, method, "bright"))
        if fl is None:
            continue
        bf, bb = pooled_rates(fl, "beside_"), pooled_rates(br, "beside_")
        af, ab = pooled_rates(fl, "all_"), pooled_rates(br, "all_")
        plat = br["plateau_called"] / max(br["plateau_px"], 1)
        results[f"synthetic/{method}"] = {"beside_flat": bf, "beside_bright": bb, "all_flat": af, "all_bright": ab,
                                          "delta_recall_beside": bb["recall"] - bf["recall"], "plateau_called": plat}
        lines.append(f"| {method} | {f(bf['recall'])} | {f(bb['recall'])} | {bb['recall'] - bf['recall']:+.3f} | "
                     f"{f(bf['precision'])} / {f(bb['precision'])} | {f(af['recall'])} / {f(ab['recall'])} | "
                     f"{f(af['precision'])} / {f(ab['precision'])} | {f(af['dice'])} / {f(ab['dice'])} | {plat:.3f} |")
    lines += ["", "## (b) Curves pasted on real non-filament crops, skeleton recall / precision at 2 px", "",
              "| SNR | method | R flat (all) | P flat (all) | R bright (all) | P bright (all) | R beside flat "
              "| R beside bright | bright - flat | P beside flat / bright |", "|---" * 10 + "|"]
    for snr in snrs:
        for method in ("SynSeg", "Sato+Otsu"):
            fl, br = pools.get(("real", snr, method, "flat")), pools.get(("real", snr, method, "bright"))
            if fl is None:
                continue
            af, ab = pooled_rates(fl, "all_"), pooled_rates(br, "all_")
            bf, bb = pooled_rates(fl, "beside_"), pooled_rates(br, "beside_")
            results[f"real/snr{snr:g}/{method}"] = {"all_flat": af, "all_bright": ab, "beside_flat": bf,
                                                    "beside_bright": bb,
                                                    "delta_recall_beside": bb["recall"] - bf["recall"]}
            lines.append(f"| {snr:g} | {method} | {f(af['recall'])} | {f(af['precision'])} | {f(ab['recall'])} | "
                         f"{f(ab['precision'])} | {f(bf['recall'])} | {f(bb['recall'])} | "
                         f"{bb['recall'] - bf['recall']:+.3f} | {f(bf['precision'])} / {f(bb['precision'])} |")
    return "\n".join(lines), results


def no_nan(value):
    """The same structure with every float nan replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--output-dir", type=Path, default=Path("/tmp/synseg_filaments"), help="images, masks, tables")
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "realdata", help="shared real data")
    p.add_argument("-m", "--model", type=Path, default=None,
                   help="cytoskeleton checkpoint (default: REPO/models/cytoskeleton.pth)")
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout whose generator and SynSeg_Cytoskeleton.py run")
    p.add_argument("--num-images", type=int, default=12, help="generator images for part (a)")
    p.add_argument("--image-size", type=int, default=384, help="generator image size in px")
    p.add_argument("--gen-seed", type=int, default=4242, help="generator seed")
    p.add_argument("--snrs", type=float, nargs="+", default=list(SNRS), help="part (b) curve peak / local noise")
    p.add_argument("--seed", type=int, default=7, help="bodies, ramps and curves")
    p.add_argument("--device", default="auto", help="SynSeg device: auto, cpu, cuda")
    p.add_argument("--quick", action="store_true",
                   help="a small run: 4 images of 256 px for (a); centre crops at SNR 3 and 10 for (b)")
    p.add_argument("--no-synseg", action="store_true", help="Sato + Otsu only")
    return p


def main(args: argparse.Namespace) -> int:
    """Build both sets, segment, score, print and write the tables."""
    import tifffile

    args.model = args.model or args.repo / "models" / "cytoskeleton.pth"
    if args.quick:
        args.num_images, args.image_size, args.snrs = 4, 256, [3.0, 10.0]
    if args.image_size < 2 * BODY_RADIUS + 40 or args.num_images < 1:
        print(f"faint_filaments.py: need --image-size >= {2 * BODY_RADIUS + 40:g} and --num-images >= 1",
              file=sys.stderr)
        return 2
    if not args.no_synseg and not args.model.is_file():
        print(f"faint_filaments.py: {args.model}: no such model (see -m)", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    images = args.output_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.glob("*.tif"):  # our own folder: a smaller re-run must not segment stale images
        old.unlink()
    records = build_synthetic(args, images)
    if (args.data_dir / "examples").is_dir():
        records += build_real(args, images)
    else:
        print(f"  {args.data_dir}: no shared real data; part (b) skipped", file=sys.stderr)
    n_px = sum(2 * r["plateau"].size for r in records)
    print(f"{2 * len(records)} images ({n_px / 1e6:.1f} MP) in {images} ({time.perf_counter() - t0:.0f} s)", flush=True)
    seconds = 0.0
    if not args.no_synseg:
        seconds = run_synseg(images, args.output_dir / "synseg", args)
        print(f"  SynSeg: {seconds:.0f} s for {n_px / 1e6:.1f} MP ({n_px / 1e6 / seconds:.3f} MP/s)", flush=True)
    pools: dict = {}
    for rec in records:
        masks = {}
        for cond in ("flat", "bright"):
            image = tifffile.imread(images / f"{rec['name']}_{cond}.tif")
            masks[("Sato+Otsu", cond)] = sato_otsu(image)
            if not args.no_synseg:
                masks[("SynSeg", cond)] = np.squeeze(tifffile.imread(args.output_dir / "synseg" /
                                                                     f"{rec['name']}_{cond}_mask.tif")) != 0
        for (method, cond), c in score_pair(rec, masks).items():
            add_counts(pools.setdefault((rec["part"], rec.get("snr"), method, cond), {}), c)
    text, results = tables(pools, args.snrs)
    text += (f"\n\n{len(records)} pairs; model {args.model}; generator seed {args.gen_seed}, seed {args.seed}; "
             f"SynSeg {seconds:.0f} s, total {time.perf_counter() - t0:.0f} s")
    print(text)
    (args.output_dir / "faint_filaments.md").write_text(text + "\n")
    (args.output_dir / "faint_filaments.json").write_text(json.dumps(
        no_nan({"args": {k: str(v) for k, v in vars(args).items()}, "synseg_seconds": seconds, "results": results}),
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
