"""Generate synthetic 8-bit cytoskeleton images with exact masks.

Example:
    python Cytoskeleton_generator.py --output-dir DATA --num-images 1000 --seed 0 --workers 2

Not built yet: this script is delivered by issue 3. Only --help works.
"""
import argparse
import sys


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    return argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def main(args: argparse.Namespace) -> int:
    """Refuse to pretend: the real script lands with issue 3."""
    print("Cytoskeleton_generator.py: not built yet (issue 3)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
