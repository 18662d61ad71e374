"""Generate synthetic 8-bit cytoskeleton images (filaments, asters, bundles, ER, mitochondria) with exact masks.

Example:
    python Cytoskeleton_generator.py --output-dir DATA --num-images 1000 --seed 0 --workers 2 --preview

The code is synseg/generate/cytoskeleton_generator.py (the synseg package); installed with `pip install .`,
the same command is `synseg-generate-cytoskeleton`. `python Cytoskeleton_generator.py --help` lists every flag.
"""
import sys

from synseg.generate.cytoskeleton_generator import BIT_DEPTH, get_args_parser, main, render_one  # noqa: F401  (importable as before)

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
