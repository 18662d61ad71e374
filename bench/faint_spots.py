"""Faint spots on real backgrounds: Gaussian spots of known position and SNR pasted onto the shared real images.

Example:
    .venv/bin/python bench/faint_spots.py --output-dir /tmp/synseg_faint

What is built (all seeded, nothing read from any answer but the shared point files):
  backgrounds  two 300 x 300 crops of every image in ../shared/realdata/spots and examples: the image
               centre and the window around its brightest large region (a Gaussian blur of 20 px peaks
               there), so bright cell bodies and tissue share the field with the pasted spots
  keep-out     where the image already has spots: within 5 px of an annotated point (spots/) or of a LoG
               detection at threshold 0.05 (examples/, which have no annotations); no spot is pasted
               there and calls there are ignored (neither right nor wrong)
  spots        Gaussians of sigma 1.0-1.6 px at sub-pixel positions, at least 8 px apart, with peak
               amplitude = SNR x the local noise (1.4826 x MAD of the image minus its 2-px Gaussian
               blur, in a 31 x 31 window around the spot); SNR 3, 5, 7, 10, 15; 50, 100 or 150 spots per crop
  bright       the same crops with a saturated bright body (radius 35 px, soft 3 px edge, 10 x the crop's
               1st-99.9th percentile range, clipped flat at 70% of that) pasted at the centre; spots are
               pasted at the same positions except under the body's plateau, and recall is compared on
               the spots within 40 px of its edge, against the same spots without the body
Methods at fixed settings: SynSeg_Vesicle.py with its defaults (component centroids of the mask), LoG
(skimage blob_log, sigma 1-4, 1st-99.9th percentile stretch) at thresholds 0.05, 0.1 and 0.2, Big-FISH
detect_spots with its automatic threshold (when big-fish-reloaded is installed: `make bench`).
Scored by one-to-one matching within 3 px; counts pooled over crops. Prints markdown tables and writes
faint_spots.md and faint_spots.json to --output-dir. Not part of `make test`.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from synseg import cli  # noqa: E402
from synseg import metrics  # noqa: E402
import realdata_benchmark as rb  # noqa: E402
from synseg import tiffio  # noqa: E402

CROP = 300
SNRS = (3.0, 5.0, 7.0, 10.0, 15.0)
DENSITIES = (50, 100, 150)
KEEP_OUT_PX = 5.0
MIN_GAP_PX = 8.0
SIGMA_PX = (1.0, 1.6)
NOISE_WINDOW = 31
BODY_RADIUS, BODY_EDGE, BODY_BESIDE = 35.0, 3.0, 40.0
LOG_THRESHOLDS = (0.05, 0.1, 0.2)
TOL_PX = 3.0


def crops_of(image: np.ndarray, size: int = CROP) -> list[tuple[int, int]]:
    """Top-left corners of the centre crop and of the crop around the brightest large region (deduplicated)."""
    from scipy import ndimage

    h, w = image.shape
    centre = (max(0, (h - size) // 2), max(0, (w - size) // 2))
    smooth = ndimage.gaussian_filter(image.astype(np.float32), 20.0)
    py, px = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    bright = (int(np.clip(py - size // 2, 0, max(0, h - size))), int(np.clip(px - size // 2, 0, max(0, w - size))))
    far = abs(bright[0] - centre[0]) > size // 3 or abs(bright[1] - centre[1]) > size // 3
    return [centre, bright] if far else [centre]


def local_noise(image: np.ndarray) -> np.ndarray:
    """Per-pixel robust noise: 1.4826 x the median absolute high-pass residual in a NOISE_WINDOW window."""
    from scipy import ndimage

    x = image.astype(np.float32)
    resid = np.abs(x - ndimage.gaussian_filter(x, 2.0))
    small = resid[::3, ::3]  # the window median on a 3x-strided grid, then back to full size
    med = ndimage.median_filter(small, size=NOISE_WINDOW // 3)
    full = np.kron(med, np.ones((3, 3), np.float32))[: x.shape[0], : x.shape[1]]
    floor = max(float(np.median(resid[resid > 0])) if np.any(resid > 0) else 1.0, 1e-3) * 0.25
    return 1.4826 * np.maximum(full, floor)


def place(rng, n: int, shape, keep_out: np.ndarray, avoid=None) -> np.ndarray:
    """Up to n sub-pixel positions >= MIN_GAP_PX apart, 4 px inside the frame, outside keep_out (and `avoid`)."""
    h, w = shape
    pos = []
    for _ in range(n * 60):
        if len(pos) == n:
            break
        y, x = rng.uniform(4, h - 5), rng.uniform(4, w - 5)
        if keep_out[int(round(y)), int(round(x))] or (avoid is not None and avoid[int(round(y)), int(round(x))]):
            continue
        if pos and np.min(np.hypot(*(np.array(pos) - (y, x)).T)) < MIN_GAP_PX:
            continue
        pos.append((y, x))
    return np.array(pos, np.float64).reshape(-1, 2)


def paste(image: np.ndarray, pos: np.ndarray, amplitude: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The image (float32) plus a Gaussian per position (pixel centres at integer coordinates)."""
    out = image.astype(np.float32).copy()
    for (y, x), a, s in zip(pos, amplitude, sigma):
        r = int(np.ceil(4 * s))
        y0, y1 = max(0, int(y) - r), min(out.shape[0], int(y) + r + 2)
        x0, x1 = max(0, int(x) - r), min(out.shape[1], int(x) + r + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] += np.float32(a) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s)).astype(np.float32)
    return out


def bright_body(shape, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(additive body, plateau mask, 'beside' mask): a saturated soft disc at the centre of the crop."""
    from scipy import ndimage

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot(yy - h / 2, xx - w / 2)
    disc = ndimage.gaussian_filter((dist <= BODY_RADIUS).astype(np.float32), BODY_EDGE)
    lo, hi = np.percentile(image, [1, 99.9])
    peak = 10.0 * max(float(hi - lo), 1.0)
    body = np.minimum(disc * peak, 0.7 * peak).astype(np.float32)
    plateau = disc >= 0.5
    beside = (dist > BODY_RADIUS + BODY_EDGE) & (dist <= BODY_RADIUS + BODY_BESIDE)
    return body, plateau, beside


def keep_out_mask(shape, points: np.ndarray) -> np.ndarray:
    """Pixels within KEEP_OUT_PX of any point."""
    from scipy import ndimage

    seeds = np.zeros(shape, bool)
    if len(points):
        p = np.clip(np.rint(points).astype(int), 0, np.array(shape) - 1)
        seeds[p[:, 0], p[:, 1]] = True
    return ndimage.distance_transform_edt(~seeds) <= KEEP_OUT_PX if seeds.any() else seeds


def score(calls: np.ndarray, truth: np.ndarray, keep_out: np.ndarray) -> dict:
    """tp, fp, fn of calls against pasted spots; calls inside keep_out are ignored."""
    calls = np.asarray(calls, np.float64).reshape(-1, 2)
    if len(calls):
        c = np.clip(np.rint(calls).astype(int), 0, np.array(keep_out.shape) - 1)
        calls = calls[~keep_out[c[:, 0], c[:, 1]]]
    pairs = metrics.match_points(calls, truth, TOL_PX)
    matched = np.zeros(len(truth), bool)
    for _, j in pairs:
        matched[j] = True
    return {"tp": len(pairs), "fp": len(calls) - len(pairs), "fn": len(truth) - len(pairs), "matched": matched}


def prf(counts: dict) -> tuple[float, float, float]:
    """(F1, precision, recall) of pooled counts."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return (2 * p * r / (p + r) if p + r else 0.0), p, r


def build(data: Path, out: Path, seed: int) -> list[dict]:
    """Write the pasted crops to out/images and return one record per crop (truth, keep-out, condition)."""
    rng = np.random.default_rng(seed)
    sources = [(p, p.with_name(p.name.replace("_img.tif", "_points_yx.csv")))
               for p in sorted((data / "spots").glob("*_img.tif"))]
    sources += [(p, None) for p in sorted((data / "examples").glob("*.tif"))]
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for path, points_file in sources:
        image = np.squeeze(tiffio.read_image(path)[0]).astype(np.float32)
        if image.ndim != 2:
            continue
        if points_file is not None and points_file.is_file():
            rows = tiffio.read_csv(points_file)
            known = np.array([[float(r["y"]), float(r["x"])] for r in rows], np.float64).reshape(-1, 2)
        else:
            known = rb.log_points(image, 0.05)
        for k, (y0, x0) in enumerate(crops_of(image)):
            crop = image[y0:y0 + CROP, x0:x0 + CROP]
            shape = crop.shape
            pts = known - (y0, x0)
            keep_out = keep_out_mask(shape, pts[(pts[:, 0] > -6) & (pts[:, 1] > -6)])
            noise = local_noise(crop)
            body, plateau, beside = bright_body(shape, crop)
            for density in DENSITIES:
                pos = place(rng, density, shape, keep_out)
                sigma = rng.uniform(*SIGMA_PX, len(pos))
                for snr in SNRS:
                    ij = np.rint(pos).astype(int)
                    amp = snr * noise[ij[:, 0], ij[:, 1]]
                    base = dict(source=path.stem, crop=k, density=density, snr=snr)
                    name = f"{path.stem}_c{k}_n{density}_snr{snr:g}"
                    _write(out / "images" / f"{name}.tif", paste(crop, pos, amp, sigma))
                    records.append(dict(base, name=name, condition="flat", truth=pos, keep_out=keep_out,
                                        beside=beside[ij[:, 0], ij[:, 1]]))
                    off = ~plateau[ij[:, 0], ij[:, 1]]
                    name_b = name + "_bright"
                    _write(out / "images" / f"{name_b}.tif", paste(crop + body, pos[off], amp[off], sigma[off]))
                    records.append(dict(base, name=name_b, condition="bright", truth=pos[off],
                                        keep_out=keep_out | plateau, beside=beside[ij[off, 0], ij[off, 1]],
                                        image=None))
    return records


def _write(path: Path, image: np.ndarray) -> None:
    """A float32 TIFF (no pixel size: the images are segmented at their own scale)."""
    import tifffile

    tifffile.imwrite(path, image.astype(np.float32))


def method_calls(path: Path, synseg_masks: dict, name: str) -> dict:
    """{method: (n, 2) calls or an n/a text} for one pasted image."""
    import tifffile

    image = tifffile.imread(path)
    calls = {}
    if name in synseg_masks:
        calls["SynSeg"] = metrics.component_centroids(rb.read_binary(synseg_masks[name]), connectivity=2)
    for t in LOG_THRESHOLDS:
        calls[f"LoG {t:g}"] = rb.log_points(image, t)
    found = rb.bigfish_points(image)
    if found is not None:
        calls["Big-FISH"] = found
    return calls


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "realdata",
                        help="the shared real data (spots/, examples/)")
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/synseg_faint"),
                        help="where the pasted images, SynSeg masks and the tables go")
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose SynSeg_Vesicle.py and model run")
    parser.add_argument("--seed", type=int, default=2026, help="positions, sizes and crops")
    parser.add_argument("--no-synseg", action="store_true", help="peers only")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed for the SynSeg run")
    return parser


def main(args: argparse.Namespace) -> int:
    """Build the pasted set, run every method, print and write the tables."""
    if not (args.data_dir / "spots").is_dir():
        print(f"faint_spots.py: {args.data_dir}: shared real data not found (see --data-dir)", file=sys.stderr)
        return 1
    out = args.output_dir
    t0 = time.perf_counter()
    records = build(args.data_dir, out, args.seed)
    print(f"{len(records)} pasted images in {out / 'images'} ({time.perf_counter() - t0:.0f} s)", flush=True)
    masks = {}
    if not args.no_synseg:
        masks, reason, _ = rb.run_synseg("vesicle", sorted((out / "images").glob("*.tif")), out, args.repo,
                                         args.timeout)
        if reason:
            print(f"SynSeg: {reason}", file=sys.stderr)
    from tqdm import tqdm

    pooled, beside = {}, {}
    for rec in tqdm(records, desc="scoring", unit="image"):
        calls = method_calls(out / "images" / f"{rec['name']}.tif", masks, rec["name"])
        for method, yx in calls.items():
            s = score(yx, rec["truth"], rec["keep_out"])
            for key in ((rec["condition"], rec["snr"], method), (rec["condition"], rec["snr"], method, rec["density"])):
                c = pooled.setdefault(key, {"tp": 0, "fp": 0, "fn": 0})
                for k in ("tp", "fp", "fn"):
                    c[k] += s[k]
            b = beside.setdefault((rec["condition"], rec["snr"], method), [0, 0])
            b[0] += int(s["matched"][rec["beside"]].sum())
            b[1] += int(rec["beside"].sum())
    methods = sorted({k[2] for k in pooled}, key=lambda m: (m != "SynSeg", m))
    lines = ["## Pasted spots on real backgrounds (flat: no body added), F1 at 3 px (precision / recall), "
             "pooled over crops and densities", "",
             "| SNR | " + " | ".join(methods) + " | SynSeg F1 per density " + "/".join(map(str, DENSITIES)) + " |",
             "|---|" + "---|" * (len(methods) + 1)]
    results = {"flat": {}, "bright": {}, "densities": {}}
    for snr in SNRS:
        cells = []
        for m in methods:
            f, p, r = prf(pooled[("flat", snr, m)])
            results["flat"].setdefault(m, {})[snr] = {"f1": f, "precision": p, "recall": r}
            cells.append(f"{f:.3f} ({p:.2f} / {r:.2f})")
        dens = [prf(pooled[("flat", snr, "SynSeg", d)])[0] if ("flat", snr, "SynSeg", d) in pooled else float("nan")
                for d in DENSITIES]
        results["densities"][snr] = dens
        lines.append(f"| {snr:g} | " + " | ".join(cells) + " | " + " / ".join(f"{d:.3f}" for d in dens) + " |")
    lines += ["", f"## Beside a saturated bright body: recall of the spots within {BODY_BESIDE:g} px of its edge, "
              "with the body / the same spots without it", "",
              "| SNR | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for snr in SNRS:
        cells = []
        for m in methods:
            hb, nb = beside[("bright", snr, m)]
            hf, nf = beside[("flat", snr, m)]
            rb_, rf = hb / max(nb, 1), hf / max(nf, 1)
            results["bright"].setdefault(m, {})[snr] = {"recall_beside": rb_, "recall_flat": rf,
                                                         "f1": prf(pooled[("bright", snr, m)])[0]}
            cells.append(f"{rb_:.3f} / {rf:.3f}")
        lines.append(f"| {snr:g} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    (out / "faint_spots.md").write_text(text + "\n")
    (out / "faint_spots.json").write_text(json.dumps(results, indent=1))
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
