"""Whole-script times: SynSeg_Vesicle.py / SynSeg_Cytoskeleton.py against LoG and Sato + Otsu, each in its own process.

Example:
    python bench/bench_scripts.py --size 2048 --repeats 3
    python bench/bench_scripts.py --vesicle-models models/vesicle.pth runs/v6.pth --precision fp32 auto
    git worktree add /tmp/before HEAD~3 && python bench/bench_scripts.py --baseline /tmp/before   # before/after

What a user waits for: `python SynSeg_Vesicle.py -i image.tif -o out/` from start to written mask (imports,
model load, ONNX session, tiles, decision step, tables), against a script that imports scikit-image, reads the
same TIFF and runs the filter the shared benchmark uses (LoG: skimage blob_log on the 1-99.9 percentile
stretch, threshold 0.2; Sato + Otsu: sigmas 1-2 px, Otsu on the response; bench/realdata_benchmark.py), also
from start to finish. Every model file given and every --precision runs once per round, the filter between
them, rounds interleaved; reported: the best of the rounds and its ratio to the filter's best. The CPU's
bf16/AMX flags and the load are printed: `--precision fp32` is the path an AVX2-only CPU takes (ONNX Runtime
fp32 when installed), `auto` the one this CPU takes. Compare figures of one run only. --baseline DIR also runs
the scripts of another checkout (e.g. a git worktree of an earlier commit) in every round, interleaved with
these, so that before and after are timed side by side under the same load.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synseg import cli  # noqa: E402

FILTERS = {
    "vesicle": ("LoG", "import sys; sys.path.insert(0, {bench!r}); import tifffile, realdata_benchmark as r; "
                       "p = r.log_points(tifffile.imread({src!r}), 0.2); print(len(p))"),
    "cytoskeleton": ("Sato + Otsu", "import sys; sys.path.insert(0, {bench!r}); import tifffile, "
                                    "realdata_benchmark as r; m = r.ridge_mask(tifffile.imread({src!r})); "
                                    "tifffile.imwrite({dst!r}, (m * 255).astype('uint8'))"),
}
SCRIPTS = {"vesicle": "SynSeg_Vesicle.py", "cytoskeleton": "SynSeg_Cytoskeleton.py"}


def cpu_flags() -> str:
    """The CPU's bf16 / AMX flags from /proc/cpuinfo, or 'avx2 only' style text when there are none."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "unknown"
    found = sorted(f for f in flags if f == "avx512_bf16" or f.startswith("amx"))
    return " ".join(found) if found else ("avx2 only (no avx512_bf16, no AMX)" if "avx2" in flags else "no avx2")


def test_image(task: str, size: int, seed: int) -> np.ndarray:
    """A SIZE x SIZE uint16 plane from the task's generator (tiled from 512 px renders: the generator's own size)."""
    from synseg.tasks import TASKS
    import importlib

    gen = importlib.import_module(TASKS[task].generator_module)
    args = gen.get_args_parser().parse_args(["--output-dir", "unused", "--image-size", "512"])
    rng = np.random.default_rng(seed)
    tiles = [gen.render_one(rng, args)[0].astype(np.uint16) for _ in range(4)]
    tiles = [t * (257 if t.max() <= 255 else 1) for t in tiles]
    block = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])
    reps = -(-size // block.shape[0])
    return np.tile(block, (reps, reps))[:size, :size].copy()


def timed(cmd: list[str], env: dict) -> float:
    """Wall seconds of a command; raises when it fails. A baseline checkout's script runs with that checkout first
    on PYTHONPATH."""
    script = Path(cmd[1]) if len(cmd) > 1 else ROOT
    if script.suffix == ".py" and script.parent != ROOT:
        env = dict(env, PYTHONPATH=str(script.parent))
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--size", type=cli.finite_int(64, 16384), default=2048, help="edge of the test image in px")
    p.add_argument("--repeats", type=cli.finite_int(1, 20), default=3, help="interleaved rounds")
    p.add_argument("--tasks", nargs="+", choices=sorted(SCRIPTS), default=sorted(SCRIPTS, reverse=True))
    p.add_argument("--vesicle-models", nargs="+", type=Path, default=[ROOT / "models" / "vesicle.pth"])
    p.add_argument("--cytoskeleton-models", nargs="+", type=Path, default=[ROOT / "models" / "cytoskeleton.pth"])
    p.add_argument("--precision", nargs="+", choices=("auto", "fp32"), default=["fp32", "auto"],
                   help="script precisions to time (fp32: the AVX2-only CPU path)")
    p.add_argument("--threads", type=cli.finite_int(1, 256), default=2, help="OMP threads for every process")
    p.add_argument("--seed", type=int, default=0, help="seed of the test images")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="another checkout (e.g. a git worktree of an earlier commit) whose scripts run too, "
                        "interleaved with these in every round, with the same models")
    return p


def main(args: argparse.Namespace) -> int:
    """Run the rounds, print the table."""
    import tifffile

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; load {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="synseg_bench_scripts_") as tmp:
        work = Path(tmp)
        jobs = {}
        for task in args.tasks:
            src = work / f"{task}.tif"
            (work / task).mkdir()  # each script's one-file runs keep their summary.csv in their own folder
            tifffile.imwrite(src, test_image(task, args.size, args.seed))
            name, code = FILTERS[task]
            code = code.format(bench=str(ROOT / "bench"), src=str(src), dst=str(work / f"{task}_filter.tif"))
            runs = {name: [sys.executable, "-c", code]}
            roots = [("", ROOT)] + ([("baseline ", args.baseline.resolve())] if args.baseline else [])
            for model in getattr(args, f"{task}_models"):
                for prec in args.precision:
                    for tag, root in roots:
                        runs[f"{tag}{model} {prec}"] = [
                            sys.executable, str(root / SCRIPTS[task]), "-i", str(src), "-o",
                            str(work / task / f"{len(runs)}_mask.tif"), "-m", str(Path(model).resolve()),
                            "--precision", prec, "--overwrite"]
            jobs[task] = (name, runs)
        # one untimed pass each: file caches, and the ONNX graph of each model exported into the cache once
        for task, (_, runs) in jobs.items():
            for cmd in runs.values():
                timed(cmd, env)
        times = {(task, k): [] for task, (_, runs) in jobs.items() for k in runs}
        for r in range(args.repeats):
            for task, (_, runs) in jobs.items():
                for k, cmd in runs.items():
                    times[(task, k)].append(timed(cmd, env))
                    print(f"  round {r + 1}: {task} {k}: {times[(task, k)][-1]:.2f} s, load "
                          f"{os.getloadavg()[0]:.1f}", flush=True)
        print(f"\n{args.size}x{args.size} uint16, whole script, best of {args.repeats}; CPU flags: {cpu_flags()}")
        for task, (name, runs) in jobs.items():
            base = min(times[(task, name)])
            for k in runs:
                best = min(times[(task, k)])
                print(f"  {task:12s} {k:60s} {best:6.2f} s  {best / base:5.2f}x {name}  (all: "
                      f"{', '.join(f'{t:.2f}' for t in times[(task, k)])})")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
