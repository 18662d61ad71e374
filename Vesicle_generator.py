"""Generate synthetic 16-bit vesicle / puncta images with exact masks and per-spot tables.

Example:
    python Vesicle_generator.py --output-dir DATA --num-images 1000 --seed 0 --workers 2 --preview

The code is synseg/generate/vesicle_generator.py (the synseg package); installed with `pip install .`,
the same command is `synseg-generate-vesicles`. `python Vesicle_generator.py --help` lists every flag.
"""
import sys

from synseg.generate.vesicle_generator import BIT_DEPTH, get_args_parser, main, render_one  # noqa: F401  (importable as before)

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
