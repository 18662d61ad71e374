"""End-to-end demo: a held-out synthetic set, segmented by the shipped models, scored against its masks.

Example:
    python demo.py --output-dir demo_output

Steps (each one a real run of the project's own scripts, as a user would type them):
  1. Vesicle_generator.py and Cytoskeleton_generator.py write a small test set with a seed the shipped
     models never saw (training used seeds 0 and 1).
  2. A 3-frame time-lapse stack is assembled from each set, to show that stacks keep their shape.
  3. SynSeg_Vesicle.py / SynSeg_Cytoskeleton.py segment the images and the stacks with models/*.pth.
  4. evaluate.py scores the masks against the generators' exact masks (and vesicle centres).
  5. The vesicle model is run again on the images times 0.01 and times 100 (brightness check).
  6. A short synthetic vesicle video (Vesicle_generator.py --frames N: motion, bleaching, fresh noise per
     frame) is segmented with --track and scored frame by frame and link by link (evaluate.py --tracks);
     the report shows its per-frame scores and one overlay strip (first, middle and last frame).
Writes demo_output/REPORT.md (tables + pictures) and, per task, the masks, overlays and metrics.
The output folder is cleared on each run, but only when the demo made it and it holds nothing else
(a marker file says so); any other existing folder is refused, so `--output-dir .` cannot wipe a checkout.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from synseg import cli
from synseg.tasks import TASKS

ROOT = Path(__file__).resolve().parent
DEMO_SEED = 20261125  # never used for training (models/README.md: seeds 0 and 1)
MARKER = ".synseg-demo"  # written into the output folder by the demo, so it knows the folder is its own
OWN_ENTRIES = {MARKER, "REPORT.md", "demo.log", "video", *TASKS}  # everything the demo writes at the top of the folder


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--output-dir", "--output_dir", type=Path, default=Path("demo_output"),
                   help="folder for the report: new or empty, or one an earlier demo run made (then cleared)")
    p.add_argument("--num-images", "--num_images", type=int, default=10, help="test images per task")
    p.add_argument("--image-size", "--image_size", type=int, default=384, help="test image size in px")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--video-frames", type=int, default=12, help="frames of the demo time-lapse")
    return p


def made_by_demo(out: Path) -> bool:
    """True when `out` holds only what this demo writes, and either its marker or an old demo's log.

    Demo runs from before the marker left demo.log beginning with the first generator command.
    """
    entries = list(out.iterdir())
    if any(p.is_symlink() or p.name not in OWN_ENTRIES for p in entries):
        return False
    if (out / MARKER).is_file():
        return True
    log = out / "demo.log"
    if not log.is_file():
        return False
    with open(log, errors="replace") as fh:
        return fh.readline().startswith(f"$ {next(iter(TASKS.values())).generator} ")


def prepare_output(out: Path) -> str | None:
    """Make `out` an empty folder marked as the demo's own; returns why not (refused, nothing touched), or None.

    A new or empty folder is used as it is; a folder from an earlier demo run is emptied of the demo's
    outputs; anything else is refused.
    """
    if out.exists() and not out.is_dir():
        return f"--output-dir {out} is a file; give a folder"
    if out.is_dir() and any(out.iterdir()):
        if not made_by_demo(out):
            return (f"--output-dir {out} already holds files the demo did not write (no {MARKER} marker, or "
                    "other files beside its outputs); give a new or empty folder, or remove it yourself")
        for entry in out.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("Made by demo.py; the next demo run empties this folder.\n")
    return None


def run(cmd: list, log) -> None:
    """Run one of the project's scripts, logging its command and output; stop the demo if it fails."""
    cmd = [sys.executable] + [str(c) for c in cmd]
    log.write("$ " + " ".join(str(c) for c in cmd[1:]) + "\n")
    log.flush()
    res = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise RuntimeError(f"step failed (exit {res.returncode}): {' '.join(str(c) for c in cmd[1:])}; "
                           f"see {log.name}")


def make_stack(img_dir: Path, out: Path, n: int = 3) -> Path:
    """Write the first n images of a folder as one TYX time-lapse stack (pixel size kept)."""
    from synseg import tiffio

    files = sorted(img_dir.glob("*.tif"))[:n]
    planes, meta = zip(*(tiffio.read_image(f) for f in files))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "timelapse.tif"
    tiffio.write_tiff(path, np.stack(planes), pixel_size_um=meta[0]["pixel_size_um"], axes="TYX")
    return path


def brightness_copies(img_dir: Path, out: Path) -> dict:
    """Float32 copies of every image times 0.01 and times 100 (float, so x100 cannot clip)."""
    from synseg import tiffio

    dirs = {}
    for factor in (0.01, 100.0):
        d = out / f"x{factor:g}"
        d.mkdir(parents=True, exist_ok=True)
        for f in sorted(img_dir.glob("*.tif")):
            img, meta = tiffio.read_image(f)
            tiffio.write_tiff(d / f.name, img.astype(np.float32) * np.float32(factor),
                              pixel_size_um=meta["pixel_size_um"])
        dirs[factor] = d
    return dirs


def mask_dice(dir_a: Path, dir_b: Path) -> list[float]:
    """Dice between same-named masks of two folders."""
    from synseg import metrics
    from synseg import tiffio

    out = []
    for fa in sorted(dir_a.glob("*_mask.tif")):
        a = tiffio.read_image(fa)[0] > 0
        b = tiffio.read_image(dir_b / fa.name)[0] > 0
        out.append(metrics.pixel_scores(b, a)["dice"])
    return out


def summary_rows(report_dir: Path) -> dict:
    """The mean row of evaluate.py's metrics.json."""
    data = json.loads((report_dir / "metrics.json").read_text())
    return {k: v["mean"] for k, v in data["summary"].items()}


def demo_task(task: str, args, out: Path, log, bar) -> dict:
    """Generate, segment, evaluate one task; return what goes into the report."""
    t = TASKS[task]
    gen, seg, model = t.generator, t.script, t.model
    data = out / task / "data"
    run([gen, "--output-dir", data, "--num-images", args.num_images, "--image-size", args.image_size,
         "--seed", DEMO_SEED, "--val-fraction", 0, "--preview"], log)
    bar.update(1)
    img_dir, gt_dir = data / "train" / "img", data / "train" / "mask"
    masks = out / task / "masks"
    t0 = time.perf_counter()
    run([seg, "-i", img_dir, "-o", masks, "-m", model, "--overlay", "--save-prob", "--device", args.device], log)
    seconds = time.perf_counter() - t0
    bar.update(1)
    report = out / task / "report"
    ev = ["evaluate.py", "--pred", masks, "--gt", gt_dir, "-o", report, "--grid", "--images", img_dir, "--prob"]
    if t.points:
        ev += ["--gt-points", gt_dir]
    run(ev, log)
    result = {"scores": summary_rows(report), "seconds": seconds, "n": args.num_images,
              "grid": report / "grid.png", "preview": data / "preview.png"}
    bar.update(1)
    stack = make_stack(img_dir, out / task / "stack")
    run([seg, "-i", stack, "-o", out / task / "stack_masks", "-m", model, "--device", args.device], log)
    from synseg import tiffio

    smask, smeta = tiffio.read_image(out / task / "stack_masks" / "timelapse_mask.tif")
    simg, _ = tiffio.read_image(stack)
    result["stack"] = {"input": list(simg.shape), "mask": list(smask.shape), "axes": smeta["axes"],
                       "pixel_size_um": smeta["pixel_size_um"]}
    bar.update(1)
    if t.brightness_check:
        copies = brightness_copies(img_dir, out / task / "brightness")
        dice = {}
        for factor, d in copies.items():
            mdir = out / task / f"masks_x{factor:g}"
            run([seg, "-i", d, "-o", mdir, "-m", model, "--device", args.device], log)
            dice[factor] = mask_dice(masks, mdir)
        result["brightness"] = dice
    bar.update(1)
    return result


def video_strip(path: Path, video: Path, masks: Path) -> None:
    """PNG strip of a video's first, middle and last frame, each stretched, with the mask outlined in yellow."""
    import cv2

    from synseg import tiffio

    frames, _ = tiffio.read_image(video)
    mask, _ = tiffio.read_image(masks)
    tiles = []
    for t in sorted({0, len(frames) // 2, len(frames) - 1}):
        grey = (tiffio.stretch(frames[t], 0.5, 99.8) * 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        m = (mask[t] > 0).astype(np.uint8)
        rgb[(m - cv2.erode(m, np.ones((3, 3), np.uint8))) > 0] = (0, 255, 255)  # BGR yellow
        cv2.putText(rgb, f"frame {t}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1, cv2.LINE_AA)
        tiles += [rgb, np.full((rgb.shape[0], 4, 3), 64, np.uint8)]
    ok, data = cv2.imencode(".png", np.concatenate(tiles[:-1], axis=1))
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    path.write_bytes(data.tobytes())


def demo_video(args, out: Path, log) -> dict:
    """A short video of the task that tracks (vesicles): generate, segment with tracking, score per frame and
    per link."""
    from synseg import tiffio

    t = next(t for t in TASKS.values() if t.track)
    data, masks, report = out / "video" / "data", out / "video" / "masks", out / "video" / "report"
    run([t.generator, "--output-dir", data, "--num-images", 1, "--image-size", min(args.image_size, 256),
         "--seed", DEMO_SEED, "--val-fraction", 0, "--frames", args.video_frames], log)
    img_dir, gt_dir = data / "train" / "img", data / "train" / "mask"
    run([t.script, "-i", img_dir, "-o", masks, "-m", t.model, "--track",
         "--device", args.device], log)
    run(["evaluate.py", "--pred", masks, "--gt", gt_dir, "--gt-points", gt_dir, "--tracks", masks / "tracks.csv",
         "-o", report], log)
    rows = [r for r in tiffio.read_csv(report / "metrics.csv") if r["frame"] != ""]
    video_strip(out / "video" / "strip.png", next(img_dir.glob("*.tif")), next(masks.glob("*_mask.tif")))
    links = tiffio.read_csv(report / "tracks_metrics.csv")
    return {"frames": rows, "links": links[0] if links else {}, "strip": out / "video" / "strip.png",
            "curve": report / "frames.png", "n_tracks": len(tiffio.read_csv(masks / "track_summary.csv"))}


def write_report(out: Path, results: dict) -> Path:
    """REPORT.md: one table per task, the brightness check, the stack check and the pictures."""
    lines = ["# SynSeg demo report", "",
             f"Held-out synthetic images (generator seed {DEMO_SEED}, never used in training), segmented with the",
             "shipped models at default settings and scored against the generators' exact masks.", ""]
    video = results.pop("video", None)
    for task, r in results.items():
        cols = [(k, h) for k, h in TASKS[task].report_metrics if k in r["scores"]]
        lines += [f"## {task}", "",
                  f"{r['n']} images, segmentation took {r['seconds']:.1f} s in all (model load included).", "",
                  "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols),
                  "| " + " | ".join(f"{r['scores'][k]:.3f}" for k, _ in cols) + " |", ""]
        s = r["stack"]
        lines += [f"Time-lapse stack: input {s['input']} -> mask {s['mask']} (axes {s['axes']}, "
                  f"pixel size {s['pixel_size_um']} um).", ""]
        if "brightness" in r:
            for factor, d in r["brightness"].items():
                lines.append(f"Brightness x{factor:g}: Dice against the original masks, mean {np.mean(d):.3f}, "
                             f"min {np.min(d):.3f}.")
            lines.append("")
        lines += [f"![{task} grid]({r['grid'].relative_to(out)})", "",
                  f"Generator preview: `{r['preview'].relative_to(out)}`; overlays: `{task}/masks/*_overlay.png`.", ""]
    if video is not None:
        lk = video["links"]
        lines += ["## time-lapse (vesicles)", "",
                  f"One synthetic video of {len(video['frames'])} frames (vesicles diffuse, run, appear and vanish; "
                  "the signal bleaches; fresh camera noise per frame), segmented with `SynSeg_Vesicle.py --track`: "
                  f"{video['n_tracks']} tracks; link recall {float(lk.get('link_recall', 'nan')):.3f}, "
                  f"link precision {float(lk.get('link_precision', 'nan')):.3f}.", "",
                  "| frame | Dice | spot F1 | objects (true) |", "|---|---|---|---|"]
        lines += [f"| {r['frame']} | {r['dice']} | {r['spot_f1']} | {r['n_pred_objects']} ({r['n_gt_objects']}) |"
                  for r in video["frames"]]
        lines += ["", f"![video strip]({video['strip'].relative_to(out)})", "",
                  f"![per-frame scores]({video['curve'].relative_to(out)})", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def main(args: argparse.Namespace) -> int:
    """Run both tasks, write the report, print the tables."""
    from tqdm import tqdm

    missing = [t.model for t in TASKS.values() if not (ROOT / t.model).is_file()]
    if missing:
        print(f"demo: shipped model(s) missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = args.output_dir.resolve()
    refused = prepare_output(out)
    if refused:
        print(f"demo: {refused}", file=sys.stderr)
        return 2
    results = {}
    with open(out / "demo.log", "w") as log, tqdm(total=5 * len(TASKS) + 1, desc="demo", unit="step") as bar:
        try:
            for task in TASKS:
                results[task] = demo_task(task, args, out, log, bar)
            results["video"] = demo_video(args, out, log)
            bar.update(1)
        except RuntimeError as err:
            bar.close()
            print(f"demo: {err}", file=sys.stderr)
            return 1
    report = write_report(out, results)
    print(report.read_text())
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(get_args_parser().parse_args()))
