"""Train the cytoskeleton (filament) U-Net on generated image/mask pairs.

Example:
    python train_cytoskeleton_seg.py --data-dir DATA --epochs 5 --base-channels 32 --device cpu --num-workers 2

Task "cytoskeleton" (tasks.py): 5x5 first kernel; local-contrast normalisation (stored in the checkpoint);
augmentation (augment.FilamentAugmentation): CLAHE at random, clipped brightness/contrast and gamma,
flips/rotations and elastic warps (mask warped with the image, kept binary). --loss bce+cldice adds the
skeleton-aware clDice term. Writes best_cytoskeleton_model.pth, last.pth, metrics.csv and curves.png to --output-dir.
The loop, flags and checks are shared with train_vesicle_seg.py (training.py).
Several GPUs or nodes: torchrun --nproc_per_node N train_cytoskeleton_seg.py ...
"""
import argparse
import sys

from synseg.train import training

PRESET = "cytoskeleton"


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments (shared with the vesicle script; defaults of the cytoskeleton preset)."""
    return training.get_args_parser(PRESET, description=__doc__)


def main(args: argparse.Namespace) -> int:
    """Train; returns the exit code."""
    return training.main(args)


def run() -> None:
    """The console command `synseg-train-cytoskeleton`: parse the command line, exit with main's code."""
    sys.exit(main(get_args_parser().parse_args()))


if __name__ == "__main__":
    run()
