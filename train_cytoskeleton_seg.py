"""Train the cytoskeleton (filament) U-Net on generated image/mask pairs.

Example:
    python train_cytoskeleton_seg.py --data-dir DATA --epochs 5 --base-channels 32 --device cpu --num-workers 2

The code is synseg/train/train_cytoskeleton.py (the synseg package); installed with `pip install .`,
the same command is `synseg-train-cytoskeleton`. `python train_cytoskeleton_seg.py --help` lists every flag.
"""
import sys

from synseg.train.train_cytoskeleton import PRESET, get_args_parser, main  # noqa: F401  (importable as before)

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
