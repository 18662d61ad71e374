"""Validate the quality check (synseg/segment/qc.py): good images should pass, images a model is out of its depth
on should be flagged.

Example:
    OMP_NUM_THREADS=2 .venv/bin/python bench/qc_validation.py --output-dir /tmp/qc_validation

For each task (vesicle, cytoskeleton) with its shipped model and the segmentation script's defaults:
  good  synthetic     the task's generator defaults across their range (seeds never used for training or
                      for bench/qc_calibrate.py)
        real          ../shared/realdata: the annotated spot images and the spot examples (vesicle), the
                      filament examples (cytoskeleton), each whole and its four quadrants when >= 512 px
  bad   other_task    the other generator's images and the other task's real images
        nuclei        the shared nuclei image (whole and quadrants) and fluorescent nuclei drawn here
        brightfield   cells in transmitted light drawn here (grey background, dark granular cells)
        phase         phase contrast drawn here (dark cells with a bright halo)
        noise         pure noise: Gaussian, Poisson, grainy (correlated), 8 and 16 bit
        wrong_scale   generator images at 4x the wrong scale (zoomed in or out 4x, tagged 0.1 um/px)
        saturated     generator images with 40-75% of the pixels clipped at the top value
        mostly_zero   generator images with 90-98% of the pixels at 0
        jpeg          generator images as 8-bit JPEG screenshots (display stretch, quality 50-90)
Nothing is chosen per image: every case kind is drawn with fixed rules from fixed seeds.
Prints the table of flagged cases per kind (hits for bad kinds, false alarms for good ones), the reasons,
the time the check takes against the whole segmentation (over the cases, and over dense generator images of
each --timing-size, --timing-repeats passes: issue 31 allows it 10%), and predicted vs actual spot F1 on the
annotated real spot images; writes results.json (every figure of every case) to --output-dir.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import qc_calibrate  # noqa: E402
from synseg import cli  # noqa: E402
from synseg import metrics  # noqa: E402
from synseg import tasks  # noqa: E402
from synseg import tiffio  # noqa: E402

REAL = ROOT.parent / "shared" / "realdata"
SPOT_IMAGES = ("beads_300px", "smfish_293T_TFRC", "iss_tissue_rnd0_ch3_z0")  # spots/NAME_img.tif + points
REAL_GOOD = {"vesicle": ["spots/beads_300px_img.tif", "spots/smfish_293T_TFRC_img.tif",
                         "spots/iss_tissue_rnd0_ch3_z0_img.tif", "examples/v.tif", "examples/img_hybiss_2d.tif",
                         "examples/img_terra_2d.tif"],
             "cytoskeleton": ["examples/Celegans_epithelia.tif", "examples/actin.tif"]}
OTHER = {"vesicle": "cytoskeleton", "cytoskeleton": "vesicle"}
GOOD_KINDS = ("synthetic", "real")
BAD_KINDS = ("other_task", "nuclei", "brightfield", "phase", "noise", "wrong_scale", "saturated", "mostly_zero",
             "jpeg")


# --------------------------------------------------------------------------- cases drawn here

def _poisson_camera(rng, photons: np.ndarray, offset: float = 100.0, gain: float = 2.0, read: float = 2.0,
                    bits: int = 16) -> np.ndarray:
    """Expected photons -> a camera image (shot and read noise, offset, gain)."""
    e = rng.poisson(np.maximum(photons, 0)).astype(np.float32) + read * rng.standard_normal(photons.shape)
    top = 65535 if bits == 16 else 255
    return np.clip(np.rint(offset + gain * e), 0, top).astype(np.uint16 if bits == 16 else np.uint8)


def nuclei_image(rng, size: int) -> np.ndarray:
    """Fluorescent nuclei: 10-40 bright ellipses 16-50 px across with chromatin texture, on a dark background."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    density = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(10, 40))):
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(8, 25), rng.uniform(8, 25)
        t = rng.uniform(0, np.pi)
        u = ((yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)) / a
        v = (-(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)) / b
        density[u * u + v * v <= 1] = rng.uniform(0.5, 1.5)
    texture = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 2.0)
    density *= 1 + 0.4 * texture / max(float(texture.std()), 1e-6)
    density = cv2.GaussianBlur(density, (0, 0), 1.5)
    return _poisson_camera(rng, density * rng.uniform(100, 2000) + rng.uniform(2, 20))


def transmitted_image(rng, size: int, phase: bool) -> np.ndarray:
    """Brightfield (cells slightly darker than the grey background, dark granules and a thin rim) or phase
    contrast (dark cells with a bright halo), 8 or 16 bit, with noise and uneven illumination."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    field = np.ones((size, size), np.float32) * (1 - 0.2 * (xx / size) * rng.uniform(0, 1))
    cells = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(3, 12))):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(15, 60)
        d = np.hypot(yy - cy, xx - cx) / r
        cells = np.maximum(cells, (d <= 1).astype(np.float32))
    inside = cv2.GaussianBlur(cells, (0, 0), 2.0)
    edge = cv2.GaussianBlur(cells, (0, 0), 1.0) - cv2.GaussianBlur(cells, (0, 0), 4.0)
    granules = cv2.GaussianBlur((rng.random((size, size)) < 0.01).astype(np.float32) * cells, (0, 0), 1.2)
    if phase:
        image = field * (1 - 0.45 * inside + 1.2 * np.maximum(-edge, 0) - 0.3 * np.maximum(edge, 0)) - 3 * granules
    else:
        image = field * (1 - 0.12 * inside - 0.6 * np.abs(edge)) - 2.5 * granules
    photons = np.maximum(image, 0.05) * rng.uniform(500, 3000)
    bits = 8 if rng.random() < 0.5 else 16
    out = _poisson_camera(rng, photons, offset=100, gain=1.0, read=3.0).astype(np.float32)
    if bits == 8:
        out = np.clip(out / out.max() * 240, 0, 255).astype(np.uint8)
        return out
    return out.astype(np.uint16)


def noise_image(rng, size: int, which: int) -> np.ndarray:
    """Pure noise: Gaussian 16 bit, Poisson at a low and a high level, grainy (correlated) noise, 8 bit."""
    kind = which % 5
    if kind == 0:
        return np.clip(1000 + 50 * rng.standard_normal((size, size)), 0, 65535).astype(np.uint16)
    if kind == 1:
        return rng.poisson(3.0, (size, size)).astype(np.uint16)
    if kind == 2:
        return rng.poisson(800.0, (size, size)).astype(np.uint16)
    if kind == 3:
        g = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 0.9)
        return np.clip(500 + 40 * g / g.std(), 0, 65535).astype(np.uint16)
    return np.clip(60 + 20 * rng.standard_normal((size, size)), 0, 255).astype(np.uint8)


def wrong_scale(task: str, index: int, seed: int, size: int, zoom_in: bool) -> np.ndarray:
    """A generator image at 4x the wrong scale: its centre enlarged 4x, or a 4x larger image shrunk 4x."""
    if zoom_in:
        image, _ = qc_calibrate.synthetic(task, index, seed, size)
        c = image[size * 3 // 8:size * 5 // 8, size * 3 // 8:size * 5 // 8].astype(np.float32)
        out = cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR)
    else:
        image, _ = qc_calibrate.synthetic(task, index, seed, 4 * size)
        out = cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return np.rint(out).astype(image.dtype)


def saturated(image: np.ndarray, rng) -> np.ndarray:
    """The image brightened until 40-75% of its pixels clip at the dtype's top value."""
    top = np.iinfo(image.dtype).max
    level = float(np.percentile(image, 100 * (1 - rng.uniform(0.4, 0.75))))
    x = image.astype(np.float64) * (top / max(level, 1.0))
    return np.clip(np.rint(x), 0, top).astype(image.dtype)


def mostly_zero(image: np.ndarray, rng) -> np.ndarray:
    """The image with its 90-98th percentile subtracted and clipped at 0."""
    level = float(np.percentile(image, rng.uniform(90, 98)))
    return np.clip(image.astype(np.float64) - level, 0, None).astype(image.dtype)


def jpeg_screenshot(image: np.ndarray, rng) -> np.ndarray:
    """An 8-bit screenshot of the image: display stretch (0.5-99.5 percentiles), JPEG at quality 50-90."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    grey = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 91))])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def quadrants(image: np.ndarray) -> list[np.ndarray]:
    """The image and, when it is at least 512 px on each side, its four quadrants."""
    h, w = image.shape[:2]
    out = [image]
    if min(h, w) >= 512:
        out += [image[:h // 2, :w // 2], image[:h // 2, w // 2:], image[h // 2:, :w // 2], image[h // 2:, w // 2:]]
    return out


def real(path: str):
    """(image, pixel size or None) of a shared real image."""
    data, meta = tiffio.read_image(REAL / path)
    return data, meta.get("pixel_size_um")


def cases(task: str, n_synthetic: int, size: int, seed: int):
    """Yield (kind, name, image, pixel size) of every validation case of a task."""
    other = OTHER[task]
    rng = np.random.default_rng(seed)
    for i in range(n_synthetic):
        yield "synthetic", f"synthetic_{i}", qc_calibrate.synthetic(task, i, seed, size)[0], 0.1
    for path in REAL_GOOD[task]:
        image, px = real(path)
        for k, part in enumerate(quadrants(image)):
            yield "real", f"{Path(path).stem}_{k}", part, px
    for i in range(6):
        yield "other_task", f"{other}_{i}", qc_calibrate.synthetic(other, i, seed + 1, size)[0], 0.1
    for path in REAL_GOOD[other][:4]:
        image, px = real(path)
        yield "other_task", Path(path).stem, image, px
    image, _ = real("nuclei/img2d.tif")
    for k, part in enumerate(quadrants(image)):
        yield "nuclei", f"img2d_{k}", part, None
    for i in range(5):
        yield "nuclei", f"drawn_{i}", nuclei_image(rng, size), None
    for i in range(5):
        yield "brightfield", f"brightfield_{i}", transmitted_image(rng, size, phase=False), None
        yield "phase", f"phase_{i}", transmitted_image(rng, size, phase=True), None
    for i in range(5):
        yield "noise", f"noise_{i}", noise_image(rng, size, i), None
    for i in range(6):
        yield "wrong_scale", f"scale_{'in' if i % 2 == 0 else 'out'}_{i}", \
            wrong_scale(task, 100 + i, seed + 2, size, zoom_in=i % 2 == 0), 0.1
    for i in range(5):
        image, _ = qc_calibrate.synthetic(task, 200 + i, seed + 3, size)
        yield "saturated", f"saturated_{i}", saturated(image, rng), 0.1
    for i in range(5):
        image, _ = qc_calibrate.synthetic(task, 300 + i, seed + 4, size)
        yield "mostly_zero", f"mostly_zero_{i}", mostly_zero(image, rng), 0.1
    for i in range(6):
        image, _ = qc_calibrate.synthetic(task, 400 + i, seed + 5, size)
        yield "jpeg", f"jpeg_{i}", jpeg_screenshot(image, rng), None


# --------------------------------------------------------------------------- run and report

def run_task(task: str, args) -> list[dict]:
    """Segment every case of a task; one result dict per case."""
    seg, _ = qc_calibrate.segmenter(task, tasks.TASKS[task].model_path, threads=args.threads)
    folder = args.output_dir / task
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for kind, name, image, px in cases(task, args.synthetic, args.image_size, args.seed):
        before = seg.qc_seconds
        t0 = time.perf_counter()
        row, mask = qc_calibrate.segment_array(seg, image, folder, f"{kind}__{name}", px)
        took = time.perf_counter() - t0
        result = {"task": task, "kind": kind, "name": name, "good": kind in GOOD_KINDS, "qc": row["qc"],
                  "expected_score": row["expected_score"], "seconds": took, "qc_seconds": seg.qc_seconds - before,
                  **{k: row[k] for k in row if k.startswith("qc_")}}
        if kind == "real" and name.endswith("_0") and name[:-2].removesuffix("_img") in SPOT_IMAGES:
            points = np.loadtxt(REAL / "spots" / f"{name[:-2].removesuffix('_img')}_points_yx.csv", delimiter=",",
                                skiprows=1)
            result["actual_score"] = float(metrics.spot_scores(mask, points, tol=3.0)["f1"])
        results.append(result)
        print(f"{task} {kind:12s} {name:32s} {row['qc']:30s} expected {row['expected_score'] or 'n/a':6s} "
              f"{took:.2f} s", flush=True)
    return results


def table(results: list[dict]) -> str:
    """Markdown table: per task and kind, cases, flagged, and what that is (hit or false alarm)."""
    lines = ["| task | kind | cases | flagged | rate | reasons |", "|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in results):
        mine = [r for r in results if r["task"] == task]
        for kind in GOOD_KINDS + BAD_KINDS:
            rows = [r for r in mine if r["kind"] == kind]
            if not rows:
                continue
            flagged = [r for r in rows if r["qc"] != "ok"]
            reasons = {}
            for r in flagged:
                for word in r["qc"].split("+"):
                    reasons[word] = reasons.get(word, 0) + 1
            what = "false alarms" if kind in GOOD_KINDS else "hits"
            lines.append(f"| {task} | {kind} ({'good' if kind in GOOD_KINDS else 'bad'}) | {len(rows)} | "
                         f"{len(flagged)} {what} | {len(flagged) / len(rows):.0%} | "
                         f"{', '.join(f'{k} {v}' for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))} |")
        for good in (True, False):
            rows = [r for r in mine if r["good"] == good]
            flagged = sum(r["qc"] != "ok" for r in rows)
            lines.append(f"| {task} | **all {'good' if good else 'bad'}** | {len(rows)} | {flagged} | "
                         f"**{flagged / max(len(rows), 1):.0%}** | |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--output-dir", type=Path, default=Path("/tmp/qc_validation"))
    p.add_argument("--task", choices=[*sorted(tasks.TASKS), "both"], default="both")
    p.add_argument("--synthetic", type=cli.finite_int(low=1), default=40, help="synthetic good cases per task")
    p.add_argument("--image-size", type=cli.finite_int(low=64), default=256)
    p.add_argument("--seed", type=int, default=9500, help="seed of every drawn case (calibration uses 9100)")
    p.add_argument("--threads", type=cli.finite_int(low=1), default=2)
    p.add_argument("--rescore", type=Path, default=None, metavar="RESULTS_JSON",
                   help="only print the table again from an earlier run's results.json with the current limits")
    p.add_argument("--timing-size", type=cli.finite_int(low=0), nargs="+", default=[256, 2048],
                   help="also time the check per task on dense generator images of each size: (1024 / SIZE)^2 of "
                        "them, at least one (0: skip)")
    p.add_argument("--timing-repeats", type=cli.finite_int(low=1), default=3, help="timed passes over them")
    p.add_argument("--timing-only", action="store_true", help="only the timing lines (no validation cases)")
    return p


def dense_images(task: str, seed: int, size: int, count: int) -> list[np.ndarray]:
    """The first `count` generator images (seed, index 0, 1, ...) with at most half of their pixels at their
    lowest value: normal fields, which the whole segmentation works on (a mostly blank field, as a sparse
    filament draw can be, times little more than the network). Fixed rule, nothing chosen by hand."""
    out, index = [], 0
    while len(out) < count:
        image, _ = qc_calibrate.synthetic(task, index, seed, size)
        if np.count_nonzero(image == image.min()) <= image.size // 2:
            out.append(image)
        index += 1
    return out


def timing(task: str, size: int, args) -> str:
    """One line: the check's share of segmenting dense --timing-size generator images (file to written mask),
    each of --timing-repeats passes."""
    seg, _ = qc_calibrate.segmenter(task, tasks.TASKS[task].model_path, threads=args.threads)
    images = dense_images(task, args.seed + 9, size, max(1, (1024 // size) ** 2))
    folder = args.output_dir / "timing"
    folder.mkdir(parents=True, exist_ok=True)
    h, w = images[0].shape
    warm = images[0][max(0, h // 2 - 128):h // 2 + 128, max(0, w // 2 - 128):w // 2 + 128]
    qc_calibrate.segment_array(seg, warm, folder, f"{task}_warm")  # one-off costs (ONNX export), a dense crop
    checks, totals = [], []
    for _ in range(args.timing_repeats):
        before, t0 = seg.qc_seconds, time.perf_counter()
        for i, image in enumerate(images):
            qc_calibrate.segment_array(seg, image, folder, f"{task}_{size}_{i}")
        totals.append(time.perf_counter() - t0)
        checks.append(seg.qc_seconds - before)
    return (f"{task}: {len(images)} dense {size}^2 image(s): the quality check took "
            f"{' / '.join(f'{c:.2f}' for c in checks)} s of {' / '.join(f'{t:.1f}' for t in totals)} s "
            f"({' / '.join(f'{100 * c / t:.1f}' for c, t in zip(checks, totals))}%; {seg.path})")


def main(args: argparse.Namespace) -> int:
    if args.rescore:
        from synseg.segment import qc

        results = json.loads(args.rescore.read_text())
        for r in results:
            figures = {k: float(r[k]) if r.get(k) not in (None, "") else float("nan") for k in qc.FIGURES}
            r["qc"] = "+".join(qc.check(figures, r["task"])) or "ok"
        print(table(results))
        return 0
    if args.timing_only:
        for task in (sorted(tasks.TASKS) if args.task == "both" else [args.task]):
            for size in (s for s in args.timing_size if s):
                print(timing(task, size, args), flush=True)
        return 0
    if not REAL.is_dir():
        print(f"{REAL}: not found; the real cases need ../shared/realdata (see its README)", file=sys.stderr)
        return 2
    results = []
    for task in (sorted(tasks.TASKS) if args.task == "both" else [args.task]):
        results += run_task(task, args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(table(results))
    print()
    for task in dict.fromkeys(r["task"] for r in results):
        mine = [r for r in results if r["task"] == task]
        total, check = sum(r["seconds"] for r in mine), sum(r["qc_seconds"] for r in mine)
        print(f"{task}: the quality check took {check:.1f} s of {total:.1f} s of segmentation "
              f"({100 * check / total:.1f}%) over {len(mine)} cases")
    for task in dict.fromkeys(r["task"] for r in results):
        for size in (s for s in args.timing_size if s):
            print(timing(task, size, args), flush=True)
    scored = [r for r in results if "actual_score" in r]
    if scored:
        print("\n| real image | expected spot F1 | actual spot F1 (3 px) | qc |\n|---|---|---|---|")
        for r in scored:
            print(f"| {r['name'][:-2]} | {r['expected_score'] or 'n/a'} | {r['actual_score']:.3f} | {r['qc']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
