"""Training speed: a plain fp32 NCHW step against training.py's step, side by side in one run.

Example:
    python bench/bench_train.py --device auto
    python bench/bench_train.py --configs 32:256:4 --steps 3 --precision bf16

For each configuration BASE:SIZE:BATCH (U-Net depth 3, first kernel 3) on the same data:
  plain fp32 NCHW    model(x), BCE-with-logits, zero_grad, backward, AdamW step, nothing else
  ours (...)         training.train_step with the precision --precision resolves to here
                     (bf16 autocast + channels_last on CUDA and CPUs with native bf16, else fp32)
  forced bf16 + CL   shown when "ours" resolved to something else, to show what bf16 costs here
Then the data pipeline: images/s of the real DataLoader (each preset's augmentation, generated
512x512 images, --crop-size crops, --num-workers) against the step's images/s with data preloaded.
The figures are only comparable on a quiet machine: the load average is printed first.

With --brightness-check MODEL IMG_DIR it instead checks a trained vesicle model's brightness
invariance: the prediction on each image against the prediction on the image times 0.01 and
times 100, as exact float products (pass: mean Dice >= 0.95) and, for reference, re-digitised to
16 bits (rounded, clipped at 65535) as a camera at another exposure would record them.
    python bench/bench_train.py --brightness-check checkpoints/best_vesicle_model.pth DATA/val/img
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synseg import cli  # the repository root, just put on the path
from synseg import normalization


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--configs", default="64:512:1,32:256:4",
                   help="comma-separated BASE_CHANNELS:SIZE:BATCH; 64:512 is the original network, "
                        "32:256 what the shipped models train with")
    p.add_argument("--steps", type=int, default=2, help="timed rounds; each round runs one step of every variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first (0 is fine for big steps)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="what 'ours' uses (as training's --precision)")
    p.add_argument("--no-forced-bf16", action="store_true",
                   help="skip the forced-bf16 row (slow on CPUs without native bf16)")
    p.add_argument("--loader-images", type=int, default=16, help="generated 512x512 images for the loader test")
    p.add_argument("--crop-size", type=int, default=256, help="training crop of the loader test")
    p.add_argument("--batch-size", type=int, default=4, help="batch of the loader test")
    p.add_argument("--num-workers", type=int, default=2, help="loader processes")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and data")
    p.add_argument("--brightness-check", nargs=2, type=Path, metavar=("MODEL", "IMG_DIR"), default=None,
                   help="instead of timing: check MODEL's predictions at x0.01 and x100 on the images of IMG_DIR")
    p.add_argument("--max-images", type=int, default=20, help="images used by --brightness-check")
    return p


def brightness_check(model_path: Path, img_dir: Path, max_images: int, device) -> int:
    """Dice of predictions at x0.01 / x100 (float, 16-bit) against x1; exit code 1 if a float one is < 0.95."""
    import numpy as np
    import torch

    from synseg import metrics
    from synseg import tiffio
    from synseg.train import training
    import unet

    model, info = unet.load_model(model_path, device)
    images = training.list_images(img_dir)[:max_images]

    def predict(image):
        x = torch.from_numpy(normalization.normalize_image(image, info["normalization"]).astype(np.float32))
        with torch.no_grad():
            return (model(x[None, None].to(device))[0, 0] > 0).cpu().numpy()

    scores = {}
    for path in images:
        image = training.as_2d(tiffio.read_image(path)[0], path).astype(np.float32)
        ref = predict(image)
        for factor in (0.01, 100.0):
            scaled = image * np.float32(factor)
            for kind, img in (("float", scaled), ("16-bit", np.clip(np.rint(scaled), 0, 65535))):
                scores.setdefault((factor, kind), []).append(metrics.pixel_scores(predict(img), ref)["dice"])
    print(f"{model_path} on {len(images)} images of {img_dir} (normalisation {info['normalization']}):")
    worst = 1.0
    for (factor, kind), values in scores.items():
        if kind == "float":
            worst = min(worst, float(np.mean(values)))
        print(f"  x{factor:<6g} {kind:<7} Dice vs x1: mean {np.mean(values):.4f}  min {np.min(values):.4f}")
    print("PASS" if worst >= 0.95 else "FAIL", "(float products: mean Dice >= 0.95 at x0.01 and x100; the 16-bit rows "
          "lose information to rounding and saturation and are shown for reference)")
    return 0 if worst >= 0.95 else 1


def sync(device) -> None:
    """Wait for queued GPU work so that wall-clock times mean something."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(steps: dict, rounds: int, warmup: int, device) -> dict:
    """Median seconds per call of each step function, timed in alternation.

    `warmup` untimed calls each, then `rounds` rounds that call every variant once, so that a
    change in machine load hits all variants alike.
    """
    import numpy as np

    for _ in range(warmup):
        for step in steps.values():
            step()
    sync(device)
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def bench_step(base: int, size: int, batch: int, args, device) -> list[tuple[str, float]]:
    """(variant, images/s) for the plain loop, ours, and forced bf16 where that differs."""
    import torch

    from synseg.train import training
    import unet

    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(batch, 1, size, size, generator=g)
    y = (torch.rand(batch, 1, size, size, generator=g) > 0.9).float()
    steps = {}

    def plain_step():
        model = unet.build_model(base_channels=base, depth=3).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        bce = torch.nn.BCEWithLogitsLoss()
        xd, yd = x.to(device), y.to(device)

        def step():
            loss = bce(model(xd), yd)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    def our_step(dtype):
        rt = training.Runtime(device, dtype, channels_last=dtype is not None)
        model = unet.build_model(base_channels=base, depth=3).to(device).train()
        if rt.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        loss_fn = training.SegmentationLoss("bce")
        xr, yr = training.to_device(x, rt), y.to(device)
        return lambda: training.train_step(model, xr, yr, loss_fn, opt, scaler, rt)

    torch.manual_seed(args.seed)
    steps["plain fp32 NCHW"] = plain_step()
    amp = unet.autocast_dtype(device, args.precision)
    desc = training.Runtime(device, amp, amp is not None).describe().split(", ", 1)[1]
    steps[f"ours ({desc})"] = our_step(amp)
    if amp != torch.bfloat16 and not args.no_forced_bf16:
        steps["forced bf16 autocast + channels_last"] = our_step(torch.bfloat16)
    seconds = time_interleaved(steps, args.steps, args.warmup, device)
    return [(name, batch / s) for name, s in seconds.items()]


def bench_loader(preset_name: str, folder: Path, args, device) -> float:
    """Images/s the real training DataLoader delivers for one preset over generated images."""
    from synseg import tasks
    from synseg.train import training

    pairs = training.find_pairs(folder / "img", folder / "mask", show=False)
    ds = training.SegmentationDataset(pairs, tasks.TASKS[preset_name], train=True,
                                      crop_size=args.crop_size, seed=args.seed)
    sampler = training.EpochSampler(len(ds), seed=args.seed)
    loader = training.make_loader(ds, args.batch_size, sampler, args.num_workers, device)
    for _ in loader:  # starts the persistent workers; the timed epoch below is a steady-state one
        pass
    sampler.set_epoch(1)
    t = time.perf_counter()
    n = sum(x.shape[0] for x, _ in loader)
    return n / (time.perf_counter() - t)


def write_images(folder: Path, n: int, dtype, seed: int) -> None:
    """n generated 512x512 image/mask pairs (bright disks on noise) for the loader test."""
    import numpy as np

    from synseg import tiffio

    rng = np.random.default_rng(seed)
    (folder / "mask").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:512, :512]
    for i in range(n):
        mask = np.zeros((512, 512), bool)
        for cy, cx in rng.integers(0, 512, (40, 2)):
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 16
        top = np.iinfo(dtype).max * 0.5
        image = (0.1 * top + rng.normal(0, 0.02 * top, mask.shape) + 0.5 * top * mask).clip(0, None)
        tiffio.write_tiff(folder / "img" / f"{i:05d}.tif", image.astype(dtype))
        np.save(folder / "mask" / f"{i:05d}.npy", mask.astype(np.uint8))


def main(args: argparse.Namespace) -> int:
    """Run the step and loader benchmarks and print a table."""
    import numpy as np
    import torch

    import unet

    try:
        configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
        assert all(len(c) == 3 for c in configs)
    except (ValueError, AssertionError):
        print(f"error: --configs {args.configs!r}: expected BASE:SIZE:BATCH[,BASE:SIZE:BATCH...]", file=sys.stderr)
        return 2
    try:
        device = unet.get_device(args.device)
        if args.brightness_check:
            return brightness_check(*args.brightness_check, args.max_images, device)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f"; native CPU bf16: {unet.cpu_has_fast_bf16()}"))
    step_rate = {}
    for base, size, batch in configs:
        rows = bench_step(base, size, batch, args, device)
        print(f"\nbase {base}, depth 3, {size}x{size}, batch {batch}:")
        for name, rate in rows:
            print(f"  {name:<44} {rate:9.3f} images/s  {1 / rate:8.3f} s/image  x{rate / rows[0][1]:.2f}")
        step_rate[(size, batch)] = rows[1][1]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"\ndata loader ({args.loader_images} images 512x512, crop {args.crop_size}, batch {args.batch_size}, "
              f"{args.num_workers} workers) vs the preloaded step of 'ours' at that crop:")
        for preset, dtype in (("vesicle", np.uint16), ("cytoskeleton", np.uint8)):
            folder = Path(tmp) / preset
            write_images(folder, args.loader_images, dtype, args.seed)
            rate = bench_loader(preset, folder, args, device)
            step = step_rate.get((args.crop_size, args.batch_size))
            verdict = (f"loader/step = {rate / step:.1f}: " + ("not the bottleneck" if rate > step else "BOTTLENECK")
                       if step else "no step timed at this crop and batch")
            print(f"  {preset:<13} {rate:9.2f} images/s   {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
