"""Time-lapse figures: per-frame scores of 50-frame synthetic videos segmented with the shipped models.

Example (from the repository root):
    python bench/bench_video.py --output-dir /tmp/video/bench --num-videos 3 --device auto

1. Vesicles: --num-videos videos of --frames frames, bleaching to --bleach-to (0.4) of the first frame's
   signal (a fixed --bleach rate, -ln(0.4) / 49 per frame for 50 frames; no contrast fade, so that the
   bleaching alone is measured), every other flag at the generator's default (so the default speeds);
   SynSeg_Vesicle.py --track; evaluate.py with --tracks. Figures: spot F1 on the first and the last
   frame (mean over the videos) and their difference; link recall and precision (all links pooled), end
   to end and over matched detections only (tracking.link_scores). End to end, a missed vesicle costs the
   true links on both sides of it and a false spot the predicted links on both sides of it, so these stay
   near detection recall and precision (printed beside them) whatever the linker does; the linker's own
   share is the figure over matched detections.
2. Filaments: the same number of videos with every flag at its default; SynSeg_Cytoskeleton.py;
   evaluate.py. Figure: the standard deviation of per-frame Dice within each video (and their mean).

3. Speed (--speed): --speed-videos vesicle videos of --frames frames (defaults 5 x 60, 256 px) segmented with
   tracking in this process (predict.Segmenter with SynSeg_Vesicle.py's defaults, then batch.track_objects),
   interleaved per repeat: "before", one frame per forward pass in PyTorch fp32 NCHW (the path before stacking
   and backend choice), beside "one pass per frame group" with PyTorch and with each backend, and "auto", what
   the script picks on this machine (its path is named); --speed-methods picks some of them. Reported: megapixels
   per second including linking, the ratios to the first method ("before"), the CPU flags, and whether every method
   gave the same masks (pixels that differ).
   Target: >= 1 MP/s on 2 cores. --only speed runs this alone.

Targets: |spot F1 last - first| <= 0.05; link recall and precision >= 0.95; per-frame Dice
s.d. <= 0.03. The printed table says which hold. Everything is written under --output-dir (never into
the repository), each step's command is printed before it runs.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sh(cmd: list) -> None:
    """Run one step, printing it; a failing step stops the benchmark with its exit code."""
    cmd = [str(c) for c in cmd]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"step failed with exit code {done.returncode}: {' '.join(cmd)}")


def frame_rows(report: Path) -> list[dict]:
    """Per-frame rows of an evaluate.py metrics.csv (the mean and std rows left out)."""
    from synseg import tiffio

    return [r for r in tiffio.read_csv(report / "metrics.csv") if r["image"] not in ("mean", "std")]


def vesicle_figures(out: Path, args) -> dict:
    """Generate, segment with tracking, evaluate; the spot F1 and link figures."""
    rate = -math.log(args.bleach_to) / (args.frames - 1)
    data = out / "vesicle_data"
    sh([sys.executable, "Vesicle_generator.py", "--output-dir", data, "--num-images", args.num_videos,
        "--val-fraction", 0, "--image-size", args.image_size, "--frames", args.frames, "--seed", args.seed,
        "--bleach", rate, rate, "--contrast-fade", 0, 0, "--overwrite", "--workers", args.workers])
    seg = out / "vesicle_seg"
    sh([sys.executable, "SynSeg_Vesicle.py", "-i", data / "train" / "img", "-o", seg, "--track", "--overwrite",
        "--device", args.device])
    report = out / "vesicle_report"
    sh([sys.executable, "evaluate.py", "--pred", seg, "--gt", data / "train" / "mask", "--gt-points",
        data / "train" / "mask", "--tracks", seg / "tracks.csv", "-o", report])
    rows = frame_rows(report)
    first = [float(r["spot_f1"]) for r in rows if int(r["frame"]) == 0]
    last = [float(r["spot_f1"]) for r in rows if int(r["frame"]) == args.frames - 1]
    from synseg import tiffio

    links = tiffio.read_csv(report / "tracks_metrics.csv")
    pooled = {k: sum(int(r[k]) for r in links) for k in ("n_true_links", "n_pred_links", "n_true_links_recovered",
                                                         "n_pred_links_correct", "n_true_detections",
                                                         "n_pred_detections", "n_matched_detections")}
    return {"spot_f1_first": float(np.mean(first)), "spot_f1_last": float(np.mean(last)),
            "link_recall": pooled["n_true_links_recovered"] / max(1, pooled["n_true_links"]),
            "link_precision": pooled["n_pred_links_correct"] / max(1, pooled["n_pred_links"]),
            "link_recall_detected": float(np.mean([float(r["link_recall_detected"]) for r in links])),
            "link_precision_detected": float(np.mean([float(r["link_precision_detected"]) for r in links])),
            "detection_recall": pooled["n_matched_detections"] / max(1, pooled["n_true_detections"]),
            "detection_precision": pooled["n_matched_detections"] / max(1, pooled["n_pred_detections"]),
            "per_video_link": [(r["image"], *(float(r[k]) for k in ("link_recall", "link_precision",
                                                                    "link_recall_detected", "link_precision_detected",
                                                                    "detection_recall", "detection_precision")))
                               for r in links],
            "per_video_f1": list(zip(first, last)), "report": report}


def filament_figures(out: Path, args) -> dict:
    """Generate, segment, evaluate; the per-frame Dice spread of each video."""
    data = out / "filament_data"
    sh([sys.executable, "Cytoskeleton_generator.py", "--output-dir", data, "--num-images", args.num_videos,
        "--val-fraction", 0, "--image-size", args.image_size, "--frames", args.frames, "--seed", args.seed,
        "--overwrite", "--workers", args.workers])
    seg = out / "filament_seg"
    sh([sys.executable, "SynSeg_Cytoskeleton.py", "-i", data / "train" / "img", "-o", seg, "--overwrite",
        "--device", args.device])
    report = out / "filament_report"
    sh([sys.executable, "evaluate.py", "--pred", seg, "--gt", data / "train" / "mask", "-o", report])
    by_video = {}
    for r in frame_rows(report):
        by_video.setdefault(r["image"], []).append(float(r["dice"]))
    sds = {k: float(np.std(v, ddof=1)) for k, v in by_video.items()}
    return {"dice_sd": sds, "dice_mean": {k: float(np.mean(v)) for k, v in by_video.items()}, "report": report}


def speed_figures(out: Path, args) -> list[str]:
    """Segment + link the same videos with each path, interleaved; MP/s including linking, ratios, mask agreement."""
    import dataclasses
    import time

    import torch

    from synseg.segment import batch
    from synseg.segment import predict
    from synseg.segment import segment_vesicle as SynSeg_Vesicle
    from synseg import tasks
    from synseg import tiffio
    from synseg.segment import tiling
    import unet
    from bench_predict import cpu_flags, load

    data = out / "speed_data"
    sh([sys.executable, "Vesicle_generator.py", "--output-dir", data, "--num-images", args.speed_videos,
        "--val-fraction", 0, "--image-size", args.image_size, "--frames", args.frames, "--seed", args.seed,
        "--overwrite", "--workers", args.workers])
    videos = sorted((data / "train" / "img").glob("*.tif"))
    cli_args = SynSeg_Vesicle.get_args_parser().parse_args(["-i", str(videos[0]), "-o", str(out), "--track"])
    opts = predict.Options.from_args(cli_args)
    track = batch.Tracking(cli_args.search_range, cli_args.track_memory, cli_args.frame_interval)
    cpu = torch.device("cpu")
    model, info = unet.load_model(ROOT / tasks.TASKS["vesicle"].model, cpu)
    record = tasks.TASKS["vesicle"]

    def segmenter(backend: str, stack: bool, nchw: bool = False):
        seg = predict.Segmenter(model, info, record, dataclasses.replace(opts, backend=backend, stack_planes=stack),
                                cpu)
        if nchw:  # the path before this bench's changes: PyTorch fp32 in NCHW
            seg.net, seg.path = tiling.prepare_model(model, cpu, channels_last=False), "PyTorch cpu fp32, NCHW"
        return seg

    wanted = set(args.speed_methods)
    makers = {"before": ("before: one frame per pass, PyTorch fp32 NCHW", lambda: segmenter("torch", False, nchw=True)),
              "groups-nchw": ("frame groups, PyTorch fp32 NCHW", lambda: segmenter("torch", True, nchw=True)),
              "groups-cl": ("frame groups, PyTorch channels_last", lambda: segmenter("torch", True))}
    if tiling.onnx_available():  # fp32 only: on a bf16 CPU the scripts' auto precision is bf16, so ask for fp32
        fp32 = dataclasses.replace(opts, precision="fp32")
        makers["onnx-frames"] = ("one frame per pass, ONNX Runtime", lambda: predict.Segmenter(
            model, info, record, dataclasses.replace(fp32, backend="onnx", stack_planes=False), cpu))
        makers["onnx-groups"] = ("frame groups, ONNX Runtime fp32 (the AVX2 path)", lambda: predict.Segmenter(
            model, info, record, dataclasses.replace(fp32, backend="onnx", stack_planes=True), cpu))
    methods = {name: make() for key, (name, make) in makers.items() if key in wanted}
    auto = segmenter("auto", True)
    if "auto" in wanted or not methods:
        methods[f"auto: frame groups, {auto.path}"] = auto
    mp = sum(np.prod(tiffio.read_image(v)[0].shape) for v in videos) / 1e6
    per_pass = tiling.planes_per_pass((args.image_size,) * 2, 1.0, auto.tile_size, auto.batch_size, auto.net.depth)
    lines = [f"speed: {len(videos)} vesicle videos x {args.frames} frames of {args.image_size}^2 px ({mp:.1f} MP), "
             f"SynSeg_Vesicle.py defaults with --track; CPU flags: {cpu_flags()}; torch threads "
             f"{torch.get_num_threads()}; frames per pass {per_pass}; load before {load()}"]
    print(lines[0], flush=True)
    seg_dir = out / "speed_seg"
    seg_dir.mkdir(parents=True, exist_ok=True)
    clip = seg_dir / "warmup.tif"  # warm-up on 20 frames: imports (laptrack), first-call allocations
    frames, meta = tiffio.read_image(videos[0])
    tiffio.write_tiff(clip, frames[:20], pixel_size_um=meta.get("pixel_size_um"), axes="TYX")
    for name, seg in methods.items():
        row, objects = seg.segment(clip, seg_dir / "warmup_mask.tif")
        batch.track_objects(row, objects, track)
    times = {name: [] for name in methods}
    masks = {}
    for r in range(args.repeats):
        for i, (name, seg) in enumerate(methods.items()):
            t = time.perf_counter()
            for v in videos:
                row, objects = seg.segment(v, seg_dir / f"{i}_{v.stem}_mask.tif")
                batch.track_objects(row, objects, track)
            times[name].append(time.perf_counter() - t)
            print(f"  round {r + 1}: {name}: {times[name][-1]:.1f} s, load {load()}", flush=True)
            if r == 0:
                masks[name] = [tiffio.read_image(seg_dir / f"{i}_{v.stem}_mask.tif")[0] for v in videos]
    first = next(iter(methods))
    for name in methods:
        best = min(times[name])
        diff = sum(int(np.count_nonzero(a != b)) for a, b in zip(masks[name], masks[first]))
        lines.append(f"  {name}: {mp / best:.3f} MP/s ({best:.1f} s), {min(times[first]) / best:.2f}x before; "
                     f"mask pixels differing from before: {diff}")
    best_auto = mp / min(times[next(reversed(methods))])
    lines.append(f"  target >= 1 MP/s including linking ({next(reversed(methods))}): "
                 f"{'met' if best_auto >= 1 else 'NOT met'} ({best_auto:.3f} MP/s); load after {load()}")
    return lines


SPEED_METHODS = ("before", "groups-nchw", "groups-cl", "onnx-frames", "onnx-groups", "auto")


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    from synseg import cli

    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--output-dir", type=Path, default=Path("/tmp/video/bench"), help="work folder (data, reports)")
    p.add_argument("--num-videos", type=int, default=3, help="videos per structure")
    p.add_argument("--frames", type=int, default=50, help="frames per video")
    p.add_argument("--image-size", type=int, default=256, help="frame height and width in px")
    p.add_argument("--bleach-to", type=float, default=0.4, help="vesicle signal on the last frame / first frame")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--device", default="auto", help="segmentation device: auto, cpu, cuda")
    p.add_argument("--workers", type=int, default=1, help="generator worker processes")
    p.add_argument("--only", choices=["vesicle", "filament", "speed"], default=None, help="run one part only")
    p.add_argument("--speed", action="store_true", help="also run the speed comparison (part 3)")
    p.add_argument("--speed-videos", type=int, default=5, help="vesicle videos for the speed comparison")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds of the speed comparison")
    p.add_argument("--speed-methods", nargs="+", default=list(SPEED_METHODS), choices=SPEED_METHODS,
                   help="the paths the speed comparison times (before: one frame per pass in PyTorch fp32 NCHW, "
                        "the first one given is the reference of the ratios; onnx-*: ONNX Runtime fp32, "
                        "when installed; auto: what the script picks on this CPU)")
    return p


def main(args: argparse.Namespace) -> int:
    """Run both halves and print the figures against their targets."""
    if args.frames < 2 or not 0 < args.bleach_to <= 1:
        print("bench_video.py: --frames must be >= 2 and --bleach-to in (0, 1]", file=sys.stderr)
        return 2
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    if args.only in (None, "vesicle"):
        v = vesicle_figures(out, args)
        gap = abs(v["spot_f1_last"] - v["spot_f1_first"])
        lines += [f"vesicle videos ({args.num_videos} x {args.frames} frames, {args.image_size}^2 px, "
                  f"bleached to {args.bleach_to:.0%}):",
                  f"  spot F1 first frame {v['spot_f1_first']:.3f}, last frame {v['spot_f1_last']:.3f}, "
                  f"|difference| {gap:.3f}  (target <= 0.05: {'met' if gap <= 0.05 else 'NOT met'})",
                  f"  link recall {v['link_recall']:.3f}, link precision {v['link_precision']:.3f} end to end  "
                  f"(target >= 0.95: {'met' if min(v['link_recall'], v['link_precision']) >= 0.95 else 'NOT met'}; "
                  f"bounded by detection recall {v['detection_recall']:.3f}, precision {v['detection_precision']:.3f})",
                  f"  link recall {v['link_recall_detected']:.3f}, link precision {v['link_precision_detected']:.3f} "
                  f"over matched detections, the linker alone (mean over videos; target >= 0.95: "
                  f"{'met' if min(v['link_recall_detected'], v['link_precision_detected']) >= 0.95 else 'NOT met'})"]
        lines += [f"    {name}: link recall {r:.3f} precision {p:.3f}; over matched detections {rd:.3f} {pd:.3f}; "
                  f"detection recall {dr:.3f} precision {dp:.3f}" for name, r, p, rd, pd, dr, dp in v["per_video_link"]]
        lines += ["    spot F1 first/last per video: " + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in v["per_video_f1"])]
        lines.append(f"  reports: {v['report']}/{{metrics.csv,stacks.csv,frames.png,tracks_metrics.csv}}")
    if args.only in (None, "filament"):
        f = filament_figures(out, args)
        worst = max(f["dice_sd"].values())
        lines += [f"filament videos ({args.num_videos} x {args.frames} frames, defaults):",
                  "  per-frame Dice s.d. per video: " + ", ".join(
                      f"{k} {sd:.4f} (mean Dice {f['dice_mean'][k]:.3f})" for k, sd in f["dice_sd"].items()),
                  f"  largest {worst:.4f}  (target <= 0.03: {'met' if worst <= 0.03 else 'NOT met'})",
                  f"  report: {f['report']}/{{metrics.csv,stacks.csv,frames.png}}"]
    if args.only == "speed" or (args.speed and args.only is None):
        lines += speed_figures(out, args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
