"""Time the synthetic-data generators: per-image render time and dataset throughput for 1 vs 2 workers.

Example (from the repository root):
    python bench/bench_generators.py --repeats 20 --images 40

Prints one table. Rows: the vesicle generator at 512x512, the cytoskeleton generator at 512x512 and
1024x1024 (synth.render_one with each generator's default flags), and, for scale, a naive vesicle
renderer in the style of the original SynSeg generator (a whole-image array and a whole-image Gaussian
blur per spot, 300-500 spots; written here from its description, not its code).
Before / after (--compare): the vesicle and cytoskeleton renders are also timed with the two generator hot spots
as they were before issue 22 (OpenCV's point-by-point elliptical opening in the background subtraction, polygon
angles recomputed for every autofluorescent granule; re-created here by swapping synth.disc_filter and
synth.blob_polygon), interleaved image by image with the current code: the same images, bit for bit, so the
ratio is the speed-up alone. The table also gives each row's speed-up over the naive original-style renderer.
Then a small dataset is written with --workers 1 and --workers 2 (wall time including process start).
The machine's load average is printed: numbers from a busy machine are upper bounds.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def default_scene(script, bit_depth: int, structure, *argv: str):
    """The Scene a generator script renders with its default flags (plus argv)."""
    from synseg.generate import synth

    args = script.get_args_parser().parse_args(["--output-dir", "unused", *argv])
    return synth.scene_from_args(args, structure, bit_depth)


def time_render(scene, repeats: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds per synth.render_one(rng, scene) for images 0..repeats-1, after a warm-up call.

    CPU time (all threads of this process) is the steadier figure on a shared machine.
    """
    from synseg.generate import synth

    synth.render_one(synth.image_rng(0, 10_000), scene)
    wall, cpu = [], []
    for index in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        synth.render_one(synth.image_rng(0, index), scene)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def interleaved(scenes: dict, repeats: int, patches: dict) -> dict:
    """{name: (wall, CPU) lists} of synth.render_one per scene, image by image in turn (images 0..repeats-1).

    patches: {name: {attribute of synth: replacement}} applied only while that name renders.
    """
    from synseg.generate import synth

    times = {name: ([], []) for name in scenes}
    for name, scene in scenes.items():  # warm-up
        synth.render_one(synth.image_rng(0, 10_000), scene)
    for index in range(repeats):
        for name, scene in scenes.items():
            saved = {k: getattr(synth, k) for k in patches.get(name, {})}
            for k, v in patches.get(name, {}).items():
                setattr(synth, k, v)
            try:
                start, start_cpu = time.perf_counter(), time.process_time()
                synth.render_one(synth.image_rng(0, index), scene)
                times[name][0].append(time.perf_counter() - start)
                times[name][1].append(time.process_time() - start_cpu)
            finally:
                for k, v in saved.items():
                    setattr(synth, k, v)
    return times


def before_patches() -> dict:
    """synth functions as they were before issue 22 (same output, slower): see the module docstring."""
    import cv2

    def disc_filter(a, size, op):
        return op(np.asarray(a, np.float32), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))

    def blob_polygon(rng, cy, cx, radius, roughness=0.15, aspect=1.0, n=48):
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
        log_r = np.zeros(n)
        for k in range(2, 7):
            log_r += rng.normal(0, roughness / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        r = radius * np.exp(log_r)
        angle = rng.uniform(0, np.pi)
        ex, ey = r * np.cos(theta) * aspect, r * np.sin(theta)
        x = cx + ex * np.cos(angle) - ey * np.sin(angle)
        y = cy + ex * np.sin(angle) + ey * np.cos(angle)
        return np.round(np.stack([x, y], axis=1) * 4).astype(np.int32)

    return {"disc_filter": disc_filter, "blob_polygon": blob_polygon}


def naive_vesicle(rng: np.random.Generator, size: int = 512):
    """Reference for scale: every spot drawn on its own whole-image array and blurred over the whole image."""
    from scipy.ndimage import gaussian_filter

    image = np.zeros((size, size))
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.ogrid[:size, :size]
    for _ in range(int(rng.integers(300, 501))):
        cy, cx = rng.integers(0, size, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(1, 13) ** 2
        spot = np.zeros((size, size))
        spot[disc] = rng.uniform(0.03, 0.7)
        image += gaussian_filter(spot, rng.uniform(0.2, 1.3))
        mask[disc] = 1
    return image, mask


def time_naive(repeats: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds per naive_vesicle image."""
    wall, cpu = [], []
    for index in range(repeats):
        rng = np.random.default_rng(index)
        start, start_cpu = time.perf_counter(), time.process_time()
        naive_vesicle(rng)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def time_dataset(script: str, out: Path, images: int, workers: int, size: int) -> float:
    """Wall seconds of `python script --num-images images --workers workers` (a fresh process)."""
    import subprocess

    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, str(ROOT / script), "--output-dir", str(out), "--num-images", str(images),
           "--image-size", str(size), "--workers", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return wall


def row(name: str, times: tuple[list[float], list[float]]) -> str:
    """One table line: median and mean wall ms, median CPU ms per image."""
    wall, cpu = ([t * 1e3 for t in ts] for ts in times)
    return (f"{name:<34} {statistics.median(wall):>9.1f} {statistics.mean(wall):>9.1f} "
            f"{statistics.median(cpu):>9.1f} {len(wall):>5d}")


def compare(args) -> int:
    """Before / after per-image render times, interleaved, and both against the naive original-style renderer."""
    from synseg.generate import cytoskeleton_generator as Cytoskeleton_generator
    from synseg.generate import filaments
    from synseg.generate import vesicle_generator as Vesicle_generator
    from synseg.generate import vesicles

    ves = default_scene(Vesicle_generator, Vesicle_generator.BIT_DEPTH, vesicles.Vesicles)
    cyto = default_scene(Cytoskeleton_generator, Cytoskeleton_generator.BIT_DEPTH, filaments.Filaments)
    scenes = {"vesicle 512 before": ves, "vesicle 512": ves, "cytoskeleton 512 before": cyto, "cytoskeleton 512": cyto}
    patches = {name: before_patches() for name in scenes if name.endswith("before")}
    times = interleaved(scenes, args.repeats, patches)
    naive = time_naive(args.naive_repeats) if args.naive_repeats > 0 else None
    print(f"{'per-image render (1 process)':<34} {'median ms':>9} {'mean ms':>9} {'CPU ms':>9} {'n':>5} "
          f"{'vs naive':>9} {'vs before':>9}")
    ref = statistics.median(naive[0]) if naive else float("nan")
    for name, t in times.items():
        med = statistics.median(t[0])
        before = times.get(f"{name} before")
        gain = f"{statistics.median(before[0]) / med:>8.2f}x" if before else f"{'':>9}"
        vs_naive = f"{ref / med:>8.1f}x" if name.startswith("vesicle") else f"{'':>9}"
        print(f"{row(name, t)} {vs_naive} {gain}")
    if naive:
        print(row("naive vesicle 512 (original style)", naive))
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="images timed per generator and size")
    parser.add_argument("--naive-repeats", type=int, default=2, help="images of the naive reference (slow)")
    parser.add_argument("--images", type=int, default=40, help="images per dataset in the 1 vs 2 worker run")
    parser.add_argument("--no-datasets", action="store_true", help="skip the 1 vs 2 worker dataset runs")
    parser.add_argument("--compare", action="store_true",
                        help="also time the renders as before issue 22, interleaved (see above)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the datasets go (default: a temp dir)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the timings and print the table; returns the exit code."""
    from synseg.generate import cytoskeleton_generator as Cytoskeleton_generator
    from synseg.generate import filaments
    from synseg.generate import vesicle_generator as Vesicle_generator
    from synseg.generate import vesicles

    from bench_predict import cpu_flags

    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; CPU flags: {cpu_flags()}")
    if args.compare:
        return compare(args)
    print(f"{'per-image render (1 process)':<34} {'median ms':>9} {'mean ms':>9} {'CPU ms':>9} {'n':>5}")
    ves = default_scene(Vesicle_generator, Vesicle_generator.BIT_DEPTH, vesicles.Vesicles)
    print(row("vesicle 512x512", time_render(ves, args.repeats)))
    for size in (512, 1024):
        cyto = default_scene(Cytoskeleton_generator, Cytoskeleton_generator.BIT_DEPTH, filaments.Filaments,
                             "--image-size", str(size))
        print(row(f"cytoskeleton {size}x{size}", time_render(cyto, args.repeats)))
    if args.naive_repeats > 0:
        print(row("naive vesicle 512 (original style)", time_naive(args.naive_repeats)))
    if args.no_datasets:
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_generators_"))
    print(f"\ndataset of {args.images} images, wall time incl. process start ({work})")
    print(f"{'generator':<22} {'workers':>7} {'seconds':>8} {'img/s':>7} {'speed-up':>8}")
    scripts = [("Vesicle_generator.py", 512), ("Cytoskeleton_generator.py", 512)]
    try:
        for script, size in scripts:
            base = None
            for workers in (1, 2):
                wall = time_dataset(script, work / f"{Path(script).stem}_{workers}", args.images, workers, size)
                base = base or wall
                print(f"{script:<22} {workers:>7d} {wall:>8.2f} {args.images / wall:>7.1f} {base / wall:>7.2f}x")
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
