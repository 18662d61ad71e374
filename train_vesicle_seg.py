"""Train the vesicle (blob) U-Net on generated image/mask pairs.

Example:
    python train_vesicle_seg.py --data-dir DATA --epochs 5 --base-channels 32 --device cpu --num-workers 2

The code is synseg/train/train_vesicle.py (the synseg package); installed with `pip install .`,
the same command is `synseg-train-vesicles`. `python train_vesicle_seg.py --help` lists every flag.
"""
import sys

from synseg.train.train_vesicle import PRESET, get_args_parser, main  # noqa: F401  (importable as before)

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
