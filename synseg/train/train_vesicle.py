"""Train the vesicle (blob) U-Net on generated image/mask pairs.

Example:
    python train_vesicle_seg.py --data-dir DATA --epochs 5 --base-channels 32 --device cpu --num-workers 2

Task "vesicle" (tasks.py): 3x3 first kernel; local-contrast normalisation (brightness-invariant, stored in
the checkpoint); augmentation (augment.BlobAugmentation): brightness scaled by x0.01..x100 with
re-digitisation, occasional squaring, flips/rotations. Writes best_vesicle_model.pth, last.pth,
metrics.csv and curves.png to --output-dir. The loop, flags and checks are shared with
train_cytoskeleton_seg.py (training.py).
Several GPUs or nodes: torchrun --nproc_per_node N train_vesicle_seg.py ...
"""
import argparse
import sys

from synseg.train import training

PRESET = "vesicle"


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments (shared with the cytoskeleton script; defaults of the vesicle preset)."""
    return training.get_args_parser(PRESET, description=__doc__)


def main(args: argparse.Namespace) -> int:
    """Train; returns the exit code."""
    return training.main(args)


def run() -> None:
    """The console command `synseg-train-vesicles`: parse the command line, exit with main's code."""
    sys.exit(main(get_args_parser().parse_args()))


if __name__ == "__main__":
    run()
