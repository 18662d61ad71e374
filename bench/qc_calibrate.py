"""Calibrate the quality check's expected score (synseg/segment/qc.py) for one model on held-out generator images.

Example:
    OMP_NUM_THREADS=2 .venv/bin/python bench/qc_calibrate.py --task vesicle -m models/vesicle.pth
    OMP_NUM_THREADS=2 .venv/bin/python bench/qc_calibrate.py --task cytoskeleton -m models/cytoskeleton.pth

Draws --num-images images with the task's generator defaults (every nuisance across its range: noise,
grain, haze, cytoplasm, bright regions, background subtraction, density, PSF), seeds never used for
training (--seed 9100 onward), segments each through the same code as the segmentation scripts
(predict.Segmenter with the script's defaults) and scores the mask against the generator's truth: spot F1
within 3 px for vesicles (metrics.spot_scores on the labelled centres), skeleton F1 within 2 px for
filaments (metrics.skeleton_scores). A ridge regression on qc.SCORE_INPUTS is fitted on the first
images and its mean absolute error measured on the last --held-out images, which the fit never sees.
Writes the fit, keyed to the SHA-256 of the model's weights (qc.weights_hash), to --output (default
models/qc_TASK.json beside the shipped model); the segmentation scripts use it only for those weights.
About 1-2 s per 256 px image on 2 loaded cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from synseg import cli  # noqa: E402
from synseg import metrics  # noqa: E402
from synseg import tasks  # noqa: E402
from synseg import tiffio  # noqa: E402
from synseg.segment import qc  # noqa: E402

SCORES = {"vesicle": "spot F1 (3 px)", "cytoskeleton": "skeleton F1 (2 px)"}
RIDGE_ALPHA = 1.0


def generator_args(task: str, size: int, extra=()) -> argparse.Namespace:
    """The task's generator defaults (its command line without flags) for `size` px images."""
    import importlib

    module = importlib.import_module(tasks.TASKS[task].generator_module)
    return module.get_args_parser().parse_args(["--output-dir", "unused", "--image-size", str(size), *extra])


def synthetic(task: str, index: int, seed: int, size: int, extra=()):
    """(image, truth) of generator image `index`: truth is the labelled centres (n, 2) for vesicles, the mask
    for filaments."""
    import importlib

    from synseg.generate import synth

    module = importlib.import_module(tasks.TASKS[task].generator_module)
    image, mask, rows = module.render_one(synth.image_rng(seed, index), generator_args(task, size, extra))
    if task == "vesicle":
        return image, np.array([[r["y"], r["x"]] for r in rows], np.float64).reshape(-1, 2)
    return image, mask


def score(task: str, mask: np.ndarray, truth) -> float:
    """Spot F1 (vesicles, centres within 3 px) or skeleton F1 (filaments, within 2 px) of a mask."""
    if task == "vesicle":
        return float(metrics.spot_scores(mask, truth, tol=3.0)["f1"])
    return float(metrics.skeleton_scores(mask, truth, tol=2.0)["f1"])


def segmenter(task: str, model_path: Path, calibration: Path | None = None, threads: int = 2):
    """A predict.Segmenter for `task` with the segmentation script's defaults, on the CPU."""
    import torch

    import unet
    from synseg.segment import batch, predict

    torch.set_num_threads(threads)
    argv = ["-i", "unused", "-o", "unused", "-m", str(model_path)]
    if calibration is not None:
        argv += ["--qc-calibration", str(calibration)]
    options = predict.Options.from_args(batch.get_args_parser(task).parse_args(argv))
    model, info = unet.load_model(model_path, "cpu")
    return predict.Segmenter(model, info, tasks.TASKS[task], options, torch.device("cpu")), model


def segment_array(seg, image: np.ndarray, folder: Path, name: str, pixel_size: float | None = 0.1):
    """(summary row, mask) of one image array, segmented from a TIFF like any input (pixel size in its tags)."""
    src, dst = folder / f"{name}.tif", folder / f"{name}_mask.tif"
    tiffio.write_tiff(src, image, pixel_size_um=pixel_size)
    row, _ = seg.segment(src, dst)
    mask = tiffio.read_image(dst)[0] > 0
    return row, mask


def features(row: dict) -> dict:
    """The figures of a summary row as floats, with the size-free foreground and count that qc.summary uses."""
    out = {k: float(row[k]) if row.get(k) not in (None, "") else float("nan") for k in qc.FIGURES}
    return {**out, **qc.size_free(row)}


def fit(rows: list[dict], targets: np.ndarray) -> dict:
    """Ridge regression of the targets on standardised qc.SCORE_INPUTS; the record qc.Calibration reads."""
    from sklearn.linear_model import Ridge

    x = np.stack([qc.score_features(r, qc.SCORE_INPUTS) for r in rows])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    model = Ridge(alpha=RIDGE_ALPHA).fit((x - mean) / scale, targets)
    return {"inputs": list(qc.SCORE_INPUTS), "mean": mean.tolist(), "scale": scale.tolist(),
            "coef": model.coef_.tolist(), "intercept": float(model.intercept_)}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--task", choices=sorted(tasks.TASKS), required=True)
    p.add_argument("-m", "--model", type=Path, default=None, help="checkpoint (default: the task's shipped model)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="calibration file to write (default: qc_TASK.json beside the shipped model)")
    p.add_argument("--num-images", type=cli.finite_int(low=10), default=120, help="images drawn in all")
    p.add_argument("--held-out", type=cli.finite_int(low=5), default=40, help="last images kept out of the fit")
    p.add_argument("--image-size", type=cli.finite_int(low=64), default=256)
    p.add_argument("--seed", type=int, default=9100, help="generator seed (training used 0-61)")
    p.add_argument("--threads", type=cli.finite_int(low=1), default=2)
    p.add_argument("--dump", type=Path, default=None,
                   help="also write every image's figures, qc and score to this JSON file (for choosing qc limits)")
    return p


def main(args: argparse.Namespace) -> int:
    record = tasks.TASKS[args.task]
    model_path = args.model or record.model_path
    output = args.output or qc.default_calibration_path(record)
    if args.held_out >= args.num_images - 5:
        print(f"--held-out {args.held_out} leaves too few of --num-images {args.num_images} to fit", file=sys.stderr)
        return 2
    seg, model = segmenter(args.task, model_path, threads=args.threads)
    t0 = time.perf_counter()
    rows, targets, flags = [], [], []
    with tempfile.TemporaryDirectory(prefix="synseg_qc_") as tmp:
        for i in range(args.num_images):
            image, truth = synthetic(args.task, i, args.seed, args.image_size)
            row, mask = segment_array(seg, image, Path(tmp), f"{i:04d}")
            rows.append(features(row))
            flags.append(row["qc"])
            targets.append(score(args.task, mask, truth))
    seconds = time.perf_counter() - t0
    targets = np.array(targets)
    n_fit = args.num_images - args.held_out
    record_fit = fit(rows[:n_fit], targets[:n_fit])
    calibration = qc.Calibration(record_fit)
    predicted = np.array([calibration.predict(r) for r in rows])
    mae_fit = float(np.mean(np.abs(predicted[:n_fit] - targets[:n_fit])))
    mae = float(np.mean(np.abs(predicted[n_fit:] - targets[n_fit:])))
    baseline = float(np.mean(np.abs(targets[n_fit:] - targets[:n_fit].mean())))
    out = {"format": qc.FORMAT, "task": args.task, "score": SCORES[args.task],
           "weights_sha256": qc.weights_hash(model), "model_file": str(model_path),
           "command": " ".join(["bench/qc_calibrate.py", *sys.argv[1:]]),
           "images": {"fit": n_fit, "held_out": args.held_out, "size": args.image_size, "seed": args.seed,
                      "generator": f"{record.generator} defaults"},
           "mae": round(mae, 4), "mae_fit": round(mae_fit, 4), "mae_constant": round(baseline, 4),
           "score_mean": round(float(targets.mean()), 4), **record_fit}
    if args.dump:
        args.dump.write_text(json.dumps([{**r, "qc": q, "score": float(t), "held_out": i >= n_fit}
                                         for i, (r, q, t) in enumerate(zip(rows, flags, targets))], indent=1))
    with tiffio.atomic_path(output) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{args.task}: {args.num_images} images of {args.image_size} px in {seconds:.0f} s "
          f"(quality check {seg.qc_seconds:.1f} s); {SCORES[args.task]} mean {targets.mean():.3f}; "
          f"expected-score MAE {mae:.3f} on {args.held_out} held-out images (fit {mae_fit:.3f}; a constant: "
          f"{baseline:.3f}); {sum(q != 'ok' for q in flags)} of them flagged by the quality check; wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
