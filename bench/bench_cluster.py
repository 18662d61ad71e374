"""Segmentation on a Dask cluster (issue 29): files per second in one process, on --cluster local:1 and local:2,
and a chunked big image's time and peak memory per worker.

Example:
    python bench/bench_cluster.py --files 4 12 --file-size 512 --big-size 16384 --chunk-size 2048

Files: N vesicle images of --file-size px (the generator's renders), segmented by SynSeg_Vesicle.py with the
shipped model, each configuration in its own process from start to the written tables, for two batch sizes:
per file = (T(N2) - T(N1)) / (N2 - N1), fixed cost = the rest (imports, model, cluster start and stop). The
difference of per-file times between local:1 and one process is the scheduler's overhead per file.
Big image: a --big-size square uint16 OME-Zarr (tiled from generator renders, written chunk by chunk),
segmented with --chunk-size on --cluster local:2; the wall time, time per chunk, and the peak resident memory of
every process of the run (client and each worker), sampled every 0.2 s. The CPU's bf16/AMX flags and the load
are printed: compare figures of one run only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from synseg import cli  # noqa: E402


def run_measured(cmd: list[str], env: dict) -> tuple[float, dict[int, float], str]:
    """(wall seconds, {pid: peak resident MB} of the command and all its child processes, stderr); raises on failure."""
    import psutil

    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
        peak: dict[int, float] = {}
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for p in [root, *root.children(recursive=True)]:
                    peak[p.pid] = max(peak.get(p.pid, 0.0), p.memory_info().rss / 2 ** 20)
            except psutil.Error:
                pass
            time.sleep(0.2)
        seconds = time.perf_counter() - t
        err.seek(0)
        text = err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {text.strip().splitlines()[-3:]}")
    peak[-proc.pid] = peak.pop(proc.pid, 0.0)  # the client: negative pid
    return seconds, peak, text


def task_overhead(n: int = 200) -> tuple[float, float]:
    """(ms per empty task through Client.submit + as_completed on a LocalCluster of one worker process, s to start
    and stop that cluster): the scheduler's own cost per file, without any segmentation."""
    import logging

    from dask.distributed import Client, LocalCluster, as_completed

    t = time.perf_counter()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        start = time.perf_counter() - t
        client.submit(int, 0).result()  # warm
        t = time.perf_counter()
        for future in as_completed([client.submit(int, k, pure=False) for k in range(n)]):
            future.result()
        per_task = (time.perf_counter() - t) / n * 1e3
        t = time.perf_counter()
    return per_task, start + time.perf_counter() - t


def make_files(folder: Path, n: int, size: int, seed: int) -> None:
    """n vesicle images of size x size px."""
    from bench_scripts import test_image
    from synseg import tiffio

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        tiffio.write_tiff(folder / f"cell{k:04d}.tif", test_image("vesicle", size, seed + k))


def make_big_zarr(path: Path, size: int, chunk: int, seed: int) -> None:
    """A size x size uint16 OME-Zarr, written one chunk at a time (each a shifted copy of one generated block)."""
    import zarr

    from bench_scripts import test_image

    block = test_image("vesicle", chunk, seed)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a, "type": "space", "unit": "micrometer"}
                                                             for a in "yx"],
                                  "datasets": [{"path": "0", "coordinateTransformations": [
                                      {"type": "scale", "scale": [0.1, 0.1]}]}]}]
    arr = root.create_array("0", shape=(size, size), chunks=(chunk, chunk), dtype="uint16")
    for k, y in enumerate(range(0, size, chunk)):
        for j, x in enumerate(range(0, size, chunk)):
            h, w = min(chunk, size - y), min(chunk, size - x)
            arr[y:y + h, x:x + w] = np.roll(block, (37 * k, 53 * j), axis=(0, 1))[:h, :w]


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--files", nargs=2, type=cli.finite_int(1, 100000), default=[4, 12], metavar=("N1", "N2"),
                   help="the two batch sizes (per-file time from their difference)")
    p.add_argument("--file-size", type=cli.finite_int(64, 8192), default=512, help="edge of each file in px")
    p.add_argument("--configs", nargs="+", default=["none", "local:1", "local:2"],
                   help="'none' (one process) and --cluster values")
    p.add_argument("--repeats", type=cli.finite_int(1, 20), default=2,
                   help="interleaved rounds of the file runs; the median is reported")
    p.add_argument("--big-size", type=cli.finite_int(0, 200000), default=16384,
                   help="edge of the chunked image in px (0: skip it)")
    p.add_argument("--chunk-size", type=cli.finite_int(64, 16384), default=2048, help="chunk edge in px")
    p.add_argument("--big-cluster", default="local:2", help="--cluster of the chunked run ('none': one process)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "vesicle.pth")
    p.add_argument("--work-dir", type=Path, default=None, help="where the test data go (default: a temp folder)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args: argparse.Namespace) -> int:
    from bench_scripts import cpu_flags

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="synseg_cluster_"))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)))
    print(f"CPU: {cpu_flags()}; {os.cpu_count()} core(s); load {os.getloadavg()[0]:.1f}; model {args.model}; "
          f"precision {args.precision}; data in {work}", flush=True)
    script = [sys.executable, str(ROOT / "SynSeg_Vesicle.py"), "-m", str(args.model), "--precision", args.precision]
    n1, n2 = args.files
    for n in (n1, n2):
        make_files(work / f"files{n}", n, args.file_size, args.seed)
    per_task, start = task_overhead()
    print(f"\nDask alone (LocalCluster of 1 process, empty tasks): {per_task:.2f} ms per task through submit + "
          f"as_completed; {start:.1f} s to start and stop the cluster", flush=True)
    print(f"\nfiles of {args.file_size}^2 px: wall time of the whole command (imports, model, cluster, tables), "
          f"median of {args.repeats} interleaved round(s)")
    times = {(c, n): [] for c in args.configs for n in (n1, n2)}
    peaks = {}
    for _ in range(args.repeats):
        for config in args.configs:
            for n in (n1, n2):
                out = work / f"out_{config.replace(':', '_')}_{n}"
                shutil.rmtree(out, ignore_errors=True)
                extra = [] if config == "none" else ["--cluster", config]
                seconds, peaks[config], _ = run_measured([*script, "-i", str(work / f"files{n}"), "-o", str(out),
                                                          *extra], env)
                times[config, n].append(seconds)
    for config in args.configs:
        t1, t2 = (float(np.median(times[config, n])) for n in (n1, n2))
        per_file = (t2 - t1) / (n2 - n1)
        fixed = t1 - n1 * per_file
        workers = [v for pid, v in peaks[config].items() if pid >= 0 and v > 200]
        print(f"  {config:>8}: {n1} files {t1:.1f} s, {n2} files {t2:.1f} s -> {per_file:.2f} s/file "
              f"({1 / per_file:.3g} files/s), fixed {fixed:.1f} s; all runs {[round(v, 1) for v in times[config, n1]]}"
              f" / {[round(v, 1) for v in times[config, n2]]} s; peak RSS client "
              f"{peaks[config][min(peaks[config])]:.0f} MB"
              + (f", workers {', '.join(f'{v:.0f}' for v in workers)} MB" if workers else ""), flush=True)
    if args.big_size:
        src = work / f"big{args.big_size}.zarr"
        if not src.exists():
            t = time.perf_counter()
            make_big_zarr(src, args.big_size, args.chunk_size, args.seed)
            print(f"\nwrote {src} ({args.big_size}^2 uint16) in {time.perf_counter() - t:.0f} s")
        out = work / "out_big"
        shutil.rmtree(out, ignore_errors=True)
        extra = [] if args.big_cluster == "none" else ["--cluster", args.big_cluster]
        seconds, peak, text = run_measured([*script, "-i", str(src), "-o", str(out), "--chunk-size",
                                            str(args.chunk_size), "--object-csv", *extra], env)
        chunks = (-(-args.big_size // args.chunk_size)) ** 2
        client = peak.pop(min(peak))
        workers = sorted((v for v in peak.values() if v > 200), reverse=True)
        print(f"\nchunked {args.big_size}^2 px in {chunks} chunk(s) of {args.chunk_size} px on {args.big_cluster}: "
              f"{seconds:.0f} s wall, {seconds / chunks:.1f} s per chunk (with the statistics pass and start-up), "
              f"{args.big_size ** 2 / 1e6 / seconds:.2f} MP/s; peak RSS client {client:.0f} MB, workers "
              f"{', '.join(f'{v:.0f}' for v in workers) or 'none'} MB")
        print("  " + "\n  ".join(line for line in text.splitlines() if "chunk(s)" in line or "segmented" in line))
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
