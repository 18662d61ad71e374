"""Do the bioimage.io packages give SynSeg's masks? The exported models run through bioimageio.core against
SynSeg_Vesicle.py / SynSeg_Cytoskeleton.py on the shared real images (../shared/realdata; bench only).

    python bench/bioimageio_agreement.py --packages exports/ --output-dir /tmp/synseg_bioimageio

The packages are those `make export` writes (the local-contrast normalisation inside the graph). For each image:
SynSeg's command line (--save-prob, --object-csv; --no-rescale, because a bioimage.io consumer feeds the image at
its own grid) and bioimageio.core's predict with each weight format (the whole image as one block). Reported: max
|probability difference| (everywhere, and more than the halo from the border, where the consumer's mirrored padding
and SynSeg's border handling differ); Dice of the two masks at the task's threshold (the probability thresholded
alone); for spots also SynSeg's full decision (split, contrast cut, spot core) applied to the package's probability
against SynSeg's written mask (Dice), and spot F1 at 3 px against the expert points of both. SynSeg runs at
--precision fp32 (the packages' precision) unless --precision auto (bf16 where the CPU has it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synseg import metrics, tiffio  # noqa: E402
from synseg.tasks import TASKS  # noqa: E402

SPOTS = ("beads_300px_img", "smfish_293T_TFRC_img", "iss_tissue_rnd0_ch3_z0_img")
FILAMENTS = ("Celegans_epithelia",)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def synseg_run(task: str, image: Path, out: Path, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """(probability, written mask > 0) from the task's command line."""
    from synseg.segment import batch

    args = batch.get_args_parser(task).parse_args(
        ["-i", str(image), "-o", str(out), "--save-prob", "--no-rescale", "--overwrite", "--precision", precision]
        + (["--object-csv"] if TASKS[task].object_table else []))
    if batch.run(args, task) != 0:
        raise RuntimeError(f"{TASKS[task].script} failed on {image}")
    prob = tiffio.read_image(out / f"{image.stem}_prob.tif")[0]
    mask = tiffio.read_image(out / f"{image.stem}_mask.tif")[0] > 0
    return prob, mask


def package_probability(package: Path, image: np.ndarray, weight_format: str) -> tuple[np.ndarray, float]:
    """(probability, seconds) of a bioimage.io package on one 2D image, via bioimageio.core, one block."""
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict
    from bioimageio.core.tensor import Tensor

    descr = load_model_description(package, perform_io_checks=False)
    pipeline = create_prediction_pipeline(descr, weight_format=weight_format, devices=["cpu"])
    t0 = time.perf_counter()
    out = predict(model=pipeline, inputs={"raw": Tensor(np.asarray(image, np.float32)[None, None],
                                                         dims=("batch", "channel", "y", "x"))})
    return np.asarray(out.members["probability"].data.values)[0, 0], time.perf_counter() - t0


def package_halo(package: Path) -> int:
    """The output halo of a package (px): closer to the border, consumers' padding and SynSeg's differ."""
    from bioimageio.core import load_model_description

    descr = load_model_description(package, perform_io_checks=False)
    return int(descr.outputs[0].axes[2].halo)


def decide(prob: np.ndarray, image: np.ndarray, task: str) -> np.ndarray:
    """SynSeg's steps after the network (predict.Segmenter.segment with the task's defaults) on a probability."""
    from synseg.segment import postprocess, spots

    record = TASKS[task]
    mask = prob > postprocess.resolve_threshold(prob, record.threshold)
    if record.split:
        mask = postprocess.split_touching(mask, image, None, in_place=True)
    if record.contrast_cut or record.spot_core:
        mask, _ = spots.filter_spots(mask, image, in_place=True, cut=record.contrast_cut, core=record.spot_core)
    return mask


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--packages", type=Path, default=ROOT / "exports", help="folder of synseg-TASK.zip packages")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "realdata")
    p.add_argument("--output-dir", type=Path, default=Path("/tmp/synseg_bioimageio"))
    p.add_argument("--precision", default="fp32", choices=["fp32", "auto"],
                   help="SynSeg --precision: fp32 (as the packages run) or auto (bf16 on CPUs with AMX/AVX512-BF16)")
    p.add_argument("--formats", nargs="+", default=["onnx", "torchscript"], choices=["onnx", "torchscript"])
    args = p.parse_args()
    jobs = [("vesicle", args.data / "spots" / f"{s}.tif", args.data / "spots" / f"{s.removesuffix('_img')}"
             "_points_yx.csv") for s in SPOTS]
    jobs += [("cytoskeleton", args.data / "examples" / f"{s}.tif", None) for s in FILAMENTS]
    rows, table = [], []
    for task, image_path, points_path in jobs:
        package = args.packages / f"synseg-{task}.zip"
        if not package.is_file() or not image_path.is_file():
            print(f"skip {image_path.name}: {package if not package.is_file() else image_path} missing")
            continue
        image = tiffio.read_image(image_path)[0]
        ref_prob, ref_mask = synseg_run(task, image_path, args.output_dir / task, args.precision)
        threshold = float(TASKS[task].threshold)
        halo = package_halo(package)
        points = None
        if points_path is not None and points_path.is_file():
            points = np.array([[float(r["y"]), float(r["x"])] for r in tiffio.read_csv(points_path)])
        for fmt in args.formats:
            prob, seconds = package_probability(package, image, fmt)
            row = {"image": image_path.stem, "task": task, "weights": fmt, "synseg_precision": args.precision,
                   "seconds": round(seconds, 1),
                   "max_prob_diff": float(np.abs(prob - ref_prob).max()),
                   "max_prob_diff_inner": float(np.abs(prob - ref_prob)[halo:-halo, halo:-halo].max()),
                   "dice_threshold": dice(prob > threshold, ref_prob > threshold)}
            if TASKS[task].object_table:
                mine = decide(prob, image, task)
                row["dice_final_mask"] = dice(mine, ref_mask)
                if points is not None:
                    f_ref = metrics.point_scores(metrics.component_centroids(ref_mask, connectivity=2), points)["f1"]
                    f_pkg = metrics.point_scores(metrics.component_centroids(mine, connectivity=2), points)["f1"]
                    row.update(spot_f1_synseg=f_ref, spot_f1_package=f_pkg)
            rows.append(row)
            table.append("| " + " | ".join(str(round(v, 4)) if isinstance(v, float) else str(v)
                                           for v in row.values()) + " |")
            print(table[-1], flush=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "agreement.json").write_text(json.dumps(rows, indent=1))
    print(f"{args.output_dir / 'agreement.json'}: {len(rows)} row(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
