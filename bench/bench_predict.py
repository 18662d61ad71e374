"""Speed and memory of the segmentation scripts against the original SynSeg tiling, side by side.

Example:
    python bench/bench_predict.py --size 2048 --repeats 1 --memory-size 8192
    python bench/bench_predict.py --skip-speed --memory-size 0 --base 32 --repeats 5   # ONNX Runtime vs PyTorch only

Speed: a 16-bit SIZE x SIZE TIFF is segmented from file to written mask twice, interleaved per repeat:
  original - the original SynSeg_cytoskeleton.py scheme, re-created here: 8-bit min-max image, reflect padding
             to its stride grid, one 1024 x 1024 tile at a time (overlap 128, pyramid weights), fp32;
  ours     - SynSeg_Cytoskeleton.py with its defaults (same network: base 64, depth 3, 5x5 first kernels,
             random weights saved as a bare original state dict), including the skeleton measurements.
Both use the same torch threads. Reported: megapixels per second of image, and the pixels each approach sends
through the network (which sets the ratio on a CPU, where the convolutions run near peak in fp32 either way).

Memory: SynSeg_Vesicle.py runs in a child process on a MEMORY_SIZE^2 16-bit image (vesicle network of
--memory-base channels, 32 like the shipped model by default; watershed split on); its peak resident memory
comes from getrusage(RUSAGE_CHILDREN). The network's share is set by the tile size, which the script chooses
from the base width (about 1.2 GB of activations on the CPU); --memory-base 2 checks the image-size-dependent
part in a few minutes.
ONNX Runtime: the speed-test network (base BASE, depth 3, 5x5 first kernels, random weights) exported to ONNX by
export_model.py, run by ONNX Runtime's CPU provider beside PyTorch the way predict.py runs it (batch norm folded,
unet.autocast_dtype precision; also fp32 when that is not fp32), on the same --onnx-tile tile (default: the tile
predict.py picks on the CPU), interleaved, same thread count. Reported: ms per tile, megapixels per second, the
max logit difference and the CPU's bf16/AMX flags. --skip-onnx leaves it out.
Shipped models vs filters (--filters): the SIZE x SIZE image segmented by SynSeg_Vesicle.py's and
SynSeg_Cytoskeleton.py's engine (predict.Segmenter with the scripts' defaults, models/*.pth, file to written mask)
through each CPU path - PyTorch fp32 NCHW (the path before backends were chosen), PyTorch channels_last, ONNX
Runtime, and "auto", the path the scripts pick here - beside LoG (skimage blob_log, realdata_benchmark.py's
shared-image settings) and Sato + Otsu (realdata_benchmark.ridge_mask), interleaved per repeat. Reported: seconds,
the ratio to the filter (target on an AVX2-only CPU: vesicle <= 1.5x LoG, cytoskeleton <= 2x Sato + Otsu), and
the mask pixels that differ from the NCHW path's.
The machine is shared: the load average is printed before and after; compare figures from one run only.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synseg import cli  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--size", type=int, default=2048, help="edge of the speed-test image in px")
    p.add_argument("--repeats", type=int, default=1, help="interleaved original/ours rounds")
    p.add_argument("--base", type=int, default=64, help="base channels of the network for the speed test")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="device for both approaches (cpu or cuda)")
    p.add_argument("--memory-size", type=int, default=8192, help="edge of the memory-test image in px; 0 skips it")
    p.add_argument("--memory-base", type=int, default=32, help="base channels of the network for the memory test")
    p.add_argument("--skip-speed", action="store_true", help="leave out the original-vs-ours speed test")
    p.add_argument("--skip-onnx", action="store_true", help="leave out ONNX Runtime vs PyTorch")
    p.add_argument("--filters", action="store_true", help="shipped models per CPU path vs LoG and Sato + Otsu")
    p.add_argument("--onnx-tile", type=int, default=0,
                   help="tile edge in px for ONNX Runtime vs PyTorch; 0: tiling.auto_tile_size on the CPU")
    p.add_argument("--work-dir", type=Path, default=None, help="folder for the test files (default: a temp folder)")
    p.add_argument("--seed", type=int, default=0, help="seed for the images and weights")
    return p


def test_image(size: int, seed: int) -> np.ndarray:
    """A 16-bit image with bright lines and spots on a noisy background (content barely matters for speed)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.normal(300, 30, (size, size)).astype(np.float32)
    for _ in range(size // 16):
        p = rng.integers(0, size, 4)
        cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), float(rng.uniform(800, 3000)), 2)
    for _ in range(size // 4):
        cv2.circle(img, tuple(int(v) for v in rng.integers(0, size, 2)), int(rng.integers(2, 5)),
                   float(rng.uniform(800, 3000)), -1)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.0), 0, 65535).astype(np.uint16)


def bare_weights(path: Path, base: int, first_kernel: int, seed: int) -> None:
    """Save random weights as a bare state dict, the way the original SynSeg shipped its models."""
    import torch

    import unet

    torch.manual_seed(seed)
    model = unet.build_model(base_channels=base, depth=3, first_kernel=first_kernel)
    torch.save(model.state_dict(), path)


def original_segment(model, src: Path, dst: Path, device, tile: int = 1024, overlap: int = 128) -> int:
    """The original cytoskeleton script's path, re-created: returns the pixels sent through the network."""
    import cv2
    import tifffile
    import torch

    image = tifffile.imread(src)
    if image.dtype != np.uint8:  # the original squeezed every input to 8 bit first
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    image = image.astype(np.float32)
    h, w = image.shape
    stride = tile - overlap
    pad_h, pad_w = (stride - (h - overlap) % stride) % stride, (stride - (w - overlap) % stride) % stride
    padded = np.pad(image, ((0, pad_h), (0, pad_w)), mode="reflect")
    H, W = padded.shape
    acc, wsum = np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
    ramp = np.concatenate([np.linspace(0, 1, tile // 2), np.linspace(1, 0, tile - tile // 2)])
    window = np.outer(ramp, ramp).astype(np.float32)
    pixels = 0
    with torch.no_grad():
        for y in range(0, H - overlap, stride):
            for x in range(0, W - overlap, stride):
                t = torch.from_numpy(np.ascontiguousarray(padded[y:y + tile, x:x + tile]))[None, None].to(device)
                prob = torch.sigmoid(model(t)).cpu().numpy()[0, 0]
                acc[y:y + tile, x:x + tile] += prob * window
                wsum[y:y + tile, x:x + tile] += window
                pixels += t.numel()
    wsum[wsum == 0] = 1
    mask = ((acc / wsum)[:h, :w] > 0.5).astype(np.uint8) * 255
    tifffile.imwrite(dst, mask)
    return pixels


def our_pixels(shape: tuple[int, int], tile: int, overlap: int, align: int) -> int:
    """Pixels our tiler sends through the network for one plane."""
    from synseg.segment import tiling

    th, ys = tiling.tile_layout(-(-shape[0] // align) * align, tile, overlap, align)
    tw, xs = tiling.tile_layout(-(-shape[1] // align) * align, tile, overlap, align)
    return th * tw * len(ys) * len(xs)


def load() -> str:
    """The 1/5/15-minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def speed(args, work: Path) -> None:
    """Time original and ours on the same file, interleaved."""
    import tifffile
    import torch

    from synseg.segment import segment_cytoskeleton as SynSeg_Cytoskeleton
    from synseg.segment import tiling
    import unet

    if args.threads:
        torch.set_num_threads(args.threads)
    src = work / "speed.tif"
    tifffile.imwrite(src, test_image(args.size, args.seed))
    weights = work / f"cyto_base{args.base}.pth"
    bare_weights(weights, args.base, 5, args.seed)
    device = unet.get_device(args.device, verbose=False)
    model, info = unet.load_model(weights, device)  # the unchanged network, BN and all, as the original ran it
    ours_args = SynSeg_Cytoskeleton.get_args_parser().parse_args(
        ["-i", str(src), "-o", str(work / "ours"), "-m", str(weights), "--overwrite", "--device", args.device])
    overlap = tiling.default_overlap(info["model_args"])
    mp = args.size * args.size / 1e6
    print(f"speed: {args.size}x{args.size} uint16, network base {args.base} depth 3 k5, device {device}, "
          f"torch threads {torch.get_num_threads()}, load before {load()}", flush=True)
    times = {"original": [], "ours": []}
    cpu = {"original": [], "ours": []}  # process CPU seconds: steadier than wall time on a shared machine
    orig_pixels = 0
    for r in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        orig_pixels = original_segment(model, src, work / "original_mask.tif", device)
        times["original"].append(time.perf_counter() - t)
        cpu["original"].append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        code = SynSeg_Cytoskeleton.main(ours_args)
        times["ours"].append(time.perf_counter() - t)
        cpu["ours"].append(time.process_time() - c)
        if code:
            raise SystemExit(f"SynSeg_Cytoskeleton.py failed with exit code {code}")
        print(f"  round {r + 1}: original {times['original'][-1]:.1f} s ({cpu['original'][-1]:.0f} CPU s), "
              f"ours {times['ours'][-1]:.1f} s ({cpu['ours'][-1]:.0f} CPU s), load {load()}", flush=True)
    half = device.type == "cpu" and unet.autocast_dtype(device, "auto") is not None  # as predict.Segmenter
    tile = ours_args.tile_size or tiling.auto_tile_size(info["model_args"], device.type, half=half)
    ours_pixels = our_pixels((args.size, args.size), tile, overlap, 8)
    best = {k: min(v) for k, v in times.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    print(f"  original: {mp / best['original']:.4f} MP/s ({best['original']:.1f} s; "
          f"{orig_pixels / 1e6:.2f} MP through the network, one 1024 px tile at a time, fp32)")
    print(f"  ours:     {mp / best['ours']:.4f} MP/s ({best['ours']:.1f} s; {ours_pixels / 1e6:.2f} MP through the "
          f"network, tiles <= {tile} px, overlap {overlap} px, "
          f"precision {unet.autocast_dtype(device, 'auto') or 'fp32'})")
    print(f"  speed-up: {best['original'] / best['ours']:.2f}x wall, {best_cpu['original'] / best_cpu['ours']:.2f}x "
          f"CPU time (pixel ratio alone: {orig_pixels / ours_pixels:.2f}x); load after {load()}", flush=True)


def cpu_flags() -> str:
    """The CPU's vector, bf16 and AMX flags (what sets the fastest path on a CPU), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    flags = sorted(set(re.findall(r"\b(avx2|avx512f|avx512_bf16|amx\w*)\b", text)))
    bf16 = any(f == "avx512_bf16" or f.startswith("amx") for f in flags)
    return " ".join(flags) + ("" if bf16 else " (no avx512_bf16, no AMX)") + f", {os.cpu_count()} cores"


def onnx_vs_torch(args, work: Path) -> None:
    """ONNX Runtime and PyTorch on the CPU: same network, same tile, interleaved, best of --repeats (>= 3)."""
    import onnxruntime
    import torch

    from synseg import export as export_model
    from synseg.segment import tiling
    import unet

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = unet.build_model(base_channels=args.base, depth=3, first_kernel=5).eval()
    cpu = torch.device("cpu")
    amp = unet.autocast_dtype(cpu, "auto")
    tile = args.onnx_tile or tiling.auto_tile_size(model.model_args, "cpu", half=amp is not None)
    path = work / f"cyto_base{args.base}.onnx"
    export_model.export_onnx(model, torch.zeros(1, 1, 17, 19), path)  # odd example: padding stays in the graph
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # ONNX Runtime's threads spin after each run by default, stealing the cores from the PyTorch run that follows
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    net = tiling.prepare_model(model, cpu, channels_last=amp is not None)  # as predict.Segmenter on the CPU
    x = np.random.default_rng(args.seed).normal(size=(1, 1, tile, tile)).astype(np.float32)
    xt = torch.from_numpy(x)

    def torch_run(dtype):
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            return net(xt).float().numpy()

    runs = {"pytorch fp32" + ("" if amp else " (as predict.py)"): lambda: torch_run(None)}
    if amp is not None:
        runs[f"pytorch {str(amp).removeprefix('torch.')} autocast (as predict.py)"] = lambda: torch_run(amp)
    ort = "onnxruntime fp32"
    runs[ort] = lambda: session.run(None, {"input": x})[0]
    print(f"onnx: {tile}x{tile} tile, network base {args.base} depth 3 k5, threads {torch.get_num_threads()}; "
          f"pytorch {torch.__version__.split('+')[0]} with BN folded (tiling.prepare_model), onnxruntime "
          f"{onnxruntime.__version__} CPUExecutionProvider, opset {export_model.ONNX_OPSET}; "
          f"CPU flags: {cpu_flags()}; load before {load()}", flush=True)
    outputs = {name: run() for name, run in runs.items()}  # warm-up, and the outputs to compare
    times = {name: [] for name in runs}
    for _ in range(max(3, args.repeats)):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    best = {name: min(ts) for name, ts in times.items()}
    reference = outputs[next(iter(runs))]  # pytorch fp32
    for name, ts in times.items():
        print(f"  {name}: {best[name] * 1e3:.0f} ms/tile (median {np.median(ts) * 1e3:.0f}), "
              f"{tile * tile / 1e6 / best[name]:.3f} MP/s, "
              f"max |logit - pytorch fp32| {float(np.abs(outputs[name] - reference).max()):.1e}")
    ratios = ", ".join(f"{best[name] / best[ort]:.2f}x vs {name}" for name in runs if name != ort)
    print(f"  onnxruntime speed-up (> 1: ONNX Runtime faster): {ratios}; load after {load()}", flush=True)


def models_vs_filters(args, work: Path) -> None:
    """Shipped models through each CPU path beside the classical filters, on one SIZE^2 uint16 file, interleaved."""
    import dataclasses

    import tifffile
    import torch

    from synseg.segment import predict
    import realdata_benchmark
    from synseg.segment import segment_cytoskeleton as SynSeg_Cytoskeleton
    from synseg.segment import segment_vesicle as SynSeg_Vesicle
    from synseg import tasks
    from synseg.segment import tiling
    import unet

    if args.threads:
        torch.set_num_threads(args.threads)
    src = work / "filters.tif"
    image = test_image(args.size, args.seed)
    tifffile.imwrite(src, image)
    cpu = torch.device("cpu")
    print(f"models vs filters: {args.size}x{args.size} uint16, CPU flags: {cpu_flags()}, torch threads "
          f"{torch.get_num_threads()}, load before {load()}", flush=True)
    jobs = {}  # task -> {method: (function, is the filter)}
    for task, script, name, filt in (("vesicle", SynSeg_Vesicle, "LoG", lambda: realdata_benchmark.log_points(
            image, 0.2)), ("cytoskeleton", SynSeg_Cytoskeleton, "Sato + Otsu", lambda: realdata_benchmark.ridge_mask(
            image))):
        record = tasks.TASKS[task]
        model, info = unet.load_model(ROOT / record.model, cpu)
        opts = predict.Options.from_args(script.get_args_parser().parse_args(["-i", str(src), "-o", str(work)]))
        segs = {}
        for label, backend, nchw in (("PyTorch fp32 NCHW", "torch", True), ("PyTorch channels_last", "torch", False),
                                     ("ONNX Runtime", "onnx", False), ("auto", "auto", False)):
            if backend == "onnx" and not tiling.onnx_available():
                continue
            try:
                seg = predict.Segmenter(model, info, record, dataclasses.replace(opts, backend=backend), cpu)
            except ValueError as err:  # onnx on a bf16 CPU: the scripts' auto precision is bf16 there
                print(f"  {task} {label}: n/a ({err})")
                continue
            if nchw:
                seg.net, seg.path = tiling.prepare_model(model, cpu, channels_last=False), "PyTorch cpu fp32, NCHW"
            if label == "auto":
                same = [other for other, s in segs.items() if s.path == seg.path and other != "PyTorch fp32 NCHW"]
                print(f"  {task}: auto picks {seg.path}"
                      + (f" (the same path as {same[0]}, timed once)" if same else ""))
                if same:
                    continue
            segs[label if label != "auto" else f"auto ({seg.path})"] = seg
        methods = {name: (filt, None)}
        for label, seg in segs.items():
            methods[label] = (lambda seg=seg, label=label: seg.segment(src, work / f"{task}_{label[:4]}_mask.tif"),
                              work / f"{task}_{label[:4]}_mask.tif")
        jobs[task] = (name, methods)
    times = {(task, m): [] for task, (_, methods) in jobs.items() for m in methods}
    for r in range(args.repeats):
        for task, (_, methods) in jobs.items():
            for m, (run, _) in methods.items():
                t = time.perf_counter()
                run()
                times[(task, m)].append(time.perf_counter() - t)
                print(f"  round {r + 1}: {task} {m}: {times[(task, m)][-1]:.1f} s, load {load()}", flush=True)
    for task, (name, methods) in jobs.items():
        base = min(times[(task, name)])
        ref = None
        for m, (_, mask_path) in methods.items():
            best = min(times[(task, m)])
            note = ""
            if mask_path is not None:
                mask = tifffile.imread(mask_path)
                ref = mask if ref is None else ref
                note = f", mask pixels differing from the first path's: {int(np.count_nonzero(mask != ref))}"
            print(f"  {task} {m}: {best:.1f} s, {best / base:.2f}x {name}{note}")
    print(f"  (targets on an AVX2-only CPU: vesicle <= 1.5x LoG, cytoskeleton <= 2x Sato + Otsu); load after {load()}",
          flush=True)


def memory(args, work: Path) -> None:
    """Peak resident memory of SynSeg_Vesicle.py on a big image, in a child process."""
    import tifffile

    src = work / f"big{args.memory_size}.tif"
    tifffile.imwrite(src, test_image(args.memory_size, args.seed + 1))
    weights = work / f"ves_base{args.memory_base}.pth"
    bare_weights(weights, args.memory_base, 3, args.seed)
    cmd = [sys.executable, str(ROOT / "SynSeg_Vesicle.py"), "-i", str(src), "-o", str(work / "mem"), "-m",
           str(weights), "--overwrite", "--device", "cpu"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"memory: {args.memory_size}x{args.memory_size} uint16 ({src.stat().st_size / 2**20:.0f} MiB file), "
          f"vesicle network base {args.memory_base}, load before {load()}", flush=True)
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if run.returncode:
        raise SystemExit(f"SynSeg_Vesicle.py failed ({run.returncode}):\n{run.stderr[-2000:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux
    print(f"  peak resident memory {peak_gb:.2f} GB (limit 3 GB), {wall:.0f} s, "
          f"{args.memory_size ** 2 / 1e6 / wall:.3f} MP/s; load after {load()}", flush=True)


def main(args: argparse.Namespace) -> int:
    """Run the speed test, ONNX Runtime vs PyTorch, then the memory test."""
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_speed:
            speed(args, work)
        if not args.skip_onnx:
            onnx_vs_torch(args, work)
        if args.filters:
            models_vs_filters(args, work)
        if args.memory_size:
            memory(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
